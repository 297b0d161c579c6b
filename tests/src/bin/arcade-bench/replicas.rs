//! `arcade-bench replicas`: what being one of several brokers costs (issue 15).
//!
//! A throwaway MariaDB and `nats-server`, and brokers in this process on them (each with
//! `--nats-url`, so each is a replica), over real loopback sockets; agents start the same real
//! game as `pairs`. Measured, with the same run's NATS request-reply round trip as the floor:
//! 1. start and end latency through the replica holding the host's agent, and through another
//!    one (whose start and end go to the owner over NATS), one client, one agent; and, as the
//!    floor of a replica's start, the same through one broker alone on the same MariaDB;
//! 2. start+end pairs/s with one replica and with three (the clients round-robin over them),
//!    and the CPU of a pair (this process: brokers, agents, clients, and the reaped games; not
//!    MariaDB or nats-server).

use std::time::{Duration, Instant};

use broker::nats::Nats;
use portal_client::Client;
use tests::{AgentOptions, BrokerOptions, TestAgent, TestBroker};

use crate::load::{self, PairClient};
use crate::stats::{self, row, Summary};

#[derive(Debug, clap::Parser)]
pub struct Args {
    /// Agents in the throughput phase.
    #[arg(long, default_value_t = 3)]
    agents: usize,
    /// Concurrent clients in the throughput phase.
    #[arg(long, default_value_t = 12)]
    clients: usize,
    /// Start+end pairs in each throughput run.
    #[arg(long, default_value_t = 1200)]
    pairs: usize,
    /// Start+end pairs per latency figure.
    #[arg(long, default_value_t = 300)]
    latency_pairs: usize,
    /// Tiny counts; fail unless it completes with sane numbers.
    #[arg(long)]
    smoke: bool,
}

/// `n` replicas on a fresh database of the shared MariaDB, and NATS at `nats`; and the
/// database's URL.
async fn replicas(n: usize, nats: &str) -> Option<(Vec<TestBroker>, String)> {
    let db = tests::mariadb::database().await?;
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(
            TestBroker::start_with(BrokerOptions {
                database_url: Some(db.clone()),
                nats_urls: vec![nats.to_owned()],
                ..Default::default()
            })
            .await,
        );
    }
    Some((v, db))
}

/// The store calls of a replica's start and end, each alone, one after the other, on the
/// host `host` (held and ready): what a start through the owner is made of.
struct Calls {
    ping: Summary,
    shared_hosts: Summary,
    owner: Summary,
    claim: Summary,
    fenced: Summary,
    insert_once: Summary,
    insert_fenced: Summary,
}

async fn store_calls(url: &str, host: &str, n: usize) -> Calls {
    use broker::session::{new_session, Actor, SessionEvent};
    use broker::store::mysql::MysqlStore;
    use broker::store::{Fence, Store};
    use protocol::{GameId, HostId, SessionId};
    let db = MysqlStore::connect(url).await.expect("database");
    let store = Store::Mysql(db.clone());
    let host = HostId::new(host).expect("host id");
    let alive = Duration::from_secs(5);
    let time = |v: &mut Vec<Duration>, t: Instant| v.push(t.elapsed());
    let (mut ping, mut shared, mut owner, mut claim, mut fenced, mut once, mut once_fenced) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let epoch = db
        .shared_hosts(alive)
        .await
        .expect("hosts")
        .iter()
        .find(|h| h.record.host_id == host)
        .expect("the host")
        .epoch;
    let fence = Fence {
        host: host.clone(),
        epoch,
    };
    for i in 0..n {
        let t = Instant::now();
        store.ping().await.expect("ping");
        time(&mut ping, t);
        let t = Instant::now();
        db.shared_hosts(alive).await.expect("hosts");
        time(&mut shared, t);
        let t = Instant::now();
        db.owner(&host).await.expect("owner");
        time(&mut owner, t);
        let s = new_session(
            SessionId::new(format!("calls-{i}")).expect("id"),
            GameId::new("bench").expect("game"),
            "default".into(),
            None,
            host.clone(),
            time::OffsetDateTime::now_utc(),
        );
        let t = Instant::now();
        db.claim(&s, None, Actor::Api, None, None)
            .await
            .expect("claim");
        time(&mut claim, t);
        let t = Instant::now();
        db.transition_fenced(
            &s.session_id,
            &SessionEvent::LaunchFailed,
            Actor::Agent,
            time::OffsetDateTime::now_utc(),
            Some(&fence),
        )
        .await
        .expect("fenced transition");
        time(&mut fenced, t);
        let mut once_s = s.clone();
        once_s.session_id = SessionId::new(format!("calls-once-{i}")).expect("id");
        let t = Instant::now();
        store
            .insert_after(
                &once_s,
                Actor::Api,
                &SessionEvent::LaunchFailed,
                Actor::Agent,
                time::OffsetDateTime::now_utc(),
                None,
            )
            .await
            .expect("insert");
        time(&mut once, t);
        once_s.session_id = SessionId::new(format!("calls-fenced-{i}")).expect("id");
        let t = Instant::now();
        store
            .insert_after(
                &once_s,
                Actor::Api,
                &SessionEvent::LaunchFailed,
                Actor::Agent,
                time::OffsetDateTime::now_utc(),
                Some(&fence),
            )
            .await
            .expect("fenced insert");
        time(&mut once_fenced, t);
    }
    Calls {
        ping: Summary::of(&mut ping),
        shared_hosts: Summary::of(&mut shared),
        owner: Summary::of(&mut owner),
        claim: Summary::of(&mut claim),
        fenced: Summary::of(&mut fenced),
        insert_once: Summary::of(&mut once),
        insert_fenced: Summary::of(&mut once_fenced),
    }
}

/// Agents `0..n`, agent `i` on replica `i mod replicas`.
async fn agents(
    brokers: &[TestBroker],
    n: usize,
    catalog: &agent::catalog::Catalog,
    tag: &str,
) -> Vec<TestAgent> {
    let mut v = Vec::new();
    for i in 0..n {
        let mut o = AgentOptions::host(&format!("{tag}-{i}"));
        o.max_sessions = 1000;
        o.catalog = Some(catalog.clone());
        o.port_range = Some(tests::fresh_port_ranges(3));
        v.push(TestAgent::start(brokers[i % brokers.len()].agent_addr, o).await);
    }
    let client = Client::new(&brokers[0].url, None).expect("client");
    tests::wait_hosts_online(&client, n).await;
    v
}

/// The NATS request-reply round trip between two connections, 200 bytes each way.
async fn nats_floor(url: &str, n: usize) -> Summary {
    let server = Nats::connect(&[url.to_owned()], "floor")
        .await
        .expect("NATS");
    let client = Nats::connect(&[url.to_owned()], "floor-client")
        .await
        .expect("NATS");
    let mut inbox = server.inbox("floor").await.expect("subscribe");
    let echo = tokio::spawn(async move {
        while let Some(m) = inbox.next().await {
            let payload = m.payload.clone();
            server.respond(m, payload).await;
        }
    });
    // The echo's subscription reaches the server on its own connection: until it has, a
    // request finds no responder (seen once in CI). Wait for the first answer, bounded.
    let ready_by = Instant::now() + Duration::from_secs(10);
    while client
        .request("floor", vec![7; 200], Duration::from_secs(1))
        .await
        .is_err()
    {
        assert!(Instant::now() < ready_by, "the echo never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        client
            .request("floor", vec![7; 200], Duration::from_secs(1))
            .await
            .expect("echo");
        samples.push(t.elapsed());
    }
    echo.abort();
    Summary::of(&mut samples)
}

/// Pairs/s, CPU µs per pair and errors of `clients` clients round-robin over `brokers`.
async fn throughput(brokers: &[TestBroker], clients: usize, pairs: usize) -> (f64, f64, usize) {
    let per = pairs.div_ceil(clients);
    let mark = stats::CpuMark::now();
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| tokio::spawn(load::raw_pairs(brokers[i % brokers.len()].http_addr, per)))
        .collect();
    let (mut done, mut errors) = (0, 0);
    for t in tasks {
        let (_, _, p, e) = t.await.expect("client task");
        done += p.len();
        errors += e;
    }
    let rate = done as f64 / t0.elapsed().as_secs_f64();
    (rate, mark.per_op(done).0, errors)
}

pub async fn run(mut a: Args) -> bool {
    if a.smoke {
        (a.agents, a.clients, a.pairs, a.latency_pairs) = (3, 3, 30, 10);
    }
    let Some(nats) = tests::nats::NatsServer::start() else {
        println!("no nats-server installed");
        return false;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let (program, what) = stats::game_program(work.path());
    let catalog = crate::pairs::catalog(&program);
    println!(
        "arcade-bench replicas: {} + {} latency pairs, {} clients, {} agents, {} pairs per run",
        a.latency_pairs, a.latency_pairs, a.clients, a.agents, a.pairs
    );
    println!("game: {what}");
    let floor = nats_floor(&nats.url(), 2000).await;

    // 0. The floor of a replica's start: one broker alone, on a database of the same MariaDB.
    let Some(alone_db) = tests::mariadb::database().await else {
        println!("no MariaDB server program (mariadbd) found");
        return false;
    };
    let alone = TestBroker::start_with(BrokerOptions {
        database_url: Some(alone_db),
        ..Default::default()
    })
    .await;
    let solo = agents(std::slice::from_ref(&alone), 1, &catalog, "alone").await;
    let (mut one_s, mut one_e, _, one_err) = load::timed_pairs(
        PairClient::portal(Client::new(&alone.url, None).expect("client")),
        a.latency_pairs,
    )
    .await;
    for ag in solo {
        ag.stop().await;
    }
    let _ = alone.stop().await;
    let (one_s, one_e) = (Summary::of(&mut one_s), Summary::of(&mut one_e));

    // 1. Latency: one agent on replica 0; starts through it and through replica 1.
    let Some((three, db)) = replicas(3, &nats.url()).await else {
        println!("no MariaDB server program (mariadbd) found");
        return false;
    };
    let solo = agents(&three[..1], 1, &catalog, "solo").await;
    let through = |b: &TestBroker| PairClient::portal(Client::new(&b.url, None).expect("client"));
    let (mut own_s, mut own_e, _, own_err) =
        load::timed_pairs(through(&three[0]), a.latency_pairs).await;
    let (mut oth_s, mut oth_e, _, oth_err) =
        load::timed_pairs(through(&three[1]), a.latency_pairs).await;
    let calls = store_calls(&db, "solo-0", a.latency_pairs).await;
    let (db_rtt, db_commit) = stats::mysql_floor(&db, a.latency_pairs).await;
    for ag in solo {
        ag.stop().await;
    }
    let (own_s, own_e, oth_s, oth_e) = (
        Summary::of(&mut own_s),
        Summary::of(&mut own_e),
        Summary::of(&mut oth_s),
        Summary::of(&mut oth_e),
    );

    // 2. Throughput with three replicas, then with one.
    let many = agents(&three, a.agents, &catalog, "three").await;
    let (rate3, cpu3, err3) = throughput(&three, a.clients, a.pairs).await;
    for ag in many {
        ag.stop().await;
    }
    for b in three {
        let _ = b.stop().await;
    }
    let Some((one, _)) = replicas(1, &nats.url()).await else {
        return false;
    };
    let many = agents(&one, a.agents, &catalog, "one").await;
    let (rate1, cpu1, err1) = throughput(&one, a.clients, a.pairs).await;
    for ag in many {
        ag.stop().await;
    }
    for b in one {
        let _ = b.stop().await;
    }

    println!();
    stats::header();
    row("floor: NATS request-reply, 200 B", &floor, None);
    row("floor: start, one broker alone on MariaDB", &one_s, None);
    row("floor: end, one broker alone on MariaDB", &one_e, None);
    row("start through the host's replica", &own_s, Some(one_s.p50));
    row("start through another replica", &oth_s, Some(one_s.p50));
    row("end through the host's replica", &own_e, Some(one_e.p50));
    row("end through another replica", &oth_e, Some(one_e.p50));
    row("floor: database round trip (DO 1)", &db_rtt, None);
    row("floor: database commit", &db_commit, None);
    row(
        "store: ping through the pool (DO 1)",
        &calls.ping,
        Some(db_rtt.p50),
    );
    row(
        "store: shared hosts (placement's read)",
        &calls.shared_hosts,
        Some(db_rtt.p50),
    );
    row(
        "store: a host's owner (routing's read)",
        &calls.owner,
        Some(db_rtt.p50),
    );
    row(
        "store: claim (lock, count, insert)",
        &calls.claim,
        Some(db_commit.p50),
    );
    row(
        "store: fenced transition",
        &calls.fenced,
        Some(db_commit.p50),
    );
    row(
        "store: one broker's insert with outcome",
        &calls.insert_once,
        Some(db_commit.p50),
    );
    row(
        "store: an owner's insert with outcome, fenced",
        &calls.insert_fenced,
        Some(db_commit.p50),
    );
    println!();
    println!(
        "a start through the host's replica is {:.2}x one broker's, through another {:.2}x; an end {:.2}x and {:.2}x",
        own_s.p50 / one_s.p50,
        oth_s.p50 / one_s.p50,
        own_e.p50 / one_e.p50,
        oth_e.p50 / one_e.p50
    );
    println!(
        "another replica adds {:.0} µs to a start's p50 and {:.0} µs to an end's: {:.1} and {:.1} NATS round trips",
        oth_s.p50 - own_s.p50,
        oth_e.p50 - own_e.p50,
        (oth_s.p50 - own_s.p50) / floor.p50,
        (oth_e.p50 - own_e.p50) / floor.p50
    );
    println!(
        "start+end pairs, {} clients, {} agents: 1 replica {rate1:.0}/s, {cpu1:.0} µs CPU per pair; 3 replicas {rate3:.0}/s, {cpu3:.0} µs CPU per pair ({:.2}x the pairs/s, {:.2}x the CPU)",
        a.clients,
        a.agents,
        rate3 / rate1,
        cpu3 / cpu1
    );
    let errors = one_err + own_err + oth_err + err1 + err3;
    println!("errors: {errors}");
    let sane = [floor, one_s, one_e, own_s, own_e, oth_s, oth_e]
        .iter()
        .all(Summary::sane)
        && rate1 > 0.0
        && rate3 > 0.0;
    errors == 0 && sane
}
