//! The session service: what the API does, independent of HTTP.
//!
//! HTTP handlers decode a request, call one method here, and encode its answer. The service
//! owns no connection and no record: it asks the [`Registry`] for placement and agent links,
//! the [`Store`] for records, and agents (through their [`AgentLink`](crate::agents::AgentLink))
//! for launches and stops. Its errors are [`Error`]s, which know nothing of HTTP.
//!
//! - this file: the service, the one path every recorded change takes ([`Service::record`]),
//!   reads, drains, and the restore at start;
//! - [`start`]: the one start pipeline, alone or among replicas: validate, key, quota,
//!   pool, place, route, launch, record, at most once per `Idempotency-Key`;
//! - [`view`]: what a replica sees of the hosts the replicas share (placement reads it);
//! - [`end`]: stopping a game and ending its session;
//! - [`builds`]: builds uploaded, listed, read back and removed; [`games`]: central games,
//!   catalog entries kept by the broker with their builds;
//! - [`logs`]: a session's game output, read from its agent;
//! - [`reconcile`]: agents' own events, and squaring a (re)connected host with the records;
//! - [`sweep`]: settling what a crash or a lost host left behind;
//! - [`inflight`]: starts and ends in flight, which reads and sweeps consult;
//! - [`join`]: join tokens: a start's, a game's redeem of it, a fresh one for a reconnect;
//! - [`stream`]: a client's stream of events, and the host events; [`webhooks`]: running
//!   the deliveries to webhook receivers;
//! - [`quota`]: per-user quotas, exact under concurrent starts;
//! - [`pools`]: warm pools' specs and counts, and a start's claim of a ready game;
//!   [`keeper`]: the loop that keeps each pool at its size;
//! - [`hosts`]: hosts, games and brokers, as this broker holds them or replicas share them;
//! - [`route`]: where a host's agent is — here or on another replica — the one place that
//!   decides; [`remote`]: calls between replicas, over NATS.
//!
//! Starts and ends run as tasks of the service's own [`TaskTracker`], on the broker's runtime:
//! a client that hangs up does not cut one short, and a graceful stop waits for them.

mod builds;
mod central;
mod end;
mod games;
mod hosts;
mod inflight;
mod join;
mod keeper;
mod limits;
mod logs;
mod pools;
mod quota;
mod reconcile;
mod remote;
mod rollout;
mod rollout_driver;
mod route;
mod start;
mod stream;
mod sweep;
mod usage;
mod view;
mod webhooks;

pub use join::Started;
pub use logs::{GameLog, LogQuery, DEFAULT_TAIL, MAX_LOG_BYTES};
pub use remote::Replicas;
pub use stream::{EventQuery, Events};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use protocol::api::{self, Session, SessionQuery, SessionStatus};
use protocol::{HostId, SessionId};
use time::OffsetDateTime;
use tokio::runtime::Handle;
use tokio::sync::{broadcast, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::Registry;
use crate::error::{Dependency, Error};
use crate::events::Feed;
use crate::metrics::Metrics;
use crate::session::{Actor, SessionEvent};
use crate::store::{EventRecord, Fence, Lease, Page, Store, StoreError};
use inflight::InFlight;

/// Session changes buffered for waiters; a waiter that falls behind re-reads the store.
const CHANGE_QUEUE: usize = 1024;
/// Event streams (`GET /v1/events`) open at once, at most.
pub const MAX_STREAMS: usize = 1024;
/// How often the event feed reads the store without being woken: other replicas' events
/// reach this broker's streams within this.
const FEED_POLL_REPLICAS: Duration = Duration::from_millis(200);
/// The same alone, where every change wakes the feed (a safety net only).
const FEED_POLL_ALONE: Duration = Duration::from_secs(1);
/// How often a waiter re-reads a session that another replica may change.
const REPLICA_POLL: Duration = Duration::from_millis(100);

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
    /// Sessions one user may hold at once (`--max-sessions-per-user`).
    pub max_sessions_per_user: Option<u32>,
    /// The broker's URL as games reach it (`--public-url`), without a trailing `/`.
    pub public_url: String,
    /// How long a join token may be redeemed (`--join-token-ttl`).
    pub join_ttl: Duration,
    /// Makes (and checks) the games' keys: the same on every replica.
    pub game_keys: crate::join::GameKeys,
    /// How placement chooses among the hosts that fit (`--placement`).
    pub placement: crate::placement::Strategy,
    /// A host without a session this long gets `host.idle` (`--host-idle-after`).
    pub host_idle_after: Duration,
}

/// The session service.
#[derive(Debug)]
pub struct Service {
    store: Store,
    /// Builds' bytes.
    builds: crate::builds::BuildStore,
    /// NATS, and the view of the shared hosts, when this broker is one of several: the one
    /// switch between a broker alone and replicas, set at start-up.
    replicas: Option<Replicas>,
    registry: Arc<Registry>,
    settings: ServiceSettings,
    inflight: InFlight,
    changes: broadcast::Sender<SessionId>,
    /// New events, for the open streams.
    feed: Feed,
    /// Streams open at once, at most [`MAX_STREAMS`].
    streams: Arc<Semaphore>,
    /// Fired when the broker starts to stop: open streams end, answers close their
    /// connections, other replicas' starts go elsewhere.
    closing: CancellationToken,
    /// What is counted and timed.
    metrics: Arc<Metrics>,
    /// When each webhook receiver's oldest undelivered event happened (`None`: caught up).
    webhook_backlog: std::sync::Mutex<std::collections::HashMap<String, Option<OffsetDateTime>>>,
    /// The pools as last read, for starts to match.
    pool_cache: pools::PoolCache,
    /// Wakes the pool keeper (a claim, a pool written, a pool launch settled).
    pool_wake: tokio::sync::Notify,
    /// Wakes the loop telling agents of central games (a game written, a host registered).
    central_wake: tokio::sync::Notify,
    /// What the pool keeper knows between its rounds.
    keeper: keeper::Keeper,
    /// The users' turns and starts in flight, for their quotas.
    quotas: quota::Quotas,
    /// When idle sessions were last looked up.
    idle_checks: limits::IdleChecks,
    /// Idle sessions being looked into, at most [`limits::MAX_IDLE_LOOKUPS`].
    idle_lookups: Arc<Semaphore>,
    /// Starts and ends, each run to completion in a task of its own.
    tasks: TaskTracker,
    /// The broker's runtime, where those tasks run (not an HTTP worker's, which stops with
    /// HTTP).
    runtime: Handle,
}

impl Service {
    /// A service over `store` and `registry`, whose starts and ends run in `tasks` on the
    /// current runtime.
    #[allow(clippy::too_many_arguments)] // each is a part the service is made of
    pub fn new(
        store: Store,
        builds: crate::builds::BuildStore,
        replicas: Option<Replicas>,
        registry: Arc<Registry>,
        settings: ServiceSettings,
        tasks: TaskTracker,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            builds,
            replicas,
            registry,
            settings,
            inflight: InFlight::default(),
            changes: broadcast::channel(CHANGE_QUEUE).0,
            feed: Feed::default(),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            closing: CancellationToken::new(),
            metrics,
            webhook_backlog: Default::default(),
            pool_cache: pools::PoolCache::default(),
            pool_wake: tokio::sync::Notify::new(),
            central_wake: tokio::sync::Notify::new(),
            keeper: keeper::Keeper::default(),
            quotas: quota::Quotas::default(),
            idle_checks: limits::IdleChecks::default(),
            idle_lookups: Arc::new(Semaphore::new(limits::MAX_IDLE_LOOKUPS)),
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

    /// [`Self::record`] for the sweep among replicas: applied only while this replica still
    /// holds the sweep's `lease` (none alone), and `fence` (a lost host's epoch as found).
    async fn record_swept(
        &self,
        id: &SessionId,
        event: SessionEvent,
        actor: Actor,
        fence: Option<&Fence>,
        lease: Option<&Lease>,
    ) -> Result<Session, StoreError> {
        let now = OffsetDateTime::now_utc();
        let s = self
            .store
            .transition_leased(id, &event, actor, now, fence, lease)
            .await?;
        self.changed(&s, &event);
        Ok(s)
    }

    /// Applies an event about a host that its agent's connection here made known (an exit, a
    /// launch's or a stop's outcome, a reconcile's verdict). With replicas it applies only
    /// while this connection is the host's newest: a replica paused or cut off while its agent
    /// moved on changes nothing ([`StoreError::Fenced`]).
    async fn record_as_owner(
        &self,
        host: &HostId,
        id: &SessionId,
        event: SessionEvent,
        actor: Actor,
    ) -> Result<Session, StoreError> {
        let fence = self.owner_fence(host)?;
        let s = self
            .store
            .transition_fenced(id, &event, actor, OffsetDateTime::now_utc(), fence.as_ref())
            .await?;
        self.changed(&s, &event);
        Ok(s)
    }

    /// The fence of this broker's hold on `host` (replicas): its connection's epoch. `None`
    /// alone; [`StoreError::Fenced`] when the host's agent is not connected here any more.
    fn owner_fence(&self, host: &HostId) -> Result<Option<Fence>, StoreError> {
        if self.replicas.is_none() {
            return Ok(None);
        }
        match self.registry.epoch(host) {
            Some(epoch) => Ok(Some(Fence {
                host: host.clone(),
                epoch,
            })),
            None => Err(StoreError::Fenced(host.clone())),
        }
    }

    /// What follows a recorded change: a session over gives its host's slot back, and waiters
    /// are told.
    fn changed(&self, s: &Session, event: &SessionEvent) {
        if s.status.is_terminal() {
            self.registry.release(&s.host_id, &s.session_id);
            // Time its game held the host: a pool's game that no player claimed counts too
            // (`GET /v1/usage` leaves it out: it ran for nobody).
            if let (Some(started), Some(ended)) = (s.started_at, s.ended_at) {
                let seconds = (ended - started).as_seconds_f64().max(0.0);
                self.metrics.ran(s.game_id.as_str(), seconds, s.gpus.len());
            }
        }
        tracing::debug!(session = %s.session_id, status = %s.status, ?event, "session changed");
        let _ = self.changes.send(s.session_id.clone());
        self.feed.wake();
    }

    /// Feeds the open event streams until `shutdown` fires.
    pub async fn run_feed(self: Arc<Self>, shutdown: CancellationToken) {
        let poll = match self.replicas {
            Some(_) => FEED_POLL_REPLICAS,
            None => FEED_POLL_ALONE,
        };
        self.feed.run(&self.store, poll, shutdown).await;
    }

    /// What is counted and timed.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The metrics' text, with the gauges of state read now.
    pub async fn metrics_text(&self) -> Result<String, Error> {
        let mut by: std::collections::BTreeMap<(String, String), u64> = Default::default();
        for s in self.store.active(None).await? {
            *by.entry((s.status.as_str().to_owned(), s.game_id.to_string()))
                .or_default() += 1;
        }
        let hosts = self
            .hosts()
            .await?
            .into_iter()
            .map(|h| {
                let status = match h.status {
                    api::HostStatus::Online => "online",
                    api::HostStatus::Draining => "draining",
                    api::HostStatus::Offline => "offline",
                };
                (
                    h.host_id.to_string(),
                    status.to_owned(),
                    u64::from(h.sessions),
                    u64::from(h.max_sessions),
                )
            })
            .collect();
        let now = OffsetDateTime::now_utc();
        let oldest = self
            .webhook_backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .flatten()
            .min()
            .map(|at| (now - *at).unsigned_abs());
        Ok(self.metrics.render(&crate::metrics::Snapshot {
            sessions: by.into_iter().map(|((st, g), n)| (st, g, n)).collect(),
            hosts,
            agent_links: self.registry.connected() as u64,
            webhook_oldest_undelivered: oldest,
        }))
    }

    /// Ends the open event streams (the broker stops; their clients reconnect elsewhere with
    /// their `Last-Event-ID`).
    pub fn close_streams(&self) {
        self.closing.cancel();
    }

    /// Whether the broker has begun to stop: its HTTP answers close their connections, and
    /// it takes no new start from another replica.
    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }

    /// One session.
    pub async fn get(&self, id: &SessionId) -> Result<Session, Error> {
        Ok(self.session(id).await?)
    }

    /// One session as `player` may see it (`None`: a caller with a key, or anyone on an open
    /// API): another user's session is as if it did not exist.
    pub async fn get_as(&self, id: &SessionId, player: Option<&str>) -> Result<Session, Error> {
        let s = self.get(id).await?;
        match player {
            Some(user) if s.user_id.as_deref() != Some(user) => Err(Error::NoSession(id.clone())),
            _ => Ok(s),
        }
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
            // A start through another replica changes the record without a word here.
            let until = match self.replicas {
                Some(_) => deadline.min(Instant::now() + REPLICA_POLL),
                None => deadline,
            };
            if Instant::now() >= deadline {
                return Ok(s);
            }
            match tokio::time::timeout_at(until, changes.recv()).await {
                Err(_) if until < deadline => {}
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

    /// Whether the broker can serve: its store answers, and NATS is connected when this
    /// broker is one of several.
    pub async fn ready(&self) -> Result<(), Error> {
        if self
            .replicas
            .as_ref()
            .is_some_and(|r| !r.nats.is_connected())
        {
            return Err(Error::NotReady(Dependency::Nats));
        }
        self.store.ping().await.map_err(|e| {
            tracing::warn!(error = %e, "not ready: the session store does not answer");
            Error::NotReady(Dependency::Store)
        })
    }

    /// The database node in use now (`host:port`), for a MySQL store: what `/readyz` names.
    pub fn database_node(&self) -> Option<String> {
        self.store.node().map(str::to_owned)
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
            let held = crate::agents::registry::Held {
                slots: s.slots,
                gpus: s.gpus.clone(),
            };
            self.registry.hold(&s.host_id, &s.session_id, held);
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
