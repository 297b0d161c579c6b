//! The agent's Prometheus metrics (`--metrics ADDR`, off by default): games running, launches
//! and stops by outcome, game exits, state-file writes and log reads, named `arcade_agent_*`.
//!
//! [`AgentMetrics`] is counted into by [`crate::games`] as things happen, whether or not
//! anyone scrapes; [`serve`] answers `GET /metrics` (anything else: 404) on a plain HTTP/1.1
//! listener, with a bound on connections and on how long one may take. Only this module knows
//! prometheus-client and hyper.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Scrapes served at once, at most; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 16;
/// A scrape's connection is closed after this, answered or not.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

/// An outcome label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// How a launch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchOutcome {
    /// The game runs.
    Launched,
    /// The request named a game, mode or config the catalog refuses.
    Refused,
    /// No slot or no port was free.
    NoCapacity,
    /// The program could not be started.
    SpawnFailed,
    /// Its readiness check did not pass in time (it was stopped).
    NotReady,
    /// It exited before its readiness check passed.
    ExitedBeforeReady,
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// The agent ran no such game: already stopped.
    NotRunning,
    /// The group was gone within the grace after SIGTERM.
    Terminated,
    /// It needed SIGKILL.
    Killed,
    /// A process outlived SIGKILL's bound (stuck in the kernel).
    Stuck,
}

/// What the agent counts.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    running: Gauge,
    launches: Family<Outcome, Counter>,
    stops: Family<Outcome, Counter>,
    exits: Counter,
    state_writes: Family<Outcome, Counter>,
    log_reads: Family<Outcome, Counter>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("arcade_agent");
        let running = Gauge::default();
        registry.register(
            "games_running",
            "Games running on this host",
            running.clone(),
        );
        let launches = Family::<Outcome, Counter>::default();
        registry.register(
            "launches",
            "Launches asked by the broker, by outcome",
            launches.clone(),
        );
        let stops = Family::<Outcome, Counter>::default();
        registry.register(
            "stops",
            "Stops asked by the broker, by outcome",
            stops.clone(),
        );
        let exits = Counter::default();
        registry.register(
            "game_exits",
            "Games that ended by themselves (the last process of their group exited)",
            exits.clone(),
        );
        let state_writes = Family::<Outcome, Counter>::default();
        registry.register(
            "state_writes",
            "Writes of the state file the agent finds its games again by, by outcome",
            state_writes.clone(),
        );
        let log_reads = Family::<Outcome, Counter>::default();
        registry.register(
            "log_reads",
            "Pages of game logs read for the broker, by outcome",
            log_reads.clone(),
        );
        Self {
            registry,
            running,
            launches,
            stops,
            exits,
            state_writes,
            log_reads,
        }
    }
}

fn label(outcome: &'static str) -> Outcome {
    Outcome { outcome }
}

impl AgentMetrics {
    /// A launch ended so.
    pub fn launch(&self, outcome: LaunchOutcome) {
        let name = match outcome {
            LaunchOutcome::Launched => "launched",
            LaunchOutcome::Refused => "refused",
            LaunchOutcome::NoCapacity => "no_capacity",
            LaunchOutcome::SpawnFailed => "spawn_failed",
            LaunchOutcome::NotReady => "not_ready",
            LaunchOutcome::ExitedBeforeReady => "exited_before_ready",
        };
        self.launches.get_or_create(&label(name)).inc();
    }

    /// A stop ended so.
    pub fn stop(&self, outcome: StopOutcome) {
        let name = match outcome {
            StopOutcome::NotRunning => "not_running",
            StopOutcome::Terminated => "terminated",
            StopOutcome::Killed => "killed",
            StopOutcome::Stuck => "stuck",
        };
        self.stops.get_or_create(&label(name)).inc();
    }

    /// A game ended by itself.
    pub fn exit(&self) {
        self.exits.inc();
    }

    /// A state-file write succeeded or not.
    pub fn state_write(&self, ok: bool) {
        let name = if ok { "ok" } else { "error" };
        self.state_writes.get_or_create(&label(name)).inc();
    }

    /// A log page was read (`found`), or the log was missing, unreadable or the agent busy.
    pub fn log_read(&self, outcome: &'static str) {
        self.log_reads.get_or_create(&label(outcome)).inc();
    }

    /// The exposition text, with the games running now.
    pub fn encode(&self, running: usize) -> String {
        self.running.set(i64::try_from(running).unwrap_or(i64::MAX));
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "cannot encode the agent's metrics");
        }
        text
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown`; `scrape` makes the text. Each
/// connection runs in a task of `tracker`.
pub async fn serve(
    listener: TcpListener,
    scrape: Arc<dyn Fn() -> String + Send + Sync>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let scrape = Arc::clone(&scrape);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let scrape = Arc::clone(&scrape);
                async move { Ok::<_, Infallible>(answer(&req, &*scrape)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = shutdown.cancelled() => {}
                _ = tokio::time::timeout(CONNECTION_DEADLINE, conn) => {}
            }
        });
    }
}

fn answer<B>(
    req: &Request<B>,
    scrape: &(dyn Fn() -> String + Send + Sync),
) -> Response<Full<Bytes>> {
    let reply = |status, content_type, body: String| {
        let mut res = Response::new(Full::new(Bytes::from(body)));
        *res.status_mut() = status;
        if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
            res.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        res
    };
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "only /metrics here\n".into(),
        );
    }
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".into(),
        );
    }
    reply(
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        scrape(),
    )
}
