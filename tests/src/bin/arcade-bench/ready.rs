//! `arcade-bench ready`: the time from a player's start to a game they can connect to, for a
//! game that takes a while to listen (issue 17), as a portal sees it.
//!
//! A broker (memory store, or a throwaway MariaDB with `--mariadb`) and an agent in this
//! process; the game is `arcade-test-game --listen --listen-after-ms N`. Each start is timed
//! to the first successful connect to its port (the game's greeting read):
//! - without a readiness check, `running` comes at once and the client retries its connect
//!   every 10 ms, as clients had to;
//! - with `ready = { tcp = true }`, the start answers once the agent connected, and the
//!   client's first connect must succeed (one that does not is an error).
//!
//! The floor is the game's own delay. Claims from a warm pool, the third figure of issue 17,
//! come with pools.

use std::time::{Duration, Instant};

use agent::catalog::{Catalog, GameEntry, ReadyEntry};
use portal_client::Client;
use protocol::api::StartSession;
use protocol::GameId;
use tests::{AgentOptions, BrokerOptions, TestAgent, TestBroker};

use crate::stats::{row, Summary};

#[derive(Debug, clap::Parser)]
pub struct Args {
    /// How long the game takes to listen, in ms.
    #[arg(long, default_value_t = 2000)]
    listen_after_ms: u64,
    /// Starts timed per way.
    #[arg(long, default_value_t = 20)]
    starts: usize,
    /// Start a throwaway MariaDB (as the tests do) and use it.
    #[arg(long)]
    mariadb: bool,
    /// Tiny counts; fail unless it completes with sane numbers.
    #[arg(long)]
    smoke: bool,
}

fn catalog(listen_after_ms: u64) -> Catalog {
    let game = tests::test_game().display().to_string();
    let late = listen_after_ms.to_string();
    let entry = |ready: Option<ReadyEntry>| GameEntry {
        command: game.clone(),
        args: vec!["--listen".into(), "--listen-after-ms".into(), late.clone()],
        ready,
        ready_timeout: Some(60.0),
        ..GameEntry::default()
    };
    let mut unchecked = entry(None);
    unchecked.ready_timeout = None;
    Catalog::from_entries([
        ("unchecked".to_owned(), unchecked),
        (
            "checked".to_owned(),
            entry(Some(ReadyEntry {
                tcp: Some(true),
                ..ReadyEntry::default()
            })),
        ),
    ])
    .expect("bench catalog")
}

fn start(game: &str) -> StartSession {
    StartSession {
        game_id: GameId::new(game).expect("id"),
        mode: None,
        config: None,
    }
}

/// Times `n` starts of `game` to a connectable game: (to the answer, to the greeting), and
/// the errors (a failed start, or with `retry` off a first connect that fails).
async fn time(client: &Client, game: &str, n: usize, retry: bool) -> (Summary, Summary, usize) {
    let (mut answered, mut connected, mut errors) = (Vec::new(), Vec::new(), 0);
    for _ in 0..n {
        let t0 = Instant::now();
        let Ok(s) = client.start_session(&start(game)).await else {
            errors += 1;
            continue;
        };
        answered.push(t0.elapsed());
        let port = s.port.expect("a running session has a port");
        let deadline = t0 + Duration::from_secs(60);
        loop {
            match tests::greeting(port).await {
                Ok(_) => {
                    connected.push(t0.elapsed());
                    break;
                }
                Err(_) if retry && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(_) => {
                    errors += 1;
                    break;
                }
            }
        }
        if client.end_session(&s.session_id).await.is_err() {
            errors += 1;
        }
    }
    (
        Summary::of(&mut answered),
        Summary::of(&mut connected),
        errors,
    )
}

pub async fn run(mut a: Args) -> bool {
    if a.smoke {
        (a.listen_after_ms, a.starts) = (200, 3);
    }
    let database_url = if a.mariadb {
        let Some(url) = tests::mariadb::database().await else {
            println!("--mariadb: no MariaDB server program (mariadbd) found");
            return false;
        };
        Some(url)
    } else {
        None
    };
    println!(
        "arcade-bench ready: a game listening after {} ms, {} starts each way, store: {}",
        a.listen_after_ms,
        a.starts,
        if a.mariadb { "mysql" } else { "memory" }
    );
    let broker = TestBroker::start_with(BrokerOptions {
        database_url,
        ..Default::default()
    })
    .await;
    let mut o = AgentOptions::host("ready-0");
    o.catalog = Some(catalog(a.listen_after_ms));
    let agent = TestAgent::start(broker.agent_addr, o).await;
    let client = Client::new(&broker.url, None).expect("client");
    tests::wait_hosts_online(&client, 1).await;

    let (plain_answer, plain_game, e1) = time(&client, "unchecked", a.starts, true).await;
    let (ready_answer, ready_game, e2) = time(&client, "checked", a.starts, false).await;
    agent.stop().await;
    let _ = broker.stop().await;

    let floor = a.listen_after_ms as f64 * 1000.0;
    println!();
    crate::stats::header();
    row("no check: start answered", &plain_answer, None);
    row(
        "no check: game connectable (client retries)",
        &plain_game,
        Some(floor),
    );
    row("ready check: start answered", &ready_answer, Some(floor));
    row(
        "ready check: game connectable (first try)",
        &ready_game,
        Some(floor),
    );
    println!();
    println!(
        "floor: the game's own {} ms before it listens",
        a.listen_after_ms
    );
    println!("errors: {}", e1 + e2);
    e1 + e2 == 0 && ready_game.p50 >= floor && ready_answer.p50 >= floor
}
