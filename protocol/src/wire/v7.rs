//! The agent link as version 7 agents speak it, so a broker of this version takes them: a
//! fleet is upgraded broker replicas first, then agents host by host, with no moment where
//! an agent cannot connect.
//!
//! Only the types whose shape changed in version 8 are here (bincode is not self-describing:
//! a changed struct is a different byte layout); every other type is this version's own.
//! What changed: hosts gained labels and GPUs, offers and running games their slots and
//! GPUs, launches their GPUs. A version 7 host has no labels and no GPUs, and its games take
//! one slot and no GPU; so placement never asks one for a GPU, and a launch that names GPUs
//! cannot be sent to it ([`Unsupported`]) rather than be misread.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{
    BuildState, CentralGame, CentralGames, ExitStatus, ExitedGame, JoinAccess, LaunchFailure,
    Launched, LogPage, LogRequest, PortRange,
};
use crate::ids::{BuildId, GameId, HostId, SessionId};
use crate::settings::SettingOffer;

/// The version these types are.
pub const VERSION: u32 = 7;

/// Version 7's [`super::Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// 7.
    pub protocol_version: u32,
    /// The host.
    pub host_id: HostId,
    /// The agent token.
    pub token: Option<String>,
    /// What the host is.
    pub facts: HostFacts,
    /// Games running.
    pub running: Vec<RunningGame>,
    /// Games that ended meanwhile.
    pub exited: Vec<ExitedGame>,
}

/// Version 7's [`super::HostFacts`]: no labels, no GPUs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    /// Hostname.
    pub hostname: String,
    /// Players' IP.
    pub ip: IpAddr,
    /// Logical CPUs.
    pub cpus: u32,
    /// Memory.
    pub mem_total_bytes: u64,
    /// Games.
    pub games: Vec<GameOffer>,
    /// Capacity.
    pub max_sessions: u32,
    /// Ports.
    pub port_range: PortRange,
    /// Central games' builds.
    pub builds: Vec<BuildState>,
}

/// Version 7's [`super::GameOffer`]: one slot, no GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GameOffer {
    /// The game.
    pub game_id: GameId,
    /// Modes.
    pub modes: Vec<String>,
    /// Readiness timeout.
    pub ready_timeout_ms: Option<u32>,
    /// Settings.
    pub settings: Vec<SettingOffer>,
    /// Longest life.
    pub max_duration_s: Option<u32>,
    /// Idle timeout.
    pub idle_timeout_s: Option<u32>,
    /// A central game's build.
    pub build: Option<BuildId>,
}

/// Version 7's [`super::RunningGame`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningGame {
    /// Its session.
    pub session_id: SessionId,
    /// PID.
    pub pid: u32,
    /// Process group.
    pub pgid: u32,
    /// Port.
    pub port: u16,
    /// Idle for this long, if idle.
    pub idle_ms: Option<u64>,
}

/// Version 7's [`super::Load`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// CPU.
    pub cpu_percent: f32,
    /// Memory in use.
    pub mem_used_bytes: u64,
    /// Memory.
    pub mem_total_bytes: u64,
    /// Games running.
    pub sessions: Vec<RunningGame>,
}

/// Version 7's [`super::AgentMessage`]: the same variants, in the same order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentMessage {
    /// As in version 8.
    Launched(Launched),
    /// As in version 8.
    LaunchFailed {
        /// The session.
        session_id: SessionId,
        /// Whose fault.
        kind: LaunchFailure,
        /// Why.
        message: String,
    },
    /// As in version 8.
    Stopped {
        /// The session.
        session_id: SessionId,
    },
    /// As in version 8.
    Exited {
        /// The session.
        session_id: SessionId,
        /// How.
        status: ExitStatus,
    },
    /// With version 7's [`Load`].
    Heartbeat(Load),
    /// As in version 8.
    Log(LogPage),
    /// With version 7's offers.
    Offers {
        /// Games offered.
        games: Vec<GameOffer>,
        /// Builds.
        builds: Vec<BuildState>,
    },
}

/// Version 7's [`super::LaunchRequest`]: no GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchRequest {
    /// The session.
    pub session_id: SessionId,
    /// The game.
    pub game_id: GameId,
    /// Mode.
    pub mode: Option<String>,
    /// Config.
    pub config: Option<String>,
    /// Settings.
    pub settings: BTreeMap<String, String>,
    /// Join access.
    pub join: Option<JoinAccess>,
    /// Build.
    pub build: Option<BuildId>,
}

/// Version 7's [`super::BrokerMessage`]: the same variants, in the same order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BrokerMessage {
    /// With version 7's [`LaunchRequest`].
    Launch(LaunchRequest),
    /// As in version 8.
    Stop {
        /// The session.
        session_id: SessionId,
    },
    /// As in version 8.
    HeartbeatAck,
    /// As in version 8.
    GoingAway,
    /// As in version 8.
    ReadLog(LogRequest),
    /// As in version 8.
    CentralGames(CentralGames),
    /// As in version 8.
    CentralGame(CentralGame),
}

/// A message of this version a version 7 agent cannot be told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a version {VERSION} agent cannot be asked this: {0}")]
pub struct Unsupported(pub &'static str);

impl From<GameOffer> for super::GameOffer {
    fn from(o: GameOffer) -> Self {
        Self {
            game_id: o.game_id,
            modes: o.modes,
            ready_timeout_ms: o.ready_timeout_ms,
            settings: o.settings,
            max_duration_s: o.max_duration_s,
            idle_timeout_s: o.idle_timeout_s,
            build: o.build,
            slots: 1,
            gpus: 0,
        }
    }
}

impl From<RunningGame> for super::RunningGame {
    fn from(g: RunningGame) -> Self {
        Self {
            session_id: g.session_id,
            pid: g.pid,
            pgid: g.pgid,
            port: g.port,
            idle_ms: g.idle_ms,
            slots: 1,
            gpus: Vec::new(),
        }
    }
}

impl From<HostFacts> for super::HostFacts {
    fn from(f: HostFacts) -> Self {
        Self {
            hostname: f.hostname,
            ip: f.ip,
            cpus: f.cpus,
            mem_total_bytes: f.mem_total_bytes,
            games: f.games.into_iter().map(Into::into).collect(),
            max_sessions: f.max_sessions,
            port_range: f.port_range,
            builds: f.builds,
            labels: crate::labels::Labels::new(),
            gpus: Vec::new(),
        }
    }
}

impl From<Hello> for super::Hello {
    fn from(h: Hello) -> Self {
        Self {
            protocol_version: h.protocol_version,
            host_id: h.host_id,
            token: h.token,
            facts: h.facts.into(),
            running: h.running.into_iter().map(Into::into).collect(),
            exited: h.exited,
        }
    }
}

impl From<AgentMessage> for super::AgentMessage {
    fn from(m: AgentMessage) -> Self {
        match m {
            AgentMessage::Launched(l) => Self::Launched(l),
            AgentMessage::LaunchFailed {
                session_id,
                kind,
                message,
            } => Self::LaunchFailed {
                session_id,
                kind,
                message,
            },
            AgentMessage::Stopped { session_id } => Self::Stopped { session_id },
            AgentMessage::Exited { session_id, status } => Self::Exited { session_id, status },
            AgentMessage::Heartbeat(l) => Self::Heartbeat(super::Load {
                cpu_percent: l.cpu_percent,
                mem_used_bytes: l.mem_used_bytes,
                mem_total_bytes: l.mem_total_bytes,
                sessions: l.sessions.into_iter().map(Into::into).collect(),
            }),
            AgentMessage::Log(p) => Self::Log(p),
            AgentMessage::Offers { games, builds } => Self::Offers {
                games: games.into_iter().map(Into::into).collect(),
                builds,
            },
        }
    }
}

impl TryFrom<super::BrokerMessage> for BrokerMessage {
    type Error = Unsupported;

    fn try_from(m: super::BrokerMessage) -> Result<Self, Unsupported> {
        use super::BrokerMessage as M;
        Ok(match m {
            M::Launch(r) => {
                if !r.gpus.is_empty() {
                    return Err(Unsupported("a launch with GPUs"));
                }
                Self::Launch(LaunchRequest {
                    session_id: r.session_id,
                    game_id: r.game_id,
                    mode: r.mode,
                    config: r.config,
                    settings: r.settings,
                    join: r.join,
                    build: r.build,
                })
            }
            M::Stop { session_id } => Self::Stop { session_id },
            M::HeartbeatAck => Self::HeartbeatAck,
            M::GoingAway => Self::GoingAway,
            M::ReadLog(r) => Self::ReadLog(r),
            M::CentralGames(c) => Self::CentralGames(c),
            M::CentralGame(c) => Self::CentralGame(c),
        })
    }
}
