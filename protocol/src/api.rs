//! The HTTP API's JSON types, as in `shared/API.md`. Serde only: the broker serializes them,
//! `portal-client` deserializes them, and neither knows the other's HTTP stack.

mod usage;
pub use usage::{Usage, UsageBy, UsageQuery, UsageRow};

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{GameId, HostId, PoolId, SessionId};

/// `POST /v1/sessions` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StartSession {
    /// The game to start.
    pub game_id: GameId,
    /// One of its modes; absent for the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// A config file inside the game's `config_dir`; absent for the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// Values for the settings the game offers (`{"video-fps": "30"}`), written into the
    /// session's copy of its config.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
    /// The player, opaque to the broker (1 to 128 characters): sessions are listed by it, and
    /// `--max-sessions-per-user` counts by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The session ends (`expired`) at this age, in seconds, or sooner if its game's catalog
    /// entry says so (the smaller wins). 1 to [`MAX_DURATION_S`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_s: Option<u32>,
    /// Labels a host must have (`{"region": "eu-west"}`): no other host is chosen.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: crate::labels::Labels,
    /// Labels a host had better have: of the hosts that fit, those with more of them come
    /// first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prefer: crate::labels::Labels,
}

impl StartSession {
    /// A start of `game` with everything else left to the defaults (its default mode and
    /// config, the game's default settings, no user, no limit of its own); set the fields
    /// that differ.
    pub fn new(game: GameId) -> Self {
        Self {
            game_id: game,
            mode: None,
            config: None,
            settings: BTreeMap::new(),
            user_id: None,
            max_duration_s: None,
            labels: BTreeMap::new(),
            prefer: BTreeMap::new(),
        }
    }
}

/// The longest `user_id`, in characters.
pub const MAX_USER_ID_CHARS: usize = 128;

/// The longest `max_duration_s` a start or a catalog may ask for: 30 days (the catalog's,
/// which checks it first).
pub use crate::catalog::MAX_DURATION_S;

/// How long before a session expires `session.expiring` is sent.
pub const EXPIRY_WARNING_S: u32 = 60;

/// A session's lifecycle state. See API.md, "Session states".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Placed on a host; the agent has been asked to launch.
    Starting,
    /// A pool's game, launched and ready, waiting for a player's start to claim it. Listed
    /// only when asked for (`?status=ready`).
    Ready,
    /// The game is live.
    Running,
    /// The agent has been asked to stop it.
    Stopping,
    /// Over, by request or by the game's own exit.
    Ended,
    /// It never ran.
    Failed,
    /// Its host went away.
    Lost,
}

impl SessionStatus {
    /// Every state, in lifecycle order.
    pub const ALL: [SessionStatus; 7] = [
        Self::Starting,
        Self::Ready,
        Self::Running,
        Self::Stopping,
        Self::Ended,
        Self::Failed,
        Self::Lost,
    ];

    /// `ended`, `failed` and `lost` never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Ended | Self::Failed | Self::Lost)
    }

    /// The name used in JSON and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Ended => "ended",
            Self::Failed => "failed",
            Self::Lost => "lost",
        }
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`SessionStatus`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}: expected starting, ready, running, stopping, ended, failed or lost")]
pub struct UnknownStatus(String);

impl UnknownStatus {
    /// The string that was given.
    pub fn given(&self) -> &str {
        &self.0
    }
}

impl FromStr for SessionStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, UnknownStatus> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// Why a session is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// A portal or provider ended it.
    EndedByRequest,
    /// The game's processes all exited by themselves.
    GameExited,
    /// The agent could not start it.
    LaunchFailed,
    /// The agent did not confirm the launch in time.
    LaunchTimeout,
    /// Its host went offline.
    HostLost,
    /// It reached its `max_duration_s`.
    Expired,
    /// Nobody was connected to its ports for its game's `idle_timeout_s`.
    Idle,
}

/// A session, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Session {
    /// Opaque id.
    pub session_id: SessionId,
    /// The game.
    pub game_id: GameId,
    /// The mode it runs in.
    pub mode: String,
    /// The config file asked for, if any.
    pub config: Option<String>,
    /// Where it is in its lifecycle.
    pub status: SessionStatus,
    /// The host it was placed on.
    pub host_id: HostId,
    /// Where players connect; known once running.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub ip: Option<IpAddr>,
    /// The game's port; known once running.
    pub port: Option<u16>,
    /// The game's PID; known once running.
    pub pid: Option<u32>,
    /// When the start was asked for.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the agent confirmed the launch.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When it reached a final state.
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    /// Why it is over; while it is `stopping` because of a limit, already `expired` or
    /// `idle`.
    pub end_reason: Option<EndReason>,
    /// The game's exit code, when it exited by itself with one.
    pub exit_code: Option<i32>,
    /// The pool that launched it, when a start claimed it from one.
    #[serde(default)]
    pub pool_id: Option<PoolId>,
    /// Every port the game was given, `port` first; known once running.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// The settings it runs with: those its start chose and the game's defaults.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// The player its start named, if any.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Its limit in seconds, if any: the smaller of its start's and its game's
    /// `max_duration_s`.
    #[serde(default)]
    pub max_duration_s: Option<u32>,
    /// When it ends `expired`: `started_at` plus `max_duration_s`, once it runs.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// The sha256 of the game's build, or `None` for a host's own catalog entry.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub build: Option<crate::BuildId>,
    /// The host's GPUs this session holds (its game's catalog `gpus`), no other live
    /// session's.
    #[serde(default)]
    pub gpus: Vec<u32>,
    /// The labels of the host it was placed on (`region`, `gpu`, ...), as they were then.
    #[serde(default)]
    pub labels: crate::labels::Labels,
    /// How much of its host's `max_sessions` it takes (its game's catalog `slots`).
    #[serde(default = "one_slot")]
    pub slots: u32,
}

/// A session's `slots` where none is recorded.
fn one_slot() -> u32 {
    1
}

/// The answer to a start (`POST /v1/sessions`): the session, and for whoever started it, the
/// session's one-time join token (API.md, "Players"). Only a start's answer (and a repeat
/// of its `Idempotency-Key`) carries the token. `Debug` does not show the token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StartedSession {
    /// The session.
    #[serde(flatten)]
    pub session: Session,
    /// The token the player's client hands the game, which redeems it once; `null` when the
    /// session does not run, or a fresh token has replaced the one a repeated key gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
    /// Until when the token is accepted.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub join_expires_at: Option<OffsetDateTime>,
}

/// `POST /v1/sessions/{id}/join` body: the token a player's client gave the game. `Debug`
/// does not show the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JoinRequest {
    /// The join token.
    pub token: String,
}

/// `POST /v1/sessions/{id}/join` answer: whose player joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Joined {
    /// The session.
    pub session_id: SessionId,
    /// Its user, if it has one.
    pub user_id: Option<String>,
}

/// `POST /v1/sessions/{id}/join-tokens` answer: a fresh join token; the previous one stops
/// working. `Debug` does not show the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JoinToken {
    /// The token.
    pub join_token: String,
    /// Until when it is accepted.
    #[serde(with = "time::serde::rfc3339")]
    pub join_expires_at: OffsetDateTime,
}

impl std::fmt::Debug for StartedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartedSession")
            .field("session", &self.session)
            .field("join_token", &self.join_token.as_ref().map(|_| "***"))
            .field("join_expires_at", &self.join_expires_at)
            .finish()
    }
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinRequest { token: *** }")
    }
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("join_token", &"***")
            .field("join_expires_at", &self.join_expires_at)
            .finish()
    }
}

/// What a build is (kept beside [`crate::BuildId`]: the agent link names it too).
pub use crate::ids::BuildKind;

/// A stored build (`PUT /v1/builds/{sha256}`, `GET /v1/builds/{sha256}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Build {
    /// Its sha256: its name.
    pub build: crate::BuildId,
    /// Its size in bytes.
    pub size: u64,
    /// An archive or one file.
    pub kind: BuildKind,
    /// When it was stored.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The central games set to it (or rolling to or from it).
    #[serde(default)]
    pub games: Vec<GameId>,
    /// The hosts that hold it unpacked.
    #[serde(default)]
    pub hosts: u32,
}

/// `GET /v1/builds` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BuildList {
    /// Newest first.
    pub builds: Vec<Build>,
}

/// `GET /v1/sessions` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionList {
    /// Newest first.
    pub sessions: Vec<Session>,
    /// Pass as `cursor` to get the next page; `null` when this page is the last.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// `GET /v1/sessions` query. All filters are optional and combine with "and".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct SessionQuery {
    /// Only sessions in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SessionStatus>,
    /// Only sessions of this game.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub game_id: Option<GameId>,
    /// Only sessions on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<HostId>,
    /// Only sessions of this player.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// At most this many (default [`DEFAULT_LIST_LIMIT`]; more than [`MAX_LIST_LIMIT`] counts
    /// as that many).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(maximum = 4294967295.0, format = Int64))]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// One change in a session's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionEventView {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What happened: `created`, `launched`, `stop requested`, `stopped`, `exited`, ...
    pub event: String,
    /// The session's status after it.
    pub status: String,
    /// Who caused it: `api`, `agent`, `game_exit`, `host_lost`, `sweep`, `recovery`.
    pub actor: String,
}

/// `GET /v1/sessions/{id}/events` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionEvents {
    /// Oldest first.
    pub events: Vec<SessionEventView>,
}

/// Sessions listed when no `limit` is given.
pub const DEFAULT_LIST_LIMIT: u32 = 100;
/// The largest `limit` honoured.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// A host's state as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HostStatus {
    /// Connected and taking sessions.
    Online,
    /// Connected, running its sessions, taking no new ones.
    Draining,
    /// Not connected.
    Offline,
}

/// A host, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Host {
    /// The host.
    pub host_id: HostId,
    /// Where its games are reached.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub ip: IpAddr,
    /// Online, draining or offline.
    pub status: HostStatus,
    /// Its capacity.
    pub max_sessions: u32,
    /// Sessions placed on it and not over (including ones starting).
    pub sessions: u32,
    /// Whole-machine CPU use, 0 to 100, from its last heartbeat.
    pub cpu_percent: f32,
    /// Memory in use, from its last heartbeat.
    pub mem_used_bytes: u64,
    /// Physical memory.
    pub mem_total_bytes: u64,
    /// The games it offers.
    pub games: Vec<GameId>,
    /// When the broker last heard from it.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// The broker its agent is connected to; `None` while it is offline.
    #[serde(default)]
    pub broker_id: Option<String>,
    /// Its labels (`--label`).
    #[serde(default)]
    pub labels: crate::labels::Labels,
    /// Its GPUs (`--gpus`).
    #[serde(default)]
    pub gpus: Vec<u32>,
    /// How many of its GPUs live sessions hold.
    #[serde(default)]
    pub gpus_used: u32,
    /// How much of `max_sessions` its live sessions take (each its game's `slots`).
    #[serde(default)]
    pub slots_used: u32,
}

/// `GET /v1/hosts` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostList {
    /// Ordered by host id.
    pub hosts: Vec<Host>,
}

/// A game, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Game {
    /// The game.
    pub game_id: GameId,
    /// The modes offered by any online host; the first is the default.
    pub modes: Vec<String>,
    /// How many online hosts offer it.
    pub hosts: u32,
    /// The settings a start may choose (`"settings"` of `POST /v1/sessions`), as its hosts
    /// offer them; absent when it has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<crate::settings::SettingOffer>,
    /// The build it runs (a central game's), or `null` for hosts' own entries.
    #[serde(default)]
    pub build: Option<crate::BuildId>,
    /// Where its entry comes from.
    #[serde(default)]
    pub source: GameSource,
    /// A central game's rollout of its build, while one runs or since the last one.
    #[serde(default)]
    pub rollout: Option<Rollout>,
}

/// How a change of a central game's `build` rolls out (`"rollout"` of `PUT /v1/games/{id}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// Hosts that get the new build first.
    #[serde(default = "RolloutSpec::default_canary_hosts")]
    pub canary_hosts: u32,
    /// How long the canaries run the new build before every host switches, in seconds.
    #[serde(default = "RolloutSpec::default_hold_s")]
    pub hold_s: u32,
    /// Failed launches of the new build that halt the rollout.
    #[serde(default = "RolloutSpec::default_max_failures")]
    pub max_failures: u32,
}

impl RolloutSpec {
    fn default_canary_hosts() -> u32 {
        1
    }
    fn default_hold_s() -> u32 {
        60
    }
    fn default_max_failures() -> u32 {
        1
    }
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            canary_hosts: Self::default_canary_hosts(),
            hold_s: Self::default_hold_s(),
            max_failures: Self::default_max_failures(),
        }
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RolloutState {
    /// The canary hosts run the new build; every other host the previous one.
    Canary,
    /// Every host switches to the new build as soon as it has it.
    Rolling,
    /// Every host has switched.
    Done,
    /// The canary failed: every host keeps the previous build.
    Halted,
}

impl RolloutState {
    /// Its name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canary => "canary",
            Self::Rolling => "rolling",
            Self::Done => "done",
            Self::Halted => "halted",
        }
    }
}

/// A central game's rollout (API.md, "Builds and central games").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rollout {
    /// The build rolled out.
    pub build: crate::BuildId,
    /// The build it replaces.
    pub previous_build: crate::BuildId,
    /// Where it is.
    pub state: RolloutState,
    /// How it goes.
    pub spec: RolloutSpec,
    /// The canary hosts.
    #[serde(default)]
    pub canaries: Vec<HostId>,
    /// Hosts that run the new build now.
    pub hosts_ready: u32,
    /// Hosts told of the game.
    pub hosts_total: u32,
    /// Failed launches of the new build since the rollout began.
    pub failures: u32,
    /// Why it halted, or why a host cannot fetch or unpack the build.
    pub last_error: Option<String>,
    /// When it began.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
}

/// Where a game's catalog entry comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GameSource {
    /// Hosts' own catalogs.
    #[default]
    Host,
    /// The broker: `PUT /v1/games/{id}`.
    Central,
}

/// A central game (`PUT`, `GET /v1/games/{id}`): its catalog entry, kept by the broker, and
/// its build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CentralGame {
    /// The game.
    pub game_id: GameId,
    /// The build its new sessions run.
    pub build: crate::BuildId,
    /// The build before the last change, which `POST /v1/games/{id}/rollback` returns to.
    #[serde(default)]
    pub previous_build: Option<crate::BuildId>,
    /// Its catalog entry: the keys a host's TOML entry takes.
    pub entry: crate::catalog::GameEntry,
    /// Grows at every change; its `ETag`.
    pub version: u64,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The rollout of its build, while one runs or since the last one.
    #[serde(default)]
    pub rollout: Option<Rollout>,
}

/// `GET /v1/games` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GameList {
    /// Ordered by game id.
    pub games: Vec<Game>,
}

/// One broker of the system (`GET /v1/brokers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Broker {
    /// Its `--broker-id`.
    pub broker_id: String,
    /// Where its agents connect (`--agent-listen`, as bound).
    pub address: String,
    /// When it was last known to be alive.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// Hosts whose agents are connected to it.
    pub hosts: u32,
}

/// The largest pool: ready games a pool keeps at most.
pub const MAX_POOL_SIZE: u32 = 1000;
/// A pool's ready games are replaced once this old, unless its `max_age_s` says otherwise.
pub const DEFAULT_POOL_MAX_AGE_SECS: u64 = 86_400;

/// `PUT /v1/pools/{pool_id}` body: what a pool keeps ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// The game its sessions run.
    pub game_id: GameId,
    /// Their mode; a start claims from the pool only when it asks for the same mode (absent:
    /// the game's default, for starts that name no mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Their config file; a start claims only when it asks for the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// The settings its games run with (with the game's defaults); a start claims only when
    /// its own come to the same.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
    /// Ready games to keep, 0 to [`MAX_POOL_SIZE`].
    #[cfg_attr(feature = "openapi", schema(maximum = 1000))]
    pub size: u32,
    /// A ready game older than this is replaced (default [`DEFAULT_POOL_MAX_AGE_SECS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 31_536_000))]
    pub max_age_s: Option<u64>,
}

/// A pool, as the API shows it. Its `ETag` header names its spec's version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pool {
    /// Its name.
    pub pool_id: PoolId,
    /// The game its sessions run.
    pub game_id: GameId,
    /// Their mode, as asked for (`None`: the default).
    pub mode: Option<String>,
    /// Their config file, if any.
    pub config: Option<String>,
    /// The settings asked for its games.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
    /// Ready games it keeps.
    pub size: u32,
    /// A ready game older than this many seconds is replaced.
    pub max_age_s: u64,
    /// Its games ready now, waiting for a player.
    pub ready: u32,
    /// Its games launching now.
    pub starting: u32,
    /// Starts that took one of its ready games.
    pub claims: u64,
    /// Starts that matched it and found no ready game (they started cold).
    pub misses: u64,
    /// Its launches that failed.
    pub failures: u64,
    /// Why its last launch failed, until one succeeds.
    pub last_error: Option<String>,
    /// The version of its spec: grows at every `PUT`; its `ETag` is this, quoted.
    pub version: u64,
}

/// `GET /v1/pools` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoolList {
    /// Ordered by pool id.
    pub pools: Vec<Pool>,
}

/// `GET /v1/brokers` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BrokerList {
    /// Ordered by broker id.
    pub brokers: Vec<Broker>,
}

/// `GET /healthz` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `"ok"` from `/healthz`; `"ready"` from `/readyz`.
    pub status: String,
    /// From `/readyz` with a MySQL store: the database node in use now (`host:port`, as
    /// `--database-url` names it). A broker given several nodes moves to the next when the
    /// one in use fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// Every error code of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: malformed JSON, a wrong type, an unknown mode, a config outside `config_dir`.
    BadRequest,
    /// 401: no valid API key.
    Unauthorized,
    /// 403: the key's role may not do this.
    Forbidden,
    /// 404: no such session or host.
    NotFound,
    /// 404: no host offers this game.
    UnknownGame,
    /// 405: the path's route does not take this method.
    MethodNotAllowed,
    /// 409: the request conflicts with the resource's state.
    Conflict,
    /// 412: `If-Match` names a version that is not the resource's current one.
    PreconditionFailed,
    /// 413: the body is too large.
    PayloadTooLarge,
    /// 429: the user holds `--max-sessions-per-user` sessions.
    QuotaExceeded,
    /// 502: the agent could not start the game.
    LaunchFailed,
    /// 503: no online host offers the game with a free slot.
    NoCapacity,
    /// 504: the agent did not confirm the launch in time.
    LaunchTimeout,
    /// 503: the session store cannot be reached.
    StoreUnavailable,
    /// 503: the session's host is offline or its agent disconnected mid-request; retry later.
    HostUnavailable,
    /// 500: a fault of the broker's own.
    Internal,
    /// 503 (`GET /readyz`): the replicas' NATS cannot be reached.
    NatsUnavailable,
    /// 503 (`GET /v1/events`): the broker serves as many event streams as it can.
    TooManyStreams,
    /// 409 (`POST /v1/sessions/{id}/join`): the join token was redeemed before.
    TokenUsed,
    /// 410 (`POST /v1/sessions/{id}/join`): the join token is past `--join-token-ttl`.
    TokenExpired,
    /// 503 (`PUT /v1/builds/{sha256}`): the broker receives as many uploads as it takes at
    /// once.
    TooManyUploads,
    /// A code this client does not know yet (a newer broker's): decoding an error never fails
    /// on its code. Brokers never send it.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code a broker sends (all but [`ErrorCode::Unknown`]).
    pub const ALL: [ErrorCode; 21] = [
        Self::BadRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::UnknownGame,
        Self::MethodNotAllowed,
        Self::Conflict,
        Self::PreconditionFailed,
        Self::PayloadTooLarge,
        Self::QuotaExceeded,
        Self::LaunchFailed,
        Self::NoCapacity,
        Self::LaunchTimeout,
        Self::StoreUnavailable,
        Self::HostUnavailable,
        Self::Internal,
        Self::NatsUnavailable,
        Self::TooManyStreams,
        Self::TokenUsed,
        Self::TokenExpired,
        Self::TooManyUploads,
    ];

    /// Its name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::UnknownGame => "unknown_game",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::PreconditionFailed => "precondition_failed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::QuotaExceeded => "quota_exceeded",
            Self::LaunchFailed => "launch_failed",
            Self::NoCapacity => "no_capacity",
            Self::LaunchTimeout => "launch_timeout",
            Self::StoreUnavailable => "store_unavailable",
            Self::HostUnavailable => "host_unavailable",
            Self::Internal => "internal",
            Self::NatsUnavailable => "nats_unavailable",
            Self::TooManyStreams => "too_many_streams",
            Self::TokenUsed => "token_used",
            Self::TokenExpired => "token_expired",
            Self::TooManyUploads => "too_many_uploads",
            Self::Unknown => "unknown",
        }
    }
}

/// The body of every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An error's code and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Machine-readable.
    pub code: ErrorCode,
    /// What happened and what to do, for people.
    pub message: String,
}

/// The original portal's calls (`GET /IP`, `GET /End`), with their field names and strings as
/// the portal parses them, spelling included.
pub mod legacy {
    use serde::{Deserialize, Serialize};

    use super::ErrorDetail;

    /// `GET /IP` query.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
    pub struct StartQuery {
        /// The game.
        #[serde(rename = "gameId")]
        pub game_id: String,
        /// The mode (the portal's spelling).
        #[serde(rename = "excuteMode", default)]
        pub excute_mode: Option<String>,
        /// The config file.
        #[serde(default)]
        pub configfile: Option<String>,
    }

    /// `GET /IP` answer on success.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub struct Started {
        /// Always `"TRUE"`.
        pub gamestatus: String,
        /// Where the player connects.
        #[serde(rename = "gameIP")]
        pub game_ip: String,
        /// The game's PID, as a string.
        #[serde(rename = "PID")]
        pub pid: String,
        /// The game's port.
        pub port: u16,
        /// The session, for `DELETE /v1/sessions/{id}`.
        pub session_id: String,
    }

    /// `GET /End` query.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
    pub struct EndQuery {
        /// Ignored (the portal sends it).
        #[serde(rename = "excuteMode", default)]
        pub excute_mode: Option<String>,
        /// The IP from `/IP`.
        #[serde(rename = "serverIp")]
        pub server_ip: String,
        /// The PID from `/IP`.
        pub pid: String,
    }

    /// `GET /End` answer on success.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub struct Ended {
        /// Always `"end game sucessful"`.
        pub gamestatus: String,
    }

    /// `/IP` and `/End` error answers.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub struct Failed {
        /// `"FALSE"` for `/IP`, `"failed"` for `/End`.
        pub gamestatus: String,
        /// The same error as the v1 API gives.
        pub error: ErrorDetail,
    }

    /// `gamestatus` of a successful `/IP`.
    pub const STARTED: &str = "TRUE";
    /// `gamestatus` of a failed `/IP`.
    pub const START_FAILED: &str = "FALSE";
    /// `gamestatus` of a successful `/End` (spelled as the portal expects).
    pub const ENDED: &str = "end game sucessful";
    /// `gamestatus` of a failed `/End`.
    pub const END_FAILED: &str = "failed";
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unknown_error_code_still_decodes() {
        let body: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"brand_new","message":"m"}}"#).unwrap();
        assert_eq!(body.error.code, ErrorCode::Unknown);
        let body: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"method_not_allowed","message":"m"}}"#)
                .unwrap();
        assert_eq!(body.error.code, ErrorCode::MethodNotAllowed);
    }

    use super::*;

    #[test]
    fn session_serializes_as_the_contract_says() {
        let s = Session {
            session_id: SessionId::new("s1").unwrap(),
            game_id: GameId::new("sleeper").unwrap(),
            mode: "default".into(),
            config: None,
            status: SessionStatus::Running,
            host_id: HostId::new("host-a").unwrap(),
            ip: Some("127.0.0.1".parse().unwrap()),
            port: Some(20000),
            pid: Some(4242),
            created_at: time::macros::datetime!(2026-11-23 10:00:00 UTC),
            started_at: None,
            ended_at: None,
            end_reason: Some(EndReason::EndedByRequest),
            exit_code: None,
            pool_id: None,
            ports: vec![20000],
            settings: BTreeMap::new(),
            user_id: None,
            max_duration_s: Some(7200),
            expires_at: Some(time::macros::datetime!(2026-11-23 12:00:00 UTC)),
            build: None,
            gpus: vec![1],
            labels: [("region".to_owned(), "eu-west".to_owned())].into(),
            slots: 1,
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["gpus"], serde_json::json!([1]));
        assert_eq!(v["labels"]["region"], "eu-west");
        assert_eq!(v["status"], "running");
        // API.md: "sha256 of the game's build, or null for a host's own catalog entry".
        assert_eq!(v["build"], serde_json::Value::Null);
        assert_eq!(v["max_duration_s"], 7200);
        assert_eq!(v["expires_at"], "2026-11-23T12:00:00Z");
        assert_eq!(v["ip"], "127.0.0.1");
        assert_eq!(v["created_at"], "2026-11-23T10:00:00Z");
        assert_eq!(v["started_at"], serde_json::Value::Null);
        assert_eq!(v["end_reason"], "ended_by_request");
        assert_eq!(v["exit_code"], serde_json::Value::Null);
        let back: Session = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn status_parses_its_own_names() {
        for st in SessionStatus::ALL {
            assert_eq!(st.as_str().parse::<SessionStatus>().unwrap(), st);
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{st}\""));
        }
        let err = "runing".parse::<SessionStatus>().unwrap_err();
        assert_eq!(err.given(), "runing");
        assert_eq!(
            err.to_string(),
            "unknown status \"runing\": expected starting, ready, running, stopping, ended, failed or lost"
        );
    }

    #[test]
    fn error_codes_are_named_as_serde_names_them() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn error_body_shape() {
        let body = ErrorBody {
            error: ErrorDetail {
                code: ErrorCode::UnknownGame,
                message: "no host offers game \"x\"".into(),
            },
        };
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(v["error"]["code"], "unknown_game");
    }
}

/// The type of an event of `GET /v1/events` (its `event:` line) and of a webhook: public API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// A session was created (`starting`).
    #[serde(rename = "session.created")]
    SessionCreated,
    /// A pool's game is ready, waiting to be claimed.
    #[serde(rename = "session.ready")]
    SessionReady,
    /// Its game runs.
    #[serde(rename = "session.running")]
    SessionRunning,
    /// It is being stopped.
    #[serde(rename = "session.stopping")]
    SessionStopping,
    /// It ended (by request, or its game exited).
    #[serde(rename = "session.ended")]
    SessionEnded,
    /// It never ran.
    #[serde(rename = "session.failed")]
    SessionFailed,
    /// Its host went away.
    #[serde(rename = "session.lost")]
    SessionLost,
    /// It ends `expired` in [`EXPIRY_WARNING_S`] seconds (or sooner, when its whole limit
    /// is shorter): sent once.
    #[serde(rename = "session.expiring")]
    SessionExpiring,
    /// Its game redeemed its player's join token (API.md, "Players"): the player connected.
    /// Carries the session (and so its user), never the token.
    #[serde(rename = "session.joined")]
    SessionJoined,
    /// A host connected and takes sessions.
    #[serde(rename = "host.online")]
    HostOnline,
    /// A host's agent disconnected.
    #[serde(rename = "host.offline")]
    HostOffline,
    /// A host was drained.
    #[serde(rename = "host.draining")]
    HostDraining,
    /// A drained host was resumed.
    #[serde(rename = "host.resumed")]
    HostResumed,
    /// A draining host's last session ended: it may be powered down.
    #[serde(rename = "host.drained")]
    HostDrained,
    /// A host has had no session for `--host-idle-after`: it may be powered down.
    #[serde(rename = "host.idle")]
    HostIdle,
    /// A central game was set, rolled back or removed.
    #[serde(rename = "game.updated")]
    GameUpdated,
    /// A rollout moved on: canaries chosen, their hold begun, every host switching.
    #[serde(rename = "rollout.progressed")]
    RolloutProgressed,
    /// A rollout's canary failed: every host keeps the previous build.
    #[serde(rename = "rollout.halted")]
    RolloutHalted,
    /// Every host runs the rolled-out build.
    #[serde(rename = "rollout.done")]
    RolloutDone,
    /// A type this client does not know yet (a newer broker's). Brokers never send it.
    #[serde(other)]
    Unknown,
}

impl EventType {
    /// Every type a broker sends.
    pub const ALL: [EventType; 19] = [
        Self::SessionCreated,
        Self::SessionReady,
        Self::SessionRunning,
        Self::SessionStopping,
        Self::SessionEnded,
        Self::SessionFailed,
        Self::SessionLost,
        Self::SessionExpiring,
        Self::SessionJoined,
        Self::HostOnline,
        Self::HostOffline,
        Self::HostDraining,
        Self::HostResumed,
        Self::HostDrained,
        Self::HostIdle,
        Self::GameUpdated,
        Self::RolloutProgressed,
        Self::RolloutHalted,
        Self::RolloutDone,
    ];

    /// Its name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionCreated => "session.created",
            Self::SessionReady => "session.ready",
            Self::SessionRunning => "session.running",
            Self::SessionStopping => "session.stopping",
            Self::SessionEnded => "session.ended",
            Self::SessionFailed => "session.failed",
            Self::SessionLost => "session.lost",
            Self::SessionExpiring => "session.expiring",
            Self::SessionJoined => "session.joined",
            Self::HostOnline => "host.online",
            Self::HostOffline => "host.offline",
            Self::HostDraining => "host.draining",
            Self::HostResumed => "host.resumed",
            Self::HostDrained => "host.drained",
            Self::HostIdle => "host.idle",
            Self::GameUpdated => "game.updated",
            Self::RolloutProgressed => "rollout.progressed",
            Self::RolloutHalted => "rollout.halted",
            Self::RolloutDone => "rollout.done",
            Self::Unknown => "unknown",
        }
    }

    /// What an event of this type carries.
    pub fn subject(self) -> EventSubject {
        match self {
            Self::HostOnline
            | Self::HostOffline
            | Self::HostDraining
            | Self::HostResumed
            | Self::HostDrained
            | Self::HostIdle => EventSubject::Host,
            Self::GameUpdated
            | Self::RolloutProgressed
            | Self::RolloutHalted
            | Self::RolloutDone => EventSubject::Game,
            _ => EventSubject::Session,
        }
    }

    /// The type named `s`, if a broker sends it.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The event of a session reaching `status`.
    pub fn of_status(status: SessionStatus) -> Self {
        match status {
            SessionStatus::Starting => Self::SessionCreated,
            SessionStatus::Ready => Self::SessionReady,
            SessionStatus::Running => Self::SessionRunning,
            SessionStatus::Stopping => Self::SessionStopping,
            SessionStatus::Ended => Self::SessionEnded,
            SessionStatus::Failed => Self::SessionFailed,
            SessionStatus::Lost => Self::SessionLost,
        }
    }
}

/// What an event carries: a session, a host or a central game.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSubject {
    /// `session`.
    Session,
    /// `host`.
    Host,
    /// `game`.
    Game,
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event of `GET /v1/events` (its `data:`) and of a webhook's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// Increasing, with no gap, in the order events are delivered.
    pub id: u64,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who caused it (as in a session's history).
    pub actor: String,
    /// The session as it is after the event (session events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
    /// The host as it is after the event (host events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Host>,
    /// The central game as it is after the event (game and rollout events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub game: Option<CentralGame>,
}

#[cfg(test)]
mod event_tests {
    use super::*;

    #[test]
    fn event_types_round_trip_by_name_and_unknown_ones_decode() {
        for t in EventType::ALL {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{t}\""));
            assert_eq!(serde_json::from_str::<EventType>(&json).unwrap(), t);
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(
            serde_json::from_str::<EventType>("\"session.teleported\"").unwrap(),
            EventType::Unknown
        );
        assert_eq!(EventType::parse("unknown"), None);
    }
}
