//! The catalog: which games this host can run and how to start them (TOML, see API.md).
//!
//! Loading checks everything that can be checked once (ids, placeholders, that `config_dir`
//! exists); [`Catalog::resolve`] turns a launch request into a [`LaunchSpec`] — the exact
//! program, argv and environment — or says why the request is refused. Placeholder values
//! always become parts of single argv elements; nothing here is ever parsed by a shell.
//!
//! - this file: [`Catalog`] and its [`Game`]s: loading, and what the catalog offers the
//!   broker;
//! - [`entry`]: an entry as written in TOML ([`GameEntry`] and the tables in it), and what
//!   can be wrong with one;
//! - [`check`]: checking an entry at load, into a [`Game`];
//! - [`template`]: placeholders, and the strings that hold them;
//! - [`value`]: the check of a mode or config name; [`config`]: a config name resolved to a
//!   file inside its game's `config_dir`;
//! - [`resolve`]: a launch request turned into a [`LaunchSpec`].
//!
//! Their dependencies run one way: `check` and `resolve` use `template`, `config` and
//! `value`; `check` also uses `entry`, as does `template`; `entry` uses `config` and `value`
//! (for its errors); `config` uses `value`.

mod check;
mod config;
mod entry;
mod resolve;
mod template;
#[cfg(test)]
mod test_support;
mod value;

pub use config::ConfigError;
pub use entry::{
    EntryError, GameEntry, ReadyEntry, SettingEntry, DEFAULT_READY_TIMEOUT_SECS, MAX_PORTS,
};
pub use resolve::{LaunchSpec, ReadyCheck, ResolveError};
pub use value::{ValueError, MAX_VALUE_LEN};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use protocol::settings::SettingOffer;
use protocol::wire::GameOffer;
use protocol::{BuildId, GameId};

use crate::limits::Limits;
use entry::CatalogFile;
use template::Template;

/// A loaded, checked catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    games: BTreeMap<GameId, Arc<Game>>,
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
    slots: u32,
    gpus: u32,
    labels: protocol::labels::Labels,
}

impl Game {
    /// This game as offered to the broker under `id`: a central game's with its `build`.
    pub fn offer(&self, id: &GameId, build: Option<BuildId>) -> GameOffer {
        GameOffer {
            game_id: id.clone(),
            modes: self.modes.clone(),
            ready_timeout_ms: self
                .ready
                .as_ref()
                .map(|_| u32::try_from(self.ready_timeout.as_millis()).unwrap_or(u32::MAX)),
            settings: self.settings.clone(),
            max_duration_s: self.max_duration_s,
            idle_timeout_s: self.idle_timeout_s,
            build,
            slots: self.slots,
            gpus: self.gpus,
        }
    }

    /// How much of the host's `max_sessions` a session takes.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Why a host with `labels` and `gpus` GPUs cannot run this game, if it cannot: a label
    /// the game requires that the host lacks, or more GPUs than it has.
    pub fn misfit(&self, labels: &protocol::labels::Labels, gpus: usize) -> Option<String> {
        if let Some((k, v)) = self.labels.iter().find(|(k, v)| labels.get(*k) != Some(*v)) {
            return Some(format!(
                "it requires the label {k}={v}, which this host lacks"
            ));
        }
        if usize::try_from(self.gpus).unwrap_or(usize::MAX) > gpus {
            return Some(format!(
                "it needs {} GPUs and this host has {gpus} (--gpus)",
                self.gpus
            ));
        }
        None
    }

    /// How many ports a session takes.
    pub fn ports(&self) -> u16 {
        self.ports
    }

    /// How long a session may go without a connection on its ports, if limited.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout_s
            .map(|s| Duration::from_secs(u64::from(s)))
    }
}

/// How a game's readiness is known, as checked at load.
use protocol::catalog::ReadySpec as Ready;

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
            games.insert(id, Arc::new(game));
        }
        Ok(Self { games })
    }

    /// The games, as offered to the broker.
    pub fn offers(&self) -> Vec<GameOffer> {
        self.games.iter().map(|(id, g)| g.offer(id, None)).collect()
    }

    /// Drops the games a host with `labels` and `gpus` GPUs cannot run; answers each one
    /// dropped, with why.
    pub fn keep_fitting(
        &mut self,
        labels: &protocol::labels::Labels,
        gpus: usize,
    ) -> Vec<(GameId, String)> {
        let dropped: Vec<(GameId, String)> = self
            .games
            .iter()
            .filter_map(|(id, g)| Some((id.clone(), g.misfit(labels, gpus)?)))
            .collect();
        for (id, _) in &dropped {
            self.games.remove(id);
        }
        dropped
    }

    /// The game `id`, if the catalog has it.
    pub fn game(&self, id: &GameId) -> Option<&Arc<Game>> {
        self.games.get(id)
    }

    /// Whether the catalog has no game.
    pub fn is_empty(&self) -> bool {
        self.games.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_support::*;

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
        assert_eq!(
            cat.game(&g).unwrap().idle_timeout(),
            Some(Duration::from_secs(300))
        );
    }
}
