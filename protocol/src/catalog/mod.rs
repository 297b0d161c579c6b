//! A game's catalog entry: as a host's TOML or a central game's JSON writes it
//! ([`GameEntry`] and the tables in it), what can be wrong with one ([`EntryError`]), and
//! (feature `catalog`, which brings `regex`) the one check of everything that can be checked
//! without the host's disk (`check`), run by the agent at load and by the broker when a
//! central game is set.
//!
//! - this file: the entry's types and its errors;
//! - [`template`]: placeholders and the strings that hold them;
//! - [`check`](mod@check): the checks, giving a [`Checked`] entry.

#[cfg(feature = "catalog")]
mod check;
mod template;

#[cfg(feature = "catalog")]
pub use check::{check, is_safe_value, Checked, ReadySpec};
pub use template::{Placeholder, Template, Values};

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::settings::ValueError;
use crate::wire::MAX_READY_TIMEOUT_SECS;

/// Limits of one game, applied by its host's agent through a cgroup of the session's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// At most this many processes (and threads) in the game's group.
    pub max_processes: Option<u32>,
    /// At most this much memory, in MiB.
    pub memory_mb: Option<u64>,
}

impl Limits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.max_processes.is_some() || self.memory_mb.is_some()
    }
}

/// The longest `max_duration_s` a catalog entry (or a start) may ask for: 30 days.
pub const MAX_DURATION_S: u32 = 30 * 24 * 3600;

/// `ready_timeout` when the entry names none, in seconds.
pub const DEFAULT_READY_TIMEOUT_SECS: u32 = 60;

/// A catalog entry's `ready` table: exactly one of its keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReadyEntry {
    /// Ready once a TCP connection to the session's port succeeds (must be `true`).
    #[serde(default)]
    pub tcp: Option<bool>,
    /// Ready once a line of the game's output matches this regular expression.
    #[serde(default)]
    pub log: Option<String>,
    /// Ready once this file exists (placeholders as in `args`).
    #[serde(default)]
    pub file: Option<String>,
}

/// A catalog entry as written in TOML.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GameEntry {
    /// The program; may hold placeholders.
    pub command: String,
    /// Its arguments; may hold placeholders.
    #[serde(default)]
    pub args: Vec<String>,
    /// Modes; the first is the default.
    #[serde(default)]
    pub modes: Vec<String>,
    /// Where requested configs must live.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub config_dir: Option<PathBuf>,
    /// The config used when none is requested.
    #[serde(default)]
    pub default_config: Option<String>,
    /// Extra environment variables for the game.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Resource limits, applied through cgroups.
    #[serde(default)]
    pub limits: Option<Limits>,
    /// How to know the game is ready for players; without it, a launched game is ready.
    #[serde(default)]
    pub ready: Option<ReadyEntry>,
    /// Seconds the readiness check may take (default 60, at most 600).
    #[serde(default)]
    pub ready_timeout: Option<f64>,
    /// Ports each session gets (default 1, at most [`MAX_PORTS`]): `{port}`, `{port1}`, ...
    #[serde(default)]
    pub ports: Option<u16>,
    /// Keys written into the session's own copy of its config file, with placeholders
    /// (`"server-port" = "{port}"`); `{config}` is then that copy.
    #[serde(default)]
    pub config_set: BTreeMap<String, String>,
    /// Keys a start may choose values for (`"video-fps" = { values = ["30", "60"] }`), written
    /// into the session's copy of its config like `config_set`.
    #[serde(default)]
    pub settings: BTreeMap<String, SettingEntry>,
    /// A session ends `expired` at this age, in seconds (the broker ends it; a start may ask
    /// for less).
    #[serde(default)]
    pub max_duration_s: Option<u32>,
    /// A running session ends `idle` after this many seconds with no established TCP
    /// connection on any of its ports (read from the host's TCP table).
    #[serde(default)]
    pub idle_timeout_s: Option<u32>,
    /// How much of its host's `max_sessions` one session takes (default 1, at most
    /// [`MAX_SLOTS`]).
    #[serde(default)]
    pub slots: Option<u32>,
    /// How many of its host's GPUs one session gets (default 0, at most [`MAX_GPUS`]): `{gpu}`,
    /// `CUDA_VISIBLE_DEVICES` and `NVIDIA_VISIBLE_DEVICES` name them.
    #[serde(default)]
    pub gpus: Option<u32>,
    /// Labels a host must have to run it (`{ gpu = "rtx4090" }`).
    #[serde(default)]
    pub labels: crate::labels::Labels,
}

/// A setting of a catalog entry: an allow-list of values or a numeric range, and a default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SettingEntry {
    /// The values allowed.
    #[serde(default)]
    pub values: Vec<String>,
    /// The smallest number allowed (without `values`).
    #[serde(default)]
    pub min: Option<f64>,
    /// The largest number allowed (without `values`).
    #[serde(default)]
    pub max: Option<f64>,
    /// The value when a start chooses none.
    #[serde(default)]
    pub default: Option<String>,
}

/// The most ports a session may take.
pub const MAX_PORTS: u16 = 16;

/// The most slots a session may take.
pub const MAX_SLOTS: u32 = 1024;

/// The most GPUs a session may get (and a host may have).
pub const MAX_GPUS: u32 = 64;

/// What is wrong with a catalog entry.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// `command` is empty.
    #[error("command is empty")]
    EmptyCommand,
    /// A `{` of `command` or `args` has no `}`.
    #[error("unclosed '{{' in {0:?}")]
    UnclosedBrace(String),
    /// A placeholder of `command` or `args` is not one of the known ones.
    #[error(
        "unknown placeholder {{{name}}} in {template:?}: use {{mode}}, {{config}}, {{port}}, {{port1}}..., {{slot}}, {{session_id}}, {{gpu}} or (a central game) {{build}}"
    )]
    UnknownPlaceholder {
        /// The name between the braces.
        name: String,
        /// The whole string.
        template: String,
    },
    /// A mode is not a valid value.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// `config_dir` cannot be resolved.
    #[error("config_dir {path}: {source}")]
    ConfigDir {
        /// The directory as written.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `default_config` is set without `config_dir`.
    #[error("default_config needs a config_dir")]
    DefaultConfigWithoutDir,
    /// An `env` key is empty, holds `=` or NUL, or starts with `ARCADE_`.
    #[error("env key {0:?} is not allowed")]
    EnvKey(String),
    /// `default_config` does not resolve inside `config_dir` (on the host that checks it).
    #[error("default_config: {0}")]
    DefaultConfig(String),
    /// `ready` does not name exactly one check.
    #[error(
        "ready must be one of {{ tcp = true }}, {{ log = \"REGEX\" }} or {{ file = \"PATH\" }}"
    )]
    ReadyKind,
    /// `ready.log` is not a regular expression.
    #[error("ready.log: {0}")]
    ReadyRegex(String),
    /// `ready_timeout` is out of range, or given without `ready`.
    #[error("ready_timeout must be more than 0 and at most {MAX_READY_TIMEOUT_SECS} seconds, with a ready check")]
    ReadyTimeout,
    /// `ports` is out of range.
    #[error("ports must be 1 to {MAX_PORTS}")]
    Ports,
    /// `slots` is out of range.
    #[error("slots must be 1 to {MAX_SLOTS}")]
    Slots,
    /// `gpus` is out of range.
    #[error("gpus must be 0 to {MAX_GPUS}")]
    Gpus,
    /// `{gpu}` in an entry without `gpus`.
    #[error("{{gpu}} needs gpus = 1 or more")]
    GpuWithoutGpus,
    /// A label is not allowed.
    #[error("labels: {0}")]
    Label(#[from] crate::labels::LabelError),
    /// `max_duration_s` or `idle_timeout_s` is out of range.
    #[error("{0} must be 1 to {MAX_DURATION_S} seconds")]
    Limit(&'static str),
    /// A `{portN}` names a port the session does not get.
    #[error("{{port{index}}} needs ports = {} or more", index + 1)]
    PortIndex {
        /// N.
        index: u16,
    },
    /// A `config_set` key is empty, `include`, or holds `=`, `#`, `[` or a control character.
    #[error("config_set key {0:?} is not allowed")]
    ConfigSetKey(String),
    /// A `config_set` value holds a control character (it could add a line to the file).
    #[error("config_set value of {0:?} must not hold control characters")]
    ConfigSetValue(String),
    /// `{build}` in a host's own entry: only a central game has a build.
    #[error(
        "{{build}} is a central game's (PUT /v1/games/{{id}}); a host's own entry names its files"
    )]
    BuildOutsideCentral,
    /// `config_set` or `settings` is given for a game without a config file to copy.
    #[error("config_set and settings need a config_dir")]
    ConfigSetWithoutConfig,
    /// A setting is wrong: its key (as for `config_set`), both or neither of a list and a
    /// range, a value or default that is not allowed, a key also in `config_set`.
    #[error("setting {key:?}: {why}")]
    Setting {
        /// The key.
        key: String,
        /// What is wrong.
        why: String,
    },
}
