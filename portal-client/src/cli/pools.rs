//! `arcade pools`, `pool set` and `pool delete`: the calls, and what they print.

use protocol::api::{Pool, PoolSpec};
use protocol::PoolId;

use super::output::{render, Table};
use super::CliError;
use crate::client::Client;

/// `arcade pools`: every warm pool and its counts.
pub(super) async fn list(client: &Client, json: bool) -> Result<String, CliError> {
    let list = client.pools().await?;
    render(json, &list, |l| pools_table(&l.pools))
}

/// `arcade pool set`: creates or changes a pool (only at `if_version`, if given).
pub(super) async fn set(
    client: &Client,
    id: &PoolId,
    spec: &PoolSpec,
    if_version: Option<u64>,
    json: bool,
) -> Result<String, CliError> {
    let pool = client.put_pool(id, spec, if_version).await?;
    render(json, &pool, |p| pools_table(std::slice::from_ref(p)))
}

/// `arcade pool delete`: removes a pool (only at `if_version`, if given).
pub(super) async fn delete(
    client: &Client,
    id: &PoolId,
    if_version: Option<u64>,
    json: bool,
) -> Result<String, CliError> {
    let pool = client.delete_pool(id, if_version).await?;
    render(json, &pool, |p| format!("pool {} removed\n", p.pool_id))
}

/// Pools as a table.
fn pools_table(pools: &[Pool]) -> String {
    if pools.is_empty() {
        return "no pools\n".to_owned();
    }
    let mut table = Table::new(&[
        "POOL",
        "GAME",
        "MODE",
        "SIZE",
        "READY",
        "STARTING",
        "CLAIMS",
        "MISSES",
        "FAILURES",
        "VERSION",
        "LAST ERROR",
    ])
    .right(&[3, 4, 5, 6, 7, 8, 9]);
    for p in pools {
        table.row(vec![
            p.pool_id.to_string(),
            p.game_id.to_string(),
            p.mode.clone().unwrap_or_else(|| "-".into()),
            p.size.to_string(),
            p.ready.to_string(),
            p.starting.to_string(),
            p.claims.to_string(),
            p.misses.to_string(),
            p.failures.to_string(),
            p.version.to_string(),
            p.last_error.clone().unwrap_or_default(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tests::parse;
    use crate::cli::{Cli, Command, PoolCommand};
    use clap::Parser;
    use protocol::GameId;

    #[test]
    fn pools_table_shows_counts_and_the_last_error() {
        let pool = Pool {
            pool_id: PoolId::new("lobby").unwrap(),
            game_id: GameId::new("neverball").unwrap(),
            mode: None,
            config: None,
            settings: Default::default(),
            size: 5,
            max_age_s: 86_400,
            ready: 4,
            starting: 1,
            claims: 12,
            misses: 2,
            failures: 1,
            last_error: Some("no capacity".into()),
            version: 3,
        };
        let text = pools_table(&[pool]);
        assert_eq!(
            text,
            "POOL   GAME       MODE  SIZE  READY  STARTING  CLAIMS  MISSES  FAILURES  VERSION  LAST ERROR\n\
             lobby  neverball  -        5      4         1      12       2         1        3  no capacity\n"
        );
        assert_eq!(pools_table(&[]), "no pools\n");
        let set = parse(&[
            "pool",
            "set",
            "lobby",
            "neverball",
            "--size",
            "5",
            "--if-version",
            "3",
        ]);
        assert!(matches!(
            set.command,
            Command::Pool {
                action: PoolCommand::Set {
                    size: 5,
                    if_version: Some(3),
                    ..
                }
            }
        ));
        assert!(
            Cli::try_parse_from(["arcade", "pool", "set", "p", "g", "--size", "1001"]).is_err()
        );
    }
}
