//! What a start answers when no host can take it now: 503 `no_capacity` with `Retry-After`
//! for a game some host has offered (its hosts may come back) and for any game while no host
//! is connected at all (a broker just started); 404 `unknown_game` only for a game no host has
//! ever offered while hosts are there. The broker remembers offered games (with MySQL, across
//! restarts), beyond the hosts' current catalogs.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use agent::catalog::{Catalog, GameEntry};
use portal_client::{Client, ClientError};
use protocol::api::ErrorCode;
use tests::{AgentOptions, BrokerOptions, TestAgent, TestBroker};

/// A catalog of `/bin/sleep` games with these names.
fn sleepers(names: &[&str]) -> Catalog {
    Catalog::from_entries(names.iter().map(|n| {
        (
            (*n).to_owned(),
            GameEntry {
                command: "/bin/sleep".into(),
                args: vec!["3600".into()],
                ..GameEntry::default()
            },
        )
    }))
    .unwrap()
}

fn agent(host: &str, games: &[&str]) -> AgentOptions {
    let mut o = AgentOptions::host(host);
    o.catalog = Some(sleepers(games));
    o
}

/// What a start of `game` answers, when it fails: status, code and `Retry-After`.
async fn refused(client: &Client, game: &str) -> (u16, ErrorCode, Option<u64>) {
    match client.start_session(&tests::start(game)).await {
        Ok(s) => panic!("{game} started: {s:?}"),
        Err(ClientError::Api {
            status,
            code,
            retry_after,
            ..
        }) => (status, code, retry_after),
        Err(e) => panic!("{game}: {e}"),
    }
}

const UNAVAILABLE: (u16, ErrorCode, Option<u64>) = (503, ErrorCode::NoCapacity, Some(5));
const UNKNOWN: (u16, ErrorCode, Option<u64>) = (404, ErrorCode::UnknownGame, None);

/// The answers through one broker's life; `restart` gives a broker on the same store.
async fn answers(opts: impl Fn() -> BrokerOptions, durable: bool) {
    let broker = TestBroker::start_with(opts()).await;
    let client = Client::new(&broker.url, None).unwrap();
    // No host at all yet: any game may be playable shortly.
    assert_eq!(refused(&client, "pong").await, UNAVAILABLE);
    assert_eq!(refused(&client, "no-such-game").await, UNAVAILABLE);

    // A host offers pong and tetris: only games nobody offers are unknown.
    let a = TestAgent::start(broker.agent_addr, agent("host-a", &["pong", "tetris"])).await;
    tests::wait_hosts_online(&client, 1).await;
    assert_eq!(refused(&client, "no-such-game").await, UNKNOWN);
    let s = client.start_session(&tests::start("pong")).await.unwrap();
    client.end_session(&s.session_id).await.unwrap();

    // host-a comes back without tetris, and host-b offers chess: tetris is still known (503),
    // though no host offers it now.
    a.stop().await;
    let a = TestAgent::start(broker.agent_addr, agent("host-a", &["pong"])).await;
    let b = TestAgent::start(broker.agent_addr, agent("host-b", &["chess"])).await;
    tests::wait_hosts_online(&client, 2).await;
    assert_eq!(refused(&client, "tetris").await, UNAVAILABLE);
    assert_eq!(refused(&client, "no-such-game").await, UNKNOWN);

    // Pong's host away, chess's there: pong is known, so 503.
    a.stop().await;
    tests::wait_hosts_online(&client, 1).await;
    assert_eq!(refused(&client, "pong").await, UNAVAILABLE);
    b.stop().await;
    let _ = broker.stop().await;
    if !durable {
        return;
    }

    // A broker started again on the same database remembers every game offered, with only
    // chess's host back.
    let broker = TestBroker::start_with(opts()).await;
    let client = Client::new(&broker.url, None).unwrap();
    let _b = TestAgent::start(broker.agent_addr, agent("host-b", &["chess"])).await;
    tests::wait_hosts_online(&client, 1).await;
    for known in ["pong", "tetris"] {
        assert_eq!(refused(&client, known).await, UNAVAILABLE, "{known}");
    }
    assert_eq!(refused(&client, "no-such-game").await, UNKNOWN);
    let _ = broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_known_but_away_is_503_and_only_a_game_never_offered_is_404() {
    answers(BrokerOptions::default, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_games_offered_are_remembered_across_a_restart_on_mariadb() {
    let Some(url) = tests::mariadb::database().await else {
        return;
    };
    answers(
        || BrokerOptions {
            database_url: Some(url.clone()),
            ..BrokerOptions::default()
        },
        true,
    )
    .await;
}
