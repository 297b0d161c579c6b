//! Starts and ends in flight: what the service knows before (or besides) the store.
//!
//! A start is in flight from its placement until its outcome is recorded. Meanwhile it can be
//! read and ended by id (its session as created answers until its record exists), an exit its
//! agent reports is held for it (a game that dies at once is never lost), and a host's
//! reconcile leaves it alone. An end is in flight while a request waits for its agent; the
//! sweep leaves it alone. Both tables are behind `std` mutexes held for a map operation only.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use protocol::api::Session;
use protocol::wire::ExitStatus;
use protocol::SessionId;

/// A start in flight.
#[derive(Debug)]
struct Launching {
    /// As created: what the session is, to readers, until its record exists.
    session: Session,
    /// An exit that arrived before the outcome was recorded.
    exit: Option<ExitStatus>,
}

/// The starts and ends in flight.
#[derive(Debug, Default)]
pub struct InFlight {
    launching: Mutex<HashMap<SessionId, Launching>>,
    ending: Mutex<HashSet<SessionId>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl InFlight {
    /// A start begins: its session, as created, is readable until [`InFlight::launch_done`],
    /// or until the guard is dropped (a start cut short by a panic is not in flight forever).
    pub fn launch_begins(&self, session: Session) -> LaunchGuard<'_> {
        let id = session.session_id.clone();
        lock(&self.launching).insert(
            id.clone(),
            Launching {
                session,
                exit: None,
            },
        );
        LaunchGuard { inflight: self, id }
    }

    /// Holds an exit for a start in flight; `false` if the session has none in flight (the
    /// exit is then for the caller to record).
    pub fn hold_exit(&self, id: &SessionId, status: ExitStatus) -> bool {
        match lock(&self.launching).get_mut(id) {
            Some(l) => {
                l.exit = Some(status);
                true
            }
            None => false,
        }
    }

    /// Whether a start of this session is in flight.
    pub fn is_launching(&self, id: &SessionId) -> bool {
        lock(&self.launching).contains_key(id)
    }

    /// The session of a start in flight, as created.
    pub fn launching(&self, id: &SessionId) -> Option<Session> {
        lock(&self.launching).get(id).map(|l| l.session.clone())
    }

    /// A start is over; the exit held for it, if any, is for the caller to record.
    pub fn launch_done(&self, id: &SessionId) -> Option<ExitStatus> {
        lock(&self.launching).remove(id).and_then(|l| l.exit)
    }

    /// An end begins; it is in flight until the guard is dropped.
    pub fn end_begins(&self, id: SessionId) -> EndGuard<'_> {
        lock(&self.ending).insert(id.clone());
        EndGuard { inflight: self, id }
    }

    /// Whether an end of this session is in flight.
    pub fn is_ending(&self, id: &SessionId) -> bool {
        lock(&self.ending).contains(id)
    }
}

/// Ends a start's time in flight when dropped, if [`InFlight::launch_done`] has not.
#[derive(Debug)]
pub struct LaunchGuard<'a> {
    inflight: &'a InFlight,
    id: SessionId,
}

impl Drop for LaunchGuard<'_> {
    fn drop(&mut self) {
        lock(&self.inflight.launching).remove(&self.id);
    }
}

/// Marks an end in flight for as long as it lives.
#[derive(Debug)]
pub struct EndGuard<'a> {
    inflight: &'a InFlight,
    id: SessionId,
}

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        lock(&self.inflight.ending).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{GameId, HostId};
    use time::OffsetDateTime;

    fn session(id: &str) -> Session {
        crate::session::new_session(
            SessionId::new(id).unwrap(),
            GameId::new("g").unwrap(),
            "default".into(),
            None,
            HostId::new("h").unwrap(),
            OffsetDateTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn an_exit_during_a_start_is_held_for_it() {
        let f = InFlight::default();
        let s = session("a");
        let id = s.session_id.clone();
        assert!(!f.hold_exit(&id, ExitStatus::Code(3)), "no start in flight");
        let _guard = f.launch_begins(s.clone());
        assert_eq!(f.launching(&id), Some(s));
        assert!(f.hold_exit(&id, ExitStatus::Code(3)));
        assert_eq!(f.launch_done(&id), Some(ExitStatus::Code(3)));
        assert!(!f.is_launching(&id));
        assert_eq!(f.launch_done(&id), None);
    }

    #[test]
    fn a_start_cut_short_is_no_longer_in_flight() {
        let f = InFlight::default();
        let s = session("c");
        let id = s.session_id.clone();
        drop(f.launch_begins(s));
        assert!(!f.is_launching(&id));
    }

    #[test]
    fn an_end_is_in_flight_while_its_guard_lives() {
        let f = InFlight::default();
        let id = SessionId::new("b").unwrap();
        {
            let _g = f.end_begins(id.clone());
            assert!(f.is_ending(&id));
        }
        assert!(!f.is_ending(&id));
    }
}
