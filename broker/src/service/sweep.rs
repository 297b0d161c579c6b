//! The periodic sweep: settles what a crash, a cut link or a lost host left behind.
//!
//! - a host away longer than the heartbeat timeout loses its sessions (`lost`);
//! - a start left `starting` past the launch timeout with no start in flight (a broker crash)
//!   fails, and whatever its host launched is stopped;
//! - an end left `stopping` with no end in flight (an agent that disconnected mid-stop, a
//!   timed-out end) is asked of its host again, at most every [`STOP_NUDGE_EVERY`];
//! - a session at its `max_duration_s` ends `expired` ([`super::limits`]);
//! - every round, on every replica and before the lease, the hosts held here whose life
//!   moved on are announced: `host.idle`, `host.drained` ([`Service::announce_host_moments`]).
//!
//! With replicas, one replica at a time sweeps: the holder of the store's `sweep` lease, which
//! it renews at every round and another takes over once it has expired (its holder died or
//! stopped). Every change the sweep writes checks, in its transaction, that the lease is still
//! held, unexpired, at the epoch of this round's renewal: a sweeper that stalled past its lease
//! (its process paused, its queries queued behind a database stall) writes nothing once the
//! store answers it again, so two replicas never sweep at once. A host is lost when no live replica holds its agent; losing it is fenced by the
//! epoch found, so a host whose agent connects meanwhile keeps its sessions. And only on
//! evidence: the sweeper judges host loss only once the store has answered it promptly for a
//! whole heartbeat timeout ([`Steady`]), so the staleness a database stall leaves on every
//! replica's beats (theirs stalled too) is never taken for their death.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use protocol::api::{Session, SessionStatus};
use protocol::{HostId, SessionId};
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Service;
use crate::session::{Actor, SessionEvent};
use crate::store::{Fence, Lease, StoreError};

/// How often the sweep asks a host again to stop a game whose end was cut short.
const STOP_NUDGE_EVERY: Duration = Duration::from_secs(10);
/// How long past the launch timeout a `starting` record is left before it is failed. More
/// than a routed launch's own grace (`route::CALL_GRACE`, 2 s): a start through another
/// replica may begin its launch that much later than its record.
const STALE_GRACE: Duration = Duration::from_secs(8);
/// Events are kept at least this long (API.md: at least 24 hours; webhooks give up at 25).
const STREAM_RETENTION: time::Duration = time::Duration::hours(48);
/// Events forgotten per round, at most, so one round stays short.
const TRIM_PER_ROUND: u32 = 10_000;
/// The name of the sweep's lease among replicas.
const SWEEP_LEASE: &str = "sweep";

/// Whether a `starting` record was left behind by a start that will never settle it.
fn stale_start(
    s: &Session,
    now: OffsetDateTime,
    launch_deadline: Duration,
    launching: bool,
) -> bool {
    s.status == SessionStatus::Starting
        && now - s.created_at > launch_deadline + STALE_GRACE
        && !launching
}

/// This broker's turn at a duty one replica does at a time.
#[derive(Debug)]
enum Turn {
    /// Alone: every duty is this broker's, with no lease to check.
    Alone,
    /// Among replicas: its hold on the duty's lease, which fences the duty's writes.
    Held(Lease),
}

impl Turn {
    fn lease(&self) -> Option<&Lease> {
        match self {
            Self::Alone => None,
            Self::Held(l) => Some(l),
        }
    }
}

/// How long the store has answered this replica's sweep promptly, without a failure or a
/// slow answer between: the sweep judges host loss only after a whole heartbeat timeout of
/// it.
#[derive(Debug, Default)]
struct Steady {
    since: Option<Instant>,
}

impl Steady {
    /// Notes a round's call to the store at `now`: answered, and within `prompt`, or not.
    fn note(&mut self, answered: bool, took: Duration, prompt: Duration, now: Instant) {
        if !answered || took > prompt {
            self.since = None;
        } else if self.since.is_none() {
            self.since = Some(now);
        }
    }

    /// Whether it has been steady for at least `d` at `now`.
    fn for_at_least(&self, d: Duration, now: Instant) -> bool {
        self.since
            .is_some_and(|s| now.saturating_duration_since(s) >= d)
    }
}

impl Service {
    /// Every so often, settles stale starts and ends and the sessions of lost hosts, until
    /// `shutdown` fires.
    pub async fn run_sweeper(self: Arc<Self>, shutdown: CancellationToken) {
        let every = (self.settings.heartbeat_timeout / 4).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut nudged = HashMap::new();
        let mut steady = Steady::default();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // Every replica, of its own hosts.
            self.announce_host_moments().await;
            let t0 = Instant::now();
            let turn = self.turn(SWEEP_LEASE, every * 4).await;
            steady.note(turn.is_ok(), t0.elapsed(), every, Instant::now());
            let Ok(Some(turn)) = turn else {
                continue;
            };
            let lease = turn.lease();
            let Ok(active) = self.store.active(None).await else {
                continue;
            };
            self.settle_stale(&active, &mut nudged, lease).await;
            self.expire_due(&active, OffsetDateTime::now_utc(), lease)
                .await;
            let timeout = self.settings.heartbeat_timeout;
            if self.replicas.is_none() || steady.for_at_least(timeout, Instant::now()) {
                self.lose_lost_hosts(lease).await;
            }
            self.trim_stream().await;
            self.drive_rollouts().await;
        }
    }

    /// Forgets the stream's events older than [`STREAM_RETENTION`].
    async fn trim_stream(&self) {
        let before = OffsetDateTime::now_utc() - STREAM_RETENTION;
        match self.store.trim_stream(before, TRIM_PER_ROUND).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "forgot events older than the retention"),
            Err(e) => tracing::warn!(error = %e, "sweep: cannot trim the event stream"),
        }
    }

    /// Whether this broker does the duty `name` now: always alone; with replicas, while it
    /// holds its lease (taken or renewed now, for `ttl`).
    pub(super) async fn holds_lease(&self, name: &str, ttl: Duration) -> bool {
        matches!(self.turn(name, ttl).await, Ok(Some(_)))
    }

    /// This broker's turn at the duty `name`, if it is: [`Turn::Alone`] alone; with
    /// replicas, its hold on the lease (taken or renewed now, for `ttl`), and `None` while
    /// another replica holds it; an error when the store did not answer.
    async fn turn(&self, name: &str, ttl: Duration) -> Result<Option<Turn>, StoreError> {
        if self.replicas.is_none() {
            return Ok(Some(Turn::Alone));
        }
        self.store
            .lease(name, &self.settings.broker_id, ttl)
            .await
            .map(|held| held.map(Turn::Held))
            .inspect_err(|e| tracing::warn!(lease = name, error = %e, "cannot renew a lease"))
    }

    /// Settles sessions whose start or end was cut short.
    async fn settle_stale(
        &self,
        active: &[Session],
        nudged: &mut HashMap<SessionId, Instant>,
        lease: Option<&Lease>,
    ) {
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
            tracing::info!(session = %s.session_id, host = %s.host_id, "finishing a cut-short end");
            self.stop_routed(&s.host_id, &s.session_id).await;
            nudged.insert(s.session_id.clone(), Instant::now());
        }
        let now = OffsetDateTime::now_utc();
        for s in active {
            let launching = self.inflight.is_launching(&s.session_id);
            // No launch is shorter than the launch timeout: only those past it need their
            // game's own deadline, which for another replica's host is read from the store.
            if !stale_start(s, now, self.settings.launch_timeout, launching)
                || !stale_start(
                    s,
                    now,
                    self.launch_deadline_anywhere(&s.host_id, &s.game_id).await,
                    launching,
                )
            {
                continue;
            }
            tracing::warn!(session = %s.session_id, host = %s.host_id, "start never settled; failing it");
            let (event, actor) = (SessionEvent::LaunchTimedOut, Actor::Sweep);
            if self
                .record_swept(&s.session_id, event, actor, None, lease)
                .await
                .is_ok()
            {
                self.stop_routed(&s.host_id, &s.session_id).await;
            }
        }
    }

    /// Ends the sessions of hosts away longer than the heartbeat timeout.
    async fn lose_lost_hosts(&self, lease: Option<&Lease>) {
        let timeout = self.settings.heartbeat_timeout;
        let lost: Vec<(HostId, Option<Fence>)> = match &self.replicas {
            None => self
                .registry
                .lost_hosts(timeout)
                .into_iter()
                .map(|h| (h, None))
                .collect(),
            Some(_) => match self.store.lost_hosts(timeout).await {
                Ok(l) => l.into_iter().map(|f| (f.host.clone(), Some(f))).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "sweep: cannot read the hosts");
                    return;
                }
            },
        };
        for (host, fence) in lost {
            let sessions = match self.store.active(Some(&host)).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%host, error = %e, "sweep: cannot read sessions");
                    continue;
                }
            };
            tracing::warn!(%host, sessions = sessions.len(), "host lost; its sessions are lost");
            for s in sessions {
                let (event, actor) = (SessionEvent::HostLost, Actor::HostLost);
                let lost = self
                    .record_swept(&s.session_id, event, actor, fence.as_ref(), lease)
                    .await;
                match lost {
                    Ok(_) => {}
                    Err(e @ StoreError::LeaseLost(_)) => {
                        tracing::warn!(%host, error = %e, "sweep: another replica sweeps now");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(session = %s.session_id, error = %e, "sweep: not applied")
                    }
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
    fn host_loss_is_judged_only_after_a_whole_timeout_of_prompt_answers() {
        let (prompt, timeout) = (Duration::from_millis(100), Duration::from_secs(5));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let fast = Duration::from_millis(5);
        let mut steady = Steady::default();
        assert!(!steady.for_at_least(timeout, at(0)), "nothing seen yet");
        steady.note(true, fast, prompt, at(0));
        assert!(!steady.for_at_least(timeout, at(4)));
        assert!(steady.for_at_least(timeout, at(5)));
        // A stall: a call that took 6 s; the count starts again after it.
        steady.note(true, Duration::from_secs(6), prompt, at(11));
        assert!(!steady.for_at_least(timeout, at(11)));
        steady.note(true, fast, prompt, at(12));
        assert!(!steady.for_at_least(timeout, at(16)));
        assert!(steady.for_at_least(timeout, at(17)));
        // A failed call does the same.
        steady.note(false, fast, prompt, at(18));
        steady.note(true, fast, prompt, at(19));
        assert!(!steady.for_at_least(timeout, at(23)));
        assert!(steady.for_at_least(timeout, at(24)));
    }

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
