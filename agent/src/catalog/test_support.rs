//! What the catalog's unit tests share: a launch request, a lease, a catalog like a
//! GamingAnywhere host's, and entries that load or fail.

use std::collections::BTreeMap;
use std::path::Path;

use protocol::wire::LaunchRequest;
use protocol::{GameId, SessionId};

use super::{Catalog, CatalogError, GameEntry};
use crate::ports::Lease;

pub(super) fn req(
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
        join: None,
        build: None,
        gpus: Vec::new(),
    }
}

pub(super) fn lease(port: u16) -> Lease {
    Lease {
        ports: vec![port],
        slot: 0,
        weight: 1,
        gpus: Vec::new(),
    }
}

pub(super) fn ga_catalog(dir: &Path) -> Catalog {
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

pub(super) fn sid() -> SessionId {
    SessionId::new("s-1").unwrap()
}

pub(super) fn game(s: &str) -> GameId {
    GameId::new(s).unwrap()
}

pub(super) fn load(toml: &str) -> Result<Catalog, CatalogError> {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("catalog.toml");
    std::fs::write(&path, toml).unwrap();
    Catalog::load(&path)
}

pub(super) fn entry(command: &str) -> GameEntry {
    GameEntry {
        command: command.into(),
        args: vec![],
        ..GameEntry::default()
    }
}

pub(super) fn load_error(entry: GameEntry) -> String {
    match Catalog::from_entries([("g".to_owned(), entry)]) {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    }
}
