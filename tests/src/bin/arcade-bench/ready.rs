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
//! - claimed from a warm pool of the checked game (filled first, one ready game per start):
//!   the start answers with a game ready long ago, and the first connect must succeed.
//!
//! The floor is the game's own delay. Then the claim itself, as the store does it (no HTTP):
//! `claim_ready` of a pool's ready session, timed against a plain state change of a session
//! (one `transition`, a committed write with MySQL) in the same run.

use std::time::{Duration, Instant};

use agent::catalog::{Catalog, GameEntry, ReadyEntry};
use broker::session::{new_session, Actor, SessionEvent};
use broker::store::pools::{Claimant, ReadyClaim};
use broker::store::Store;
use portal_client::Client;
use protocol::api::PoolSpec;
use protocol::{GameId, HostId, PoolId, SessionId};
use tests::{AgentOptions, BrokerOptions, TestAgent, TestBroker};
use time::OffsetDateTime;

use crate::stats::{row, Summary};

#[derive(Debug, clap::Parser)]
pub struct Args {
    /// How long the game takes to listen, in ms.
    #[arg(long, default_value_t = 2000)]
    listen_after_ms: u64,
    /// Starts timed per way (and the pool's size).
    #[arg(long, default_value_t = 20)]
    starts: usize,
    /// Claims timed in the store.
    #[arg(long, default_value_t = 500)]
    claims: usize,
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

/// Times `n` starts of `game` to a connectable game: (to the answer, to the greeting), and
/// the errors (a failed start, or with `retry` off a first connect that fails).
async fn time(client: &Client, game: &str, n: usize, retry: bool) -> (Summary, Summary, usize) {
    let (mut answered, mut connected, mut errors) = (Vec::new(), Vec::new(), 0);
    for _ in 0..n {
        let t0 = Instant::now();
        let Ok(s) = client.start_session(&tests::start(game)).await else {
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

/// Fills a pool of `size` games of `game` and waits until they are all ready.
async fn fill(client: &Client, game: &str, size: usize) -> bool {
    let id = PoolId::new("bench").expect("id");
    let spec = PoolSpec {
        game_id: GameId::new(game).expect("id"),
        mode: None,
        config: None,
        settings: Default::default(),
        size: u32::try_from(size).unwrap_or(u32::MAX),
        max_age_s: None,
    };
    if client.put_pool(&id, &spec, None).await.is_err() {
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if let Ok(p) = client.pool(&id).await {
            if p.ready as usize == size && p.starting == 0 {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A pooled session `n`, recorded `ready` in `store`.
async fn ready_session(store: &Store, pool: &PoolId, n: usize) -> Option<SessionId> {
    let mut s = new_session(
        SessionId::new(format!("bench-{n}")).ok()?,
        GameId::new("checked").ok()?,
        "default".into(),
        None,
        HostId::new("bench-host").ok()?,
        OffsetDateTime::now_utc(),
    );
    s.pool_id = Some(pool.clone());
    store.insert(&s, None, Actor::Pool, None).await.ok()?;
    let readied = SessionEvent::Readied {
        pid: 4242,
        ip: [127, 0, 0, 1].into(),
        port: 20000,
        ports: vec![20000],
    };
    store
        .transition(
            &s.session_id,
            &readied,
            Actor::Agent,
            OffsetDateTime::now_utc(),
        )
        .await
        .ok()?;
    Some(s.session_id)
}

/// Times `n` claims of a pool's ready sessions in `store`, and `n` plain changes (a stop
/// request of another ready session) as the floor: (claims, floor, errors).
async fn claim_latency(store: &Store, n: usize) -> (Summary, Summary, usize) {
    let pool = PoolId::new("claims").expect("id");
    let spec = PoolSpec {
        game_id: GameId::new("checked").expect("id"),
        mode: None,
        config: None,
        settings: Default::default(),
        size: 0,
        max_age_s: None,
    };
    if store.put_pool(&pool, &spec, None).await.is_err() {
        return (Summary::of(&mut []), Summary::of(&mut []), 1);
    }
    let mut errors = 0;
    let mut others = Vec::new();
    for i in 0..2 * n {
        match ready_session(store, &pool, i).await {
            Some(id) if i % 2 == 1 => others.push(id),
            Some(_) => {}
            None => errors += 1,
        }
    }
    let (mut claims, mut floor) = (Vec::new(), Vec::new());
    for other in &others {
        let t0 = Instant::now();
        match store
            .claim_ready(
                &pool,
                Actor::Portal,
                None,
                Claimant::default(),
                OffsetDateTime::now_utc(),
            )
            .await
        {
            Ok(ReadyClaim::Claimed(_)) => claims.push(t0.elapsed()),
            _ => errors += 1,
        }
        let t0 = Instant::now();
        match store
            .transition(
                other,
                &SessionEvent::StopRequested,
                Actor::Portal,
                OffsetDateTime::now_utc(),
            )
            .await
        {
            Ok(_) => floor.push(t0.elapsed()),
            Err(_) => errors += 1,
        }
    }
    (Summary::of(&mut claims), Summary::of(&mut floor), errors)
}

pub async fn run(mut a: Args) -> bool {
    if a.smoke {
        (a.listen_after_ms, a.starts, a.claims) = (200, 3, 20);
    }
    let Some(database_url) = crate::stats::bench_database(a.mariadb).await else {
        return false;
    };
    println!(
        "arcade-bench ready: a game listening after {} ms, {} starts each way, store: {}",
        a.listen_after_ms,
        a.starts,
        if a.mariadb { "mysql" } else { "memory" }
    );
    let broker = TestBroker::start_with(BrokerOptions {
        database_url: database_url.clone(),
        ..Default::default()
    })
    .await;
    let mut o = AgentOptions::host("ready-0");
    o.catalog = Some(catalog(a.listen_after_ms));
    // The pool, the claimed games and the pool's refills at once.
    o.max_sessions = u32::try_from(3 * a.starts + 4).unwrap_or(u32::MAX);
    o.port_range = Some(tests::fresh_port_ranges(
        u16::try_from((3 * a.starts + 4).div_ceil(10)).unwrap_or(30),
    ));
    let agent = TestAgent::start(broker.agent_addr, o).await;
    let client = Client::new(&broker.url, None).expect("client");
    tests::wait_hosts_online(&client, 1).await;

    let (plain_answer, plain_game, e1) = time(&client, "unchecked", a.starts, true).await;
    let (ready_answer, ready_game, e2) = time(&client, "checked", a.starts, false).await;
    let filled = fill(&client, "checked", a.starts).await;
    let (pool_answer, pool_game, e3) = time(&client, "checked", a.starts, false).await;
    let hits = client
        .pool(&PoolId::new("bench").expect("id"))
        .await
        .map_or(0, |p| p.claims);
    agent.stop().await;
    let _ = broker.stop().await;
    let Some(store) = crate::stats::open_store(database_url.as_deref()).await else {
        return false;
    };
    let (claim, change, e4) = claim_latency(&store, a.claims).await;

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
    row("pool claim: start answered", &pool_answer, Some(floor));
    row(
        "pool claim: game connectable (first try)",
        &pool_game,
        Some(floor),
    );
    println!();
    row("store: a plain change (floor)", &change, None);
    row("store: claim of a ready game", &claim, Some(change.p50));
    println!();
    println!(
        "floor: the game's own {} ms before it listens; the store's: one plain change",
        a.listen_after_ms
    );
    let (target, limit) = if a.mariadb {
        ("2 ms", 2000.0)
    } else {
        ("1 ms", 1000.0)
    };
    crate::stats::verdict(
        "claim p50",
        format!("{:.0} µs", claim.p50),
        format!("under {target}"),
        claim.p50 < limit,
    );
    println!("pool hits: {hits} of {} starts", a.starts);
    let errors = e1 + e2 + e3 + e4 + usize::from(!filled);
    println!("errors: {errors}");
    errors == 0
        && ready_game.p50 >= floor
        && ready_answer.p50 >= floor
        && hits == a.starts as u64
        && claim.sane()
}
