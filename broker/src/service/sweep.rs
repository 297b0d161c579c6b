//! The periodic sweep: settles what a crash, a cut link or a lost host left behind.
//!
//! - a host away longer than the heartbeat timeout loses its sessions (`lost`);
//! - a start left `starting` past the launch timeout with no start in flight (a broker crash)
//!   fails, and whatever its host launched is stopped;
//! - an end left `stopping` with no end in flight (an agent that disconnected mid-stop, a
//!   timed-out end) is asked of its host again, at most every [`STOP_NUDGE_EVERY`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use protocol::api::{Session, SessionStatus};
use protocol::SessionId;
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Service;
use crate::session::{Actor, SessionEvent};

/// How often the sweep asks a host again to stop a game whose end was cut short.
const STOP_NUDGE_EVERY: Duration = Duration::from_secs(10);
/// How long past the launch timeout a `starting` record is left before it is failed.
const STALE_GRACE: Duration = Duration::from_secs(5);

/// Whether a `starting` record was left behind by a start that will never settle it.
fn stale_start(
    s: &Session,
    now: OffsetDateTime,
    launch_timeout: Duration,
    launching: bool,
) -> bool {
    s.status == SessionStatus::Starting
        && now - s.created_at > launch_timeout + STALE_GRACE
        && !launching
}

impl Service {
    /// Every so often, settles stale starts and ends and the sessions of lost hosts, until
    /// `shutdown` fires.
    pub async fn run_sweeper(self: Arc<Self>, shutdown: CancellationToken) {
        let every = (self.settings.heartbeat_timeout / 4).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut nudged = HashMap::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.settle_stale(&mut nudged).await;
            self.lose_lost_hosts().await;
        }
    }

    /// Settles sessions whose start or end was cut short.
    async fn settle_stale(&self, nudged: &mut HashMap<SessionId, Instant>) {
        let Ok(active) = self.store.active(None).await else {
            return;
        };
        nudged.retain(|id, _| active.iter().any(|s| &s.session_id == id));
        for s in active
            .iter()
            .filter(|s| s.status == SessionStatus::Stopping)
        {
            let recently = nudged
                .get(&s.session_id)
                .is_some_and(|at| at.elapsed() < STOP_NUDGE_EVERY);
            if recently || self.inflight.is_ending(&s.session_id) {
                continue;
            }
            if let Some(link) = self.registry.link(&s.host_id) {
                tracing::info!(session = %s.session_id, host = %s.host_id, "finishing a cut-short end");
                link.stop_nowait(s.session_id.clone());
                nudged.insert(s.session_id.clone(), Instant::now());
            }
        }
        let now = OffsetDateTime::now_utc();
        for s in active {
            let launching = self.inflight.is_launching(&s.session_id);
            if !stale_start(&s, now, self.settings.launch_timeout, launching) {
                continue;
            }
            tracing::warn!(session = %s.session_id, host = %s.host_id, "start never settled; failing it");
            if self
                .record(&s.session_id, SessionEvent::LaunchTimedOut, Actor::Sweep)
                .await
                .is_ok()
            {
                if let Some(link) = self.registry.link(&s.host_id) {
                    link.stop_nowait(s.session_id.clone());
                }
            }
        }
    }

    /// Ends the sessions of hosts away longer than the heartbeat timeout.
    async fn lose_lost_hosts(&self) {
        for host in self.registry.lost_hosts(self.settings.heartbeat_timeout) {
            let sessions = match self.store.active(Some(&host)).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%host, error = %e, "sweep: cannot read sessions");
                    continue;
                }
            };
            tracing::warn!(%host, sessions = sessions.len(), "host lost; its sessions are lost");
            for s in sessions {
                if let Err(e) = self
                    .record(&s.session_id, SessionEvent::HostLost, Actor::HostLost)
                    .await
                {
                    tracing::debug!(session = %s.session_id, error = %e, "sweep: not applied");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{GameId, HostId};

    #[test]
    fn a_start_is_stale_only_past_its_timeout_and_when_nobody_runs_it() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let mut s = crate::session::new_session(
            SessionId::new("s").unwrap(),
            GameId::new("g").unwrap(),
            "default".into(),
            None,
            HostId::new("h").unwrap(),
            t0,
        );
        let timeout = Duration::from_secs(10);
        let late = t0 + timeout + STALE_GRACE + Duration::from_secs(1);
        assert!(stale_start(&s, late, timeout, false));
        assert!(
            !stale_start(&s, late, timeout, true),
            "its start is in flight"
        );
        assert!(!stale_start(&s, t0 + timeout, timeout, false), "not yet");
        s.status = SessionStatus::Running;
        assert!(!stale_start(&s, late, timeout, false));
    }
}
