//! The broker's connection to NATS, which replicas use to reach each other (issue 15). Only
//! this module knows async-nats.
//!
//! Today it connects at start (bounded; a broker that cannot reach NATS refuses to start) and
//! tells readiness whether the connection is up; the client reconnects by itself, forever,
//! while the broker runs. Routing commands to other replicas is built on it next.

use std::time::Duration;

/// How long the first connection at start may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why NATS cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// A URL is not a NATS server address.
    #[error("--nats-url {url:?}: {error}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why.
        error: std::io::Error,
    },
    /// No server answered in time.
    #[error("cannot reach NATS at {urls} within {CONNECT_TIMEOUT:?}")]
    Unreachable {
        /// The URLs tried.
        urls: String,
    },
    /// The servers refused the connection.
    #[error("cannot connect to NATS at {urls}: {error}")]
    Connect {
        /// The URLs tried.
        urls: String,
        /// Why.
        error: async_nats::ConnectError,
    },
}

/// A connection to the replica set's NATS.
#[derive(Debug, Clone)]
pub struct Nats {
    client: async_nats::Client,
}

impl Nats {
    /// Connects to any of `urls` (one NATS server or a cluster), naming the connection after
    /// this broker; it reconnects by itself when the link drops.
    pub async fn connect(urls: &[String], broker_id: &str) -> Result<Self, NatsError> {
        let mut addrs = Vec::with_capacity(urls.len());
        for url in urls {
            let addr =
                url.parse::<async_nats::ServerAddr>()
                    .map_err(|error| NatsError::BadUrl {
                        url: url.clone(),
                        error,
                    })?;
            addrs.push(addr);
        }
        let joined = urls.join(",");
        let options = async_nats::ConnectOptions::new()
            .name(format!("arcade-broker {broker_id}"))
            .connection_timeout(CONNECT_TIMEOUT);
        let client = tokio::time::timeout(CONNECT_TIMEOUT, options.connect(addrs.as_slice()))
            .await
            .map_err(|_| NatsError::Unreachable {
                urls: joined.clone(),
            })?
            .map_err(|error| NatsError::Connect {
                urls: joined.clone(),
                error,
            })?;
        tracing::info!(nats = %joined, "connected to NATS");
        Ok(Self { client })
    }

    /// Whether the connection is up now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}
