//! The session service: what the API does, independent of HTTP.
//!
//! HTTP handlers decode a request, call one method here, and encode its answer. The service
//! owns no connection and no record: it asks the [`Registry`] for placement and agent links,
//! the [`Store`] for records, and agents (through their [`AgentLink`](crate::agents::AgentLink))
//! for launches and stops. Its errors are [`Error`]s, which know nothing of HTTP.
//!
//! - this file: the service, the one path every recorded change takes ([`Service::record`]),
//!   reads, drains, and the restore at start;
//! - [`start`]: placing and launching a game, at most once per `Idempotency-Key`;
//! - [`end`]: stopping a game and ending its session;
//! - [`reconcile`]: agents' own events, and squaring a (re)connected host with the records;
//! - [`sweep`]: settling what a crash or a lost host left behind;
//! - [`inflight`]: starts and ends in flight, which reads and sweeps consult.
//!
//! Starts and ends run as tasks of the service's own [`TaskTracker`], on the broker's runtime:
//! a client that hangs up does not cut one short, and a graceful stop waits for them.

mod end;
mod inflight;
mod reconcile;
mod start;
mod sweep;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use protocol::api::{self, Session, SessionQuery, SessionStatus};
use protocol::{HostId, SessionId};
use time::OffsetDateTime;
use tokio::runtime::Handle;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::agents::Registry;
use crate::error::{Dependency, Error};
use crate::nats::Nats;
use crate::session::{Actor, SessionEvent};
use crate::store::{EventRecord, Page, Store, StoreError};
use inflight::InFlight;

/// Session changes buffered for waiters; a waiter that falls behind re-reads the store.
const CHANGE_QUEUE: usize = 1024;

/// Timing of the service.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// A start not confirmed by then fails with 504.
    pub launch_timeout: Duration,
    /// A stop not confirmed by then fails (the agent bounds its own stop well below this).
    pub stop_timeout: Duration,
    /// A host away this long loses its sessions.
    pub heartbeat_timeout: Duration,
    /// This broker's name among replicas.
    pub broker_id: String,
    /// Where this broker's agents connect.
    pub agent_address: String,
}

/// The session service.
#[derive(Debug)]
pub struct Service {
    store: Store,
    /// The replica set's messaging, when this broker is one of several.
    nats: Option<Nats>,
    registry: Arc<Registry>,
    settings: ServiceSettings,
    inflight: InFlight,
    changes: broadcast::Sender<SessionId>,
    /// Starts and ends, each run to completion in a task of its own.
    tasks: TaskTracker,
    /// The broker's runtime, where those tasks run (not an HTTP worker's, which stops with
    /// HTTP).
    runtime: Handle,
}

impl Service {
    /// A service over `store` and `registry`, whose starts and ends run in `tasks` on the
    /// current runtime.
    pub fn new(
        store: Store,
        nats: Option<Nats>,
        registry: Arc<Registry>,
        settings: ServiceSettings,
        tasks: TaskTracker,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            nats,
            registry,
            settings,
            inflight: InFlight::default(),
            changes: broadcast::channel(CHANGE_QUEUE).0,
            tasks,
            runtime: Handle::current(),
        })
    }

    /// Runs `work` to completion in a tracked task of its own and waits for it: the caller
    /// may go away, the work does not.
    async fn detached<T, F>(self: &Arc<Self>, work: impl FnOnce(Arc<Self>) -> F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>> + Send + 'static,
        T: Send + 'static,
    {
        let task = self.tasks.spawn_on(work(Arc::clone(self)), &self.runtime);
        task.await
            .map_err(|e| Error::Internal(format!("a request's task failed: {e}")))?
    }

    /// Applies an event to a session's record; frees its slot when it is over.
    async fn record(
        &self,
        id: &SessionId,
        event: SessionEvent,
        actor: Actor,
    ) -> Result<Session, StoreError> {
        let s = self
            .store
            .transition(id, &event, actor, OffsetDateTime::now_utc())
            .await?;
        self.changed(&s, &event);
        Ok(s)
    }

    /// What follows a recorded change: a session over gives its host's slot back, and waiters
    /// are told.
    fn changed(&self, s: &Session, event: &SessionEvent) {
        if s.status.is_terminal() {
            self.registry.release(&s.host_id, &s.session_id);
        }
        tracing::debug!(session = %s.session_id, status = %s.status, ?event, "session changed");
        let _ = self.changes.send(s.session_id.clone());
    }

    /// One session.
    pub async fn get(&self, id: &SessionId) -> Result<Session, Error> {
        Ok(self.session(id).await?)
    }

    /// A session as recorded, or as created while its start is in flight and not yet
    /// recorded.
    async fn session(&self, id: &SessionId) -> Result<Session, StoreError> {
        match self.store.get(id).await {
            Err(StoreError::NotFound(id)) => {
                self.inflight.launching(&id).ok_or(StoreError::NotFound(id))
            }
            other => other,
        }
    }

    /// The session once it is no longer `starting`, or as it is when `within` has passed.
    async fn wait_while_starting(
        &self,
        id: &SessionId,
        within: Duration,
    ) -> Result<Session, Error> {
        let deadline = Instant::now() + within;
        let mut changes = self.changes.subscribe();
        loop {
            let s = self.session(id).await?;
            if s.status != SessionStatus::Starting {
                return Ok(s);
            }
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Err(_) => return Ok(s),
                Ok(Ok(_) | Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) => return Ok(s),
            }
        }
    }

    /// Sessions, newest first, one page.
    pub async fn list(&self, q: &SessionQuery) -> Result<Page, Error> {
        Ok(self.store.list(q).await?)
    }

    /// A session's history, oldest first.
    pub async fn events(&self, id: &SessionId) -> Result<Vec<EventRecord>, Error> {
        Ok(self.store.events(id).await?)
    }

    /// Every host, with the broker its agent is connected to.
    pub fn hosts(&self) -> Vec<api::Host> {
        let mut hosts = self.registry.hosts();
        for h in &mut hosts {
            if h.status != api::HostStatus::Offline {
                h.broker_id = Some(self.settings.broker_id.clone());
            }
        }
        hosts
    }

    /// The brokers of the system: this one (replicas are issue 15's).
    pub fn brokers(&self) -> Vec<api::Broker> {
        let connected = self.registry.connected();
        vec![api::Broker {
            broker_id: self.settings.broker_id.clone(),
            address: self.settings.agent_address.clone(),
            last_seen: OffsetDateTime::now_utc(),
            hosts: u32::try_from(connected).unwrap_or(u32::MAX),
        }]
    }

    /// Whether the broker can serve: its store answers, and NATS is connected when this
    /// broker is one of several.
    pub async fn ready(&self) -> Result<(), Error> {
        if self.nats.as_ref().is_some_and(|n| !n.is_connected()) {
            return Err(Error::NotReady(Dependency::Nats));
        }
        self.store.ping().await.map_err(|e| {
            tracing::warn!(error = %e, "not ready: the session store does not answer");
            Error::NotReady(Dependency::Store)
        })
    }

    /// The games on offer.
    pub fn games(&self) -> Vec<api::Game> {
        self.registry.games()
    }

    /// Drains or resumes a host; the flag is recorded, so it survives restarts.
    pub async fn set_draining(&self, host: &HostId, draining: bool) -> Result<api::Host, Error> {
        if !self.registry.knows(host) {
            return Err(Error::NoHost(host.clone()));
        }
        self.store
            .set_drained(host, draining, OffsetDateTime::now_utc())
            .await?;
        self.registry
            .set_draining(host, draining)
            .ok_or_else(|| Error::NoHost(host.clone()))
    }

    /// Loads what the store knows at start: hosts (offline until they reconnect, with their
    /// drained flag) and the slots of sessions not over. Hosts that do not come back within the
    /// heartbeat timeout lose their sessions, through the sweep.
    pub async fn restore(&self) -> Result<(), StoreError> {
        let hosts = self.store.hosts().await?;
        let active = self.store.active(None).await?;
        for h in &hosts {
            self.registry
                .restore(&h.host_id, h.facts.as_ref(), h.drained);
        }
        for s in &active {
            self.registry.restore(&s.host_id, None, false);
            self.registry.hold(&s.host_id, &s.session_id);
        }
        if !hosts.is_empty() || !active.is_empty() {
            tracing::info!(
                hosts = hosts.len(),
                sessions = active.len(),
                "restored from the store; waiting for hosts to reconnect"
            );
        }
        Ok(())
    }
}
