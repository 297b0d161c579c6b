//! `arcade-bench`: the broker's start and end latency and start+end throughput, with the same
//! run's floors, so figures are ratios on a shared, noisy machine.
//!
//! It starts a broker (memory store, or MySQL with `--database-url`) and `--agents` agents in
//! this process over real loopback sockets, then `--clients` concurrent portal clients (HTTP
//! keep-alive) each doing start+end pairs of a real game (`/bin/sleep 3600`, ended by SIGTERM).
//! Floors measured in the same run:
//! - spawn: a bare spawn of the same program, and a spawn+kill+reap loop at the same
//!   parallelism;
//! - loopback: a TCP round trip of a small frame on 127.0.0.1.
//!
//! `arcade-bench --pairs 2000 --clients 16 --agents 4`

use std::time::{Duration, Instant};

use portal_client::Client;
use protocol::api::StartSession;
use protocol::GameId;
use tests::{AgentOptions, BrokerOptions, TestAgent, TestBroker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Args {
    agents: usize,
    clients: usize,
    pairs: usize,
    database_url: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        agents: 4,
        clients: 16,
        pairs: 1000,
        database_url: None,
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut it = raw.iter();
    while let Some(flag) = it.next() {
        let v = it.next().cloned().unwrap_or_default();
        match flag.as_str() {
            "--agents" => a.agents = v.parse().expect("--agents N"),
            "--clients" => a.clients = v.parse().expect("--clients N"),
            "--pairs" => a.pairs = v.parse().expect("--pairs N"),
            "--database-url" => a.database_url = Some(v),
            other => panic!("unknown flag {other}; see the file's docs"),
        }
    }
    a
}

/// Percentiles of a sample, in microseconds.
fn pct(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1e6
}

fn row(name: &str, samples: &mut [Duration], floor_p50: Option<f64>) {
    let (p50, p99, p999) = (pct(samples, 0.5), pct(samples, 0.99), pct(samples, 0.999));
    let ratio = floor_p50.map_or(String::from("-"), |f| format!("{:.1}x", p50 / f));
    println!(
        "{name:<34} {:>7} {p50:>10.0} {p99:>10.0} {p999:>10.0} {ratio:>9}",
        samples.len()
    );
}

async fn spawn_floor(n: usize, parallel: usize) -> (Vec<Duration>, f64) {
    let per = n.div_ceil(parallel);
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..parallel)
        .map(|_| {
            tokio::spawn(async move {
                let mut spawns = Vec::with_capacity(per);
                for _ in 0..per {
                    let t = Instant::now();
                    let mut child = tokio::process::Command::new("/bin/sleep")
                        .arg("3600")
                        .process_group(0)
                        .spawn()
                        .expect("spawn");
                    spawns.push(t.elapsed());
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
                spawns
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let rate = all.len() as f64 / t0.elapsed().as_secs_f64();
    (all, rate)
}

async fn loopback_floor(n: usize) -> Vec<Duration> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let _ = s.set_nodelay(true);
        let mut buf = [0u8; 64];
        while let Ok(k) = s.read(&mut buf).await {
            if k == 0 || s.write_all(&buf[..k]).await.is_err() {
                break;
            }
        }
    });
    let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = c.set_nodelay(true);
    let mut buf = [0u8; 32];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.write_all(&[7u8; 32]).await.expect("write");
        c.read_exact(&mut buf).await.expect("read");
        out.push(t.elapsed());
    }
    out
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(a));
}

async fn run(a: Args) {
    println!(
        "arcade-bench: {} agents, {} clients, {} start+end pairs, store: {}",
        a.agents,
        a.clients,
        a.pairs,
        if a.database_url.is_some() {
            "mysql"
        } else {
            "memory"
        }
    );
    let (mut spawn, spawn_rate) = spawn_floor(a.pairs.min(2000), a.clients).await;
    let mut rtt = loopback_floor(5000).await;
    let spawn_p50 = pct(&mut spawn, 0.5);
    let rtt_p50 = pct(&mut rtt, 0.5);

    let broker = TestBroker::start_with(BrokerOptions {
        database_url: a.database_url.clone(),
        ..Default::default()
    })
    .await;
    let mut agents = Vec::new();
    for i in 0..a.agents {
        let mut o = AgentOptions::host(&format!("bench-{i}"));
        o.max_sessions = 1000;
        o.stop_grace = Duration::from_secs(5);
        agents.push(TestAgent::start(broker.agent_addr, o).await);
    }
    let client = Client::new(&broker.url, None).expect("client");
    let t0 = Instant::now();
    while client.hosts().await.map(|h| h.hosts.len()).unwrap_or(0) < a.agents {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "agents did not register"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let per = a.pairs.div_ceil(a.clients);
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..a.clients)
        .map(|_| {
            let client = Client::new(&broker.url, None).expect("client");
            tokio::spawn(async move {
                let req = StartSession {
                    game_id: GameId::new("sleeper").expect("id"),
                    mode: None,
                    config: None,
                };
                let (mut starts, mut ends, mut errors) = (Vec::new(), Vec::new(), 0usize);
                for _ in 0..per {
                    let t = Instant::now();
                    match client.start_session(&req).await {
                        Ok(s) => {
                            starts.push(t.elapsed());
                            let t = Instant::now();
                            match client.end_session(&s.session_id).await {
                                Ok(_) => ends.push(t.elapsed()),
                                Err(_) => errors += 1,
                            }
                        }
                        Err(_) => errors += 1,
                    }
                }
                (starts, ends, errors)
            })
        })
        .collect();
    let (mut starts, mut ends, mut errors) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        let (s, e, err) = t.await.expect("client task");
        starts.extend(s);
        ends.extend(e);
        errors += err;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let pairs_rate = ends.len() as f64 / elapsed;

    println!();
    println!(
        "{:<34} {:>7} {:>10} {:>10} {:>10} {:>9}",
        "figure (µs)", "n", "p50", "p99", "p999", "/floor"
    );
    row("floor: spawn (posix_spawn)", &mut spawn, None);
    row("floor: loopback round trip", &mut rtt, None);
    row("start (201, game running)", &mut starts, Some(spawn_p50));
    row("end (200, group gone)", &mut ends, Some(spawn_p50));
    println!();
    println!(
        "floor: spawn+kill+reap at {} in parallel: {spawn_rate:.0}/s",
        a.clients
    );
    println!(
        "start+end pairs with {} clients over {} agents: {pairs_rate:.0}/s = {:.0}% of the floor; {errors} errors",
        a.clients,
        a.agents,
        100.0 * pairs_rate / spawn_rate
    );
    println!("loopback floor p50 {rtt_p50:.0} µs; spawn floor p50 {spawn_p50:.0} µs");
    for ag in agents {
        ag.stop().await;
    }
    let _ = broker.stop().await;
}
