//! Session limits: a session ends `expired` at its `max_duration_s`, with `session.expiring`
//! sent [`EXPIRY_WARNING_S`] before, and `idle` once nobody has been connected to its ports for
//! its game's `idle_timeout_s`.
//!
//! Expiry is the sweep's (one replica at a time), decided from the sessions it reads each
//! round, so it holds whichever replica placed the session and across restarts. Idleness is
//! seen by the agent in its host's TCP table and decided here by the host's owner, which
//! hears its heartbeats: both clocks run only while the session runs for its player (a
//! pool's game from its claim). A limit records the session `stopping` with its end reason
//! already set (by `sweep`, the broker's own timers), then has the game stopped; the agent's
//! answer ends it, as for any stop.
//!
//! [`EXPIRY_WARNING_S`]: protocol::api::EXPIRY_WARNING_S

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use protocol::api::{EventType, Session, SessionStatus, EXPIRY_WARNING_S};
use protocol::{HostId, SessionId};
use time::OffsetDateTime;
use tokio::time::Instant;

use super::Service;
use crate::session::{Actor, SessionEvent};
use crate::store::Lease;

/// An idle session is looked up in the store at most this often: its agent says it is idle
/// at every heartbeat while it lasts.
const IDLE_RECHECK: Duration = Duration::from_secs(2);
/// Idle sessions looked into at once, at most.
pub(super) const MAX_IDLE_LOOKUPS: usize = 16;
/// A pool's ready game found idle is looked up again only after this: it is idle until
/// claimed, and its agent does not know when that happens. So a claimed game with an idle
/// timeout may end up to this much later than its timeout.
const READY_RECHECK: Duration = Duration::from_secs(10);

/// What a session's `max_duration_s` asks for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// Within a minute of its end: `session.expiring`, once.
    Warn,
    /// At or past its end: stop it, `expired`.
    Expire,
}

/// What `s`'s limit asks for at `now`, if anything: only a running session expires.
pub(super) fn due(s: &Session, now: OffsetDateTime) -> Option<Due> {
    if s.status != SessionStatus::Running {
        return None;
    }
    let at = s.expires_at?;
    if now >= at {
        Some(Due::Expire)
    } else if now >= at - time::Duration::seconds(i64::from(EXPIRY_WARNING_S)) {
        Some(Due::Warn)
    } else {
        None
    }
}

/// Whether a session seen idle for `idle` has outlasted `timeout` while running for its
/// player: the agent counts from the game's launch or last connection, which for a pool's
/// game may be long before its claim (`started_at`).
pub(super) fn idled_out(
    s: &Session,
    idle: Duration,
    timeout: Duration,
    now: OffsetDateTime,
) -> bool {
    let Some(started) = s.started_at else {
        return false;
    };
    let running_for = Duration::try_from(now - started).unwrap_or_default();
    s.status == SessionStatus::Running && idle.min(running_for) >= timeout
}

/// When each idle session may be looked up again, so a long idleness costs one read per
/// [`IDLE_RECHECK`] (a ready game's, per [`READY_RECHECK`]), not one per heartbeat.
#[derive(Debug, Default)]
pub(super) struct IdleChecks(Mutex<Checks>);

#[derive(Debug, Default)]
struct Checks {
    /// When each session may be looked up again.
    next: HashMap<SessionId, Instant>,
    /// How many entries were left at the last pruning.
    pruned_at: usize,
}

/// The map is pruned only once it holds more than this many entries (and twice as many as
/// the last pruning left).
const PRUNE_FLOOR: usize = 64;

impl IdleChecks {
    /// Whether `id` may be looked up at `now` (and, if so, not again for [`IDLE_RECHECK`]).
    /// Entries past their time are forgotten when the map has grown past the sessions it
    /// held at the last pruning, so each heartbeat costs a lookup, not a scan.
    fn due(&self, id: &SessionId, now: Instant) -> bool {
        let mut checks = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if checks.next.get(id).is_some_and(|at| now < *at) {
            return false;
        }
        checks.next.insert(id.clone(), now + IDLE_RECHECK);
        if checks.next.len() > checks.pruned_at.max(PRUNE_FLOOR) * 2 {
            checks.next.retain(|_, at| now < *at);
            checks.pruned_at = checks.next.len();
        }
        true
    }

    /// `id` was found waiting in a pool at `now`: not again for [`READY_RECHECK`].
    fn waiting(&self, id: &SessionId, now: Instant) {
        let mut checks = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        checks.next.insert(id.clone(), now + READY_RECHECK);
    }
}

impl Service {
    /// Warns the running sessions of `active` near their end, and ends those past it: each
    /// is warned before it ends, even one whose whole minute of warning a round missed (a
    /// limit shorter than a round, a lease handover, a store outage).
    pub(super) async fn expire_due(
        &self,
        active: &[Session],
        now: OffsetDateTime,
        lease: Option<&Lease>,
    ) {
        for s in active {
            let Some(due) = due(s, now) else {
                continue;
            };
            match self
                .store
                .notice_once(EventType::SessionExpiring, s, Actor::Sweep, now)
                .await
            {
                Ok(true) => self.feed.wake(),
                Ok(false) => {}
                Err(e) => {
                    // Not ended unwarned: the next round tries again.
                    tracing::warn!(session = %s.session_id, error = %e, "cannot send session.expiring");
                    continue;
                }
            }
            if due == Due::Expire {
                tracing::info!(session = %s.session_id, host = %s.host_id, "session reached its max_duration_s; ending it");
                self.end_for_limit(s, SessionEvent::Expired, lease).await;
            }
        }
    }

    /// `host`'s agent sees nobody connected to session `id`'s ports for `idle`: looks into it
    /// at most every [`IDLE_RECHECK`], in a task of its own (at most [`MAX_IDLE_LOOKUPS`] at
    /// once: the agents' other news waits behind none of them, and a report with no room is
    /// dropped, since the agent says it again at its next heartbeat).
    pub(super) fn idle_seen(self: &Arc<Self>, host: HostId, id: SessionId, idle: Duration) {
        if !self.idle_checks.due(&id, Instant::now()) {
            return;
        }
        let Ok(permit) = Arc::clone(&self.idle_lookups).try_acquire_owned() else {
            return;
        };
        let me = Arc::clone(self);
        self.tasks.spawn_on(
            async move {
                me.end_if_idle(&host, &id, idle).await;
                drop(permit);
            },
            &self.runtime,
        );
    }

    /// Ends session `id` if it runs for its player and has outlasted its game's
    /// `idle_timeout_s`, idle for `idle` as its agent says.
    async fn end_if_idle(&self, host: &HostId, id: &SessionId, idle: Duration) {
        let s = match self.store.get(id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(session = %id, error = %e, "idle session not read");
                return;
            }
        };
        if s.status == SessionStatus::Ready {
            self.idle_checks.waiting(id, Instant::now());
            return;
        }
        let timeout = self
            .registry
            .offer(host, &s.game_id)
            .and_then(|o| o.idle_timeout_s)
            .map(|t| Duration::from_secs(u64::from(t)));
        let Some(timeout) = timeout else {
            return;
        };
        if idled_out(&s, idle, timeout, OffsetDateTime::now_utc()) {
            tracing::info!(session = %id, %host, ?idle, "nobody connected for idle_timeout_s; ending it");
            self.end_for_limit(&s, SessionEvent::IdledOut, None).await;
        }
    }

    /// Records `s` stopping because of a limit (`event`), and has its game stopped; the
    /// agent's answer ends it. A session that changed meanwhile (ended, already stopping) is
    /// left as it is. The sweep's ends carry its `lease`.
    async fn end_for_limit(&self, s: &Session, event: SessionEvent, lease: Option<&Lease>) {
        let id = &s.session_id;
        match self
            .record_swept(id, event, Actor::Sweep, None, lease)
            .await
        {
            Ok(_) => self.stop_routed(&s.host_id, &s.session_id).await,
            Err(e) => {
                tracing::debug!(session = %s.session_id, error = %e, "limit not applied")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::GameId;

    fn running(started_s: i64, max: Option<u32>) -> Session {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let mut s = crate::session::new_session(
            SessionId::new("s").unwrap(),
            GameId::new("g").unwrap(),
            "default".into(),
            None,
            HostId::new("h").unwrap(),
            t0,
        );
        s.status = SessionStatus::Running;
        s.started_at = Some(t0 + time::Duration::seconds(started_s));
        s.max_duration_s = max;
        s.expires_at = crate::session::expires_at(&s);
        s
    }

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(secs)
    }

    #[test]
    fn a_limit_warns_a_minute_before_and_expires_at_its_end() {
        let s = running(10, Some(7200));
        for (now, want) in [
            (10, None),
            (7149, None),
            (7150, Some(Due::Warn)),
            (7209, Some(Due::Warn)),
            (7210, Some(Due::Expire)),
            (9999, Some(Due::Expire)),
        ] {
            assert_eq!(due(&s, at(now)), want, "at {now}");
        }
        // A limit shorter than the warning warns at once.
        assert_eq!(due(&running(0, Some(30)), at(0)), Some(Due::Warn));
        assert_eq!(due(&running(0, None), at(99_999)), None);
        let mut stopping = s.clone();
        stopping.status = SessionStatus::Stopping;
        assert_eq!(due(&stopping, at(9999)), None, "already ending");
    }

    #[test]
    fn an_idle_session_is_looked_up_once_per_recheck_and_a_waiting_one_less_often() {
        let checks = IdleChecks::default();
        let (a, b) = (SessionId::new("a").unwrap(), SessionId::new("b").unwrap());
        let t0 = Instant::now();
        assert!(checks.due(&a, t0));
        assert!(
            !checks.due(&a, t0 + Duration::from_secs(1)),
            "the next heartbeat"
        );
        assert!(checks.due(&b, t0));
        checks.waiting(&b, t0);
        assert!(checks.due(&a, t0 + IDLE_RECHECK));
        assert!(
            !checks.due(&b, t0 + IDLE_RECHECK),
            "a ready game waits longer"
        );
        assert!(checks.due(&b, t0 + READY_RECHECK));
    }

    #[test]
    fn idleness_counts_only_while_the_session_runs_for_its_player() {
        let timeout = Duration::from_secs(300);
        let s = running(1000, None);
        // Idle since long before its claim at 1000: only the time since counts.
        assert!(!idled_out(&s, Duration::from_secs(5000), timeout, at(1299)));
        assert!(idled_out(&s, Duration::from_secs(5000), timeout, at(1300)));
        assert!(!idled_out(&s, Duration::from_secs(299), timeout, at(5000)));
        assert!(idled_out(&s, Duration::from_secs(300), timeout, at(5000)));
        let mut ready = s.clone();
        ready.status = SessionStatus::Ready;
        assert!(!idled_out(
            &ready,
            Duration::from_secs(5000),
            timeout,
            at(9000)
        ));
    }
}
