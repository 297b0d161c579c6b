//! A catalog entry as written in TOML: the types and the errors are `protocol::catalog`'s,
//! shared with the broker (central games); the file's own shape is here.

use std::collections::BTreeMap;

use serde::Deserialize;

pub use protocol::catalog::{
    EntryError, GameEntry, ReadyEntry, SettingEntry, DEFAULT_READY_TIMEOUT_SECS, MAX_PORTS,
};

/// A catalog file: its games, by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CatalogFile {
    #[serde(default)]
    pub(super) games: BTreeMap<String, GameEntry>,
}
