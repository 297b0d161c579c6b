//! The Arcade broker.
//!
//! Portals ask it over HTTP to start and end games; it places each game on a runtime host whose
//! agent (connected over the agent link) launches it, and keeps the session records.
//!
//! - [`http`]: the HTTP API (the only module that knows actix-web), its one route table and
//!   its one error-to-status mapping;
//! - [`service`]: what the API does: start, end, reads; agents' events; sweeps; its
//!   [`Error`](error::Error) knows nothing of HTTP; [`events`]: the feed of new events that
//!   every open event stream follows;
//! - [`agents`]: agent connections, their handles, and the registry of hosts;
//!   [`placement`]: the pure choice of a host;
//! - [`store`]: session records (the only module that knows how they are stored);
//!   [`session`]: their lifecycle, checked in one place;
//! - [`auth`]: API keys and roles; [`config`], [`tls`]: the command line and TLS files;
//!   `dev` (with the `dev` feature, a default one): `--dev`'s in-process agent and demo game.

pub mod agents;
pub mod auth;
pub mod builds;
pub mod config;
#[cfg(feature = "dev")]
pub mod dev;
pub mod error;
pub mod events;
pub mod http;
pub mod join;
pub mod metrics;
pub mod nats;
pub mod placement;
pub mod players;
pub mod service;
pub mod session;
pub mod store;
pub mod tls;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Args, Config};

use crate::agents::{LinkSettings, Registry};
use crate::service::{Replicas, Service, ServiceSettings};
use crate::store::mysql::MysqlStore;
use crate::store::{Store, StoreError};

/// Agents' events waiting for the service.
const EVENT_QUEUE: usize = 4096;
/// Agent connections at once, at most.
const MAX_AGENT_CONNECTIONS: usize = 20_000;
/// How often agents heartbeat.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A stop the agent has not confirmed by then fails (agents bound their own stops by
/// `--stop-grace`, far below this).
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// At shutdown, starts and ends in flight get the launch timeout and this long to finish.
const REQUEST_DRAIN_GRACE: Duration = Duration::from_secs(10);
/// The NATS JetStream object store bucket that replicas keep builds in (API.md).
pub const BUILDS_BUCKET: &str = "arcade-builds";

/// The broker's sockets, bound by the caller (tests bind port 0).
#[derive(Debug)]
pub struct Listeners {
    /// The HTTP API.
    pub http: TcpListener,
    /// The agent link.
    pub agents: TcpListener,
}

impl Listeners {
    /// Binds the configured addresses.
    pub fn bind(config: &Config) -> Result<Self, BrokerError> {
        let bind = |addr: SocketAddr, what: &'static str| {
            TcpListener::bind(addr).map_err(|error| BrokerError::Bind { what, addr, error })
        };
        Ok(Self {
            http: bind(config.http, "HTTP API")?,
            agents: bind(config.agent_listen, "agent listener")?,
        })
    }
}

/// Why the broker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A `--player-key` cannot be read.
    #[error("{0}")]
    PlayerKeys(#[from] players::KeyError),
    /// A socket cannot be bound.
    #[error("cannot bind the {what} to {addr}: {error}")]
    Bind {
        /// Which socket.
        what: &'static str,
        /// Where.
        addr: SocketAddr,
        /// Why (in the message, so not also its source: the error is printed once).
        error: std::io::Error,
    },
    /// A socket cannot be used.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The dev agent cannot be set up.
    #[cfg(feature = "dev")]
    #[error("--dev: {0}")]
    Dev(agent::catalog::CatalogError),
    /// The agent link's or the API's TLS files cannot be used.
    #[error("{what} TLS: {error}")]
    Tls {
        /// Which: the agent link or the API.
        what: &'static str,
        /// Why.
        error: tls::TlsError,
    },
    /// The session store cannot be opened.
    #[error("--database-url: {0}")]
    Store(StoreError),
    /// NATS cannot be reached.
    #[error("{0}")]
    Nats(nats::NatsError),
    /// This replica cannot listen for the others' calls.
    #[error("cannot listen on NATS for the other replicas: {0}")]
    NatsInbox(nats::RequestError),
    /// The webhooks' HTTP client cannot be made.
    #[error("--webhook: {0}")]
    Webhooks(reqwest::Error),
    /// Replicas share their records through MySQL (the configuration checks this first).
    #[error("--nats-url needs --database-url")]
    ReplicasNeedMysql,
    /// The build store's directory cannot be made or cleared.
    #[error("--build-store {}: {error}", dir.display())]
    BuildStore {
        /// The directory.
        dir: std::path::PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// The stored sessions cannot be read.
    #[error("--database-url: cannot read the stored sessions: {0}")]
    Restore(StoreError),
}

/// Runs the broker until `shutdown` fires, then stops gracefully: the HTTP API stops accepting
/// and lets in-flight requests finish (they may still need agents), then the dev agent (if any)
/// stops its games, then agent links close. Agents on other hosts keep their games running.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), BrokerError> {
    // Everything that can fail comes first, so a refusal leaves nothing running.
    let http_addr = listeners.http.local_addr()?;
    let agent_addr = listeners.agents.local_addr()?;
    listeners.agents.set_nonblocking(true)?;
    let agent_listener = tokio::net::TcpListener::from_std(listeners.agents)?;
    let tls_error = |what| move |error| BrokerError::Tls { what, error };
    let agent_tls = match &config.agent_tls {
        Some(t) => Some(
            tls::acceptor(&t.cert, &t.key, t.client_ca.as_deref())
                .map_err(tls_error("agent link"))?,
        ),
        None => None,
    };
    let http_tls = match &config.http_tls {
        Some((cert, key)) => {
            Some(tls::server_config(cert, key, None).map_err(tls_error("API (HTTPS)"))?)
        }
        None => None,
    };
    #[cfg(feature = "dev")]
    let dev_agent = match &config.dev {
        Some(dev) => {
            let state_dir =
                std::env::temp_dir().join(format!("arcade-dev-agent-{}", std::process::id()));
            Some(
                dev.agent_config(agent_addr, config.agent_token.clone(), state_dir)
                    .map_err(BrokerError::Dev)?,
            )
        }
        None => None,
    };
    let metrics = Arc::new(metrics::Metrics::new());
    let store = match &config.database_url {
        Some(url) => {
            let store = MysqlStore::connect(url)
                .await
                .map_err(BrokerError::Store)?
                .observed(metrics.store_calls());
            tracing::info!(database = %store::mysql::mask_url(url), "session store: MySQL");
            Store::Mysql(store)
        }
        None => {
            tracing::warn!(
                "no --database-url: sessions are kept in memory and lost when the broker restarts"
            );
            Store::memory()
        }
    };
    let deliverer = match &config.webhooks {
        Some(w) => Some(Arc::new(
            events::webhooks::Deliverer::new(w.clone(), metrics.webhook_counters())
                .map_err(BrokerError::Webhooks)?,
        )),
        None => None,
    };
    let registry = Arc::new(Registry::new(config.placement));
    // Starts and ends in flight: drained after HTTP, before the agent links close.
    let requests = TaskTracker::new();
    let hostname = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    let broker_id = config
        .broker_id
        .clone()
        .unwrap_or_else(|| format!("{hostname}:{}", agent_addr.port()));
    tracing::info!(%broker_id, "this broker");
    let mut builds = builds::BuildStore::open(
        config.build_store.clone(),
        &broker_id,
        config.max_build_size,
    )
    .map_err(|e| BrokerError::BuildStore {
        dir: config.build_store.clone(),
        error: e,
    })?;
    // Every replica sharing the store makes the same game keys.
    let game_keys = join::GameKeys::new(
        &store
            .secret(join::GAME_KEY_SECRET)
            .await
            .map_err(BrokerError::Store)?,
    );
    let public_url = config.public_url.clone().unwrap_or_else(|| {
        let scheme = if config.http_tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{http_addr}")
    });
    let settings = ServiceSettings {
        launch_timeout: config.launch_timeout,
        stop_timeout: STOP_TIMEOUT,
        heartbeat_timeout: config.heartbeat_timeout,
        broker_id,
        agent_address: agent_addr.to_string(),
        max_sessions_per_user: config.max_sessions_per_user,
        public_url,
        join_ttl: config.join_token_ttl,
        game_keys: game_keys.clone(),
        placement: config.placement,
        host_idle_after: config.host_idle_after,
    };
    let (replicas, inbox) = match (&store, config.nats_urls.is_empty()) {
        (_, true) => (None, None),
        (Store::Mysql(db), false) => {
            let nats = nats::Nats::connect(&config.nats_urls, &settings.broker_id)
                .await
                .map_err(BrokerError::Nats)?;
            let inbox = nats
                .inbox(&settings.broker_id)
                .await
                .map_err(BrokerError::NatsInbox)?;
            // Builds are kept where every replica reads them.
            builds = builds.with_objects(nats.objects(BUILDS_BUCKET));
            // Alive before any host is held here, so no replica takes this one's hosts for lost.
            db.beat(&settings.broker_id, &settings.agent_address)
                .await
                .map_err(BrokerError::Store)?;
            (Some(Replicas::new(nats)), Some(inbox))
        }
        (Store::Memory(_), false) => return Err(BrokerError::ReplicasNeedMysql),
    };
    let service = Service::new(
        store,
        builds,
        replicas,
        Arc::clone(&registry),
        settings,
        requests.clone(),
        Arc::clone(&metrics),
    );
    service.restore().await.map_err(BrokerError::Restore)?;
    // Read before anything runs, so a bad key file stops the start with its reason.
    let player_keys = if config.player_keys.is_empty() {
        None
    } else {
        let specs = config.player_keys.clone();
        let loaded = tokio::task::spawn_blocking(move || players::PlayerKeys::load(specs))
            .await
            .map_err(|e| BrokerError::Io(std::io::Error::other(e)))??;
        Some(Arc::new(loaded))
    };
    let mut keys = auth::Keys::new(config.api_keys.clone())
        .with_games(game_keys)
        .with_agent_token(config.agent_token.clone());
    if let Some(p) = &player_keys {
        keys = keys.with_players(Arc::clone(p));
    }
    let server = http::server(
        Arc::clone(&service),
        &http::HttpSettings {
            cors_origins: config.cors_origins.clone(),
            workers: config.workers,
            shutdown_grace: config.shutdown_grace,
            keys,
            tls: http_tls,
        },
        listeners.http,
    )?;

    // Then the tasks, every one tracked. Everything but HTTP stops only after HTTP has
    // drained.
    let tracker = TaskTracker::new();
    let background = CancellationToken::new();
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    tracker.spawn(agents::serve(
        agent_listener,
        Arc::clone(&registry),
        events_tx,
        LinkSettings {
            token: config.agent_token.clone(),
            heartbeat_timeout: config.heartbeat_timeout,
            heartbeat_interval: HEARTBEAT_INTERVAL,
            max_connections: MAX_AGENT_CONNECTIONS,
            tls: agent_tls,
        },
        background.clone(),
        tracker.clone(),
    ));
    tracker.spawn(Arc::clone(&service).run_events(events_rx, background.clone()));
    tracker.spawn(Arc::clone(&service).run_sweeper(background.clone()));
    if let Some(p) = player_keys {
        tracker.spawn(players::watch(p, background.clone()));
    }
    tracker.spawn(Arc::clone(&service).run_feed(background.clone()));
    tracker.spawn(Arc::clone(&service).run_pools(background.clone()));
    tracker.spawn(Arc::clone(&service).run_central(background.clone()));
    if let Some(deliverer) = deliverer {
        tracker.spawn(Arc::clone(&service).run_webhooks(deliverer, background.clone()));
    }
    if let Some(inbox) = inbox {
        tracker.spawn(Arc::clone(&service).serve_calls(inbox, background.clone()));
        let every = (config.heartbeat_timeout / 4).max(Duration::from_millis(100));
        tracker.spawn(Arc::clone(&service).run_beats(every, background.clone()));
    }
    #[cfg(feature = "dev")]
    let dev_shutdown = CancellationToken::new();
    #[cfg(feature = "dev")]
    let dev_agent = dev_agent.map(|agent_config| {
        tracing::info!(games = ?agent_config.catalog.offers().iter().map(|g| g.game_id.to_string()).collect::<Vec<_>>(), "--dev: running a local agent with demo games");
        tracker.spawn(agent::run(agent_config, dev_shutdown.clone()))
    });
    let handle = server.handle();
    tracing::info!(http = %http_addr, agents = %agent_addr, "arcade-broker ready");
    let closing = Arc::clone(&service);
    let stopper = tracker.spawn(async move {
        shutdown.cancelled().await;
        tracing::info!("shutting down: draining HTTP requests");
        // Event streams never end by themselves: end them, so HTTP can drain.
        closing.close_streams();
        handle.stop(true).await;
    });
    let served = server.await;
    stopper.abort();
    // Starts and ends whose callers went away still finish (they may need their agents).
    requests.close();
    let drain = config.launch_timeout + REQUEST_DRAIN_GRACE;
    if tokio::time::timeout(drain, requests.wait()).await.is_err() {
        tracing::warn!(within = ?drain, "some starts or ends did not finish in time");
    }
    #[cfg(feature = "dev")]
    if let Some(dev_agent) = dev_agent {
        dev_shutdown.cancel();
        match dev_agent.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "dev agent failed"),
            Err(e) => tracing::error!(error = %e, "dev agent panicked"),
        }
    }
    background.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some broker tasks did not stop in time");
    }
    tracing::info!("arcade-broker stopped");
    served.map_err(BrokerError::Io)
}
