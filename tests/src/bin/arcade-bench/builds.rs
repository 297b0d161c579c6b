//! `arcade-bench builds`: a build reaching every agent (issue 27). The real `arcade-broker`
//! and `arcade-agent` binaries (next to this one: `cargo build --release --workspace`), a
//! `.tar.gz` of `--size-mib` MiB that does not compress, set as a central game: the time
//! from `PUT /v1/games` until every host offers it (each agent downloads it, checks its
//! sha256 and unpacks it), against the floor of `cp` and `sha256sum` of the same file in the
//! same run; and the broker's and agents' peak RSS above their idle RSS meanwhile. Then a
//! start's cost with central games against local ones: start+end pairs of the same program
//! (`/bin/sleep`) as a host's own entry and as a central game, taken in turn.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use portal_client::Client;
use protocol::{BuildId, GameId};
use tokio::process::{Child, Command};

use crate::stats::{self, verdict};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The build's size in MiB.
    #[arg(long, default_value_t = 200)]
    size_mib: u64,
    /// Agents, each on its own state directory.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Start+end pairs of each kind, local and central.
    #[arg(long, default_value_t = 300)]
    pairs: usize,
    /// A small build and two agents; fail unless it completes with sane numbers.
    #[arg(long)]
    smoke: bool,
}

/// `n` start+end pairs of `local` and of `central`, taken in turn: each kind's start
/// latencies.
async fn starts(
    client: &Client,
    local: &str,
    central: &str,
    n: usize,
) -> Option<(Vec<Duration>, Vec<Duration>)> {
    let (mut l, mut c) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        for (game, out) in [(local, &mut l), (central, &mut c)] {
            let t0 = Instant::now();
            let s = client.start_session(&tests::start(game)).await.ok()?;
            out.push(t0.elapsed());
            client.end_session(&s.session_id).await.ok()?;
        }
    }
    Some((l, c))
}

/// An endless stream of bytes that do not compress (xorshift).
struct Noise(u64);

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let bytes = self.0.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(buf.len())
    }
}

/// Writes a `.tar.gz` holding `bin/start` and `size` bytes of noise to `path`; answers its
/// sha256. Blocking.
fn make_build(path: &Path, size: u64) -> BuildId {
    let file = std::fs::File::create(path).expect("create the build");
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    let start = b"#!/bin/sh\nexec sleep 3600\n";
    h.set_size(start.len() as u64);
    h.set_mode(0o755);
    tar.append_data(&mut h, "bin/start", &start[..])
        .expect("append");
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    tar.append_data(
        &mut h,
        "assets.bin",
        Noise(0x9e37_79b9_7f4a_7c15).take(size),
    )
    .expect("append");
    let mut gz = tar.into_inner().expect("tar");
    gz.flush().expect("flush");
    gz.finish().expect("gzip").sync_all().expect("sync");
    let mut f = std::fs::File::open(path).expect("open the build");
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read the build");
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let mut d = [0u8; 32];
    d.copy_from_slice(ctx.finish().as_ref());
    BuildId::of_digest(&d)
}

/// Runs `program args` to completion and answers how long it took.
fn timed(program: &str, args: &[&Path]) -> Duration {
    let t0 = Instant::now();
    let status = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run the floor's program");
    assert!(status.success(), "{program} failed");
    t0.elapsed()
}

fn spawn(program: &Path, args: &[String]) -> Child {
    Command::new(program)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()))
}

fn pid(c: &Child) -> u32 {
    c.id().expect("a running child")
}

pub async fn run(mut a: Args) -> bool {
    if a.smoke {
        a.size_mib = 8;
        a.agents = 2;
        a.pairs = 20;
    }
    let exe = std::env::current_exe().expect("current exe");
    let (broker_bin, agent_bin) = (
        exe.with_file_name("arcade-broker"),
        exe.with_file_name("arcade-agent"),
    );
    for b in [&broker_bin, &agent_bin] {
        if !b.is_file() {
            println!(
                "no {}: build it first (cargo build --release --workspace)",
                b.display()
            );
            return false;
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let size = a.size_mib << 20;
    let archive = dir.path().join("build.tar.gz");
    let build = {
        let archive = archive.clone();
        tokio::task::spawn_blocking(move || make_build(&archive, size))
            .await
            .expect("make the build")
    };
    let archive_len = std::fs::metadata(&archive).expect("the build").len();
    println!(
        "arcade-bench builds: a {:.0} MiB .tar.gz (noise, {} MiB unpacked) to {} agents",
        stats::mib(archive_len),
        a.size_mib,
        a.agents
    );

    // The floor, in this run: a copy and a hash of the same file (in the page cache, as it
    // is for the broker).
    let copy = dir.path().join("copy");
    let cp = timed("cp", &[&archive, &copy]);
    let _ = std::fs::remove_file(&copy);
    let sha = timed("sha256sum", &[&archive]);
    let floor = cp + sha;

    let (http, agent_port) = (tests::mariadb::free_port(), tests::mariadb::free_port());
    let url = format!("http://127.0.0.1:{http}");
    let mut broker = spawn(
        &broker_bin,
        &[
            "--http".into(),
            format!("127.0.0.1:{http}"),
            "--agent-listen".into(),
            format!("127.0.0.1:{agent_port}"),
            "--build-store".into(),
            dir.path().join("store").display().to_string(),
        ],
    );
    let catalog = dir.path().join("catalog.toml");
    std::fs::write(
        &catalog,
        "[games.sleeper]\ncommand = \"/bin/sleep\"\nargs = [\"3600\"]\n",
    )
    .expect("catalog");
    let mut agents: Vec<Child> = (0..a.agents)
        .map(|i| {
            let state: PathBuf = dir.path().join(format!("agent-{i}"));
            spawn(
                &agent_bin,
                &[
                    "--broker".into(),
                    format!("127.0.0.1:{agent_port}"),
                    "--catalog".into(),
                    catalog.display().to_string(),
                    "--host-id".into(),
                    format!("bench-{i}"),
                    "--state-dir".into(),
                    state.display().to_string(),
                    "--port-range".into(),
                    format!("{}-{}", 30_000 + i * 10, 30_009 + i * 10),
                ],
            )
        })
        .collect();
    let client = Client::new(&url, None).expect("client");
    tests::wait_until("the broker answers", Duration::from_secs(20), || async {
        client.health().await.is_ok()
    })
    .await;
    tests::wait_hosts_online(&client, a.agents).await;
    let idle: Vec<u64> = std::iter::once(&broker)
        .chain(agents.iter())
        .map(|c| stats::rss(pid(c)).0)
        .collect();

    let t_up = Instant::now();
    let file = tokio::fs::File::open(&archive)
        .await
        .expect("open the build");
    let uploaded = client.put_build(&build, file, archive_len, |_| {}).await;
    let upload = t_up.elapsed();
    let mut ok = uploaded.is_ok();
    let game = GameId::new("bench-central").expect("id");
    let body = serde_json::json!({"build": build, "command": "{build}/bin/start"});
    let t0 = Instant::now();
    ok &= client.put_game(&game, &body, None).await.is_ok();
    let want = a.agents as u32;
    let reached = tokio::time::timeout(Duration::from_secs(1800), async {
        loop {
            let games = client.games().await.map(|l| l.games).unwrap_or_default();
            if games.iter().any(|g| g.game_id == game && g.hosts >= want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok();
    let reach = t0.elapsed();
    ok &= reached;
    let peaks: Vec<u64> = std::iter::once(&broker)
        .chain(agents.iter())
        .map(|c| stats::rss(pid(c)).1)
        .collect();
    // The same program as the hosts' own `sleeper`, as a central game of the build: what
    // differs is only what central games add to a start.
    let sleeper = GameId::new("central-sleeper").expect("id");
    let body = serde_json::json!({"build": build, "command": "/bin/sleep", "args": ["3600"]});
    ok &= client.put_game(&sleeper, &body, None).await.is_ok();
    tests::wait_until(
        "every host offers the central sleeper",
        Duration::from_secs(60),
        || async {
            client.games().await.is_ok_and(|l| {
                l.games
                    .iter()
                    .any(|g| g.game_id == sleeper && g.hosts >= want)
            })
        },
    )
    .await;
    let pairs = starts(&client, "sleeper", sleeper.as_str(), a.pairs).await;
    ok &= pairs.is_some();
    let (mut local, mut central) = pairs.unwrap_or_default();
    let (local, central) = (
        stats::Summary::of(&mut local),
        stats::Summary::of(&mut central),
    );
    for c in std::iter::once(&mut broker).chain(agents.iter_mut()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid(c) as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
    }
    // Unpacked builds are read-only: writable again, so the directory can be removed.
    for i in 0..a.agents {
        let _ = archive::make_writable(&dir.path().join(format!("agent-{i}/builds")));
    }

    let above = |i: usize| peaks[i].saturating_sub(idle[i]);
    let agent_above = (1..peaks.len()).map(above).max().unwrap_or(0);
    let ratio = reach.as_secs_f64() / floor.as_secs_f64();
    println!(
        "floor: cp {:.0} ms + sha256sum {:.0} ms = {:.0} ms",
        cp.as_secs_f64() * 1e3,
        sha.as_secs_f64() * 1e3,
        floor.as_secs_f64() * 1e3
    );
    println!(
        "upload (PUT /v1/builds, streamed): {:.0} ms, {:.0} MiB/s",
        upload.as_secs_f64() * 1e3,
        stats::mib(archive_len) / upload.as_secs_f64()
    );
    println!(
        "build reaches {} agents (PUT /v1/games until every host offers it): {:.0} ms = {ratio:.2}x the floor",
        a.agents,
        reach.as_secs_f64() * 1e3
    );
    println!(
        "broker RSS: idle {:.1} MiB, peak {:.1} MiB, +{:.1} MiB",
        stats::mib(idle[0]),
        stats::mib(peaks[0]),
        stats::mib(above(0))
    );
    println!(
        "agent RSS: idle {:.1} MiB, peak +{:.1} MiB at most",
        stats::mib(idle[1..].iter().copied().max().unwrap_or(0)),
        stats::mib(agent_above)
    );
    stats::header();
    stats::row(
        "start, a host's own game (the floor)",
        &local,
        Some(local.p50),
    );
    stats::row("start, a central game", &central, Some(local.p50));
    let mib64 = 64 << 20;
    verdict(
        "reach / (cp + sha256sum)",
        format!("{ratio:.2}x"),
        "<= 3x".into(),
        ratio <= 3.0,
    );
    verdict(
        "broker peak RSS above idle",
        format!("{:.1} MiB", stats::mib(above(0))),
        "<= 64 MiB".into(),
        above(0) <= mib64,
    );
    verdict(
        "agent peak RSS above idle",
        format!("{:.1} MiB", stats::mib(agent_above)),
        "<= 64 MiB".into(),
        agent_above <= mib64,
    );
    if !ok {
        println!("error: the build did not reach every agent");
    }
    ok && ratio.is_finite()
        && ratio > 0.0
        && peaks.iter().all(|p| *p > 0)
        && local.sane()
        && central.sane()
}
