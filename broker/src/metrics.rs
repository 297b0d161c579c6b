//! The broker's Prometheus metrics (`GET /metrics`), named `arcade_*` with their units, as
//! Prometheus's naming guide says.
//!
//! Counters and histograms are kept as things happen (starts, ends, HTTP requests, store
//! calls, webhook deliveries); gauges of state (sessions, hosts, links) are read from their
//! owners at each scrape, so they are never stale. Only this module knows prometheus-client.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// An outcome label (`started`, `no_capacity`, `delivered`, ...).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// The outcome.
    pub outcome: String,
}

/// Sessions by status and game.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    status: String,
    game_id: String,
}

/// Hosts by status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostStatusLabel {
    status: String,
}

/// One game.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GameLabel {
    game_id: String,
}

/// A counter of seconds.
type Seconds = Counter<f64, std::sync::atomic::AtomicU64>;

/// One host.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabel {
    host_id: String,
}

/// HTTP requests by route (its pattern), method and status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: String,
}

/// The state gauges are set from at a scrape.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Live sessions: (status, game, count).
    pub sessions: Vec<(String, String, u64)>,
    /// Hosts: (host, status, sessions, capacity).
    pub hosts: Vec<(String, String, u64, u64)>,
    /// Agent links connected to this broker.
    pub agent_links: u64,
    /// Age of the oldest event a webhook receiver has not taken, if any.
    pub webhook_oldest_undelivered: Option<Duration>,
}

/// What webhook deliveries count.
#[derive(Debug, Clone)]
pub struct WebhookCounters {
    /// Events delivered (a 2xx).
    pub delivered: Counter,
    /// Attempts refused or unanswered.
    pub failed_attempts: Counter,
    /// Events given up after retrying for the whole window.
    pub given_up: Counter,
}

/// The store's calls.
#[derive(Debug, Clone)]
pub struct StoreCalls {
    /// Each call's duration.
    pub seconds: Histogram,
    /// Calls that failed.
    pub errors: Counter,
    /// Tries made again because a concurrent change won (a deadlock, a Galera certification
    /// conflict): how much the database's nodes contend.
    pub conflicts: Counter,
}

/// Every metric of the broker.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    starts: Family<Outcome, Counter>,
    ends: Family<Outcome, Counter>,
    start_seconds: Histogram,
    end_seconds: Histogram,
    sessions: Family<SessionLabels, Gauge>,
    hosts: Family<HostStatusLabel, Gauge>,
    host_sessions: Family<HostLabel, Gauge>,
    host_capacity: Family<HostLabel, Gauge>,
    agent_links: Gauge,
    http: Family<HttpLabels, Counter>,
    store: StoreCalls,
    webhooks: WebhookCounters,
    webhook_deliveries: Family<Outcome, Counter>,
    webhook_oldest: Gauge<f64, std::sync::atomic::AtomicU64>,
    session_seconds: Family<GameLabel, Seconds>,
    gpu_seconds: Family<GameLabel, Seconds>,
    /// Scrapes one at a time: they set the gauges, then encode them.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency_buckets() -> Histogram {
    // 100 µs to ~52 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

impl Metrics {
    /// Every metric, registered, at zero.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("arcade");
        let starts = Family::<Outcome, Counter>::default();
        r.register(
            "session_starts",
            "Starts by outcome (started, existing, or the error code)",
            starts.clone(),
        );
        let ends = Family::<Outcome, Counter>::default();
        r.register(
            "session_ends",
            "Ends by outcome (ended, or the error code)",
            ends.clone(),
        );
        let start_seconds = latency_buckets();
        r.register_with_unit(
            "session_start_duration",
            "Time to answer a start",
            Unit::Seconds,
            start_seconds.clone(),
        );
        let end_seconds = latency_buckets();
        r.register_with_unit(
            "session_end_duration",
            "Time to answer an end",
            Unit::Seconds,
            end_seconds.clone(),
        );
        let sessions = Family::<SessionLabels, Gauge>::default();
        r.register(
            "sessions",
            "Sessions not over, by status and game",
            sessions.clone(),
        );
        let hosts = Family::<HostStatusLabel, Gauge>::default();
        r.register("hosts", "Hosts by status", hosts.clone());
        let host_sessions = Family::<HostLabel, Gauge>::default();
        r.register(
            "host_sessions",
            "Sessions not over, per host",
            host_sessions.clone(),
        );
        let host_capacity = Family::<HostLabel, Gauge>::default();
        r.register(
            "host_capacity_sessions",
            "Sessions a host takes at most",
            host_capacity.clone(),
        );
        let agent_links = Gauge::default();
        r.register(
            "agent_links",
            "Agent links connected to this broker",
            agent_links.clone(),
        );
        let http = Family::<HttpLabels, Counter>::default();
        r.register(
            "http_requests",
            "HTTP requests by route, method and status",
            http.clone(),
        );
        let store = StoreCalls {
            seconds: latency_buckets(),
            errors: Counter::default(),
            conflicts: Counter::default(),
        };
        r.register_with_unit(
            "store_call_duration",
            "Session store calls",
            Unit::Seconds,
            store.seconds.clone(),
        );
        r.register(
            "store_call_errors",
            "Session store calls that failed",
            store.errors.clone(),
        );
        r.register(
            "store_call_conflicts",
            "Session store tries made again because a concurrent change won (a deadlock, a \
             Galera certification conflict)",
            store.conflicts.clone(),
        );
        let webhook_deliveries = Family::<Outcome, Counter>::default();
        r.register(
            "webhook_deliveries",
            "Webhook deliveries by outcome (delivered, failed_attempt, given_up)",
            webhook_deliveries.clone(),
        );
        // One statement each: a family's guard lives to the end of its statement, and the
        // next creation needs the family's write lock.
        let delivered = webhook_deliveries
            .get_or_create(&outcome("delivered"))
            .clone();
        let failed_attempts = webhook_deliveries
            .get_or_create(&outcome("failed_attempt"))
            .clone();
        let given_up = webhook_deliveries
            .get_or_create(&outcome("given_up"))
            .clone();
        let webhooks = WebhookCounters {
            delivered,
            failed_attempts,
            given_up,
        };
        let webhook_oldest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        r.register_with_unit(
            "webhook_oldest_undelivered_age",
            "Age of the oldest event a webhook receiver has not taken (0: none)",
            Unit::Seconds,
            webhook_oldest.clone(),
        );
        let session_seconds = Family::<GameLabel, Seconds>::default();
        r.register_with_unit(
            "session_run",
            "Time games ran (from running, or ready for a pool, to their end), counted as each ends, by game",
            Unit::Seconds,
            session_seconds.clone(),
        );
        let gpu_seconds = Family::<GameLabel, Seconds>::default();
        r.register_with_unit(
            "session_gpu",
            "Time sessions ran times their GPUs, counted as each ends, by game",
            Unit::Seconds,
            gpu_seconds.clone(),
        );
        Self {
            registry: r,
            session_seconds,
            gpu_seconds,
            starts,
            ends,
            start_seconds,
            end_seconds,
            sessions,
            hosts,
            host_sessions,
            host_capacity,
            agent_links,
            http,
            store,
            webhooks,
            webhook_deliveries,
            webhook_oldest,
            scrape: Mutex::new(()),
        }
    }

    /// A start answered with `outcome` after `took`.
    pub fn started(&self, outcome: &str, took: Duration) {
        self.starts.get_or_create(&self::outcome(outcome)).inc();
        self.start_seconds.observe(took.as_secs_f64());
    }

    /// An end answered with `outcome` after `took`.
    pub fn ended(&self, outcome: &str, took: Duration) {
        self.ends.get_or_create(&self::outcome(outcome)).inc();
        self.end_seconds.observe(took.as_secs_f64());
    }

    /// A session of `game` that ran `seconds` with `gpus` GPUs ended.
    pub fn ran(&self, game: &str, seconds: f64, gpus: usize) {
        let label = GameLabel {
            game_id: game.to_owned(),
        };
        self.session_seconds.get_or_create(&label).inc_by(seconds);
        self.gpu_seconds
            .get_or_create(&label)
            .inc_by(seconds * gpus as f64);
    }

    /// An HTTP request answered.
    pub fn http_request(&self, route: &str, method: &str, status: u16) {
        self.http
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status: status.to_string(),
            })
            .inc();
    }

    /// What the store's calls count into.
    pub fn store_calls(&self) -> StoreCalls {
        self.store.clone()
    }

    /// What webhook deliveries count into.
    pub fn webhook_counters(&self) -> WebhookCounters {
        self.webhooks.clone()
    }

    /// The text exposition of every metric, the gauges set from `now`.
    pub fn render(&self, now: &Snapshot) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.sessions.clear();
        for (status, game_id, n) in &now.sessions {
            let labels = SessionLabels {
                status: status.clone(),
                game_id: game_id.clone(),
            };
            self.sessions.get_or_create(&labels).set(gauge(*n));
        }
        self.hosts.clear();
        self.host_sessions.clear();
        self.host_capacity.clear();
        for (host_id, status, sessions, capacity) in &now.hosts {
            let status = HostStatusLabel {
                status: status.clone(),
            };
            self.hosts.get_or_create(&status).inc();
            let host = HostLabel {
                host_id: host_id.clone(),
            };
            self.host_sessions
                .get_or_create(&host)
                .set(gauge(*sessions));
            self.host_capacity
                .get_or_create(&host)
                .set(gauge(*capacity));
        }
        self.agent_links.set(gauge(now.agent_links));
        self.webhook_oldest.set(
            now.webhook_oldest_undelivered
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        let _ = &self.webhook_deliveries;
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            tracing::error!("cannot encode the metrics");
        }
        text
    }
}

fn outcome(o: &str) -> Outcome {
    Outcome {
        outcome: o.to_owned(),
    }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_units() {
        let m = Metrics::new();
        m.started("started", Duration::from_millis(3));
        m.http_request("/v1/sessions", "POST", 201);
        let text = m.render(&Snapshot {
            sessions: vec![("running".into(), "pong".into(), 2)],
            hosts: vec![("h1".into(), "online".into(), 2, 8)],
            agent_links: 1,
            webhook_oldest_undelivered: None,
        });
        for line in [
            "arcade_session_starts_total{outcome=\"started\"} 1",
            "arcade_sessions{status=\"running\",game_id=\"pong\"} 2",
            "arcade_host_capacity_sessions{host_id=\"h1\"} 8",
            "arcade_hosts{status=\"online\"} 1",
            "arcade_agent_links 1",
            "arcade_session_start_duration_seconds_count 1",
            "arcade_http_requests_total{route=\"/v1/sessions\",method=\"POST\",status=\"201\"} 1",
        ] {
            assert!(text.contains(line), "no {line:?} in:\n{text}");
        }
    }
}
