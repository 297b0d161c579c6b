//! The agent link's messages.
//!
//! A connection starts with a handshake: the agent sends one [`Hello`], the broker answers one
//! [`HelloReply`]. After a `Welcome`, each side sends only its own closed enum:
//! [`AgentMessage`] from agent to broker, [`BrokerMessage`] from broker to agent. Anything else
//! fails to decode and closes that connection.
//!
//! ## Versioning
//!
//! [`Hello::protocol_version`] is the first field of the first frame, and
//! [`HelloReply::Rejected`] is variant 1 holding one string. Both stay so in every version, so a
//! broker can read the version of any agent ([`VersionProbe`]) and refuse a mismatch with a
//! reason the agent can print, whatever else changed.
//!
//! A broker also takes agents of the previous version: [`v7`] has the types whose shape
//! changed since, and their conversions; [`crate::codec::BrokerCodec`] speaks either.

pub mod v7;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::ids::{BuildId, BuildKind, GameId, HostId, SessionId};

/// The version of the agent link spoken by this build. Bumped on any change to the types in
/// this module.
pub const PROTOCOL_VERSION: u32 = 8;

/// The agent's first frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Must stay the first field: see the module docs.
    pub protocol_version: u32,
    /// Who this host is. Unique among connected hosts.
    pub host_id: HostId,
    /// The shared agent token, if the agent was given one.
    pub token: Option<String>,
    /// What the host is and offers.
    pub facts: HostFacts,
    /// Games this agent is running now (after a reconnect, or a restart of the agent).
    pub running: Vec<RunningGame>,
    /// Games that ended while the link was down (or the agent was restarting), with how they
    /// ended when the agent knows it; the broker settles their sessions.
    pub exited: Vec<ExitedGame>,
}

/// A game that ended while its exit could not be reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitedGame {
    /// Its session.
    pub session_id: SessionId,
    /// How the last process of its group ended.
    pub status: ExitStatus,
}

/// Just the version field of a [`Hello`], decodable whatever the rest of the frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionProbe {
    /// The agent's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
}

/// Facts about a host, sent in the handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    /// The machine's hostname (informational; the id is [`Hello::host_id`]).
    pub hostname: String,
    /// The IP that players' clients connect to.
    pub ip: IpAddr,
    /// Logical CPUs.
    pub cpus: u32,
    /// Physical memory.
    pub mem_total_bytes: u64,
    /// The games of the agent's catalog.
    pub games: Vec<GameOffer>,
    /// How many games this host runs at once at most.
    pub max_sessions: u32,
    /// The ports handed to games, inclusive.
    pub port_range: PortRange,
    /// The central games' builds this host holds or is fetching, and why one failed (added
    /// in version 7; absent from facts stored before).
    #[serde(default)]
    pub builds: Vec<BuildState>,
    /// The host's labels, `--label` (added in version 8; absent from facts stored before).
    #[serde(default)]
    pub labels: crate::labels::Labels,
    /// The host's GPU indexes, `--gpus`: each is given to one session at a time (added in
    /// version 8).
    #[serde(default)]
    pub gpus: Vec<u32>,
}

/// Where a host is with one build of a central game.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildState {
    /// The central game.
    pub game_id: GameId,
    /// One of its builds.
    pub build: BuildId,
    /// Where the host is with it.
    pub status: BuildStatus,
}

/// Where a host is with a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuildStatus {
    /// Being downloaded, checked or unpacked.
    Fetching,
    /// Unpacked and checked: sessions of it can run here.
    Ready,
    /// The last try failed, for this reason; tried again later.
    Failed(String),
}

/// One catalog entry as the broker sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GameOffer {
    /// The game.
    pub game_id: GameId,
    /// Its modes; the first is the default. Never empty: a game without modes offers
    /// [`DEFAULT_MODE`].
    pub modes: Vec<String>,
    /// With a readiness check (catalog `ready`), how long the agent waits for it before it
    /// stops the game and answers [`LaunchFailure::NotReady`]; the broker waits that much
    /// longer for the launch's answer (added in version 3; absent from facts stored before).
    #[serde(default)]
    pub ready_timeout_ms: Option<u32>,
    /// The settings a start may choose (added in version 4; absent from facts stored before).
    #[serde(default)]
    pub settings: Vec<crate::settings::SettingOffer>,
    /// The catalog's `max_duration_s`: a session ends `expired` at this age (added in
    /// version 5; absent from facts stored before).
    #[serde(default)]
    pub max_duration_s: Option<u32>,
    /// The catalog's `idle_timeout_s`: a running session whose ports have had no established
    /// TCP connection for this long ends `idle` (added in version 5).
    #[serde(default)]
    pub idle_timeout_s: Option<u32>,
    /// For a central game, the build its sessions on this host run; `None` for the host's
    /// own catalog entry (added in version 7).
    #[serde(default)]
    pub build: Option<BuildId>,
    /// The catalog's `slots`: how much of the host's `max_sessions` one session takes, at
    /// least 1 (added in version 8).
    #[serde(default = "one_slot")]
    pub slots: u32,
    /// The catalog's `gpus`: how many of the host's GPUs one session gets (added in
    /// version 8).
    #[serde(default)]
    pub gpus: u32,
}

/// A game's `slots` when its catalog names none.
fn one_slot() -> u32 {
    1
}

/// The longest readiness timeout a catalog may give a game, in seconds.
pub const MAX_READY_TIMEOUT_SECS: u32 = 600;

/// The mode of a game whose catalog entry lists none.
pub const DEFAULT_MODE: &str = "default";

/// An inclusive range of TCP ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    /// First port.
    pub lo: u16,
    /// Last port, inclusive.
    pub hi: u16,
}

/// A game an agent is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningGame {
    /// Its session.
    pub session_id: SessionId,
    /// The PID of the process the agent started.
    pub pid: u32,
    /// Its process group (the game's own, made at spawn; equal to `pid`).
    pub pgid: u32,
    /// The port handed to it.
    pub port: u16,
    /// For a game with an idle timeout, once its ports have had no established TCP
    /// connection for at least that long: for how long, in milliseconds, counted from its
    /// launch or its last connection (added in version 5).
    pub idle_ms: Option<u64>,
    /// The slots it takes of the host's `max_sessions` (added in version 8).
    pub slots: u32,
    /// The GPUs it was given (added in version 8).
    pub gpus: Vec<u32>,
}

/// The broker's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// Registered: [`AgentMessage`]s and [`BrokerMessage`]s follow.
    Welcome {
        /// How often the broker expects a heartbeat, in milliseconds.
        heartbeat_interval_ms: u32,
    },
    /// Refused; the broker closes the connection. Must stay variant 1 with one string: see the
    /// module docs.
    Rejected(String),
}

/// Everything an agent sends after the handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentMessage {
    /// A game was spawned for [`BrokerMessage::Launch`].
    Launched(Launched),
    /// A launch was refused or failed; nothing is running for the session.
    LaunchFailed {
        /// The session.
        session_id: SessionId,
        /// Whose fault.
        kind: LaunchFailure,
        /// What happened, for the portal.
        message: String,
    },
    /// Answer to [`BrokerMessage::Stop`]: no process of the session's group is left. Also sent
    /// for a session the agent does not know, so a stop is idempotent.
    Stopped {
        /// The session.
        session_id: SessionId,
    },
    /// A game ended by itself: the last process of its group is gone.
    Exited {
        /// The session.
        session_id: SessionId,
        /// How the last process of the group ended.
        status: ExitStatus,
    },
    /// Sent every heartbeat interval.
    Heartbeat(Load),
    /// Answer to [`BrokerMessage::ReadLog`] (added in version 2).
    Log(LogPage),
    /// What the host offers now, since a central game's build became ready or failed, or a
    /// central game came or went: replaces [`HostFacts::games`] and [`HostFacts::builds`]
    /// (added in version 7).
    Offers {
        /// Every game offered now, the host's own and the central ones.
        games: Vec<GameOffer>,
        /// Where the host is with each central game's builds.
        builds: Vec<BuildState>,
    },
}

/// A successful launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launched {
    /// The session.
    pub session_id: SessionId,
    /// The game's PID (also its process group id).
    pub pid: u32,
    /// Where players connect.
    pub ip: IpAddr,
    /// The port handed to the game.
    pub port: u16,
    /// Every port handed to it, `port` first (added in version 4).
    pub ports: Vec<u16>,
}

/// Why a launch did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LaunchFailure {
    /// The request itself is wrong (unknown mode, config outside `config_dir`, a bad value):
    /// the portal's to fix.
    BadRequest,
    /// The game is not in this agent's catalog.
    UnknownGame,
    /// The host has no free slot or port.
    NoCapacity,
    /// The program could not be started (missing binary, permissions, log file).
    SpawnFailed,
    /// The game's readiness check did not pass within its `ready_timeout`; the game was
    /// stopped before this was sent (added in version 3).
    NotReady,
    /// The game exited before its readiness check passed (added in version 3).
    ExitedBeforeReady,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
    /// It ended while nobody could see how (the agent was restarting).
    Unknown,
}

/// A host's load, sampled by its agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Whole-machine CPU use, 0 to 100.
    pub cpu_percent: f32,
    /// Memory in use.
    pub mem_used_bytes: u64,
    /// Physical memory.
    pub mem_total_bytes: u64,
    /// The games running now.
    pub sessions: Vec<RunningGame>,
}

/// The broker acknowledges one heartbeat in this many. An agent must therefore wait more than
/// this many intervals (plus jitter) without a frame before it calls the broker silent. Not
/// every one: at 10,000 agents the acks were the broker's largest cost (a loopback write is a
/// send and, on the same machine, the receive too).
pub const HEARTBEATS_PER_ACK: u32 = 2;

/// Everything the broker sends after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BrokerMessage {
    /// Start a game; answered by `Launched` or `LaunchFailed`.
    Launch(LaunchRequest),
    /// Stop a session's game; answered by `Stopped`.
    Stop {
        /// The session.
        session_id: SessionId,
    },
    /// Answer to every [`HEARTBEATS_PER_ACK`]th heartbeat, so an agent can tell a silent
    /// broker from a quiet one.
    HeartbeatAck,
    /// The broker is shutting down (its requests have drained); the agent keeps its games and
    /// reconnects, with backoff, to whichever broker comes up.
    GoingAway,
    /// Read part of a session's game output; answered by one `Log` (added in version 2).
    ReadLog(LogRequest),
    /// The central games now: any other the agent holds is gone. Sent after the handshake
    /// and whenever the set changes; each game's builds follow as [`BrokerMessage::CentralGame`]
    /// (added in version 7).
    CentralGames(CentralGames),
    /// One central game's builds for this host (added in version 7).
    CentralGame(CentralGame),
}

/// The most central games a broker keeps, so that their ids fit one frame.
pub const MAX_CENTRAL_GAMES: usize = 400;

/// The set of central games, and where their builds are downloaded from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CentralGames {
    /// The broker's HTTP API as agents reach it (`{builds_url}/v1/builds/{sha256}/content`).
    pub builds_url: String,
    /// Every central game, at most [`MAX_CENTRAL_GAMES`].
    pub games: Vec<GameId>,
}

/// A central game's builds, as one host is to hold them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CentralGame {
    /// The game.
    pub game_id: GameId,
    /// Its builds, the one to offer first; the host offers the first one it has ready and
    /// keeps the others (the one a rollout or a rollback may return to).
    pub builds: Vec<GameBuild>,
}

/// One build of a central game, with the catalog entry that runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameBuild {
    /// The build.
    pub build: BuildId,
    /// What it is.
    pub kind: BuildKind,
    /// Its size in bytes.
    pub size: u64,
    /// The catalog entry, as JSON (a [`crate::catalog::GameEntry`]), at most
    /// [`MAX_ENTRY_JSON`] bytes: two of them fit a frame.
    pub entry: String,
}

/// The most bytes of a central game's catalog entry, as JSON.
pub const MAX_ENTRY_JSON: usize = 16 * 1024;

/// The most bytes of game output one [`LogPage`] carries, well inside a frame. A longer read
/// is several requests, each [`LogRead::From`] where the last page ended.
pub const MAX_LOG_PAGE: u32 = 48 * 1024;

/// A read of a session's game output (its stdout and stderr, in one file on the agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRequest {
    /// Chosen by the broker, unique among its outstanding reads on this link; the answer
    /// carries it back.
    pub request_id: u64,
    /// Whose output.
    pub session_id: SessionId,
    /// Which part.
    pub read: LogRead,
}

/// Which part of a log to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogRead {
    /// Find where the last `lines` lines begin, looking back at most `max_bytes`, and read
    /// from there.
    Tail {
        /// Lines wanted.
        lines: u32,
        /// How far back to look, at most.
        max_bytes: u32,
    },
    /// Read from this byte offset.
    From {
        /// The offset.
        offset: u64,
    },
}

/// An agent's answer to a [`LogRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPage {
    /// The request's id.
    pub request_id: u64,
    /// What was read, or why nothing was.
    pub result: Result<LogChunk, LogUnavailable>,
}

/// Bytes of a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    /// The offset of `data`'s first byte in the log.
    pub offset: u64,
    /// At most [`MAX_LOG_PAGE`] bytes.
    pub data: Vec<u8>,
    /// The log's length when it was read: more follows `data` while `offset + data.len()` is
    /// below it.
    pub size: u64,
}

/// Why an agent sends no log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LogUnavailable {
    /// The agent has no log for that session (never ran here, or removed by the retention).
    #[error("the host has no log for this session")]
    NotFound,
    /// The log exists but could not be read.
    #[error("the host could not read the log")]
    Unreadable,
    /// The agent is serving as many reads as it will at once.
    #[error("the host is busy reading other logs")]
    Busy,
}

/// What to launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchRequest {
    /// The new session.
    pub session_id: SessionId,
    /// The game, from the agent's catalog.
    pub game_id: GameId,
    /// One of the game's modes; `None` for its default.
    pub mode: Option<String>,
    /// A config file name inside the game's `config_dir`; `None` for its default.
    pub config: Option<String>,
    /// The settings the start chose (checked by the broker; added in version 4).
    pub settings: std::collections::BTreeMap<String, String>,
    /// How the game redeems its players' join tokens: `ARCADE_JOIN_URL` and
    /// `ARCADE_GAME_KEY` in its environment (added in version 6).
    pub join: Option<JoinAccess>,
    /// For a central game, the build to run, one the host offered (added in version 7).
    pub build: Option<BuildId>,
    /// The host's GPUs the session gets, as many as the game's `gpus`, none held by another
    /// live session (added in version 8). The agent refuses GPUs it does not have or that
    /// are held ([`LaunchFailure::NoCapacity`]).
    pub gpus: Vec<u32>,
}

/// Where and with what key a game redeems its players' join tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinAccess {
    /// The broker's `POST /v1/sessions/{id}/join` for this session, as games reach it.
    pub url: String,
    /// The session's game key.
    pub key: Secret,
}

/// A secret carried over the link: its `Debug` never shows it, so logging a message that
/// holds one does not leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}
