//! `arcade games`: the call, and what it prints.

use protocol::api::{Game, GameSource};

use super::output::{render, Table};
use super::CliError;
use crate::client::Client;

/// `arcade games`: the games online hosts offer.
pub(super) async fn list(client: &Client, json: bool) -> Result<String, CliError> {
    let list = client.games().await?;
    render(json, &list, |l| games_table(&l.games))
}

/// What `arcade games` prints.
fn games_table(games: &[Game]) -> String {
    if games.is_empty() {
        return "no games (no online host offers any)\n".to_owned();
    }
    let mut table = Table::new(&["GAME", "MODES", "HOSTS", "SOURCE"]).right(&[2]);
    for g in games {
        let source = match (&g.source, &g.build) {
            (GameSource::Central, Some(b)) => format!("central {}", &b.as_str()[..12]),
            (GameSource::Central, None) => "central".to_owned(),
            (GameSource::Host, _) => "host".to_owned(),
        };
        table.row(vec![
            g.game_id.to_string(),
            g.modes.join(","),
            g.hosts.to_string(),
            source,
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::GameId;

    #[test]
    fn games_table_lists_modes() {
        let games = [Game {
            game_id: GameId::new("neverball").unwrap(),
            modes: vec!["event-driven".into(), "periodic".into()],
            hosts: 2,
            settings: vec![],
            build: None,
            source: GameSource::Host,
        }];
        assert_eq!(
            games_table(&games),
            "GAME       MODES                  HOSTS  SOURCE\n\
             neverball  event-driven,periodic      2  host\n"
        );
    }
}
