//! The Arcade host agent.
//!
//! Runs on every runtime host. It connects to the broker, registers the games of its catalog,
//! heartbeats its load, and launches and stops game processes when the broker asks.
//!
//! - [`catalog`]: the games this host may run and how; the only place that turns a request
//!   into an argv. The agent refuses anything not in it, whatever the broker says.
//! - [`games`]: the running games, their process groups and supervising tasks.
//! - [`builds`]: the central games the broker keeps, their builds fetched, checked and
//!   unpacked into the cache under the state dir, and what the host offers of them.
//! - [`link`]: the connection to the broker (handshake, messages, heartbeats).
//! - [`output`]: the games' stdout and stderr, read back for the broker and kept for
//!   `--log-retention`.
//! - [`ready`]: a launched game's readiness check (catalog `ready`), tried until it passes.
//! - [`ports`], [`load`]: the port pool and the load sampler.
//! - [`metrics`]: what the agent counts, served to Prometheus with `--metrics ADDR`.
//! - [`cli`]: the `arcade-agent` command line, turned into a [`Config`].
//!
//! The agent knows nothing of HTTP, sessions' records or placement: those are the broker's.

pub mod brokers;
pub mod builds;
pub mod catalog;
pub mod cli;
pub mod games;
pub mod limits;
pub mod link;
pub mod load;
pub mod metrics;
pub mod output;
pub mod ports;
pub mod ready;
pub mod session_config;
pub mod state;
pub mod tcp;
pub mod tls;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use protocol::wire::PortRange;
use protocol::HostId;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::Catalog;
use crate::games::{Games, GamesConfig};
use crate::link::LinkError;

/// Everything the agent needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The brokers' agent addresses, `host:port` each, tried in turn.
    pub brokers: Vec<String>,
    /// The games this host offers.
    pub catalog: Catalog,
    /// Unique per host.
    pub host_id: HostId,
    /// The machine's hostname, for the broker's host list.
    pub hostname: String,
    /// The IP returned to clients; by default the local address of the broker connection.
    pub advertise_ip: Option<IpAddr>,
    /// The shared agent token.
    pub token: Option<String>,
    /// Logical CPUs of this machine.
    pub cpus: u32,
    /// Concurrent games at most.
    pub max_sessions: u32,
    /// Ports handed to games.
    pub port_range: PortRange,
    /// Game logs (and, later, what the agent needs to find its games again).
    pub state_dir: PathBuf,
    /// SIGTERM, then SIGKILL after this long.
    pub stop_grace: Duration,
    /// Reconnect backoff: first pause and cap.
    pub backoff: Backoff,
    /// Ended sessions' logs are removed this long after their last write.
    pub log_retention: Duration,
    /// On exit, stop the games instead of leaving them running to be found again.
    pub stop_games_on_exit: bool,
    /// Run games as this unprivileged user.
    pub run_as: Option<games::RunAs>,
    /// TLS for the agent link; `None`: plain TCP.
    pub tls: Option<tls::Tls>,
    /// Serve Prometheus metrics at `http://ADDR/metrics`; `None`: not at all.
    pub metrics: Option<std::net::SocketAddr>,
    /// The bytes central games' builds may take under `state_dir/builds`.
    pub build_cache: u64,
    /// The host's labels, `--label`.
    pub labels: protocol::labels::Labels,
    /// The host's GPU indexes, `--gpus`.
    pub gpus: Vec<u32>,
}

/// `--build-cache` when none is given: 50 GiB.
pub const DEFAULT_BUILD_CACHE: u64 = 50 << 30;

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first pause.
    pub min: Duration,
    /// The longest pause.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The pause before attempt `n` (0-based): `min * 2^n`, capped, then jittered to between
    /// half and all of it, so a fleet of agents does not reconnect in lockstep.
    pub fn pause(&self, attempt: u32) -> Duration {
        let full = self
            .min
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        let half = full / 2;
        half + full.mul_f64(rand::thread_rng().gen_range(0.0..0.5))
    }
}

/// Why the agent cannot run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The state directory cannot be made.
    #[error("cannot use state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The build cache cannot be used.
    #[error(transparent)]
    BuildCache(#[from] builds::CentralError),
    /// The `--metrics` address cannot be listened on.
    #[error("cannot listen on --metrics {addr}: {source}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Events (exits, stop answers) waiting for the link; a full channel makes game tasks wait.
const EVENT_QUEUE: usize = 1024;

/// Runs the agent until `shutdown` fires: takes back the games of its previous run (from
/// `--state-dir`), connects (and reconnects) to the broker and serves it. On shutdown it leaves
/// its games running, to be found again, unless `stop_games_on_exit`.
pub async fn run(mut config: Config, shutdown: CancellationToken) -> Result<(), AgentError> {
    for (game, why) in config
        .catalog
        .keep_fitting(&config.labels, config.gpus.len())
    {
        tracing::warn!(%game, "not offering {game}: {why}");
    }
    let log_dir = config.state_dir.join("logs");
    std::fs::create_dir_all(&log_dir).map_err(|source| AgentError::StateDir {
        path: log_dir.clone(),
        source,
    })?;
    let metrics_listener = match config.metrics {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Metrics { addr, source })?,
        ),
        None => None,
    };
    games::become_subreaper();
    let tracker = TaskTracker::new();
    let metrics = std::sync::Arc::new(metrics::AgentMetrics::default());
    let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
    let (state_file, saved) = {
        let dir = config.state_dir.clone();
        tokio::task::spawn_blocking(move || state::StateFile::open(&dir))
            .await
            .map_err(|e| AgentError::StateDir {
                path: config.state_dir.clone(),
                source: std::io::Error::other(e),
            })?
    };
    let central = {
        let central = builds::CentralConfig {
            dir: config.state_dir.join("builds"),
            budget: config.build_cache,
            token: config.token.clone(),
            tls: config
                .tls
                .as_ref()
                .map(|t| std::sync::Arc::clone(&t.client_config)),
            labels: config.labels.clone(),
            gpus: config.gpus.len(),
        };
        let (catalog, events, tracker, shutdown) = (
            config.catalog.clone(),
            events_tx.clone(),
            tracker.clone(),
            shutdown.clone(),
        );
        tokio::task::spawn_blocking(move || {
            builds::Central::new(central, catalog, events, tracker, shutdown)
        })
        .await
        .map_err(|e| AgentError::StateDir {
            path: config.state_dir.clone(),
            source: std::io::Error::other(e),
        })??
    };
    let games = Games::new(
        config.catalog.clone(),
        central,
        GamesConfig {
            max_sessions: config.max_sessions,
            port_range: config.port_range,
            log_dir,
            stop_grace: config.stop_grace,
            state_dir: config.state_dir.clone(),
            run_as: config.run_as.clone(),
            gpus: config.gpus.clone(),
        },
        state_file,
        events_tx,
        tracker.clone(),
        std::sync::Arc::clone(&metrics),
    );
    let sampler = tokio::task::spawn_blocking(load::Sampler::new)
        .await
        .unwrap_or_default();
    tracing::info!(host = %config.host_id, brokers = %config.brokers.join(","), games = config.catalog.offers().len(), "agent starting");
    games.adopt(saved).await;
    if let Some(listener) = metrics_listener {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving metrics on http://{addr}/metrics");
        }
        let scrape = {
            let (metrics, games) = (
                std::sync::Arc::clone(&metrics),
                std::sync::Arc::clone(&games),
            );
            std::sync::Arc::new(move || metrics.encode(games.running_count()))
        };
        tracker.spawn(metrics::serve(
            listener,
            scrape,
            shutdown.clone(),
            tracker.clone(),
        ));
    }
    tracker.spawn(sweep_logs(
        std::sync::Arc::clone(&games),
        config.log_retention,
        shutdown.clone(),
    ));

    let mut attempt = 0u32;
    let mut brokers = brokers::Rotation::new(config.brokers.clone());
    while !shutdown.is_cancelled() {
        let outcome = match brokers.next().await {
            Some(target) => {
                link::connect_and_serve(&config, &target, &games, &mut events, &sampler, &shutdown)
                    .await
            }
            None => link::LinkOutcome {
                welcomed: false,
                result: Err(LinkError::Lost(format!(
                    "no address of --broker {} resolves",
                    config.brokers.join(",")
                ))),
            },
        };
        if outcome.welcomed {
            attempt = 0;
        }
        match outcome.result {
            Ok(()) => break,
            Err(LinkError::Rejected(reason)) => {
                tracing::error!(%reason, "the broker refused this agent; retrying with backoff");
            }
            Err(LinkError::Lost(reason)) if outcome.welcomed => {
                tracing::warn!(%reason, "lost the broker; reconnecting");
            }
            Err(LinkError::Lost(reason)) => {
                tracing::debug!(%reason, attempt, "broker not reachable yet");
            }
        }
        let pause = config.backoff.pause(attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }

    if config.stop_games_on_exit {
        tracing::info!("agent stopping its games");
        games.stop_all().await;
    } else {
        let running = games.running().len();
        tracing::info!(
            running,
            "agent exiting; its games keep running and will be found again at its next start"
        );
        games.leave_running().await;
    }
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .is_err()
    {
        tracing::error!("some game tasks did not finish; exiting anyway");
    }
    tracing::info!("agent stopped");
    Ok(())
}

/// How often old game logs are looked for.
const LOG_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Removes old game logs now and every [`LOG_SWEEP_EVERY`] until `shutdown`.
async fn sweep_logs(
    games: std::sync::Arc<Games>,
    retention: Duration,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(LOG_SWEEP_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let removed = games.sweep_logs(retention).await;
        if removed > 0 {
            tracing::info!(removed, ?retention, "removed old game logs");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        for attempt in 0..40 {
            let full = Duration::from_millis(100)
                .saturating_mul(1 << attempt.min(16))
                .min(Duration::from_secs(5));
            let p = b.pause(attempt);
            assert!(p >= full / 2 && p <= full, "attempt {attempt}: {p:?}");
        }
    }
}
