//! Session records and their lifecycle. [`apply`] is the one place where a session's state
//! changes; every store calls it, so the rules of API.md's "Session states" hold whatever the
//! storage.

use std::net::IpAddr;

use protocol::api::{EndReason, Session, SessionStatus};
use protocol::wire::ExitStatus;
use protocol::{GameId, HostId, SessionId};
use time::OffsetDateTime;

/// Something that happened to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The agent started the game.
    Launched {
        /// The game's PID.
        pid: u32,
        /// Where players connect.
        ip: IpAddr,
        /// The game's port.
        port: u16,
        /// Every port it was given, `port` first.
        ports: Vec<u16>,
    },
    /// The agent started a pool's game and found it ready: it waits for a player.
    Readied {
        /// The game's PID.
        pid: u32,
        /// Where players connect.
        ip: IpAddr,
        /// The game's port.
        port: u16,
        /// Every port it was given, `port` first.
        ports: Vec<u16>,
    },
    /// A player's start took a pool's ready game.
    Claimed,
    /// Its pool retires a ready game nobody claimed (replaced for age, its host draining, its
    /// pool smaller or removed): it is stopped. Only a `ready` game may be retired, so a
    /// retirement never races a player's claim into stopping the player's game.
    Retired,
    /// The agent could not start it.
    LaunchFailed,
    /// The agent did not confirm in time.
    LaunchTimedOut,
    /// A portal or provider asked to end it.
    StopRequested,
    /// It reached its `max_duration_s`: it is stopped, and ends `expired`.
    Expired,
    /// Nobody was connected to its ports for its game's `idle_timeout_s`: it is stopped, and
    /// ends `idle`.
    IdledOut,
    /// The agent stopped it: no process of its group is left.
    Stopped,
    /// Its game's processes all exited by themselves.
    Exited(ExitStatus),
    /// Its host went offline and did not come back in time.
    HostLost,
    /// Its game is gone from its host, and how it ended is not known (it ended while neither
    /// the broker nor the agent was watching).
    Vanished,
}

/// Who caused a change, for the session's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Actor {
    /// A caller of the API when no API keys are configured (anyone on loopback).
    Api,
    /// A caller with a `portal` key.
    Portal,
    /// A caller with a `provider` key.
    Provider,
    /// A caller with an `admin` key.
    Admin,
    /// A player, by its player token.
    Player,
    /// The host's agent (a launch's outcome, a stop's confirmation).
    Agent,
    /// The game itself, by its game key (redeeming a join token).
    Game,
    /// The game itself, by exiting.
    GameExit,
    /// The broker, because the host stayed away.
    HostLost,
    /// The broker's own timers (a launch not confirmed in time).
    Sweep,
    /// The broker squaring its records with a host after a restart or reconnect.
    Recovery,
    /// A pool keeping itself full: launching, replacing and retiring its ready games.
    Pool,
}

impl Actor {
    /// The name recorded in the history.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Portal => "portal",
            Self::Provider => "provider",
            Self::Admin => "admin",
            Self::Player => "player",
            Self::Agent => "agent",
            Self::Game => "game",
            Self::GameExit => "game_exit",
            Self::HostLost => "host_lost",
            Self::Sweep => "sweep",
            Self::Recovery => "recovery",
            Self::Pool => "pool",
        }
    }
}

/// A change that the lifecycle does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The session is `ended`, `failed` or `lost`, and never changes again.
    #[error("session is already {0}")]
    Final(SessionStatus),
    /// The event makes no sense in this state.
    #[error("{event} is not possible while the session is {status}")]
    Invalid {
        /// The state.
        status: SessionStatus,
        /// The event, named.
        event: &'static str,
    },
}

impl SessionEvent {
    /// The event's name, as recorded in the history.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Launched { .. } => "launched",
            Self::Readied { .. } => "ready",
            Self::Claimed => "claimed",
            Self::Retired => "retired",
            Self::LaunchFailed => "launch failed",
            Self::LaunchTimedOut => "launch timed out",
            Self::StopRequested => "stop requested",
            Self::Expired => "expired",
            Self::IdledOut => "idle",
            Self::Stopped => "stopped",
            Self::Exited(_) => "exited",
            Self::HostLost => "host lost",
            Self::Vanished => "vanished",
        }
    }
}

/// A new session, `starting`.
pub fn new_session(
    session_id: SessionId,
    game_id: GameId,
    mode: String,
    config: Option<String>,
    host_id: HostId,
    now: OffsetDateTime,
) -> Session {
    Session {
        session_id,
        game_id,
        mode,
        config,
        status: SessionStatus::Starting,
        host_id,
        ip: None,
        port: None,
        pid: None,
        created_at: now,
        started_at: None,
        ended_at: None,
        end_reason: None,
        exit_code: None,
        pool_id: None,
        ports: Vec::new(),
        settings: std::collections::BTreeMap::new(),
        user_id: None,
        max_duration_s: None,
        expires_at: None,
        build: None,
        gpus: Vec::new(),
        labels: protocol::labels::Labels::new(),
        slots: 1,
    }
}

/// The limit of a session two sides ask for (its game's and its start's `max_duration_s`):
/// the smaller, or the one given.
pub fn shorter_limit(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When `s` ends `expired`: while it runs for its player (`running` or `stopping`),
/// `started_at` plus its `max_duration_s`. Every store derives the field with this.
pub fn expires_at(s: &Session) -> Option<OffsetDateTime> {
    match s.status {
        SessionStatus::Running | SessionStatus::Stopping => {
            Some(s.started_at? + time::Duration::seconds(i64::from(s.max_duration_s?)))
        }
        _ => None,
    }
}

/// The exit code reported for a game: its own, or 128 + the signal that killed it (the shell's
/// convention), since the API has one `exit_code` field; none when nobody saw it end.
pub fn exit_code(status: ExitStatus) -> Option<i32> {
    match status {
        ExitStatus::Code(c) => Some(c),
        ExitStatus::Signal(s) => Some(128 + s),
        ExitStatus::Unknown => None,
    }
}

/// Applies `event` to `s` at time `now`, or says why it cannot. On error `s` is unchanged.
/// `StopRequested` on a session already `stopping` is allowed and changes nothing, so that two
/// concurrent ends both proceed to wait for the final state.
pub fn apply(
    s: &mut Session,
    event: &SessionEvent,
    now: OffsetDateTime,
) -> Result<(), TransitionError> {
    use SessionEvent as E;
    use SessionStatus as S;
    if s.status.is_terminal() {
        return Err(TransitionError::Final(s.status));
    }
    let end = |s: &mut Session, status, reason| {
        s.status = status;
        s.end_reason = Some(reason);
        s.ended_at = Some(now);
    };
    match (s.status, event) {
        (
            S::Starting,
            E::Launched {
                pid,
                ip,
                port,
                ports,
            },
        )
        | (
            S::Starting,
            E::Readied {
                pid,
                ip,
                port,
                ports,
            },
        ) => {
            s.status = match event {
                E::Readied { .. } => S::Ready,
                _ => S::Running,
            };
            s.pid = Some(*pid);
            s.ip = Some(*ip);
            s.port = Some(*port);
            s.ports.clone_from(ports);
            s.started_at = Some(now);
        }
        (S::Ready, E::Claimed) => {
            // The player's session starts now; it was ready since `started_at`.
            s.status = S::Running;
            s.started_at = Some(now);
        }
        (S::Starting, E::LaunchFailed) => end(s, S::Failed, EndReason::LaunchFailed),
        (S::Starting, E::LaunchTimedOut) => end(s, S::Failed, EndReason::LaunchTimeout),
        (S::Starting, E::HostLost) => end(s, S::Failed, EndReason::HostLost),
        (S::Ready, E::Retired) => s.status = S::Stopping,
        (S::Ready | S::Running | S::Stopping, E::StopRequested) => {
            s.status = S::Stopping;
        }
        // A limit decides how the session ends when it begins to: its `end_reason` is set
        // while it is `stopping`, and kept whatever ends it then.
        (S::Running, E::Expired) => {
            s.status = S::Stopping;
            s.end_reason = Some(EndReason::Expired);
        }
        (S::Running, E::IdledOut) => {
            s.status = S::Stopping;
            s.end_reason = Some(EndReason::Idle);
        }
        (S::Stopping, E::Stopped) => {
            let reason = s.end_reason.unwrap_or(EndReason::EndedByRequest);
            end(s, S::Ended, reason);
        }
        (S::Ready | S::Running | S::Stopping, E::Exited(st)) => {
            let reason = s.end_reason.unwrap_or(EndReason::GameExited);
            end(s, S::Ended, reason);
            s.exit_code = exit_code(*st);
        }
        (S::Ready | S::Running | S::Stopping, E::HostLost) => end(s, S::Lost, EndReason::HostLost),
        (S::Ready | S::Running | S::Stopping, E::Vanished) => {
            let reason = s.end_reason.unwrap_or(EndReason::GameExited);
            end(s, S::Ended, reason);
        }
        (status, event) => {
            return Err(TransitionError::Invalid {
                status,
                event: event.name(),
            })
        }
    }
    s.expires_at = expires_at(s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Session {
        new_session(
            SessionId::new("s").unwrap(),
            GameId::new("g").unwrap(),
            "default".into(),
            None,
            HostId::new("h").unwrap(),
            OffsetDateTime::UNIX_EPOCH,
        )
    }

    fn launched() -> SessionEvent {
        SessionEvent::Launched {
            pid: 7,
            ip: "127.0.0.1".parse().unwrap(),
            port: 20000,
            ports: vec![20000, 20001],
        }
    }

    fn run(events: &[SessionEvent]) -> Result<Session, TransitionError> {
        let mut s = fresh();
        for e in events {
            apply(&mut s, e, OffsetDateTime::UNIX_EPOCH)?;
        }
        Ok(s)
    }

    fn readied() -> SessionEvent {
        SessionEvent::Readied {
            pid: 7,
            ip: "127.0.0.1".parse().unwrap(),
            port: 20000,
            ports: vec![20000, 20001],
        }
    }

    #[test]
    fn lifecycle_table() {
        use SessionEvent as E;
        use SessionStatus as S;
        type Row<'a> = (&'a [SessionEvent], S, Option<EndReason>, Option<i32>);
        let ok: &[Row<'_>] = &[
            (&[launched()], S::Running, None, None),
            (
                &[E::LaunchFailed],
                S::Failed,
                Some(EndReason::LaunchFailed),
                None,
            ),
            (
                &[E::LaunchTimedOut],
                S::Failed,
                Some(EndReason::LaunchTimeout),
                None,
            ),
            (&[launched(), E::StopRequested], S::Stopping, None, None),
            (
                &[launched(), E::StopRequested, E::StopRequested],
                S::Stopping,
                None,
                None,
            ),
            (
                &[launched(), E::StopRequested, E::Stopped],
                S::Ended,
                Some(EndReason::EndedByRequest),
                None,
            ),
            (
                &[launched(), E::Exited(ExitStatus::Code(3))],
                S::Ended,
                Some(EndReason::GameExited),
                Some(3),
            ),
            (
                &[launched(), E::Exited(ExitStatus::Signal(9))],
                S::Ended,
                Some(EndReason::GameExited),
                Some(137),
            ),
            (
                &[launched(), E::HostLost],
                S::Lost,
                Some(EndReason::HostLost),
                None,
            ),
            (
                &[launched(), E::StopRequested, E::HostLost],
                S::Lost,
                Some(EndReason::HostLost),
                None,
            ),
            // A pool's game: ready, then claimed by a player's start, or ended unclaimed.
            (&[readied()], S::Ready, None, None),
            (&[readied(), E::Claimed], S::Running, None, None),
            (
                &[readied(), E::Claimed, E::StopRequested, E::Stopped],
                S::Ended,
                Some(EndReason::EndedByRequest),
                None,
            ),
            (&[readied(), E::StopRequested], S::Stopping, None, None),
            (
                &[readied(), E::Retired, E::Stopped],
                S::Ended,
                Some(EndReason::EndedByRequest),
                None,
            ),
            (
                &[readied(), E::Exited(ExitStatus::Code(1))],
                S::Ended,
                Some(EndReason::GameExited),
                Some(1),
            ),
            (
                &[readied(), E::HostLost],
                S::Lost,
                Some(EndReason::HostLost),
                None,
            ),
            // Limits: the reason is decided when the stop begins and kept to the end.
            (
                &[launched(), E::Expired],
                S::Stopping,
                Some(EndReason::Expired),
                None,
            ),
            (
                &[launched(), E::Expired, E::StopRequested, E::Stopped],
                S::Ended,
                Some(EndReason::Expired),
                None,
            ),
            (
                &[launched(), E::IdledOut, E::Exited(ExitStatus::Code(0))],
                S::Ended,
                Some(EndReason::Idle),
                Some(0),
            ),
            (
                &[readied(), E::Claimed, E::IdledOut, E::Vanished],
                S::Ended,
                Some(EndReason::Idle),
                None,
            ),
            (
                &[launched(), E::Expired, E::HostLost],
                S::Lost,
                Some(EndReason::HostLost),
                None,
            ),
        ];
        for (events, status, reason, code) in ok {
            let s = run(events).unwrap_or_else(|e| panic!("{events:?}: {e}"));
            assert_eq!(
                (s.status, s.end_reason, s.exit_code),
                (*status, *reason, *code),
                "{events:?}"
            );
            assert_eq!(s.ended_at.is_some(), status.is_terminal());
        }
        let bad: &[&[SessionEvent]] = &[
            &[E::StopRequested],
            &[E::Stopped],
            &[E::Exited(ExitStatus::Code(0))],
            &[launched(), launched()],
            &[launched(), E::LaunchFailed],
            &[launched(), E::Stopped],
            &[E::LaunchFailed, launched()],
            &[launched(), E::StopRequested, E::Stopped, E::StopRequested],
            &[launched(), E::HostLost, E::Exited(ExitStatus::Code(0))],
            &[E::Vanished],
            &[E::Claimed],
            &[launched(), E::Claimed],
            &[readied(), E::Claimed, E::Claimed],
            &[readied(), readied()],
            &[readied(), launched()],
            &[launched(), readied()],
            &[readied(), E::StopRequested, E::Claimed],
            &[readied(), E::Claimed, E::Retired],
            &[launched(), E::Retired],
            &[E::Retired],
            &[readied(), E::Retired, E::Claimed],
            &[E::Expired],
            &[readied(), E::Expired],
            &[readied(), E::IdledOut],
            &[launched(), E::StopRequested, E::Expired],
            &[launched(), E::Expired, E::IdledOut],
        ];
        for events in bad {
            assert!(run(events).is_err(), "{events:?}");
        }
    }

    #[test]
    fn a_limited_session_expires_its_limit_after_it_begins_to_run_for_its_player() {
        let t = |secs| OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(secs);
        let mut cold = fresh();
        cold.max_duration_s = Some(60);
        apply(&mut cold, &launched(), t(5)).unwrap();
        assert_eq!(cold.expires_at, Some(t(65)));

        // A pool's game: its limit runs from the claim, not from when it became ready.
        let mut pooled = fresh();
        pooled.max_duration_s = Some(60);
        apply(&mut pooled, &readied(), t(5)).unwrap();
        assert_eq!(pooled.expires_at, None);
        apply(&mut pooled, &SessionEvent::Claimed, t(100)).unwrap();
        assert_eq!(pooled.expires_at, Some(t(160)));

        let mut unlimited = fresh();
        apply(&mut unlimited, &launched(), t(5)).unwrap();
        assert_eq!(unlimited.expires_at, None);

        // Stopping, it still says when; once over, never.
        apply(&mut cold, &SessionEvent::StopRequested, t(10)).unwrap();
        assert_eq!(cold.expires_at, Some(t(65)));
        apply(&mut cold, &SessionEvent::Stopped, t(11)).unwrap();
        assert_eq!(cold.expires_at, None);
    }

    #[test]
    fn final_states_never_change() {
        let mut s = run(&[SessionEvent::LaunchFailed]).unwrap();
        let before = s.clone();
        assert_eq!(
            apply(&mut s, &SessionEvent::HostLost, OffsetDateTime::now_utc()),
            Err(TransitionError::Final(SessionStatus::Failed))
        );
        assert_eq!(s, before);
    }
}
