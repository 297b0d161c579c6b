//! `arcade-bench events`: what the event stream costs and how fast it tells (issue 16).
//!
//! A broker (memory store, or a throwaway MariaDB with `--mariadb`) and agents in this
//! process over loopback, starting the same game as `pairs`:
//! 1. start p50 with no event stream open, with 100 open (each read by a lean client that
//!    counts events, in a process of its own, so this process's CPU is the broker's and not
//!    the readers'), and with none again, one client doing start+end pairs;
//! 2. the delay from a game's exit (SIGTERM to its process group) to an SSE client reading
//!    `session.ended`, and to a webhook receiver (on loopback, answering 200 at once) having
//!    its POST, against the game's own exit (SIGTERM to reaped) as the floor.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use portal_client::Client;
use protocol::api::EventType;
use tests::{AgentOptions, BrokerOptions, TestAgent, TestBroker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::load::{self, PairClient};
use crate::stats::{self, row, verdict, Summary};

#[derive(Debug, clap::Parser)]
pub struct Args {
    /// Open event streams in the loaded phase.
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Start+end pairs per latency phase.
    #[arg(long, default_value_t = 300)]
    pairs: usize,
    /// Game exits timed.
    #[arg(long, default_value_t = 200)]
    exits: usize,
    /// Start a throwaway MariaDB (as the tests do) and use it.
    #[arg(long)]
    mariadb: bool,
    /// Tiny counts; fail unless it completes with sane numbers.
    #[arg(long)]
    smoke: bool,
}

/// A lean stream reader, as a load generator should be (the broker's cost is measured, not
/// a client's): counts the `event:` lines of `GET /v1/events` over plain HTTP/1.1.
async fn lean_reader(addr: SocketAddr, opened: Arc<AtomicU64>, received: Arc<AtomicU64>) {
    const NEEDLE: &[u8] = b"\nevent: ";
    let Ok(mut c) = TcpStream::connect(addr).await else {
        return;
    };
    let head = format!("GET /v1/events HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    if c.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut carry: Vec<u8> = Vec::new();
    let mut open = false;
    loop {
        let n = match c.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        carry.extend_from_slice(&buf[..n]);
        if !open && carry.windows(4).any(|w| w == b"\r\n\r\n") {
            open = true;
            opened.fetch_add(1, Ordering::Relaxed);
        }
        let found = carry.windows(NEEDLE.len()).filter(|w| *w == NEEDLE).count();
        received.fetch_add(found as u64, Ordering::Relaxed);
        // Keep what could begin a needle cut by the read.
        let keep = carry.len().min(NEEDLE.len() - 1);
        carry.drain(..carry.len() - keep);
    }
}

/// The readers of the loaded phase (`arcade-bench stream-readers`, internal): `streams` lean
/// readers of `addr`'s event stream. Prints `opened N` once all are open, then `received N`
/// as events arrive, and at the end (its standard input closed) `cpu MICROS`, its own CPU.
pub async fn serve_readers(addr: SocketAddr, streams: usize) -> bool {
    use tokio::io::AsyncBufReadExt;
    let received = Arc::new(AtomicU64::new(0));
    let opened = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..streams)
        .map(|_| {
            tokio::spawn(lean_reader(
                addr,
                Arc::clone(&opened),
                Arc::clone(&received),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while opened.load(Ordering::Relaxed) < streams as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("opened {}", opened.load(Ordering::Relaxed));
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut told = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            line = stdin.next_line() => if !matches!(line, Ok(Some(_))) { break },
            _ = tick.tick() => {}
        }
        let now = received.load(Ordering::Relaxed);
        if now != told {
            told = now;
            println!("received {now}");
        }
    }
    for r in readers {
        r.abort();
    }
    println!("received {}", received.load(Ordering::Relaxed));
    println!("cpu {:.0}", stats::CpuMark::zero().per_op(1).0);
    true
}

/// The stream readers' process, and what it said.
struct Readers {
    child: tokio::process::Child,
    opened: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    cpu_us: Arc<AtomicU64>,
    lines: tokio::task::JoinHandle<()>,
}

impl Readers {
    /// Starts `streams` readers of `addr` in a process of their own, and waits until they
    /// are open (or 10 s).
    async fn start(addr: SocketAddr, streams: usize) -> Self {
        use tokio::io::AsyncBufReadExt;
        let exe = std::env::current_exe().expect("this program");
        let mut child = tokio::process::Command::new(exe)
            .args(["stream-readers", "--addr", &addr.to_string()])
            .args(["--streams", &streams.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the readers' process");
        let (opened, received, cpu_us) = Default::default();
        let said = (
            Arc::clone(&opened),
            Arc::clone(&received),
            Arc::clone(&cpu_us),
        );
        let mut out = tokio::io::BufReader::new(child.stdout.take().expect("its stdout")).lines();
        let lines = tokio::spawn(async move {
            let (opened, received, cpu_us): (Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicU64>) = said;
            while let Ok(Some(line)) = out.next_line().await {
                let Some((what, n)) = line.split_once(' ') else {
                    continue;
                };
                let n: u64 = n.parse().unwrap_or(0);
                match what {
                    "opened" => opened.store(n, Ordering::Relaxed),
                    "received" => received.store(n, Ordering::Relaxed),
                    "cpu" => cpu_us.store(n, Ordering::Relaxed),
                    _ => {}
                }
            }
        });
        let me = Self {
            child,
            opened,
            received,
            cpu_us,
            lines,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while me.opened.load(Ordering::Relaxed) < streams as u64 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        me
    }

    /// Events received so far, over all streams.
    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Ends the readers and waits for their process (so its CPU is not counted later):
    /// answers their CPU, in µs.
    async fn stop(mut self) -> u64 {
        drop(self.child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let _ = self.child.kill().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.lines).await;
        self.cpu_us.load(Ordering::Relaxed)
    }
}

/// Start latencies of `n` start+end pairs through `client`.
async fn starts(client: &Client, n: usize) -> (Summary, usize) {
    let (mut s, _, _, errors) = load::timed_pairs(PairClient::portal(client.clone()), n).await;
    (Summary::of(&mut s), errors)
}

pub async fn run(mut a: Args) -> bool {
    if a.smoke {
        (a.streams, a.pairs, a.exits) = (5, 20, 10);
    }
    let Some(database_url) = crate::stats::bench_database(a.mariadb).await else {
        return false;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let (program, what) = stats::game_program(work.path());
    println!(
        "arcade-bench events: {} streams, {} pairs per phase, {} exits, store: {}",
        a.streams,
        a.pairs,
        a.exits,
        if a.mariadb { "mysql" } else { "memory" }
    );
    println!("game: {what}");
    let mut exit_floor = stats::exit_latency(&program, a.exits.min(200)).await;
    let exit_floor = Summary::of(&mut exit_floor);

    // Every session.ended is also POSTed to a receiver, as a portal's webhook.
    let receiver = tests::webhook::Receiver::start(0).await;
    let hooks = broker::events::webhooks::WebhookConfig::from_flags(
        vec![receiver.url.clone()],
        Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        vec!["session.ended".into()],
    )
    .expect("webhook config");
    // One HTTP worker per core, as the broker runs by default.
    let broker = TestBroker::start_with(BrokerOptions {
        webhooks: hooks,
        database_url,
        workers: std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
        ..Default::default()
    })
    .await;
    let catalog = crate::pairs::catalog(&program);
    let mut agents = Vec::new();
    for i in 0..2 {
        let mut o = AgentOptions::host(&format!("events-{i}"));
        o.max_sessions = 1000;
        o.catalog = Some(catalog.clone());
        agents.push(TestAgent::start(broker.agent_addr, o).await);
    }
    let client = Client::new(&broker.url, None).expect("client");
    tests::wait_hosts_online(&client, 2).await;

    // 1. Start latency without, with, and again without open streams.
    let (quiet1, e1) = starts(&client, a.pairs).await;
    let readers = Readers::start(broker.http_addr, a.streams).await;
    let mark = stats::CpuMark::now();
    let (loaded, e2) = starts(&client, a.pairs).await;
    let (cpu_loaded, _) = mark.per_op(a.pairs);
    // Every stream reads every event of those pairs (4 each), within a bound.
    let expected = (a.streams * a.pairs * 4) as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while readers.received() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let told = readers.received();
    let readers_cpu = readers.stop().await;
    let mark = stats::CpuMark::now();
    let (quiet2, e3) = starts(&client, a.pairs).await;
    let (cpu_quiet, _) = mark.per_op(a.pairs);

    // 2. A game's exit to session.ended on a stream.
    let mut ended = client
        .events(&[EventType::SessionEnded], None, None, None)
        .await
        .expect("open a stream");
    let mut delays = Vec::new();
    let mut killed = Vec::new();
    let mut errors = e1 + e2 + e3;
    for _ in 0..a.exits {
        let Ok(s) = client.start_session(&tests::start("bench")).await else {
            errors += 1;
            continue;
        };
        let pid = s.pid.expect("a running session has a pid");
        let t0 = Instant::now();
        if killpg(Pid::from_raw(pid as i32), Signal::SIGTERM).is_err() {
            errors += 1;
            continue;
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ended.next()).await {
                Ok(Some(Ok(e))) => {
                    if e.session.is_some_and(|x| x.session_id == s.session_id) {
                        delays.push(t0.elapsed());
                        killed.push((s.session_id.to_string(), t0));
                        break;
                    }
                }
                _ => {
                    errors += 1;
                    break;
                }
            }
        }
    }
    // Each of those exits' webhook, timed from its SIGTERM to the receiver having it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut hooked = loop {
        let got = receiver.accepted();
        let hooked: Vec<Duration> = killed
            .iter()
            .filter_map(|(id, t0)| {
                got.iter()
                    .find(|d| d.body.contains(id.as_str()))
                    .map(|d| d.at.saturating_duration_since(*t0))
            })
            .collect();
        if hooked.len() == killed.len() || Instant::now() >= deadline {
            break hooked;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    errors += killed.len() - hooked.len();
    for ag in agents {
        ag.stop().await;
    }
    let _ = broker.stop().await;
    let delay = Summary::of(&mut delays);
    let hook_delay = Summary::of(&mut hooked);

    println!();
    stats::header();
    row("floor: game exit, SIGTERM to reaped", &exit_floor, None);
    row("start, no stream open", &quiet1, None);
    row(
        &format!("start, {} streams open", a.streams),
        &loaded,
        Some(quiet1.p50.min(quiet2.p50)),
    );
    row("start, no stream open (again)", &quiet2, None);
    row(
        "game exit to session.ended on a stream",
        &delay,
        Some(exit_floor.p50),
    );
    row(
        "game exit to its webhook received",
        &hook_delay,
        Some(exit_floor.p50),
    );
    println!();
    println!(
        "events read by the {} streams: {told} (4 per pair: {expected})",
        a.streams
    );
    println!(
        "CPU per pair (this process: broker, agents, games, client; the readers run apart): {cpu_quiet:.0} µs without streams, {cpu_loaded:.0} µs with {}: the broker's {:.1} µs per event per stream",
        a.streams,
        (cpu_loaded - cpu_quiet) / (4.0 * a.streams as f64)
    );
    println!(
        "the readers' own CPU (their process, lean readers counting lines): {:.1} µs per event per stream",
        readers_cpu as f64 / told.max(1) as f64
    );
    println!("errors: {errors}");
    let slower = loaded.p50 / quiet1.p50.max(quiet2.p50);
    verdict(
        "start p50 with streams / without",
        format!("{:.2}x", slower),
        "<= 1.10x".into(),
        slower <= 1.10,
    );
    let sane = [exit_floor, quiet1, loaded, quiet2, delay]
        .iter()
        .all(Summary::sane);
    errors == 0 && sane && told >= expected
}
