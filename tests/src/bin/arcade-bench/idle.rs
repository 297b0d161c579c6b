//! `arcade-bench idle-agent`: the real `arcade-agent` binary (next to this one: build it with
//! `cargo build --release -p agent`), connected to a broker in this process, offering one game
//! and running none: its RSS and CPU share over a window, from `/proc`.

use std::time::Duration;

use portal_client::Client;
use tests::TestBroker;

use crate::stats::{self, verdict};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The measuring window, in seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// A short window; fail unless it completes with sane numbers.
    #[arg(long)]
    smoke: bool,
}

pub async fn run(mut a: Args) -> bool {
    if a.smoke {
        a.seconds = 2;
    }
    let exe = std::env::current_exe().expect("current exe");
    let agent = exe.with_file_name("arcade-agent");
    if !agent.is_file() {
        println!(
            "no {}: build it first (cargo build --release -p agent)",
            agent.display()
        );
        return false;
    }
    let broker = TestBroker::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = dir.path().join("catalog.toml");
    std::fs::write(
        &catalog,
        "[games.sleeper]\ncommand = \"/bin/sleep\"\nargs = [\"3600\"]\n",
    )
    .expect("catalog");
    let mut child = tokio::process::Command::new(&agent)
        .arg("--broker")
        .arg(broker.agent_addr.to_string())
        .arg("--catalog")
        .arg(&catalog)
        .args(["--host-id", "idle-1", "--max-sessions", "4"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("start arcade-agent");
    let pid = child.id().expect("pid");
    let client = Client::new(&broker.url, None).expect("client");
    tests::wait_hosts_online(&client, 1).await;
    // Past start-up (the first samples, the handshake) before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu0, t0) = (stats::cpu_time(pid), std::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    let (cpu1, window) = (stats::cpu_time(pid), t0.elapsed());
    let (rss, peak) = stats::rss(pid);
    let share = (cpu1 - cpu0).as_secs_f64() / window.as_secs_f64();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let _ = broker.stop().await;
    println!(
        "arcade-bench idle-agent: {} over {:.0} s, heartbeating every second",
        agent.display(),
        window.as_secs_f64()
    );
    println!(
        "CPU {:.0} ms in {:.0} s; RSS {:.1} MiB, peak {:.1} MiB",
        (cpu1 - cpu0).as_secs_f64() * 1e3,
        window.as_secs_f64(),
        stats::mib(rss),
        stats::mib(peak)
    );
    println!("targets (issue 6):");
    verdict(
        "idle agent CPU",
        format!("{:.2}%", 100.0 * share),
        "< 0.5% of one core".into(),
        share < 0.005,
    );
    verdict(
        "idle agent RSS",
        format!("{:.1} MiB", stats::mib(rss)),
        "< 10 MB".into(),
        rss < 10_000_000,
    );
    rss > 0 && share.is_finite()
}
