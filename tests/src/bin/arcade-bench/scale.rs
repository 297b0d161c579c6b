//! `arcade-bench scale`: one broker, in its own process (this binary's hidden `serve-broker`,
//! which runs the same `broker::run` through the test harness), and `--agents` simulated
//! agents in this process: tasks that speak the real protocol over real loopback sockets,
//! heartbeat at the interval the broker asks (1 s), and answer launches and stops at once
//! without starting anything.
//!
//! It reports the broker process's CPU share and RSS (from `/proc`) while the agents only
//! heartbeat, the CPU cost of one heartbeat (also as a multiple of the same run's loopback
//! round trip), the start and end latency through HTTP at that size, and placement over the
//! same hosts as the broker lists them.
//!
//! 10,000 agents need 10,000 sockets in each process: it raises its soft open-file limit to
//! the hard one (the broker process inherits it) and says so.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::placement::{place, HostIndex, HostView, Request, Strategy};
use futures::{SinkExt, StreamExt};
use portal_client::Client;
use protocol::api::HostStatus;
use protocol::codec::MessageCodec;
use protocol::wire::{
    AgentMessage, BrokerMessage, GameOffer, Hello, HelloReply, Launched, Load, RunningGame,
    DEFAULT_MODE, PROTOCOL_VERSION,
};
use protocol::GameId;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::Semaphore;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::stats::{self, row, verdict, Summary};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Simulated agents.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// How long the heartbeat-only window lasts, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Start+end pairs, one at a time, at that size.
    #[arg(long, default_value_t = 300)]
    starts: usize,
    /// Tiny counts; fail unless it completes with sane numbers.
    #[arg(long)]
    smoke: bool,
    /// Run the broker process under this command, split at spaces (a profiler:
    /// `heaptrack`, `perf record -g -o broker.perf`). CPU and RSS are still read from the
    /// broker's own PID, but include the profiler's overhead.
    #[arg(long, value_name = "COMMAND")]
    broker_under: Option<String>,
}

/// The child process: a broker on loopback port 0 that prints its addresses and runs until
/// its stdin closes.
pub async fn serve_broker() -> bool {
    let broker = tests::TestBroker::start_with(tests::BrokerOptions {
        heartbeat_timeout: Duration::from_secs(15),
        ..Default::default()
    })
    .await;
    println!(
        "READY {} {} {}",
        broker.url,
        broker.agent_addr,
        std::process::id()
    );
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    broker.stop().await.is_ok()
}

/// Raises the soft open-file limit to the hard one; returns (before, after).
fn raise_fd_limit() -> (u64, u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return (0, 0);
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return (soft, hard);
    }
    (soft, soft)
}

fn hello(i: usize) -> Hello {
    let mut h = tests::fake_hello(&format!("sim-{i:05}"), PROTOCOL_VERSION, None);
    h.facts.games = vec![GameOffer {
        game_id: GameId::new("bench").expect("id"),
        modes: vec![DEFAULT_MODE.to_owned()],
        ready_timeout_ms: None,
        settings: Vec::new(),
        max_duration_s: None,
        idle_timeout_s: None,
        build: None,
        gpus: 0,
        slots: 1,
    }];
    h.facts.max_sessions = 8;
    h
}

#[derive(Debug, Default)]
pub struct Counters {
    welcomed: AtomicUsize,
    heartbeats: AtomicU64,
    failed: AtomicUsize,
}

/// One simulated agent: handshake, then heartbeats and instant answers until `stop`.
pub async fn sim_agent(
    i: usize,
    addr: std::net::SocketAddr,
    handshakes: Arc<Semaphore>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let permit = handshakes.acquire_owned().await;
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        counters.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, MessageCodec::<HelloReply, Hello>::new());
    let every = match async {
        framed.send(hello(i)).await.ok()?;
        framed.next().await?.ok()
    }
    .await
    {
        Some(HelloReply::Welcome {
            heartbeat_interval_ms,
        }) => Duration::from_millis(u64::from(heartbeat_interval_ms)),
        _ => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    drop(permit);
    counters.welcomed.fetch_add(1, Ordering::Relaxed);
    let mut framed = framed.map_codec(|_| MessageCodec::<BrokerMessage, AgentMessage>::new());
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running: Vec<RunningGame> = Vec::new();
    let mut next_pid = 1_000_000 + 1000 * i as u32;
    let mut beat = 0usize;
    loop {
        let reply = tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                counters.heartbeats.fetch_add(1, Ordering::Relaxed);
                beat += 1;
                // A new CPU figure every time, continuous like sysinfo's: each heartbeat
                // re-ranks the host.
                let h = (i as u64 ^ (beat as u64) << 32).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                AgentMessage::Heartbeat(Load {
                    cpu_percent: (h >> 40) as f32 / (1u64 << 24) as f32 * 100.0,
                    mem_used_bytes: 1 << 29,
                    mem_total_bytes: 1 << 30,
                    sessions: running.clone(),
                })
            }
            frame = framed.next() => match frame {
                Some(Ok(BrokerMessage::Launch(req))) => {
                    next_pid += 1;
                    let port = 20_000 + (next_pid % 1000) as u16;
                    running.push(RunningGame {
                        session_id: req.session_id.clone(),
                        pid: next_pid,
                        pgid: next_pid,
                        port,
                        idle_ms: None,
                        gpus: Vec::new(),
                        slots: 1,
                    });
                    AgentMessage::Launched(Launched {
                        session_id: req.session_id,
                        pid: next_pid,
                        ip: "127.0.0.1".parse().expect("ip"),
                        port,
                        ports: vec![port],
                    })
                }
                Some(Ok(BrokerMessage::Stop { session_id })) => {
                    running.retain(|g| g.session_id != session_id);
                    AgentMessage::Stopped { session_id }
                }
                Some(Ok(
                    BrokerMessage::HeartbeatAck
                    | BrokerMessage::CentralGames(_)
                    | BrokerMessage::CentralGame(_),
                )) => continue,
                _ => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        };
        if framed.send(reply).await.is_err() {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
}

pub async fn run(mut a: Args) -> bool {
    if a.smoke {
        (a.agents, a.seconds, a.starts) = (100, 2, 20);
    }
    let (before, after) = raise_fd_limit();
    println!("arcade-bench scale: {} simulated agents", a.agents);
    if before < after {
        println!(
            "open-file limit: raised the soft limit from {before} to the hard limit {after} (the broker process inherits it)"
        );
    } else {
        println!("open-file limit: {after}, already the hard limit");
    }
    if (after as usize) < a.agents + 256 {
        println!(
            "the open-file limit {after} is too low for {} agents",
            a.agents
        );
        return false;
    }
    let mut rtt = stats::loopback_rtt(5000).await;
    let rtt = Summary::of(&mut rtt);

    let exe = std::env::current_exe().expect("current exe");
    let wrapper: Vec<&str> = a
        .broker_under
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let mut child = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = tokio::process::Command::new(program);
            c.args(args).arg(exe);
            c
        }
        None => tokio::process::Command::new(exe),
    };
    let mut child = child
        .arg("serve-broker")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the broker process");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // A wrapper (--broker-under) may print lines of its own first.
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("READY ") {
                return line;
            }
            println!("broker: {line}");
        }
        String::new()
    })
    .await
    .unwrap_or_default();
    // Keep the pipe drained (and the wrapper's report visible) until the broker exits.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            println!("broker: {line}");
        }
    });
    let mut words = ready.split_whitespace().skip(1);
    let (Some(url), Some(agent_addr), Some(pid)) = (
        words.next(),
        words.next(),
        words.next().and_then(|p| p.parse::<u32>().ok()),
    ) else {
        println!("the broker process did not start: {ready:?}");
        return false;
    };
    let agent_addr: std::net::SocketAddr = agent_addr.parse().expect("agent address");
    let (rss_empty, _) = stats::rss(pid);

    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let handshakes = Arc::new(Semaphore::new(128));
    let t0 = Instant::now();
    let agents: Vec<_> = (0..a.agents)
        .map(|i| {
            tokio::spawn(sim_agent(
                i,
                agent_addr,
                Arc::clone(&handshakes),
                Arc::clone(&counters),
                stop.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while counters.welcomed.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed)
        < a.agents
    {
        if Instant::now() > deadline {
            println!("agents did not all register within 120 s");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{} agents registered in {:.1} s ({} failed)",
        counters.welcomed.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
        counters.failed.load(Ordering::Relaxed)
    );
    // Let registration settle (and a first heartbeat from everyone) before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The heartbeat-only window: the agents heartbeat, nothing else happens.
    let (cpu0, hb0, w0) = (
        stats::cpu_time(pid),
        counters.heartbeats.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    let (cpu1, hb1, window) = (
        stats::cpu_time(pid),
        counters.heartbeats.load(Ordering::Relaxed),
        w0.elapsed(),
    );
    let (rss_now, rss_peak) = stats::rss(pid);
    let cpu_share = (cpu1 - cpu0).as_secs_f64() / window.as_secs_f64();
    let beats = hb1 - hb0;
    let per_beat_us = (cpu1 - cpu0).as_secs_f64() * 1e6 / beats.max(1) as f64;

    // Starts and ends at that size, one at a time.
    let client = Client::new(url, None).expect("client");
    let (mut starts, mut ends, _, errors) =
        crate::load::timed_pairs(crate::load::PairClient::portal(client.clone()), a.starts).await;
    let starts = Summary::of(&mut starts);
    let ends = Summary::of(&mut ends);

    // Placement over the hosts as the broker lists them, in this process.
    let listed = client.hosts().await.map(|h| h.hosts).unwrap_or_default();
    let online = listed
        .iter()
        .filter(|h| h.status == HostStatus::Online)
        .count();
    let views: Vec<HostView> = listed
        .iter()
        .map(|h| HostView {
            host_id: h.host_id.clone(),
            status: h.status,
            games: h
                .games
                .iter()
                .map(|g| GameOffer {
                    game_id: g.clone(),
                    modes: vec![DEFAULT_MODE.to_owned()],
                    ready_timeout_ms: None,
                    settings: Vec::new(),
                    max_duration_s: None,
                    idle_timeout_s: None,
                    build: None,
                    gpus: 0,
                    slots: 1,
                })
                .collect(),
            max_sessions: h.max_sessions,
            used: h.slots_used,
            cpu_percent: h.cpu_percent,
            labels: std::sync::Arc::new(h.labels.clone()),
            gpus_free: 0,
        })
        .collect();
    let mut index = HostIndex::default();
    for v in &views {
        index.upsert(v);
    }
    let game = GameId::new("bench").expect("id");
    let time = |f: &dyn Fn() -> bool, n: usize| {
        let mut v: Vec<Duration> = (0..n)
            .map(|_| {
                let t = Instant::now();
                assert!(f(), "placement found no host");
                t.elapsed()
            })
            .collect();
        Summary::of(&mut v)
    };
    let req = Request::new(&game, None);
    let placed = time(&|| index.place(&req).is_ok(), 10_000);
    let scanned = time(&|| place(&views, &req, Strategy::Spread).is_ok(), 200);

    stop.cancel();
    for t in agents {
        let _ = t.await;
    }
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;

    println!();
    stats::header();
    row("floor: loopback round trip, 32 bytes", &rtt, None);
    row(
        &format!("start at {} hosts, 1 client", a.agents),
        &starts,
        Some(rtt.p50),
    );
    row(
        &format!("end at {} hosts, 1 client", a.agents),
        &ends,
        Some(rtt.p50),
    );
    row(
        &format!("placement, index, {} hosts", views.len()),
        &placed,
        None,
    );
    row(
        &format!("placement, scan (baseline), {} hosts", views.len()),
        &scanned,
        None,
    );
    println!();
    println!(
        "hosts online at the broker: {online}; heartbeats in the {:.0} s window: {beats} ({:.0}/s)",
        window.as_secs_f64(),
        beats as f64 / window.as_secs_f64()
    );
    println!(
        "broker CPU: {:.1}% of one core; {per_beat_us:.1} µs per heartbeat = {:.1}x the loopback round trip",
        100.0 * cpu_share,
        per_beat_us / rtt.p50
    );
    println!(
        "broker RSS: {:.1} MiB now, {:.1} MiB peak, {:.1} MiB before any agent",
        stats::mib(rss_now),
        stats::mib(rss_peak),
        stats::mib(rss_empty)
    );
    println!(
        "placement: index p50 {:.2} µs = {:.0}x faster than the scan",
        placed.p50,
        scanned.p50 / placed.p50
    );
    println!();
    println!("targets (issue 6, at {} agents):", a.agents);
    verdict(
        "broker CPU at 1 Hz",
        format!("{:.1}%", 100.0 * cpu_share),
        "< 20% of one core".into(),
        cpu_share < 0.20,
    );
    verdict(
        "broker RSS",
        format!("{:.1} MiB", stats::mib(rss_peak)),
        "< 200 MB".into(),
        rss_peak < 200_000_000,
    );
    verdict(
        "placement p50",
        format!("{:.2} µs", placed.p50),
        "< 20 µs".into(),
        placed.p50 < 20.0,
    );
    let all = counters.welcomed.load(Ordering::Relaxed) == a.agents;
    let sane = all
        && online == a.agents
        && errors == 0
        && starts.sane()
        && ends.sane()
        && placed.sane()
        && beats > 0
        && rss_now > 0
        && cpu_share.is_finite();
    if !sane {
        println!("NOT SANE: {online} online of {}, {errors} errors", a.agents);
    }
    sane
}
