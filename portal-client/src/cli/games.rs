//! `arcade games` and `game set`, `game rollback`, `game delete`: the calls, and what they
//! print.

use std::path::PathBuf;

use protocol::api::{CentralGame, Game, GameSource};
use protocol::{BuildId, GameId};

use super::output::{render, Table};
use super::CliError;
use crate::client::Client;

/// `arcade games`: the games online hosts offer.
pub(super) async fn list(client: &Client, json: bool) -> Result<String, CliError> {
    let list = client.games().await?;
    render(json, &list, |l| games_table(&l.games))
}

/// How a changed build rolls out, as the command line says (unset: the broker's default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RolloutArgs {
    /// `--canary-hosts`.
    pub canary_hosts: Option<u32>,
    /// `--hold`.
    pub hold_s: Option<u32>,
    /// `--max-failures`.
    pub max_failures: Option<u32>,
}

/// `arcade game set`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Set {
    /// `--build`.
    pub build: BuildId,
    /// `--from-file`: the entry; `None`: the game's entry as it is.
    pub entry: Option<PathBuf>,
    /// The rollout's settings.
    pub rollout: RolloutArgs,
    /// `--if-version`.
    pub if_version: Option<u64>,
}

/// A `PUT /v1/games/{id}` body: `entry`'s keys, the build, and the rollout's settings given.
fn body(
    entry: serde_json::Map<String, serde_json::Value>,
    build: &BuildId,
    r: RolloutArgs,
) -> serde_json::Value {
    let mut body = entry;
    body.insert("build".into(), serde_json::json!(build));
    let mut rollout = serde_json::Map::new();
    for (k, v) in [
        ("canary_hosts", r.canary_hosts),
        ("hold_s", r.hold_s),
        ("max_failures", r.max_failures),
    ] {
        if let Some(v) = v {
            rollout.insert(k.into(), v.into());
        }
    }
    if !rollout.is_empty() {
        body.insert("rollout".into(), rollout.into());
    }
    serde_json::Value::Object(body)
}

/// A catalog entry's TOML file as JSON keys.
fn entry_file(
    path: &std::path::Path,
) -> Result<serde_json::Map<String, serde_json::Value>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::File {
        path: path.to_owned(),
        source,
    })?;
    let bad = |message: String| CliError::Entry {
        path: path.to_owned(),
        message,
    };
    let table: toml::Table = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    match serde_json::to_value(table).map_err(|e| bad(e.to_string()))? {
        serde_json::Value::Object(m) => Ok(m),
        _ => Err(bad("not a table".into())),
    }
}

/// `arcade game set`: sets a central game to a build, with the entry of a file or its own.
pub(super) async fn set(
    client: &Client,
    id: &GameId,
    set: Set,
    json: bool,
) -> Result<String, CliError> {
    let entry = match &set.entry {
        Some(path) => entry_file(path)?,
        None => match serde_json::to_value(client.central_game(id).await?.entry)
            .map_err(CliError::Json)?
        {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        },
    };
    let game = client
        .put_game(id, &body(entry, &set.build, set.rollout), set.if_version)
        .await?;
    render(json, &game, central_text)
}

/// `arcade game rollback`.
pub(super) async fn rollback(client: &Client, id: &GameId, json: bool) -> Result<String, CliError> {
    let game = client.rollback_game(id).await?;
    render(json, &game, central_text)
}

/// `arcade game delete`.
pub(super) async fn delete(client: &Client, id: &GameId, json: bool) -> Result<String, CliError> {
    let game = client.delete_game(id).await?;
    render(json, &game, |g| format!("game {} removed\n", g.game_id))
}

/// A central game as `game set` and `game rollback` print it.
fn central_text(g: &CentralGame) -> String {
    let mut out = format!(
        "game {} version {}\nbuild {}\n",
        g.game_id, g.version, g.build
    );
    if let Some(p) = &g.previous_build {
        out.push_str(&format!("previous build {p}\n"));
    }
    if let Some(r) = &g.rollout {
        out.push_str(&format!(
            "rollout {} ({} of {} hosts ready, {} failed launches)\n",
            r.state.as_str(),
            r.hosts_ready,
            r.hosts_total,
            r.failures
        ));
    }
    out
}

/// What `arcade games` prints.
fn games_table(games: &[Game]) -> String {
    if games.is_empty() {
        return "no games (no online host offers any)\n".to_owned();
    }
    let mut table = Table::new(&["GAME", "MODES", "HOSTS", "SOURCE", "ROLLOUT"]).right(&[2]);
    for g in games {
        let source = match (&g.source, &g.build) {
            (GameSource::Central, Some(b)) => format!("central {}", &b.as_str()[..12]),
            (GameSource::Central, None) => "central".to_owned(),
            (GameSource::Host, _) => "host".to_owned(),
        };
        let rollout = g.rollout.as_ref().map_or_else(
            || "-".to_owned(),
            |r| format!("{} {}/{}", r.state.as_str(), r.hosts_ready, r.hosts_total),
        );
        table.row(vec![
            g.game_id.to_string(),
            g.modes.join(","),
            g.hosts.to_string(),
            source,
            rollout,
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::GameId;

    #[test]
    fn game_set_sends_the_entry_file_with_the_build_and_the_rollout_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("arena.toml");
        std::fs::write(
            &path,
            "command = \"{build}/bin/server\"\nargs = [\"--port\", \"{port}\"]\nready = { tcp = true }\n",
        )
        .unwrap();
        let build = BuildId::of_digest(&[1; 32]);
        let rollout = RolloutArgs {
            canary_hosts: Some(2),
            ..RolloutArgs::default()
        };
        let b = body(entry_file(&path).unwrap(), &build, rollout);
        assert_eq!(
            b,
            serde_json::json!({
                "command": "{build}/bin/server",
                "args": ["--port", "{port}"],
                "ready": {"tcp": true},
                "build": build,
                "rollout": {"canary_hosts": 2},
            })
        );
        std::fs::write(&path, "command = [").unwrap();
        assert!(matches!(entry_file(&path), Err(CliError::Entry { .. })));
    }

    #[test]
    fn games_table_lists_modes() {
        let games = [Game {
            game_id: GameId::new("neverball").unwrap(),
            modes: vec!["event-driven".into(), "periodic".into()],
            hosts: 2,
            settings: vec![],
            build: None,
            source: GameSource::Host,
            rollout: None,
        }];
        assert_eq!(
            games_table(&games),
            "GAME       MODES                  HOSTS  SOURCE  ROLLOUT\n\
             neverball  event-driven,periodic      2  host    -\n"
        );
    }
}
