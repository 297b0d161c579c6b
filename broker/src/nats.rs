//! The broker's connection to NATS, which replicas use to reach each other (issue 15). Only
//! this module knows async-nats.
//!
//! It connects at start (bounded; a broker that cannot reach NATS refuses to start), tells
//! readiness whether the connection is up, and carries request-reply between replicas: each
//! replica listens on its own subject ([`Nats::inbox`]), and a request to another replica is
//! bounded by a deadline and tells "nobody listens" apart from "no answer in time". The client
//! reconnects by itself, forever, while the broker runs. Payloads are opaque bytes here: what
//! they mean is `crate::service::remote`'s.

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

/// Why a request to another replica got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Nobody listens on the subject: the replica is gone (or NATS lost its interest).
    #[error("no replica listens")]
    NoResponders,
    /// The replica did not answer within the deadline.
    #[error("no answer in time")]
    TimedOut,
    /// NATS cannot be reached now.
    #[error("NATS cannot be reached")]
    Disconnected,
}

/// One request from another replica, to answer with [`Incoming::respond`].
#[derive(Debug)]
pub struct Incoming {
    /// What was asked.
    pub payload: Vec<u8>,
    reply: Option<async_nats::Subject>,
}

/// A replica's own subject: requests for it, in order of arrival.
#[derive(Debug)]
pub struct Inbox {
    subscriber: async_nats::Subscriber,
}

impl Inbox {
    /// The next request, or `None` once the subscription is over.
    pub async fn next(&mut self) -> Option<Incoming> {
        use futures::StreamExt;
        let m = self.subscriber.next().await?;
        Some(Incoming {
            payload: m.payload.to_vec(),
            reply: m.reply,
        })
    }
}

/// Requests waiting in a replica's inbox, at most; NATS drops what does not fit (the caller's
/// deadline then answers it).
const INBOX_CAPACITY: usize = 4096;

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
            .connection_timeout(CONNECT_TIMEOUT)
            .subscription_capacity(INBOX_CAPACITY);
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

    /// The subject a replica listens on. A broker id may hold characters a subject token may
    /// not (`.`, `*`, `>`), so it is written in hex.
    fn subject(broker_id: &str) -> String {
        use std::fmt::Write;
        let mut s = String::from("arcade.broker.");
        for b in broker_id.bytes() {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// Starts listening on this replica's subject.
    pub async fn inbox(&self, broker_id: &str) -> Result<Inbox, RequestError> {
        let subscriber = self
            .client
            .subscribe(Self::subject(broker_id))
            .await
            .map_err(|_| RequestError::Disconnected)?;
        // Once the server has the subscription, requests reach it.
        self.client
            .flush()
            .await
            .map_err(|_| RequestError::Disconnected)?;
        Ok(Inbox { subscriber })
    }

    /// Asks replica `broker_id` and waits for its answer, at most `deadline`.
    pub async fn request(
        &self,
        broker_id: &str,
        payload: Vec<u8>,
        deadline: Duration,
    ) -> Result<Vec<u8>, RequestError> {
        if !self.is_connected() {
            return Err(RequestError::Disconnected);
        }
        let request = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(deadline));
        // The client's own timeout covers the answer; this one also covers a full send buffer.
        let sent = self.client.send_request(Self::subject(broker_id), request);
        match tokio::time::timeout(deadline + Duration::from_millis(100), sent).await {
            Err(_) => Err(RequestError::TimedOut),
            Ok(Ok(m)) => Ok(m.payload.to_vec()),
            Ok(Err(e)) => Err(match e.kind() {
                async_nats::RequestErrorKind::NoResponders => RequestError::NoResponders,
                async_nats::RequestErrorKind::TimedOut => RequestError::TimedOut,
                async_nats::RequestErrorKind::Other => RequestError::Disconnected,
            }),
        }
    }

    /// Answers a request (nothing to do for one that wants no answer).
    pub async fn respond(&self, to: Incoming, payload: Vec<u8>) {
        let Some(reply) = to.reply else { return };
        if let Err(e) = self.client.publish(reply, payload.into()).await {
            tracing::warn!(error = %e, "cannot answer another replica");
        }
    }

    /// Sends without waiting for an answer.
    pub async fn tell(&self, broker_id: &str, payload: Vec<u8>) -> Result<(), RequestError> {
        self.client
            .publish(Self::subject(broker_id), payload.into())
            .await
            .map_err(|_| RequestError::Disconnected)
    }
}

#[cfg(test)]
mod tests {
    use super::Nats;

    #[test]
    fn a_broker_id_makes_one_subject_token() {
        assert_eq!(Nats::subject("b1"), "arcade.broker.6231");
        let s = Nats::subject("gpu.example.com:7070 *>");
        assert!(!s["arcade.broker.".len()..].contains(['.', '*', '>', ' ']));
    }
}

/// Why the object store did not do what was asked.
#[derive(Debug, thiserror::Error)]
#[error("NATS object store {bucket:?}: {message}")]
pub struct ObjectError {
    bucket: String,
    message: String,
}

/// A JetStream object store bucket (`arcade-builds`: builds every replica serves), made by
/// whichever replica first needs it. An object is visible only once all of it is stored (its
/// info is published after its last chunk), so a writer that dies midway leaves nothing.
#[derive(Clone)]
pub struct Objects {
    js: async_nats::jetstream::Context,
    bucket: String,
    store: std::sync::Arc<tokio::sync::OnceCell<async_nats::jetstream::object_store::ObjectStore>>,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Objects({})", self.bucket)
    }
}

impl Nats {
    /// The object store `bucket`, reached lazily: a NATS without JetStream fails only the
    /// calls that need it, with the reason.
    pub fn objects(&self, bucket: &str) -> Objects {
        Objects {
            js: async_nats::jetstream::new(self.client.clone()),
            bucket: bucket.to_owned(),
            store: std::sync::Arc::default(),
        }
    }
}

impl Objects {
    fn error(&self, e: impl std::fmt::Display) -> ObjectError {
        ObjectError {
            bucket: self.bucket.clone(),
            message: e.to_string(),
        }
    }

    async fn store(
        &self,
    ) -> Result<&async_nats::jetstream::object_store::ObjectStore, ObjectError> {
        self.store
            .get_or_try_init(|| async {
                let config = async_nats::jetstream::object_store::Config {
                    bucket: self.bucket.clone(),
                    description: Some("Arcade's builds, named by their sha256".into()),
                    ..Default::default()
                };
                match self.js.get_object_store(&self.bucket).await {
                    Ok(s) => Ok(s),
                    Err(_) => self.js.create_object_store(config).await.map_err(|e| {
                        self.error(format!("{e} (is JetStream on: nats-server -js?)"))
                    }),
                }
            })
            .await
    }

    /// Stores `data` as `name`: its size.
    pub async fn put(
        &self,
        name: &str,
        data: &mut (impl tokio::io::AsyncRead + Unpin),
    ) -> Result<u64, ObjectError> {
        let info = self
            .store()
            .await?
            .put(name, data)
            .await
            .map_err(|e| self.error(e))?;
        Ok(info.size as u64)
    }

    /// The size of `name`, if it is stored.
    pub async fn size(&self, name: &str) -> Result<Option<u64>, ObjectError> {
        use async_nats::jetstream::object_store::InfoErrorKind;
        match self.store().await?.info(name).await {
            Ok(info) if !info.deleted => Ok(Some(info.size as u64)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == InfoErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// `name`'s bytes, if it is stored.
    pub async fn get(
        &self,
        name: &str,
    ) -> Result<Option<impl tokio::io::AsyncRead + Unpin + Send + use<>>, ObjectError> {
        use async_nats::jetstream::object_store::GetErrorKind;
        match self.store().await?.get(name).await {
            Ok(object) => Ok(Some(object)),
            Err(e) if e.kind() == GetErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Forgets `name` (not stored: nothing to do).
    pub async fn delete(&self, name: &str) -> Result<(), ObjectError> {
        if self.size(name).await?.is_none() {
            return Ok(());
        }
        self.store()
            .await?
            .delete(name)
            .await
            .map_err(|e| self.error(e))
    }
}
