//! The catalog: which games this host can run and how to start them (TOML, see API.md).
//!
//! Loading checks everything that can be checked once (ids, placeholders, that `config_dir`
//! exists); [`Catalog::resolve`] turns a launch request into a [`LaunchSpec`] — the exact
//! program, argv and environment — or says why the request is refused. Placeholder values
//! always become parts of single argv elements; nothing here is ever parsed by a shell.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use regex::Regex;

use protocol::api::MAX_DURATION_S;
use protocol::settings::SettingOffer;
use protocol::wire::{GameOffer, LaunchRequest, DEFAULT_MODE, MAX_READY_TIMEOUT_SECS};
use protocol::GameId;
use serde::Deserialize;

use crate::limits::Limits;
use crate::ports::Lease;
use crate::session_config::SessionConfig;

/// The longest mode or config name accepted in a request, in bytes.
pub const MAX_VALUE_LEN: usize = 255;

/// A loaded, checked catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    games: BTreeMap<GameId, Game>,
}

/// One game of the catalog.
#[derive(Debug, Clone)]
pub struct Game {
    command: Template,
    args: Vec<Template>,
    modes: Vec<String>,
    config_dir: Option<PathBuf>,
    default_config: Option<String>,
    env: BTreeMap<String, String>,
    limits: Limits,
    ready: Option<Ready>,
    ready_timeout: Duration,
    ports: u16,
    config_set: Vec<(String, Template)>,
    settings: Vec<SettingOffer>,
    max_duration_s: Option<u32>,
    idle_timeout_s: Option<u32>,
}

/// How a game's readiness is known, as checked at load.
#[derive(Debug, Clone)]
enum Ready {
    Tcp,
    Log(Regex),
    File(Template),
}

/// `ready_timeout` when the entry names none, in seconds.
pub const DEFAULT_READY_TIMEOUT_SECS: u32 = 60;

/// A catalog entry's `ready` table: exactly one of its keys.
#[derive(Debug, Clone, Default, Deserialize)]
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
#[derive(Debug, Clone, Default, Deserialize)]
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
}

/// A setting of a catalog entry: an allow-list of values or a numeric range, and a default.
#[derive(Debug, Clone, Default, Deserialize)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    games: BTreeMap<String, GameEntry>,
}

/// Why a catalog cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file cannot be read.
    #[error("cannot read catalog {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the catalog's shape.
    #[error("catalog {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// An entry is wrong, said in a message: its name is not a valid id (the broker's `--dev`
    /// setup uses it too).
    #[error("catalog game {game:?}: {message}")]
    Entry {
        /// The entry's name.
        game: String,
        /// What is wrong.
        message: String,
    },
    /// An entry's settings are wrong.
    // `error` is shown in the message and so, by design, not also returned as its source.
    #[error("catalog game {game:?}: {error}")]
    BadEntry {
        /// The entry's name.
        game: String,
        /// What is wrong.
        error: EntryError,
    },
}

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
        "unknown placeholder {{{name}}} in {template:?}: use {{mode}}, {{config}}, {{port}}, {{port1}}..., {{slot}} or {{session_id}}"
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
    /// `default_config` does not resolve inside `config_dir`.
    // Shown in the message, so not also returned as the source.
    #[error("default_config: {0}")]
    DefaultConfig(ConfigError),
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

/// Why a mode or config name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// It is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// `mode` or `config`.
        what: &'static str,
    },
    /// It is longer than [`MAX_VALUE_LEN`].
    #[error("{what} is longer than {max} bytes", max = MAX_VALUE_LEN)]
    TooLong {
        /// `mode` or `config`.
        what: &'static str,
    },
    /// It holds control characters.
    #[error("{what} must not hold control characters")]
    ControlChars {
        /// `mode` or `config`.
        what: &'static str,
    },
}

/// Why a config name does not resolve to a file inside the game's `config_dir`. The names
/// held are cut to their first 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The game has no `config_dir`.
    #[error("this game takes no config file")]
    NoConfigDir,
    /// The name is not a valid value.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// The name is absolute or holds `..`.
    #[error("config {0:?} must be a relative path inside the game's config_dir, without '..'")]
    NotRelative(String),
    /// No such file.
    #[error("config {0:?} does not exist")]
    Missing(String),
    /// Following symlinks leads out of `config_dir`.
    #[error("config {0:?} leads outside the game's config_dir")]
    Outside(String),
    /// It is not a regular file.
    #[error("config {0:?} is not a file")]
    NotAFile(String),
    /// Its resolved path is not UTF-8.
    #[error("config {0:?} is not valid UTF-8")]
    NotUtf8(String),
}

/// Why a launch request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The game is not in this catalog.
    #[error("game {0:?} is not in this host's catalog")]
    UnknownGame(String),
    /// The request is wrong: an unknown mode, a config outside `config_dir`, a bad value.
    #[error("{0}")]
    BadRequest(String),
}

/// Exactly what to run for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// The program.
    pub program: String,
    /// Its argv after the program name.
    pub args: Vec<String>,
    /// Environment variables to set, `ARCADE_*` included.
    pub env: Vec<(String, String)>,
    /// The mode chosen.
    pub mode: String,
    /// Resource limits to apply.
    pub limits: Limits,
    /// The readiness check, if the game has one, and how long it may take.
    pub ready: Option<(ReadyCheck, Duration)>,
    /// The session's own copy of its config, to write before the spawn, if the game sets
    /// keys in it.
    pub session_config: Option<SessionConfig>,
}

/// A readiness check for one session.
#[derive(Debug, Clone)]
pub enum ReadyCheck {
    /// A TCP connection to the session's port succeeds.
    Tcp,
    /// A line of the game's output matches.
    Log(Regex),
    /// This file exists.
    File(PathBuf),
}

impl PartialEq for ReadyCheck {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Tcp, Self::Tcp) => true,
            (Self::Log(a), Self::Log(b)) => a.as_str() == b.as_str(),
            (Self::File(a), Self::File(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for ReadyCheck {}

impl Catalog {
    /// Reads and checks a catalog file.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file: CatalogFile = toml::from_str(&text).map_err(|e| CatalogError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Self::from_entries(file.games)
    }

    /// Checks catalog entries given in code (the broker's `--dev` catalog, tests).
    pub fn from_entries(
        entries: impl IntoIterator<Item = (String, GameEntry)>,
    ) -> Result<Self, CatalogError> {
        let mut games = BTreeMap::new();
        for (name, entry) in entries {
            let id = GameId::new(name.clone()).map_err(|e| CatalogError::Entry {
                game: name.clone(),
                message: e.to_string(),
            })?;
            let game = Game::check(entry).map_err(|error| CatalogError::BadEntry {
                game: name.clone(),
                error,
            })?;
            games.insert(id, game);
        }
        Ok(Self { games })
    }

    /// The games, as offered to the broker.
    pub fn offers(&self) -> Vec<GameOffer> {
        self.games
            .iter()
            .map(|(id, g)| GameOffer {
                game_id: id.clone(),
                modes: g.modes.clone(),
                ready_timeout_ms: g
                    .ready
                    .as_ref()
                    .map(|_| u32::try_from(g.ready_timeout.as_millis()).unwrap_or(u32::MAX)),
                settings: g.settings.clone(),
                max_duration_s: g.max_duration_s,
                idle_timeout_s: g.idle_timeout_s,
            })
            .collect()
    }

    /// How long a session of `game` may go without a connection on its ports, if limited.
    pub fn idle_timeout(&self, game: &GameId) -> Option<Duration> {
        self.games
            .get(game)?
            .idle_timeout_s
            .map(|s| Duration::from_secs(u64::from(s)))
    }

    /// Whether the catalog has no game.
    pub fn is_empty(&self) -> bool {
        self.games.is_empty()
    }

    /// How many ports a session of `game_id` takes (1 for a game not in the catalog: its
    /// launch is refused anyway).
    pub fn ports_of(&self, game_id: &GameId) -> u16 {
        self.games.get(game_id).map_or(1, |g| g.ports)
    }

    /// Turns a launch request into what to run, for a session holding `lease`, whose own
    /// files go in `session_dir`.
    pub fn resolve(
        &self,
        req: &LaunchRequest,
        lease: &Lease,
        session_dir: &Path,
    ) -> Result<LaunchSpec, ResolveError> {
        let (game_id, session_id) = (&req.game_id, &req.session_id);
        let (mode, config) = (req.mode.as_deref(), req.config.as_deref());
        let game = self
            .games
            .get(game_id)
            .ok_or_else(|| ResolveError::UnknownGame(game_id.to_string()))?;
        let mode = match mode {
            None => game.modes[0].clone(),
            Some(m) if game.modes.iter().any(|x| x == m) => m.to_owned(),
            Some(m) => {
                return Err(ResolveError::BadRequest(format!(
                    "unknown mode {:?} for game {game_id}: it offers {}",
                    truncate(m),
                    game.modes.join(", ")
                )))
            }
        };
        let chosen = game.resolve_config(game_id, config)?;
        let ports: Vec<String> = lease.ports.iter().map(u16::to_string).collect();
        let slot = lease.slot.to_string();
        let mut values = Values {
            mode: &mode,
            config: chosen.as_deref(),
            ports: &ports,
            slot: &slot,
            session_id: session_id.as_str(),
        };
        let applied = protocol::settings::apply(&game.settings, &req.settings)
            .map_err(|e| ResolveError::BadRequest(e.to_string()))?;
        // With keys to set, `{config}` is the session's own copy of the chosen file.
        let session_config = match (&chosen, game.config_set.is_empty() && applied.is_empty()) {
            (_, true) => None,
            (None, false) => return Err(needs(game_id, Placeholder::Config)),
            (Some(original), false) => {
                let original = PathBuf::from(original);
                let name = original.file_name().unwrap_or_default();
                let mut set = game
                    .config_set
                    .iter()
                    .map(|(k, t)| Ok((k.clone(), t.expand(&values)?)))
                    .collect::<Result<Vec<_>, Placeholder>>()
                    .map_err(|p| needs(game_id, p))?;
                set.extend(applied);
                Some(SessionConfig {
                    path: session_dir.join(name),
                    original,
                    set,
                })
            }
        };
        let copy = session_config
            .as_ref()
            .map(|c| c.path.display().to_string());
        if let Some(c) = &copy {
            values.config = Some(c);
        }
        let program = game
            .command
            .expand(&values)
            .map_err(|p| needs(game_id, p))?;
        let args = game
            .args
            .iter()
            .map(|a| a.expand(&values))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|p| needs(game_id, p))?;
        let mut env: Vec<(String, String)> = game
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push(("ARCADE_SESSION_ID".into(), session_id.to_string()));
        env.push(("ARCADE_PORT".into(), ports[0].clone()));
        env.push(("ARCADE_PORTS".into(), ports.join(",")));
        env.push(("ARCADE_SLOT".into(), slot.clone()));
        env.push(("ARCADE_MODE".into(), mode.clone()));
        if let Some(c) = values.config {
            env.push(("ARCADE_CONFIG".into(), c.to_owned()));
        }
        let ready = match &game.ready {
            None => None,
            Some(Ready::Tcp) => Some(ReadyCheck::Tcp),
            Some(Ready::Log(re)) => Some(ReadyCheck::Log(re.clone())),
            Some(Ready::File(t)) => Some(ReadyCheck::File(PathBuf::from(
                t.expand(&values).map_err(|p| needs(game_id, p))?,
            ))),
        }
        .map(|check| (check, game.ready_timeout));
        Ok(LaunchSpec {
            program,
            args,
            env,
            mode,
            limits: game.limits,
            ready,
            session_config,
        })
    }
}

/// Whether `k` may be a key set in a config file: not empty, not `include`, no blank at either
/// end, no `=`, `#`, `[` or control character.
fn is_config_key(k: &str) -> bool {
    !(k.trim().is_empty()
        || k.trim() != k
        || k == "include"
        || k.contains(['=', '#', '['])
        || k.chars().any(char::is_control))
}

/// A catalog entry's settings, checked, as offered to the broker.
fn check_settings(
    entries: BTreeMap<String, SettingEntry>,
    config_set: &BTreeMap<String, String>,
) -> Result<Vec<SettingOffer>, EntryError> {
    let bad = |key: &str, why: &str| EntryError::Setting {
        key: key.to_owned(),
        why: why.to_owned(),
    };
    if entries.len() > protocol::settings::MAX_SETTINGS {
        return Err(bad("", "too many settings"));
    }
    let mut offers = Vec::new();
    for (key, e) in entries {
        // `video-specific[b]` is a GamingAnywhere key: brackets are allowed in settings.
        if !is_config_key(&key.replace(['[', ']'], "_")) || !protocol::settings::is_text(&key) {
            return Err(bad(&key, "not a key that can be set"));
        }
        if config_set.contains_key(&key) {
            return Err(bad(&key, "also in config_set"));
        }
        let range = e.min.is_some() || e.max.is_some();
        if e.values.is_empty() != range {
            return Err(bad(&key, "give either values or a min and max"));
        }
        if e.min.zip(e.max).is_some_and(|(lo, hi)| lo > hi) {
            return Err(bad(&key, "min is above max"));
        }
        if let Some(v) = e.values.iter().find(|v| !protocol::settings::is_text(v)) {
            return Err(bad(
                &key,
                &format!("value {v:?} is empty, too long or holds control characters"),
            ));
        }
        let offer = SettingOffer {
            key: key.clone(),
            values: e.values,
            min: e.min,
            max: e.max,
            default: e.default,
        };
        if let Some(d) = &offer.default {
            offer
                .check(d)
                .map_err(|err| bad(&key, &format!("default: {err}")))?;
        }
        offers.push(offer);
    }
    Ok(offers)
}

fn needs(game_id: &GameId, placeholder: Placeholder) -> ResolveError {
    if let Placeholder::Port(_) = placeholder {
        // Checked at load: a lease always has every port its templates use.
        return ResolveError::BadRequest(format!(
            "game {game_id}: {{{}}} has no port in this lease",
            placeholder.name()
        ));
    }
    ResolveError::BadRequest(format!(
        "game {game_id} needs a {} and none was given (its catalog entry has no default)",
        placeholder.name()
    ))
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

impl Game {
    fn check(entry: GameEntry) -> Result<Self, EntryError> {
        if entry.command.is_empty() {
            return Err(EntryError::EmptyCommand);
        }
        let command = Template::parse(&entry.command)?;
        let args = entry
            .args
            .iter()
            .map(|a| Template::parse(a))
            .collect::<Result<Vec<_>, _>>()?;
        let modes = if entry.modes.is_empty() {
            vec![DEFAULT_MODE.to_owned()]
        } else {
            for m in &entry.modes {
                check_value("mode", m)?;
            }
            entry.modes
        };
        let config_dir = match entry.config_dir {
            Some(dir) => Some(
                dir.canonicalize()
                    .map_err(|source| EntryError::ConfigDir { path: dir, source })?,
            ),
            None => None,
        };
        if entry.default_config.is_some() && config_dir.is_none() {
            return Err(EntryError::DefaultConfigWithoutDir);
        }
        for k in entry.env.keys() {
            if k.is_empty() || k.contains(['=', '\0']) || k.starts_with("ARCADE_") {
                return Err(EntryError::EnvKey(k.clone()));
            }
        }
        let ready = match entry.ready {
            None => None,
            Some(r) => Some(match (r.tcp, r.log, r.file) {
                (Some(true), None, None) => Ready::Tcp,
                (None, Some(re), None) => {
                    Ready::Log(Regex::new(&re).map_err(|e| EntryError::ReadyRegex(e.to_string()))?)
                }
                (None, None, Some(path)) => Ready::File(Template::parse(&path)?),
                _ => return Err(EntryError::ReadyKind),
            }),
        };
        let ready_timeout = match entry.ready_timeout {
            None => Duration::from_secs(u64::from(DEFAULT_READY_TIMEOUT_SECS)),
            Some(_) if ready.is_none() => return Err(EntryError::ReadyTimeout),
            Some(t) if t > 0.0 && t <= f64::from(MAX_READY_TIMEOUT_SECS) => {
                Duration::from_secs_f64(t)
            }
            Some(_) => return Err(EntryError::ReadyTimeout),
        };
        for (key, limit) in [
            ("max_duration_s", entry.max_duration_s),
            ("idle_timeout_s", entry.idle_timeout_s),
        ] {
            if limit.is_some_and(|l| !(1..=MAX_DURATION_S).contains(&l)) {
                return Err(EntryError::Limit(key));
            }
        }
        let ports = entry.ports.unwrap_or(1);
        if !(1..=MAX_PORTS).contains(&ports) {
            return Err(EntryError::Ports);
        }
        if (!entry.config_set.is_empty() || !entry.settings.is_empty()) && config_dir.is_none() {
            return Err(EntryError::ConfigSetWithoutConfig);
        }
        let settings = check_settings(entry.settings, &entry.config_set)?;
        let mut config_set = Vec::new();
        for (k, v) in entry.config_set {
            if !is_config_key(&k) {
                return Err(EntryError::ConfigSetKey(k));
            }
            if !crate::session_config::is_safe_value(&v) {
                return Err(EntryError::ConfigSetValue(k));
            }
            config_set.push((k, Template::parse(&v)?));
        }
        let templates = std::iter::once(&command)
            .chain(&args)
            .chain(config_set.iter().map(|(_, t)| t))
            .chain(match &ready {
                Some(Ready::File(t)) => Some(t),
                _ => None,
            });
        if let Some(index) = templates.filter_map(Template::max_port).max() {
            if index >= ports {
                return Err(EntryError::PortIndex { index });
            }
        }
        let game = Self {
            command,
            args,
            modes,
            config_dir,
            default_config: entry.default_config,
            env: entry.env,
            limits: entry.limits.unwrap_or_default(),
            ready,
            ready_timeout,
            ports,
            config_set,
            settings,
            max_duration_s: entry.max_duration_s,
            idle_timeout_s: entry.idle_timeout_s,
        };
        if let Some(default) = &game.default_config {
            game.resolve_config_in(default)
                .map_err(EntryError::DefaultConfig)?;
        }
        Ok(game)
    }

    fn resolve_config(
        &self,
        game_id: &GameId,
        requested: Option<&str>,
    ) -> Result<Option<String>, ResolveError> {
        match (requested, &self.default_config) {
            (Some(_), None) if self.config_dir.is_none() => Err(ResolveError::BadRequest(format!(
                "game {game_id} takes no config file"
            ))),
            (Some(name), _) => self
                .resolve_config_in(name)
                .map(Some)
                .map_err(|e| ResolveError::BadRequest(e.to_string())),
            (None, Some(default)) => self
                .resolve_config_in(default)
                .map(Some)
                .map_err(|e| ResolveError::BadRequest(e.to_string())),
            (None, None) => Ok(None),
        }
    }

    /// Resolves `name` inside `config_dir`: relative, no `..`, and after following symlinks
    /// still inside the (canonical) directory, and a regular file.
    fn resolve_config_in(&self, name: &str) -> Result<String, ConfigError> {
        let dir = self.config_dir.as_ref().ok_or(ConfigError::NoConfigDir)?;
        check_value("config", name)?;
        let rel = Path::new(name);
        if !rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(ConfigError::NotRelative(truncate(name)));
        }
        let full = dir
            .join(rel)
            .canonicalize()
            .map_err(|_| ConfigError::Missing(truncate(name)))?;
        if !full.starts_with(dir) {
            return Err(ConfigError::Outside(truncate(name)));
        }
        if !full.is_file() {
            return Err(ConfigError::NotAFile(truncate(name)));
        }
        full.into_os_string()
            .into_string()
            .map_err(|_| ConfigError::NotUtf8(truncate(name)))
    }
}

fn check_value(what: &'static str, v: &str) -> Result<(), ValueError> {
    if v.is_empty() {
        return Err(ValueError::Empty { what });
    }
    if v.len() > MAX_VALUE_LEN {
        return Err(ValueError::TooLong { what });
    }
    if v.chars().any(char::is_control) {
        return Err(ValueError::ControlChars { what });
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placeholder {
    Mode,
    Config,
    /// `{port}` (0), `{port1}`, ...
    Port(u16),
    /// `{slot}`.
    Slot,
    SessionId,
}

impl Placeholder {
    fn name(self) -> String {
        match self {
            Self::Mode => "mode".into(),
            Self::Config => "config".into(),
            Self::Port(0) => "port".into(),
            Self::Port(n) => format!("port{n}"),
            Self::Slot => "slot".into(),
            Self::SessionId => "session_id".into(),
        }
    }

    /// `{portN}`, N from 1 to [`MAX_PORTS`] - 1.
    fn port(name: &str) -> Option<Self> {
        let n: u16 = name.strip_prefix("port")?.parse().ok()?;
        (1..MAX_PORTS).contains(&n).then_some(Self::Port(n))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Placeholder),
}

/// A string with `{placeholder}`s, parsed once at load so expansion is a single pass: a value
/// that itself contains `{port}` is never expanded again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template(Vec<Piece>);

struct Values<'a> {
    mode: &'a str,
    config: Option<&'a str>,
    ports: &'a [String],
    slot: &'a str,
    session_id: &'a str,
}

impl Template {
    fn parse(s: &str) -> Result<Self, EntryError> {
        let mut pieces = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .map(|c| open + c)
                .ok_or_else(|| EntryError::UnclosedBrace(s.to_owned()))?;
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let var = match &rest[open + 1..close] {
                "mode" => Placeholder::Mode,
                "config" => Placeholder::Config,
                "port" => Placeholder::Port(0),
                "slot" => Placeholder::Slot,
                "session_id" => Placeholder::SessionId,
                other if Placeholder::port(other).is_some() => {
                    Placeholder::port(other).unwrap_or(Placeholder::Port(0))
                }
                other => {
                    return Err(EntryError::UnknownPlaceholder {
                        name: other.to_owned(),
                        template: s.to_owned(),
                    })
                }
            };
            pieces.push(Piece::Var(var));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Self(pieces))
    }

    /// The highest `{portN}` it uses.
    fn max_port(&self) -> Option<u16> {
        self.0
            .iter()
            .filter_map(|p| match p {
                Piece::Var(Placeholder::Port(n)) => Some(*n),
                _ => None,
            })
            .max()
    }

    fn expand(&self, v: &Values<'_>) -> Result<String, Placeholder> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(Placeholder::Mode) => out.push_str(v.mode),
                Piece::Var(Placeholder::Config) => {
                    out.push_str(v.config.ok_or(Placeholder::Config)?)
                }
                Piece::Var(Placeholder::Port(n)) => {
                    let port = v.ports.get(usize::from(*n));
                    out.push_str(port.ok_or(Placeholder::Port(*n))?);
                }
                Piece::Var(Placeholder::Slot) => out.push_str(v.slot),
                Piece::Var(Placeholder::SessionId) => out.push_str(v.session_id),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::SessionId;

    fn req(
        game_id: GameId,
        mode: Option<&str>,
        config: Option<&str>,
        settings: &BTreeMap<String, String>,
    ) -> LaunchRequest {
        LaunchRequest {
            session_id: sid(),
            game_id,
            mode: mode.map(str::to_owned),
            config: config.map(str::to_owned),
            settings: settings.clone(),
        }
    }

    fn lease(port: u16) -> Lease {
        Lease {
            ports: vec![port],
            slot: 0,
        }
    }

    fn ga_catalog(dir: &Path) -> Catalog {
        std::fs::write(dir.join("server.neverball.conf"), "x").unwrap();
        std::fs::write(dir.join("other.conf"), "y").unwrap();
        let toml = format!(
            r#"
[games.sleeper]
command = "/bin/sleep"
args = ["3600"]

[games.neverball]
command = "/opt/ga/bin/ga-server-{{mode}}"
args = ["{{config}}", "--port={{port}}", "{{session_id}}"]
modes = ["event-driven", "periodic"]
config_dir = "{}"
default_config = "server.neverball.conf"
"#,
            dir.display()
        );
        let path = dir.join("catalog.toml");
        std::fs::write(&path, toml).unwrap();
        Catalog::load(&path).unwrap()
    }

    fn sid() -> SessionId {
        SessionId::new("s-1").unwrap()
    }

    fn game(s: &str) -> GameId {
        GameId::new(s).unwrap()
    }

    #[test]
    fn resolves_placeholders_into_single_args() {
        let tmp = tempfile::tempdir().unwrap();
        let cat = ga_catalog(tmp.path());
        let spec = cat
            .resolve(
                &req(game("neverball"), Some("periodic"), None, &BTreeMap::new()),
                &lease(20001),
                Path::new("/run/arcade/s"),
            )
            .unwrap();
        assert_eq!(spec.program, "/opt/ga/bin/ga-server-periodic");
        let conf = tmp
            .path()
            .canonicalize()
            .unwrap()
            .join("server.neverball.conf");
        assert_eq!(
            spec.args,
            vec![
                conf.display().to_string(),
                "--port=20001".into(),
                "s-1".into()
            ]
        );
        assert!(spec
            .env
            .contains(&("ARCADE_SESSION_ID".to_owned(), "s-1".to_owned())));
        assert!(spec
            .env
            .contains(&("ARCADE_PORT".to_owned(), "20001".to_owned())));
        let spec = cat
            .resolve(
                &req(game("sleeper"), None, None, &BTreeMap::new()),
                &lease(20002),
                Path::new("/run/arcade/s"),
            )
            .unwrap();
        assert_eq!(
            (spec.program.as_str(), spec.mode.as_str()),
            ("/bin/sleep", "default")
        );
    }

    fn load(toml: &str) -> Result<Catalog, CatalogError> {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("catalog.toml");
        std::fs::write(&path, toml).unwrap();
        Catalog::load(&path)
    }

    #[test]
    fn readiness_checks_are_read_checked_and_offered() {
        let cat = load(
            r#"
[games.ga]
command = "/opt/ga/server"
ready = { tcp = true }
ready_timeout = 2.5

[games.logged]
command = "/opt/ga/server"
ready = { log = "^listening on [0-9]+$" }

[games.touched]
command = "/opt/ga/server"
ready = { file = "/run/ga/{session_id}.ready" }

[games.plain]
command = "/bin/sleep"
"#,
        )
        .unwrap();
        let timeouts: Vec<(String, Option<u32>)> = cat
            .offers()
            .into_iter()
            .map(|o| (o.game_id.to_string(), o.ready_timeout_ms))
            .collect();
        assert_eq!(
            timeouts,
            [
                ("ga".into(), Some(2500)),
                ("logged".into(), Some(60_000)),
                ("plain".into(), None),
                ("touched".into(), Some(60_000)),
            ]
        );
        let ready = |g: &str| {
            cat.resolve(
                &req(game(g), None, None, &BTreeMap::new()),
                &lease(1),
                Path::new("/run/arcade/s"),
            )
            .unwrap()
            .ready
        };
        assert_eq!(
            ready("ga"),
            Some((ReadyCheck::Tcp, Duration::from_millis(2500)))
        );
        assert_eq!(
            ready("touched").unwrap().0,
            ReadyCheck::File(PathBuf::from("/run/ga/s-1.ready"))
        );
        assert!(
            matches!(ready("logged").unwrap().0, ReadyCheck::Log(re) if re.is_match("listening on 20000"))
        );
        assert_eq!(ready("plain"), None);

        for (bad, says) in [
            ("ready = { tcp = false }", "ready must be one of"),
            (
                "ready = { tcp = true, log = \"x\" }",
                "ready must be one of",
            ),
            ("ready = {}", "ready must be one of"),
            ("ready = { log = \"(\" }", "ready.log"),
            ("ready = { tcp = true }\nready_timeout = 0", "ready_timeout"),
            (
                "ready = { tcp = true }\nready_timeout = 601",
                "ready_timeout",
            ),
            ("ready_timeout = 5", "ready_timeout"),
            ("max_duration_s = 0", "max_duration_s must be 1 to"),
            ("idle_timeout_s = 2592001", "idle_timeout_s must be 1 to"),
            ("ready = { file = \"/x/{nope}\" }", "unknown placeholder"),
            ("ready = { http = \"/\" }", "unknown field"),
        ] {
            let toml = format!("[games.g]\ncommand = \"/bin/true\"\n{bad}\n");
            let e = load(&toml).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn session_limits_are_offered_to_the_broker() {
        let cat = load(
            "[games.g]\ncommand = \"/bin/true\"\nmax_duration_s = 7200\nidle_timeout_s = 300\n\
             [games.h]\ncommand = \"/bin/true\"\n",
        )
        .unwrap();
        let offers = cat.offers();
        let limits = |id: &str| {
            let o = offers.iter().find(|o| o.game_id.as_str() == id).unwrap();
            (o.max_duration_s, o.idle_timeout_s)
        };
        assert_eq!(limits("g"), (Some(7200), Some(300)));
        assert_eq!(limits("h"), (None, None));
        let g = GameId::new("g").unwrap();
        assert_eq!(cat.idle_timeout(&g), Some(Duration::from_secs(300)));
    }

    #[test]
    fn default_mode_is_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        let cat = ga_catalog(tmp.path());
        let spec = cat
            .resolve(
                &req(
                    game("neverball"),
                    None,
                    Some("other.conf"),
                    &BTreeMap::new(),
                ),
                &lease(1),
                Path::new("/run/arcade/s"),
            )
            .unwrap();
        assert_eq!(spec.mode, "event-driven");
        assert!(spec.args[0].ends_with("/other.conf"));
    }

    #[test]
    fn refuses_what_it_must() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let cat = ga_catalog(tmp.path());
        std::os::unix::fs::symlink(outside.path().join("secret"), tmp.path().join("link.conf"))
            .unwrap();
        let nb = game("neverball");
        let cases: &[(Option<&str>, Option<&str>)] = &[
            (Some("turbo"), None),
            (None, Some("../catalog.toml")),
            (None, Some("/etc/passwd")),
            (None, Some("link.conf")),
            (None, Some("missing.conf")),
            (None, Some("a\0b")),
            (None, Some("")),
            (None, Some(&"x".repeat(300))),
        ];
        for (mode, config) in cases {
            let r = cat.resolve(
                &req(nb.clone(), *mode, *config, &BTreeMap::new()),
                &lease(1),
                Path::new("/run/arcade/s"),
            );
            assert!(
                matches!(r, Err(ResolveError::BadRequest(_))),
                "{mode:?} {config:?}: {r:?}"
            );
        }
        assert!(matches!(
            cat.resolve(
                &req(game("sleeper"), None, Some("x.conf"), &BTreeMap::new()),
                &lease(1),
                Path::new("/run/arcade/s")
            ),
            Err(ResolveError::BadRequest(_))
        ));
        assert!(matches!(
            cat.resolve(
                &req(game("nope"), None, None, &BTreeMap::new()),
                &lease(1),
                Path::new("/run/arcade/s")
            ),
            Err(ResolveError::UnknownGame(_))
        ));
    }

    #[test]
    fn a_value_is_never_expanded_twice() {
        let cat = Catalog::from_entries([(
            "g".to_owned(),
            GameEntry {
                command: "/bin/echo".into(),
                args: vec!["{mode}{port}".into()],
                modes: vec!["{port}".into()],
                ..GameEntry::default()
            },
        )])
        .unwrap();
        let spec = cat
            .resolve(
                &req(game("g"), None, None, &BTreeMap::new()),
                &lease(7),
                Path::new("/run/arcade/s"),
            )
            .unwrap();
        assert_eq!(spec.args, vec!["{port}7".to_owned()]);
    }

    #[test]
    fn load_refuses_bad_entries() {
        let bad = [
            ("bad id/", "/bin/true", None),
            ("g", "", None),
            ("g", "/bin/{nope}", None),
            ("g", "/bin/{mode", None),
            ("g", "/bin/true", Some("/definitely/not/here")),
        ];
        for (name, command, dir) in bad {
            let r = Catalog::from_entries([(
                name.to_owned(),
                GameEntry {
                    command: command.into(),
                    args: vec![],
                    modes: vec![],
                    config_dir: dir.map(PathBuf::from),
                    default_config: None,
                    env: BTreeMap::new(),
                    ..GameEntry::default()
                },
            )]);
            assert!(r.is_err(), "{name} {command}");
        }
    }

    fn entry(command: &str) -> GameEntry {
        GameEntry {
            command: command.into(),
            args: vec![],
            ..GameEntry::default()
        }
    }

    fn load_error(entry: GameEntry) -> String {
        match Catalog::from_entries([("g".to_owned(), entry)]) {
            Ok(_) => panic!("loaded"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn entry_messages() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let with = |f: &dyn Fn(&mut GameEntry)| {
            let mut e = entry("/bin/true");
            f(&mut e);
            load_error(e)
        };
        assert_eq!(
            load_error(entry("")),
            r#"catalog game "g": command is empty"#
        );
        assert_eq!(
            load_error(entry("/bin/{mode")),
            r#"catalog game "g": unclosed '{' in "/bin/{mode""#
        );
        assert_eq!(
            load_error(entry("/bin/{nope}")),
            r#"catalog game "g": unknown placeholder {nope} in "/bin/{nope}": use {mode}, {config}, {port}, {port1}..., {slot} or {session_id}"#
        );
        assert_eq!(
            load_error(entry("/bin/{port16}")),
            r#"catalog game "g": unknown placeholder {port16} in "/bin/{port16}": use {mode}, {config}, {port}, {port1}..., {slot} or {session_id}"#
        );
        assert_eq!(
            load_error(entry("/bin/g{port2}")),
            r#"catalog game "g": {port2} needs ports = 3 or more"#
        );
        assert_eq!(
            with(&|e| e.ports = Some(0)),
            r#"catalog game "g": ports must be 1 to 16"#
        );
        assert_eq!(
            with(&|e| e.config_set = BTreeMap::from([("a".into(), "1".into())])),
            r#"catalog game "g": config_set and settings need a config_dir"#
        );
        for key in ["", "include", "a=b", "a#", "[x]", " a", "a\nb"] {
            assert_eq!(
                with(&|e| {
                    e.config_dir = Some(dir.clone());
                    e.config_set = BTreeMap::from([(key.to_owned(), "1".into())]);
                }),
                format!("catalog game \"g\": config_set key {key:?} is not allowed")
            );
        }
        assert_eq!(
            with(&|e| {
                e.config_dir = Some(dir.clone());
                e.config_set = BTreeMap::from([("fps".into(), "30\ninclude = /x".into())]);
            }),
            r#"catalog game "g": config_set value of "fps" must not hold control characters"#
        );
        let setting = |key: &str, entry: SettingEntry| {
            with(&|e| {
                e.config_dir = Some(dir.clone());
                e.settings = BTreeMap::from([(key.to_owned(), entry.clone())]);
            })
        };
        let values = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        for (key, entry, why) in [
            (
                "fps",
                SettingEntry::default(),
                "give either values or a min and max",
            ),
            (
                "fps",
                SettingEntry {
                    values: values(&["30"]),
                    min: Some(1.0),
                    ..SettingEntry::default()
                },
                "give either values or a min and max",
            ),
            (
                "fps",
                SettingEntry {
                    min: Some(60.0),
                    max: Some(30.0),
                    ..SettingEntry::default()
                },
                "min is above max",
            ),
            (
                "fps",
                SettingEntry {
                    values: values(&["30", "6\n0"]),
                    ..SettingEntry::default()
                },
                "holds control characters",
            ),
            (
                "fps",
                SettingEntry {
                    values: values(&["30"]),
                    default: Some("60".into()),
                    ..SettingEntry::default()
                },
                "default: setting \"fps\": \"60\" is not one of 30",
            ),
            (
                "include",
                SettingEntry {
                    values: values(&["x"]),
                    ..SettingEntry::default()
                },
                "not a key that can be set",
            ),
        ] {
            let message = setting(key, entry);
            assert!(message.contains(why), "{message}");
        }
        assert_eq!(
            with(&|e| e.modes = vec![String::new()]),
            r#"catalog game "g": mode must not be empty"#
        );
        assert_eq!(
            with(&|e| e.modes = vec!["m".repeat(300)]),
            r#"catalog game "g": mode is longer than 255 bytes"#
        );
        assert_eq!(
            with(&|e| e.modes = vec!["a\nb".into()]),
            r#"catalog game "g": mode must not hold control characters"#
        );
        let missing = dir.join("missing");
        assert_eq!(
            with(&|e| e.config_dir = Some(missing.clone())),
            format!(
                r#"catalog game "g": config_dir {}: {}"#,
                missing.display(),
                missing.canonicalize().unwrap_err()
            )
        );
        assert_eq!(
            with(&|e| e.default_config = Some("x".into())),
            r#"catalog game "g": default_config needs a config_dir"#
        );
        assert_eq!(
            with(&|e| {
                e.env.insert("ARCADE_X".into(), "1".into());
            }),
            r#"catalog game "g": env key "ARCADE_X" is not allowed"#
        );
        assert_eq!(
            with(&|e| {
                e.config_dir = Some(dir.clone());
                e.default_config = Some("absent.conf".into());
            }),
            r#"catalog game "g": default_config: config "absent.conf" does not exist"#
        );
        match Catalog::from_entries([("bad id/".to_owned(), entry("/bin/true"))]) {
            Err(CatalogError::Entry { game, .. }) => assert_eq!(game, "bad id/"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn config_messages() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::fs::create_dir(tmp.path().join("sub.d")).unwrap();
        let cat = ga_catalog(tmp.path());
        std::os::unix::fs::symlink(outside.path().join("secret"), tmp.path().join("link.conf"))
            .unwrap();
        let message = |game_id: &str, config: &str| match cat.resolve(
            &req(game(game_id), None, Some(config), &BTreeMap::new()),
            &lease(1),
            Path::new("/run/arcade/s"),
        ) {
            Err(ResolveError::BadRequest(m)) => m,
            other => panic!("{config:?}: {other:?}"),
        };
        let long = "x".repeat(300);
        let cases = [
            ("../catalog.toml", r#"config "../catalog.toml" must be a relative path inside the game's config_dir, without '..'"#.to_owned()),
            ("/etc/passwd", r#"config "/etc/passwd" must be a relative path inside the game's config_dir, without '..'"#.to_owned()),
            ("link.conf", r#"config "link.conf" leads outside the game's config_dir"#.to_owned()),
            ("missing.conf", r#"config "missing.conf" does not exist"#.to_owned()),
            ("sub.d", r#"config "sub.d" is not a file"#.to_owned()),
            ("a\0b", "config must not hold control characters".to_owned()),
            ("", "config must not be empty".to_owned()),
            (long.as_str(), "config is longer than 255 bytes".to_owned()),
        ];
        for (config, want) in cases {
            assert_eq!(message("neverball", config), want);
        }
        assert_eq!(
            message("sleeper", "x.conf"),
            "game sleeper takes no config file"
        );
        let dirless = Game::check(entry("/bin/true")).unwrap();
        assert_eq!(
            dirless.resolve_config_in("x").unwrap_err().to_string(),
            "this game takes no config file"
        );
    }

    /// A game with two ports and keys set in its config: the session's copy is `{config}`,
    /// its values are this lease's, and the environment says the ports and the slot.
    #[test]
    fn a_lease_fills_ports_slot_and_the_session_config() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        std::fs::write(dir.join("server.conf"), "server-port = 8554\n").unwrap();
        let mut e = entry("/opt/ga/ga-server-event-driven");
        e.args = vec!["{config}".into(), "--slot={slot}".into()];
        e.ports = Some(2);
        e.config_dir = Some(dir.clone());
        e.default_config = Some("server.conf".into());
        e.config_set = BTreeMap::from([
            ("server-port".into(), "{port}".into()),
            ("control-port".into(), "{port1}".into()),
            ("display".into(), ":{slot}".into()),
        ]);
        e.settings = BTreeMap::from([
            (
                "video-fps".into(),
                SettingEntry {
                    values: vec!["30".into(), "60".into()],
                    default: Some("60".into()),
                    ..SettingEntry::default()
                },
            ),
            (
                "video-specific[b]".into(),
                SettingEntry {
                    min: Some(1e6),
                    max: Some(2e7),
                    default: Some("8000000".into()),
                    ..SettingEntry::default()
                },
            ),
        ]);
        let cat = Catalog::from_entries([("ga".to_owned(), e)]).unwrap();
        assert_eq!(cat.offers()[0].settings.len(), 2);
        assert_eq!(cat.ports_of(&game("ga")), 2);
        assert_eq!(cat.ports_of(&game("nope")), 1);
        let lease = Lease {
            ports: vec![20004, 20007],
            slot: 3,
        };
        let spec = cat
            .resolve(
                &req(
                    game("ga"),
                    None,
                    None,
                    &BTreeMap::from([("video-fps".to_owned(), "30".to_owned())]),
                ),
                &lease,
                Path::new("/var/lib/arcade/sessions/s"),
            )
            .unwrap();
        assert_eq!(
            spec.args,
            ["/var/lib/arcade/sessions/s/server.conf", "--slot=3"]
        );
        let copy = spec.session_config.unwrap();
        assert_eq!(copy.original, dir.join("server.conf"));
        assert_eq!(
            copy.set,
            [
                ("control-port".to_owned(), "20007".to_owned()),
                ("display".to_owned(), ":3".to_owned()),
                ("server-port".to_owned(), "20004".to_owned()),
                // The setting chosen, and the other's default.
                ("video-fps".to_owned(), "30".to_owned()),
                ("video-specific[b]".to_owned(), "8000000".to_owned()),
            ]
        );
        let refused = cat.resolve(
            &req(
                game("ga"),
                None,
                None,
                &BTreeMap::from([(
                    "video-fps".to_owned(),
                    "30\ninclude = /etc/shadow".to_owned(),
                )]),
            ),
            &lease,
            Path::new("/var/lib/arcade/sessions/s"),
        );
        assert!(
            matches!(&refused, Err(ResolveError::BadRequest(m)) if m.contains("video-fps")),
            "{refused:?}"
        );
        let env: BTreeMap<String, String> = spec.env.into_iter().collect();
        assert_eq!(env["ARCADE_PORTS"], "20004,20007");
        assert_eq!(env["ARCADE_SLOT"], "3");
        assert_eq!(
            env["ARCADE_CONFIG"],
            "/var/lib/arcade/sessions/s/server.conf"
        );
    }
}
