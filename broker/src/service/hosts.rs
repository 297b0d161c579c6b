//! Hosts, games and brokers: as this broker holds them, or, with replicas, as the store
//! shares them (every replica answers the same), and draining. Also the replicas' beat: each
//! says it is alive every few seconds, which is how the others tell a dead owner, and shares
//! the load of the hosts it holds.

use std::sync::Arc;
use std::time::Duration;

use protocol::api::{self, EventType, HostStatus};
use protocol::HostId;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::view::{alive_within, view};
use super::Service;
use crate::agents::registry::{games_on_offer, HostMoment};
use crate::error::Error;
use crate::placement::HostView;
use crate::session::Actor;
use crate::store::{Fence, HostLoad, SharedHost};

/// How long a drain waits for the host's replica to hear of it.
const TELL_DRAIN_WITHIN: Duration = Duration::from_secs(2);
/// A replica silent this long drops from `GET /v1/brokers`.
const BROKERS_LISTED_WITHIN: Duration = Duration::from_secs(300);

impl Service {
    /// The hosts the replicas share, when this broker is one of several.
    async fn shared(&self) -> Result<Option<Vec<SharedHost>>, Error> {
        match &self.replicas {
            None => Ok(None),
            Some(_) => Ok(Some(
                self.store
                    .shared_hosts(alive_within(self.settings.heartbeat_timeout))
                    .await?,
            )),
        }
    }

    /// A shared host as the API shows it; its load as its owner last heard, when that is
    /// this broker.
    fn shared_to_api(&self, h: &SharedHost, v: &HostView) -> api::Host {
        let facts = h.record.facts.as_ref();
        // Fresher here, where its heartbeats arrive.
        let (cpu_percent, mem_used_bytes) = self.registry.load(&v.host_id).unwrap_or(h.load);
        api::Host {
            host_id: v.host_id.clone(),
            ip: facts.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |f| f.ip),
            status: v.status,
            max_sessions: v.max_sessions,
            sessions: h.sessions,
            cpu_percent,
            mem_used_bytes,
            mem_total_bytes: facts.map_or(0, |f| f.mem_total_bytes),
            games: v.games.iter().map(|g| g.game_id.clone()).collect(),
            last_seen: h.record.last_seen,
            broker_id: if v.status == HostStatus::Offline {
                None
            } else {
                h.owner.clone()
            },
            labels: (*v.labels).clone(),
            gpus: facts.map(|f| f.gpus.clone()).unwrap_or_default(),
            gpus_used: h.gpus_used,
            slots_used: h.slots_used,
        }
    }

    /// Every host, with the broker its agent is connected to.
    pub async fn hosts(&self) -> Result<Vec<api::Host>, Error> {
        if let Some(shared) = self.shared().await? {
            return Ok(shared
                .iter()
                .map(|h| self.shared_to_api(h, &view(h)))
                .collect());
        }
        let mut hosts = self.registry.hosts();
        for h in &mut hosts {
            if h.status != HostStatus::Offline {
                h.broker_id = Some(self.settings.broker_id.clone());
            }
        }
        Ok(hosts)
    }

    /// The games on offer.
    pub async fn games(&self) -> Result<Vec<api::Game>, Error> {
        let offered = match self.shared().await? {
            Some(shared) => games_on_offer(&shared.iter().map(view).collect::<Vec<_>>()),
            None => self.registry.games(),
        };
        self.with_central_games(offered).await
    }

    /// The brokers of the system: this one, or every replica seen lately.
    pub async fn brokers(&self) -> Result<Vec<api::Broker>, Error> {
        if self.replicas.is_none() {
            let connected = self.registry.connected();
            return Ok(vec![api::Broker {
                broker_id: self.settings.broker_id.clone(),
                address: self.settings.agent_address.clone(),
                last_seen: OffsetDateTime::now_utc(),
                hosts: u32::try_from(connected).unwrap_or(u32::MAX),
            }]);
        }
        Ok(self
            .store
            .brokers(BROKERS_LISTED_WITHIN)
            .await?
            .into_iter()
            .map(|b| api::Broker {
                broker_id: b.broker_id,
                address: b.address,
                last_seen: b.last_seen,
                hosts: b.hosts,
            })
            .collect())
    }

    /// Drains or resumes a host; the flag is recorded, so it survives restarts (and with
    /// replicas, every replica's placement reads it).
    pub async fn set_draining(
        &self,
        host: &HostId,
        draining: bool,
        actor: Actor,
    ) -> Result<api::Host, Error> {
        let h = self.drain_or_resume(host, draining).await?;
        let kind = if draining {
            EventType::HostDraining
        } else {
            EventType::HostResumed
        };
        self.host_event(host, kind, actor).await;
        Ok(h)
    }

    async fn drain_or_resume(&self, host: &HostId, draining: bool) -> Result<api::Host, Error> {
        let known = match self.shared().await? {
            Some(shared) => shared.iter().any(|h| &h.record.host_id == host),
            None => self.registry.knows(host),
        };
        if !known {
            return Err(Error::NoHost(host.clone()));
        }
        self.store
            .set_drained(host, draining, OffsetDateTime::now_utc())
            .await?;
        let local = self.registry.set_draining(host, draining);
        self.tell_owner_drained(host, draining).await;
        if let Some(shared) = self.shared().await? {
            if let Some(h) = shared.iter().find(|h| &h.record.host_id == host) {
                return Ok(self.shared_to_api(h, &view(h)));
            }
        }
        local.ok_or_else(|| Error::NoHost(host.clone()))
    }

    /// With replicas, tells the replica holding `host`'s agent that the host was drained or
    /// resumed, so its placement knows before this call answers. An owner that cannot be
    /// told learns it from the store at its next beat.
    async fn tell_owner_drained(&self, host: &HostId, draining: bool) {
        if self.replicas.is_none() {
            return;
        }
        let Ok(super::route::Route::Replica { owner, .. }) = self.route(host, true).await else {
            return; // Here (done above), or nowhere: a new owner reads it when it takes the host.
        };
        let call = super::remote::Call::Drain {
            host_id: host.clone(),
            draining,
        };
        if let Err(e) = self.call::<()>(&owner, &call, TELL_DRAIN_WITHIN).await {
            tracing::warn!(%host, %owner, error = ?e, "cannot tell the host's replica of its drain; it reads it at its next beat");
        }
    }

    /// Announces what happened in the lives of the hosts held here: `host.drained` when a
    /// draining host's last session has ended, `host.idle` when an online host has had no
    /// session for `--host-idle-after` (again after each busy period). What an autoscaler
    /// needs to power hosts down. Each host's owner says it, once; one that cannot be
    /// recorded now is said at the next call.
    pub(super) async fn announce_host_moments(&self) {
        for (moment, mut host) in self.registry.moments(self.settings.host_idle_after) {
            host.broker_id = Some(self.settings.broker_id.clone());
            let kind = match moment {
                HostMoment::Idle => EventType::HostIdle,
                HostMoment::Drained => EventType::HostDrained,
            };
            let at = OffsetDateTime::now_utc();
            match self
                .store
                .append_host_event(kind, &host, Actor::Sweep, at)
                .await
            {
                Ok(()) => self.feed.wake(),
                Err(e) => {
                    tracing::warn!(host = %host.host_id, error = %e, "cannot record {kind}; trying again");
                    self.registry.unsay(&host.host_id, moment);
                }
            }
        }
    }

    /// Sets the drained flag of every host held here as the store has it (a drain through
    /// another replica whose word did not arrive).
    async fn sync_drained(&self) {
        match self.store.drained_hosts().await {
            Ok(drained) => {
                for (host, ..) in self.registry.held() {
                    self.registry.set_draining(&host, drained.contains(&host));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read which hosts are drained"),
        }
    }

    /// With replicas, says this broker is alive every `every` until `shutdown` fires, then
    /// says it left (so its hosts count as offline at once, and its lease is free).
    pub async fn run_beats(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        if self.replicas.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(e) = self
                .store
                .beat(&self.settings.broker_id, &self.settings.agent_address)
                .await
            {
                tracing::warn!(error = %e, "cannot tell the other replicas this one is alive");
            }
            let loads: Vec<HostLoad> = self
                .registry
                .held()
                .into_iter()
                .map(|(host, epoch, cpu_percent, mem_used_bytes)| HostLoad {
                    fence: Fence { host, epoch },
                    cpu_percent,
                    mem_used_bytes,
                })
                .collect();
            if let Err(e) = self.store.write_loads(&loads).await {
                tracing::warn!(error = %e, "cannot share the hosts' load");
            }
            self.sync_drained().await;
        }
        if let Err(e) = self.store.leave(&self.settings.broker_id).await {
            tracing::warn!(error = %e, "cannot tell the other replicas this one left");
        }
    }
}
