//! `arcade-bench galera`: what a start costs on a three-node Galera cluster against a single
//! MariaDB, in the same run (issue 30).
//!
//! A throwaway MariaDB and a throwaway three-node Galera cluster (`tests::galera`), a broker in
//! this process on each (the Galera one on node 0, given all three) with one agent each,
//! starting the same real game as `pairs`. Measured:
//! 1. each database's floors: a round trip and a durable commit of one row (on Galera the
//!    commit is certified by the cluster: a group round trip more);
//! 2. start and end latency, one client, the two brokers' pairs interleaved (a single-MariaDB
//!    pair, then a Galera pair, and so on), so a drift of the machine hits both alike; each
//!    Galera pair is also divided by the single pair just before it.

use std::time::Duration;

use portal_client::Client;
use tests::{AgentOptions, BrokerOptions, TestAgent, TestBroker};

use crate::load::{self, PairClient};
use crate::stats::{self, row, Summary};

#[derive(Debug, clap::Parser)]
pub struct Args {
    /// Start+end pairs on each database.
    #[arg(long, default_value_t = 300)]
    pairs: usize,
    /// Tiny counts; fail unless it completes with sane numbers.
    #[arg(long)]
    smoke: bool,
}

/// A broker on `url` with one agent offering the benchmark game.
async fn broker(url: String, program: &std::path::Path, tag: &str) -> (TestBroker, TestAgent) {
    let broker = TestBroker::start_with(BrokerOptions {
        database_url: Some(url),
        ..Default::default()
    })
    .await;
    let mut o = AgentOptions::host(tag);
    o.max_sessions = 100;
    o.catalog = Some(crate::pairs::catalog(program));
    o.port_range = Some(tests::fresh_port_ranges(2));
    let agent = TestAgent::start(broker.agent_addr, o).await;
    let client = Client::new(&broker.url, None).expect("client");
    tests::wait_hosts_online(&client, 1).await;
    (broker, agent)
}

pub async fn run(mut a: Args) -> bool {
    if a.smoke {
        a.pairs = 20;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let (program, what) = stats::game_program(work.path());
    let Some(single) = tests::mariadb::database().await else {
        eprintln!("no MariaDB: install mariadb-server");
        return false;
    };
    let Some(cluster) = tokio::task::spawn_blocking(tests::galera::Galera::start)
        .await
        .expect("start Galera")
    else {
        eprintln!("no Galera: install galera-4 and rsync");
        return false;
    };
    cluster.create_database("arcade_bench");
    let galera = cluster.url_from(0, "arcade_bench");
    println!(
        "arcade-bench galera: {} start+end pairs on each store, interleaved; game: {what}",
        a.pairs
    );

    let n = a.pairs.max(20) * 2;
    let (single_rtt, single_commit) = stats::mysql_floor(&single, n).await;
    let (galera_rtt, galera_commit) = stats::mysql_floor(&cluster.url(0, "arcade_bench"), n).await;

    let (b1, _a1) = broker(single, &program, "single").await;
    let (b2, _a2) = broker(galera, &program, "galera").await;
    let mut one = PairClient::portal(Client::new(&b1.url, None).expect("client"));
    let mut three = PairClient::portal(Client::new(&b2.url, None).expect("client"));
    let (mut s_starts, mut g_starts, mut s_ends, mut g_ends) = (vec![], vec![], vec![], vec![]);
    let mut ratios: Vec<Duration> = Vec::new();
    let mut errors = 0;
    for _ in 0..a.pairs {
        let (s, se, _, e1) = load::timed_pairs_with(&mut one, 1).await;
        let (g, ge, _, e2) = load::timed_pairs_with(&mut three, 1).await;
        errors += e1 + e2;
        if let (Some(s), Some(g)) = (s.first(), g.first()) {
            // The ratio as a duration of "µs per 1000": sorted with the same percentiles.
            ratios.push(Duration::from_nanos(
                (g.as_secs_f64() / s.as_secs_f64() * 1e6) as u64,
            ));
        }
        s_starts.extend(s);
        g_starts.extend(g);
        s_ends.extend(se);
        g_ends.extend(ge);
    }
    let summaries = [
        Summary::of(&mut s_starts),
        Summary::of(&mut g_starts),
        Summary::of(&mut s_ends),
        Summary::of(&mut g_ends),
    ];
    let ratio = Summary::of(&mut ratios);

    stats::header();
    row("single MariaDB: round trip (floor)", &single_rtt, None);
    row(
        "single MariaDB: commit of one row (floor)",
        &single_commit,
        None,
    );
    row("Galera: round trip (floor)", &galera_rtt, None);
    row("Galera: commit of one row (floor)", &galera_commit, None);
    row(
        "single MariaDB: start",
        &summaries[0],
        Some(single_commit.p50),
    );
    row("Galera: start", &summaries[1], Some(galera_commit.p50));
    row(
        "single MariaDB: end",
        &summaries[2],
        Some(single_commit.p50),
    );
    row("Galera: end", &summaries[3], Some(galera_commit.p50));
    println!(
        "  Galera start / single start, pair by pair: p50 {:.2}x, p99 {:.2}x",
        ratio.p50 / 1e3,
        ratio.p99 / 1e3
    );
    println!(
        "  Galera commit floor / single commit floor: {:.2}x",
        galera_commit.p50 / single_commit.p50
    );
    drop((b1, b2));
    let sane = errors == 0 && summaries.iter().all(Summary::sane) && ratio.sane();
    if !sane {
        eprintln!("arcade-bench galera: {errors} errors, or figures not sane");
    }
    sane
}
