//! The handle on one agent's connection, and what agents say on their own.
//!
//! An [`AgentLink`] is how anything in the broker reaches an agent: a bounded channel of
//! [`AgentCommand`]s to the task that owns the connection, each carrying a oneshot for the
//! answer, and a set of stops that nobody waits for. [`HostEvent`]s are the agents' own news
//! (a host registered, a game exited) for the service. This module imports nothing else of the
//! broker's: the registry stores links, the connection task serves them, the service uses them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use protocol::wire::{
    BrokerMessage, ExitStatus, ExitedGame, HostFacts, LaunchFailure, LaunchRequest, Launched,
    LogChunk, LogRead, LogUnavailable, RunningGame,
};
use protocol::{HostId, SessionId};
use tokio::sync::{mpsc, oneshot, Notify};

/// Stops without a waiter queued for one link, at most. A host runs at most `max_sessions`
/// games and lists at most a frame's worth of strays, far below this; past it a stop is
/// logged as an error and left to the reconcile of the host's next connection.
pub const MAX_PENDING_STOPS: usize = 65_536;

/// A command for one agent's connection task. Each is boxed, so the channel's slots (allocated
/// in blocks of 32 per connection) stay two words wide at ten thousand agents.
#[derive(Debug)]
pub enum AgentCommand {
    /// Launch a game; the answer comes on its `reply`.
    Launch(Box<Launch>),
    /// Stop a session's game; its `reply` fires when the agent says no process is left.
    Stop(Box<Stop>),
    /// Read a page of a session's game output.
    ReadLog(Box<ReadLog>),
    /// Tell the agent of the central games and their builds, in order; nobody waits.
    Central(Box<Vec<BrokerMessage>>),
}

/// A read of a session's game output.
#[derive(Debug)]
pub struct ReadLog {
    /// The session.
    pub session_id: SessionId,
    /// Which part.
    pub read: LogRead,
    /// The agent's answer.
    pub reply: oneshot::Sender<Result<LogChunk, LogUnavailable>>,
}

/// A launch for an agent.
#[derive(Debug)]
pub struct Launch {
    /// What to launch.
    pub req: LaunchRequest,
    /// The agent's answer.
    pub reply: oneshot::Sender<LaunchReply>,
    /// The start's span, so the connection task logs the launch under its request.
    pub span: tracing::Span,
}

/// A stop for an agent, with a waiter.
#[derive(Debug)]
pub struct Stop {
    /// The session.
    pub session_id: SessionId,
    /// Fires on `Stopped`.
    pub reply: oneshot::Sender<()>,
    /// The end's span.
    pub span: tracing::Span,
}

/// An agent's answer to a launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchReply {
    /// The game runs.
    Launched(Launched),
    /// It does not.
    Failed {
        /// Whose fault.
        kind: LaunchFailure,
        /// What the agent said.
        message: String,
    },
}

/// Why a command got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The agent's connection closed before it answered.
    #[error("the host's agent disconnected")]
    Closed,
}

/// Stops that nobody waits for, kept until the connection task sends them: a stop is never
/// dropped because the command queue is full.
#[derive(Debug, Default)]
struct PendingStops {
    sessions: Mutex<HashSet<SessionId>>,
    wake: Notify,
}

/// A handle on one agent's connection task.
#[derive(Debug, Clone)]
pub struct AgentLink {
    tx: mpsc::Sender<AgentCommand>,
    stops: Arc<PendingStops>,
}

/// The connection task's end of an [`AgentLink`].
#[derive(Debug)]
pub struct LinkInbox {
    /// Launches and stops with waiters, in order.
    pub commands: mpsc::Receiver<AgentCommand>,
    /// Stops without waiters.
    pub stops: StopsInbox,
}

/// The connection task's end of the stops without waiters.
#[derive(Debug)]
pub struct StopsInbox(Arc<PendingStops>);

impl StopsInbox {
    /// Waits until stops are pending.
    pub async fn pending(&self) {
        self.0.wake.notified().await;
    }

    /// Takes the pending stops.
    pub fn take(&self) -> Vec<SessionId> {
        let mut set = self.0.sessions.lock().unwrap_or_else(|p| p.into_inner());
        set.drain().collect()
    }
}

impl AgentLink {
    /// A link whose commands queue up to `queue` deep, and the connection task's end of it.
    pub fn channel(queue: usize) -> (Self, LinkInbox) {
        let (tx, commands) = mpsc::channel(queue);
        let stops = Arc::new(PendingStops::default());
        let link = Self {
            tx,
            stops: Arc::clone(&stops),
        };
        (
            link,
            LinkInbox {
                commands,
                stops: StopsInbox(stops),
            },
        )
    }

    /// Asks the agent to launch and waits for its answer (callers bound the wait).
    pub async fn launch(&self, req: LaunchRequest) -> Result<LaunchReply, LinkError> {
        let (reply, rx) = oneshot::channel();
        let span = tracing::Span::current();
        self.tx
            .send(AgentCommand::Launch(Box::new(Launch { req, reply, span })))
            .await
            .map_err(|_| LinkError::Closed)?;
        rx.await.map_err(|_| LinkError::Closed)
    }

    /// Asks the agent to stop a session's game and waits until it has (callers bound the wait).
    pub async fn stop(&self, session_id: SessionId) -> Result<(), LinkError> {
        let (reply, rx) = oneshot::channel();
        let span = tracing::Span::current();
        self.tx
            .send(AgentCommand::Stop(Box::new(Stop {
                session_id,
                reply,
                span,
            })))
            .await
            .map_err(|_| LinkError::Closed)?;
        rx.await.map_err(|_| LinkError::Closed)
    }

    /// Asks the agent for a page of a session's output and waits for it (callers bound the
    /// wait).
    pub async fn read_log(
        &self,
        session_id: SessionId,
        read: LogRead,
    ) -> Result<Result<LogChunk, LogUnavailable>, LinkError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(AgentCommand::ReadLog(Box::new(ReadLog {
                session_id,
                read,
                reply,
            })))
            .await
            .map_err(|_| LinkError::Closed)?;
        rx.await.map_err(|_| LinkError::Closed)
    }

    /// Queues messages about central games for the agent, without waiting; `false` when the
    /// queue is full or the link closed (the caller sends them again later).
    pub fn send_central(&self, messages: Vec<BrokerMessage>) -> bool {
        self.tx
            .try_send(AgentCommand::Central(Box::new(messages)))
            .is_ok()
    }

    /// Asks the agent to stop a session's game, without waiting (a late launch, a stray game,
    /// an end cut short). The stop is sent whatever the command queue holds; its answer comes
    /// back as a [`HostEvent::Stopped`]. If the link drops first, the host's next connection
    /// is reconciled with the records, which stops every game without a live session.
    ///
    /// A stop may overtake a launch of the same session still in the command queue: the agent
    /// then has nothing to stop, and the launch's answer, which nobody waits for any more,
    /// makes the connection task stop the game as a late launch.
    pub fn stop_nowait(&self, session_id: SessionId) {
        if self.tx.is_closed() {
            tracing::info!(session = %session_id, "link closed; the stop is left to the host's reconcile");
            return;
        }
        let mut set = self
            .stops
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if set.len() >= MAX_PENDING_STOPS && !set.contains(&session_id) {
            tracing::error!(session = %session_id, max = MAX_PENDING_STOPS, "too many stops pending for one agent; this one is left to the host's reconcile");
            return;
        }
        set.insert(session_id);
        drop(set);
        self.stops.wake.notify_one();
    }
}

/// What agents tell the broker on their own.
#[derive(Debug, Clone, PartialEq)]
pub enum HostEvent {
    /// A host (re)registered, running these games.
    Registered {
        /// The host.
        host_id: HostId,
        /// What it said of itself.
        facts: HostFacts,
        /// What it runs now.
        running: Vec<RunningGame>,
        /// What ended while it was away.
        exited: Vec<ExitedGame>,
    },
    /// A game was stopped, and nobody waits for the answer (the end that asked timed out,
    /// or the stop was sent without a waiter).
    Stopped {
        /// The host.
        host_id: HostId,
        /// The session.
        session_id: SessionId,
    },
    /// A connected host's offers changed (a central game's build became ready or failed):
    /// these are its facts now.
    Offers {
        /// The host.
        host_id: HostId,
        /// Its facts, with the new offers.
        facts: Box<HostFacts>,
    },
    /// A host's connection is gone. `epoch` is its ownership's, when the service recorded one
    /// (replicas).
    Disconnected {
        /// The host.
        host_id: HostId,
        /// The connection's epoch.
        epoch: Option<u64>,
    },
    /// Nobody has been connected to a game's ports for at least its idle timeout, as its
    /// agent saw in the host's TCP table (said at every heartbeat while it lasts).
    Idle {
        /// The host.
        host_id: HostId,
        /// The session.
        session_id: SessionId,
        /// For how long, counted from the game's launch or last connection.
        idle: std::time::Duration,
    },
    /// A game's processes are all gone, by themselves.
    Exited {
        /// The host.
        host_id: HostId,
        /// The session.
        session_id: SessionId,
        /// How the last process ended.
        status: ExitStatus,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> SessionId {
        SessionId::new(format!("s{n}")).unwrap()
    }

    #[tokio::test]
    async fn a_stop_is_kept_when_the_command_queue_is_full() {
        let (link, inbox) = AgentLink::channel(1);
        let (reply, _rx) = oneshot::channel();
        link.tx
            .try_send(AgentCommand::Stop(Box::new(Stop {
                session_id: id(0),
                reply,
                span: tracing::Span::none(),
            })))
            .unwrap();
        for n in 1..=3 {
            link.stop_nowait(id(n));
        }
        link.stop_nowait(id(2));
        tokio::time::timeout(std::time::Duration::from_secs(5), inbox.stops.pending())
            .await
            .unwrap();
        let mut stops = inbox.stops.take();
        stops.sort();
        assert_eq!(stops, [id(1), id(2), id(3)]);
        assert!(inbox.stops.take().is_empty());
    }

    #[test]
    fn a_stop_for_a_closed_link_is_left_to_the_reconcile() {
        let (link, inbox) = AgentLink::channel(1);
        drop(inbox);
        link.stop_nowait(id(1));
        assert!(link.stops.sessions.lock().unwrap().is_empty());
    }
}
