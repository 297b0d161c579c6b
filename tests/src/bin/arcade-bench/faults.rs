//! `arcade-bench faults`: issue 25's load through faults, several runs in a row, and what
//! each fault cost the clients.
//!
//! Each run starts a fresh cluster (three `arcade-broker` processes on a throwaway MariaDB and
//! `nats-server`, four agents; [`tests::cluster`]) and 8 clients doing start+end pairs, each
//! start under its own `Idempotency-Key`, each 503 retried after its `Retry-After` on the next
//! replica ([`tests::keyed_load`]). Then the fault:
//! - `restart`: a rolling restart (SIGTERM each replica in turn, start it again, wait for
//!   `/readyz`), then one replica's `kill -9` and restart;
//! - `stall`: MariaDB stopped (`SIGSTOP`) for `--stall` seconds, replicas at
//!   `--heartbeat-timeout`, and with `--kill` a replica killed (`kill -9`) in the middle of it.
//!
//! The load goes on for as many pairs again, then what must never happen is checked
//! ([`tests::cluster::violations`]: a failed start, a lost session, a second game for a key,
//! an end that did not end, a game without a session) and the figures printed: pairs, retries,
//! the longest a start waited during the fault, and how soon after it a start succeeded.
//! Exits non-zero when any run shows a violation.

use std::time::Duration;

use tests::cluster::{violations, Cluster};
use tests::keyed_load::KeyedLoad;

/// Which fault.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Fault {
    /// SIGTERM each replica in turn, restart it, wait for `/readyz`; then one `kill -9`.
    Restart,
    /// MariaDB stopped with SIGSTOP for `--stall` seconds.
    Stall,
}

#[derive(Debug, clap::Parser)]
pub struct Args {
    /// The fault.
    #[arg(long, value_enum, default_value = "restart")]
    fault: Fault,
    /// Runs in a row, each on a fresh cluster.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// `stall`: how long MariaDB is stopped, in seconds.
    #[arg(long, default_value_t = 6)]
    stall: u64,
    /// The replicas' `--heartbeat-timeout`, in seconds.
    #[arg(long, default_value = "8")]
    heartbeat_timeout: String,
    /// `stall`: also `kill -9` a replica in the middle of the stall.
    #[arg(long)]
    kill: bool,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Pairs before the fault, and again after it.
    #[arg(long, default_value_t = 20)]
    pairs: u64,
    /// One run with few pairs; fail unless it completes without a violation.
    #[arg(long)]
    smoke: bool,
}

/// What one run measured.
struct Run {
    pairs: u64,
    retries: u64,
    /// Why calls were tried again, and how often.
    retried_for: std::collections::BTreeMap<String, u64>,
    /// The longest a start sent during a fault waited.
    longest_wait: Duration,
    /// After the (last) fault ended, how soon a start succeeded.
    recovered: Option<Duration>,
    violations: Vec<String>,
}

async fn waits_for(load: &KeyedLoad, more: u64) -> bool {
    let want = load.pairs() + more;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while load.pairs() < want {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

async fn one_run(args: &Args) -> Option<Run> {
    let mut c = Cluster::start_with(&args.heartbeat_timeout).await?;
    let load = KeyedLoad::start(
        (0..3).map(|i| c.client(i)).collect(),
        args.clients,
        "sleeper",
    );
    let mut stuck = Vec::new();
    if !waits_for(&load, args.pairs).await {
        stuck.push("the load made no progress before the fault".to_owned());
    }
    let faults = match args.fault {
        Fault::Restart => c.rolling_restart().await,
        Fault::Stall => vec![
            c.database_stall(Duration::from_secs(args.stall), args.kill)
                .await,
        ],
    };
    if !waits_for(&load, args.pairs).await {
        stuck.push("the load made no progress after the fault".to_owned());
    }
    let tally = load.finish().await;
    c.wait_online(4).await;
    let mut found = violations(&c, 1, &tally).await;
    found.extend(stuck);
    let longest_wait = faults
        .iter()
        .map(|(from, to)| tally.longest_wait(*from, *to))
        .max()
        .unwrap_or_default();
    let recovered = faults
        .last()
        .and_then(|(_, to)| tally.first_success_after(*to));
    Some(Run {
        pairs: tally.pairs,
        retries: tally.retries,
        retried_for: tally.retried_for.clone(),
        longest_wait,
        recovered,
        violations: found,
    })
}

pub async fn run(args: Args) -> bool {
    let runs = if args.smoke { 1 } else { args.runs };
    let args = Args {
        pairs: if args.smoke { 5 } else { args.pairs },
        ..args
    };
    println!(
        "faults: {:?}{}, heartbeat timeout {} s, {} clients, {runs} runs",
        args.fault,
        match args.fault {
            Fault::Stall => format!(
                " {} s{}",
                args.stall,
                if args.kill { " with a kill -9" } else { "" }
            ),
            Fault::Restart => String::new(),
        },
        args.heartbeat_timeout,
        args.clients,
    );
    let mut ok = true;
    for i in 1..=runs {
        let Some(r) = one_run(&args).await else {
            eprintln!("faults: needs mariadbd and nats-server (scripts/test installs them)");
            return false;
        };
        let recovered = r.recovered.map_or_else(
            || "never".to_owned(),
            |d| format!("{:.2} s", d.as_secs_f64()),
        );
        println!(
            "run {i:>2}: {} pairs, {} retries {:?}, longest start wait in a fault {:.2} s, \
             a start succeeded {recovered} after it; violations: {}",
            r.pairs,
            r.retries,
            r.retried_for,
            r.longest_wait.as_secs_f64(),
            r.violations.len()
        );
        for v in &r.violations {
            println!("    {v}");
        }
        ok &= r.violations.is_empty() && r.pairs > 0;
    }
    ok
}
