//! `arcade-bench pairs`: start and end latency, and start+end throughput.
//!
//! A broker (memory store, MySQL with `--database-url`, or a throwaway MariaDB with
//! `--mariadb`) and `--agents` agents run in this process over real loopback sockets, and
//! start a real game program: a static C program that pauses until signalled (see
//! [`stats::game_program`]). Two phases:
//! 1. latency: one client, start+end pairs one after the other, so nothing queues;
//! 2. throughput: `--clients` concurrent clients on HTTP keep-alive, each doing start+end pairs.
//!
//! Floors from the same run: a bare spawn of the game, its exit from SIGTERM to reaped, a
//! spawn+kill+reap loop at the same parallelism, and a loopback round trip.

use std::path::PathBuf;
use std::time::Instant;

use agent::catalog::{Catalog, GameEntry};
use portal_client::Client;
use protocol::wire::PortRange;
use tests::{AgentOptions, BrokerOptions, TestAgent, TestBroker};

use crate::load::{self, PairClient};
use crate::parts;
use crate::stats::{self, row, verdict, Summary};

#[derive(Debug, clap::Parser)]
pub struct Args {
    /// Agents, in this process.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Concurrent clients in the throughput phase.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Start+end pairs in the throughput phase.
    #[arg(long, default_value_t = 2000)]
    pairs: usize,
    /// Start+end pairs in the latency phase (one client).
    #[arg(long, default_value_t = 500)]
    latency_pairs: usize,
    /// Use this MySQL/MariaDB database instead of the memory store.
    #[arg(long)]
    database_url: Option<String>,
    /// Start a throwaway MariaDB (as the tests do) and use it.
    #[arg(long, conflicts_with = "database_url")]
    mariadb: bool,
    /// Where the agents' `--state-dir`s go (game logs and state); a temporary directory by
    /// default.
    #[arg(long)]
    state_root: Option<PathBuf>,
    /// The throughput phase's clients: `raw`, a lean HTTP/1.1 keep-alive client (see
    /// [`load`]), or `portal`, the `portal-client` crate. The latency phase always uses
    /// `portal-client`.
    #[arg(long, value_enum, default_value_t = LoadClient::Raw)]
    load_client: LoadClient,
    /// Tiny counts; fail unless it completes with sane numbers.
    #[arg(long)]
    smoke: bool,
}

/// Which client drives the throughput phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadClient {
    /// A lean HTTP/1.1 keep-alive client, as a load generator should be.
    Raw,
    /// The `portal-client` crate (reqwest).
    Portal,
}

/// Agent `i`'s port range when the clients could run more sessions at once on one agent than
/// a test agent's 10 ports (a start that finds no free port is refused): `clients` ports
/// each, in 10000-19999, below the ports the tests hand out. `None` where 10 ports serve.
fn bench_port_range(clients: usize, agents: usize, i: usize) -> Option<PortRange> {
    // Placement spreads sessions by load, not evenly: all clients' sessions may be on one agent.
    if clients <= 10 || clients * agents > 10_000 {
        return None;
    }
    let span = u16::try_from(clients).ok()?;
    let lo = 10_000 + span * u16::try_from(i).ok()?;
    Some(PortRange {
        lo,
        hi: lo + span - 1,
    })
}

/// The catalog of the benchmarks' agents: the game `bench`, which is `program 3600`.
pub fn catalog(program: &std::path::Path) -> Catalog {
    Catalog::from_entries([(
        "bench".to_owned(),
        GameEntry {
            command: program.display().to_string(),
            args: vec!["3600".into()],
            modes: vec![],
            config_dir: None,
            default_config: None,
            env: Default::default(),
            ..GameEntry::default()
        },
    )])
    .expect("catalog")
}

pub async fn run(mut a: Args) -> bool {
    if a.smoke {
        (a.agents, a.clients, a.pairs, a.latency_pairs) = (2, 4, 40, 20);
    }
    let work = tempfile::tempdir().expect("tempdir");
    let (program, what) = stats::game_program(work.path());
    let Some(database_url) = crate::stats::bench_database(a.mariadb).await else {
        return false;
    };
    let database_url = database_url.or_else(|| a.database_url.clone());
    let mysql = database_url.is_some();
    println!(
        "arcade-bench pairs: {} agents, {} clients, {} + {} start+end pairs, store: {}",
        a.agents,
        a.clients,
        a.latency_pairs,
        a.pairs,
        if database_url.is_some() {
            "mysql"
        } else {
            "memory"
        }
    );
    println!("game: {what}");
    println!(
        "load client (throughput phase): {}",
        match a.load_client {
            LoadClient::Raw => "lean HTTP/1.1 keep-alive (--load-client raw)",
            LoadClient::Portal => "portal-client, reqwest (--load-client portal)",
        }
    );

    let mut spawn = stats::spawn_latency(&program, a.latency_pairs).await;
    let mut exit = stats::exit_latency(&program, a.latency_pairs.min(200)).await;
    let (skr_rate, (skr_cpu, skr_steal)) =
        stats::spawn_kill_reap(&program, a.pairs, a.clients, stats::Kill::AtOnce).await;
    let (_, (started_cpu, _)) = stats::spawn_kill_reap(
        &program,
        a.pairs.min(2000),
        a.clients,
        stats::Kill::WhenRunning,
    )
    .await;
    let mut rtt = stats::loopback_rtt(5000).await;
    let (spawn, exit, rtt) = (
        Summary::of(&mut spawn),
        Summary::of(&mut exit),
        Summary::of(&mut rtt),
    );
    let db_floor = match &database_url {
        Some(url) => Some(stats::mysql_floor(url, 1000).await),
        None => None,
    };

    let broker = TestBroker::start_with(BrokerOptions {
        database_url,
        ..Default::default()
    })
    .await;
    let catalog = catalog(&program);
    let mut agents = Vec::new();
    for i in 0..a.agents {
        let mut o = AgentOptions::host(&format!("bench-{i}"));
        o.max_sessions = 1000;
        o.port_range = bench_port_range(a.clients, a.agents, i);
        o.catalog = Some(catalog.clone());
        if let Some(root) = &a.state_root {
            o.state_dir = Some(tempfile::tempdir_in(root).expect("state dir").keep());
        }
        agents.push(TestAgent::start(broker.agent_addr, o).await);
    }
    let client = Client::new(&broker.url, None).expect("client");
    tests::wait_hosts_online(&client, a.agents).await;

    // Phase 1: latency, one client.
    let (mut l_starts, mut l_ends, mut l_pairs, l_errors) =
        load::timed_pairs(PairClient::portal(client.clone()), a.latency_pairs).await;
    // The same through the lean client: what the client library itself adds.
    let (mut lean_starts, _, _, lean_errors) =
        load::raw_pairs(broker.http_addr, a.latency_pairs).await;
    let lean_start = Summary::of(&mut lean_starts);

    // Phase 2: throughput, many clients.
    let per = a.pairs.div_ceil(a.clients);
    let mark = stats::CpuMark::now();
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..a.clients)
        .map(|_| match a.load_client {
            LoadClient::Raw => tokio::spawn(load::raw_pairs(broker.http_addr, per)),
            LoadClient::Portal => {
                let c = Client::new(&broker.url, None).expect("client");
                tokio::spawn(load::timed_pairs(PairClient::portal(c), per))
            }
        })
        .collect();
    let (mut starts, mut ends, mut errors) = (Vec::new(), Vec::new(), l_errors + lean_errors);
    let mut done = 0;
    for t in tasks {
        let (s, e, p, err) = t.await.expect("client task");
        starts.extend(s);
        ends.extend(e);
        done += p.len();
        errors += err;
    }
    let rate = done as f64 / t0.elapsed().as_secs_f64();
    let (pair_cpu, pair_steal) = mark.per_op(done);
    for ag in agents {
        ag.stop().await;
    }
    let _ = broker.stop().await;
    // The pair taken apart: each side alone, the other simulated (within their limits).
    let apart = if a.clients.div_ceil(a.agents.max(1)) <= parts::MAX_AT_ONCE_PER_AGENT {
        let agent_alone = parts::agent_alone(
            &catalog,
            a.state_root.as_deref(),
            a.pairs,
            a.clients,
            a.agents,
        )
        .await;
        let broker_alone = parts::broker_alone(a.pairs, a.clients, a.agents).await;
        Some((agent_alone, broker_alone))
    } else {
        None
    };

    let l_start = Summary::of(&mut l_starts);
    let l_end = Summary::of(&mut l_ends);
    let l_pair = Summary::of(&mut l_pairs);
    let t_start = Summary::of(&mut starts);
    let t_end = Summary::of(&mut ends);
    println!();
    stats::header();
    row("floor: spawn of the game (posix_spawn)", &spawn, None);
    row("floor: game exit, SIGTERM to reaped", &exit, None);
    row("floor: loopback round trip, 32 bytes", &rtt, None);
    if let Some((q, tx)) = &db_floor {
        row("floor: database round trip (DO 1)", q, None);
        row("floor: database commit (BEGIN, INSERT, COMMIT)", tx, None);
    }
    row(
        "start, 1 client (201, game running)",
        &l_start,
        Some(spawn.p50),
    );
    row(
        "start, 1 lean client (no client library)",
        &lean_start,
        Some(spawn.p50),
    );
    row("end, 1 client (200, group gone)", &l_end, Some(exit.p50));
    row("start+end pair, 1 client", &l_pair, None);
    let loaded = format!("{} clients", a.clients);
    row(&format!("start, {loaded}"), &t_start, Some(spawn.p50));
    row(&format!("end, {loaded}"), &t_end, Some(exit.p50));
    println!();
    println!(
        "floor: spawn+kill+reap, {} in parallel: {skr_rate:.0}/s",
        a.clients
    );
    println!(
        "start+end pairs, {} clients over {} agents: {rate:.0}/s = {:.0}% of the floor; {errors} errors",
        a.clients,
        a.agents,
        100.0 * rate / skr_rate
    );
    println!(
        "CPU (this process and its games): {pair_cpu:.0} µs per pair, {skr_cpu:.0} µs per spawn+kill+reap = {:.0}%; the hypervisor stole {pair_steal:.0}% and {skr_steal:.0}% of the machine meanwhile",
        100.0 * skr_cpu / pair_cpu
    );
    println!(
        "  (not the target's floor: spawn, game running, kill, reap costs {started_cpu:.0} µs of CPU, the game's start-up included: {:.0}% of the pair's)",
        100.0 * started_cpu / pair_cpu
    );
    match &apart {
        Some((agent_alone, broker_alone)) => {
            parts::print(
                &format!(
                    "{} agents alone (simulated brokers, {} sessions at once)",
                    a.agents, a.clients
                ),
                agent_alone,
            );
            parts::print(
                &format!(
                    "the broker alone ({} simulated agents that answer at once)",
                    a.agents
                ),
                broker_alone,
            );
            println!(
                "  the two alone: {:.0} µs of the pair's {pair_cpu:.0} µs; the agents alone: {:.0}% of the floor",
                agent_alone.cpu_us + broker_alone.cpu_us,
                100.0 * agent_alone.rate / skr_rate
            );
        }
        None => println!(
            "the pair taken apart: skipped, more than {} sessions at once per agent",
            parts::MAX_AT_ONCE_PER_AGENT
        ),
    }
    println!();
    println!("targets (issue 6):");
    let store_target = if mysql {
        ("start p50, mysql", l_start.p50 < 2000.0, "< 2000 µs")
    } else {
        (
            "start p50 / spawn p50",
            l_start.p50 <= 6.0 * spawn.p50,
            "<= 6x",
        )
    };
    verdict(
        store_target.0,
        format!("{:.0} µs = {:.1}x", l_start.p50, l_start.p50 / spawn.p50),
        store_target.2.into(),
        store_target.1,
    );
    verdict(
        "start p99",
        format!("{:.0} µs", l_start.p99),
        "< 5000 µs".into(),
        l_start.p99 < 5000.0,
    );
    verdict(
        "end p50 - game exit p50",
        format!("{:.0} µs", l_end.p50 - exit.p50),
        "< 1000 µs".into(),
        l_end.p50 - exit.p50 < 1000.0,
    );
    verdict(
        "pairs / spawn+kill+reap",
        format!("{:.0}%", 100.0 * rate / skr_rate),
        ">= 50%, no error".into(),
        rate >= 0.5 * skr_rate && errors == 0,
    );
    let sane = [spawn, exit, rtt, l_start, l_end, l_pair, t_start, t_end]
        .iter()
        .all(Summary::sane)
        && rate.is_finite()
        && rate > 0.0
        && skr_rate > 0.0
        && apart
            .as_ref()
            .is_none_or(|(agent, broker)| agent.sane() && broker.sane());
    errors == 0 && sane
}
