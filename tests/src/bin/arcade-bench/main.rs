//! `arcade-bench`: Arcade's performance, measured against floors taken in the same run on the
//! same machine, so every figure is also a ratio (the machines are shared and noisy).
//!
//! - `arcade-bench pairs` (the default): start and end latency, and start+end throughput, of a
//!   broker and agents over loopback with a real static game program; see [`pairs`].
//! - `arcade-bench scale`: one broker (its own process) and 10,000 simulated agents speaking
//!   the real protocol over real sockets, heartbeating every second; see [`scale`].
//! - `arcade-bench replicas`: start and end latency through the host's replica and through
//!   another, and pairs/s with one and three replicas, on MariaDB and NATS; see [`replicas`].
//! - `arcade-bench events`: start p50 with and without 100 event streams open, and a game's
//!   exit to its `session.ended` on a stream; see [`events`].
//! - `arcade-bench ready`: a start to a connectable game, for a game slow to listen, with and
//!   without a readiness check and claimed from a warm pool, and the store's claim alone;
//!   see [`ready`].
//! - `arcade-bench faults`: issue 25's keyed load through a rolling restart or a database
//!   stall, runs in a row: what each fault cost the clients, and that it cost nothing it must
//!   not; see [`faults`].
//! - `arcade-bench players`: a call with a player token against one with an API key, and a
//!   join token's redeem, through HTTP and in the store; see [`players`].
//! - `arcade-bench usage`: `GET /v1/usage`'s query on MariaDB over 1,000,000 sessions, with
//!   its `EXPLAIN`; see [`usage`].
//! - `arcade-bench galera`: a start on a three-node Galera cluster against one on a single
//!   MariaDB, pairs interleaved, with each database's commit floor; see [`galera`].
//! - `arcade-bench idle-agent`: the real `arcade-agent` binary's RSS and CPU when idle; see
//!   [`idle`].
//!
//! Each takes `--smoke`: tiny counts, and a non-zero exit unless it completed with sane
//! numbers. CI runs the smokes (`tests/tests/bench_smoke.rs`); they assert nothing about speed.
//! BENCHMARKS.md has the commands, the figures and the machine.

mod builds;
mod events;
mod faults;
mod galera;
mod idle;
mod load;
mod pairs;
mod parts;
mod players;
mod ready;
mod replicas;
mod scale;
mod stats;
mod usage;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "arcade-bench",
    about = "Arcade's benchmarks, with same-run floors"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start/end latency and start+end throughput (the default).
    Pairs(pairs::Args),
    /// 10,000 simulated agents heartbeating against one broker process.
    Scale(scale::Args),
    /// The event stream: start p50 with and without 100 streams open, and a game's exit to
    /// its event.
    Events(events::Args),
    /// Replicas on MariaDB and NATS: the cost of a call through another replica.
    Replicas(replicas::Args),
    /// A start to a connectable game, for a game slow to listen, with and without a
    /// readiness check.
    Ready(ready::Args),
    /// Replicas under a keyed load through a rolling restart or a database stall.
    Faults(faults::Args),
    /// The real agent binary, idle: RSS and CPU.
    IdleAgent(idle::Args),
    /// Player tokens and join tokens: a call's cost by caller kind, and a redeem's.
    Players(players::Args),
    /// A build reaching every agent, against cp and sha256sum; peak RSS meanwhile.
    Builds(builds::Args),
    /// Usage over a year of 1,000,000 sessions on MariaDB, with its EXPLAIN.
    Usage(usage::Args),
    /// A start on a three-node Galera cluster against one on a single MariaDB.
    Galera(galera::Args),
    /// The broker process of `scale` (internal).
    #[command(hide = true)]
    ServeBroker,
    /// The stream readers' process of `events` (internal).
    #[command(hide = true)]
    StreamReaders {
        /// The broker's HTTP address.
        #[arg(long)]
        addr: std::net::SocketAddr,
        /// How many streams.
        #[arg(long)]
        streams: usize,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ok = rt.block_on(async {
        match cli.command {
            None => pairs::run(pairs::Args::parse_from(["pairs"])).await,
            Some(Command::Pairs(a)) => pairs::run(a).await,
            Some(Command::Scale(a)) => scale::run(a).await,
            Some(Command::Replicas(a)) => replicas::run(a).await,
            Some(Command::Events(a)) => events::run(a).await,
            Some(Command::Ready(a)) => ready::run(a).await,
            Some(Command::IdleAgent(a)) => idle::run(a).await,
            Some(Command::Faults(a)) => faults::run(a).await,
            Some(Command::Players(a)) => players::run(a).await,
            Some(Command::Builds(a)) => builds::run(a).await,
            Some(Command::Usage(a)) => usage::run(a).await,
            Some(Command::Galera(a)) => galera::run(a).await,
            Some(Command::ServeBroker) => scale::serve_broker().await,
            Some(Command::StreamReaders { addr, streams }) => {
                events::serve_readers(addr, streams).await
            }
        }
    });
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
