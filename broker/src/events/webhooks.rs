//! Webhooks: every event (of `--webhook-types`) POSTed to each `--webhook` URL as the same
//! JSON as on the stream, signed the Standard Webhooks way, so receivers verify it with their
//! existing libraries.
//!
//! The stream is the outbox: each endpoint has a cursor in the store (the last event it
//! took), and a delivery loop that sends the events after it in order, one at a time. A 2xx
//! moves the cursor; anything else, or no answer within [`ATTEMPT_TIMEOUT`], is retried with
//! capped exponential backoff until the event is [`GIVE_UP_AFTER`] old. So delivery is at
//! least once (a crash between a 2xx and the cursor's write sends that event again), in order
//! (per session, and overall), and survives restarts with MySQL, whose stream keeps the events.
//! With replicas, one replica delivers: the holder of the `webhooks` lease.

use std::time::Duration;

use base64::Engine as _;
use protocol::api::EventType;
use ring::hmac;
use time::OffsetDateTime;

use crate::metrics::WebhookCounters;

/// One attempt's deadline.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// An event still undelivered this long after it happened is given up (and logged).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(25 * 3600);
/// The longest URL accepted (it keys the endpoint's cursor).
const MAX_URL_LEN: usize = 512;

/// Why the webhook flags are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookConfigError {
    /// `--webhook` without `--webhook-secret`.
    #[error("--webhook needs --webhook-secret (or ARCADE_WEBHOOK_SECRET): receivers verify each delivery with it")]
    NoSecret,
    /// A secret `whsec_...` whose rest is not base64, or an empty one.
    #[error("--webhook-secret must be whsec_<base64> or at least 16 raw bytes")]
    BadSecret,
    /// A URL that is not `http://` or `https://`, or too long.
    #[error("--webhook {0:?} must be an http:// or https:// URL of at most 512 bytes")]
    BadUrl(String),
    /// A type the broker does not send.
    #[error("--webhook-types: unknown event type {0:?}")]
    UnknownType(String),
}

/// Where events are POSTed, and how.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The receivers.
    pub urls: Vec<String>,
    /// The signing key (the secret's bytes).
    key: Vec<u8>,
    /// The types sent.
    pub types: Vec<EventType>,
    /// The first retry's wait and the longest (not flags; tests shorten them).
    pub backoff: (Duration, Duration),
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("urls", &self.urls)
            .field("key", &"***")
            .field("types", &self.types)
            .finish()
    }
}

impl WebhookConfig {
    /// From the flags; `None` without `--webhook`.
    pub fn from_flags(
        urls: Vec<String>,
        secret: Option<String>,
        types: Vec<String>,
    ) -> Result<Option<Self>, WebhookConfigError> {
        if urls.is_empty() {
            return Ok(None);
        }
        for u in &urls {
            let scheme_ok = u.starts_with("http://") || u.starts_with("https://");
            if !scheme_ok || u.len() > MAX_URL_LEN || reqwest::Url::parse(u).is_err() {
                return Err(WebhookConfigError::BadUrl(u.chars().take(80).collect()));
            }
        }
        let secret = secret.ok_or(WebhookConfigError::NoSecret)?;
        let key = match secret.strip_prefix("whsec_") {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| WebhookConfigError::BadSecret)?,
            None if secret.len() >= 16 => secret.into_bytes(),
            None => return Err(WebhookConfigError::BadSecret),
        };
        if key.is_empty() {
            return Err(WebhookConfigError::BadSecret);
        }
        let types = if types.is_empty() {
            EventType::ALL
                .into_iter()
                .filter(|t| t.as_str().starts_with("session."))
                .collect()
        } else {
            types
                .iter()
                .map(|t| {
                    EventType::parse(t).ok_or_else(|| WebhookConfigError::UnknownType(t.clone()))
                })
                .collect::<Result<_, _>>()?
        };
        Ok(Some(Self {
            urls,
            key,
            types,
            backoff: (Duration::from_secs(1), Duration::from_secs(300)),
        }))
    }

    /// The Standard Webhooks signature of `body` sent as event `id` at `timestamp`:
    /// `v1,<base64 of HMAC-SHA256(key, "id.timestamp.body")>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.key);
        let tag = hmac::sign(&key, format!("{id}.{timestamp}.{body}").as_bytes());
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
        )
    }

    /// The headers of a delivery of event `id` with `body`, signed now.
    pub fn headers(&self, id: u64, body: &str) -> [(&'static str, String); 3] {
        let id = id.to_string();
        let timestamp = OffsetDateTime::now_utc().unix_timestamp();
        let signature = self.sign(&id, timestamp, body);
        [
            ("webhook-id", id),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ]
    }
}

/// The wait before attempt `n + 1` (after `n` failures): doubling from `min`, at most `max`.
pub fn backoff(n: u32, (min, max): (Duration, Duration)) -> Duration {
    min.saturating_mul(2u32.saturating_pow(n.min(20))).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(secret: &str) -> WebhookConfig {
        WebhookConfig::from_flags(
            vec!["http://127.0.0.1:9/hook".into()],
            Some(secret.into()),
            vec![],
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn signs_as_standard_webhooks_does() {
        // The example of the Standard Webhooks specification's reference libraries.
        let c = config("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            c.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn flags_are_checked() {
        let url = || vec!["https://portal.example/hooks".to_owned()];
        assert_eq!(WebhookConfig::from_flags(vec![], None, vec![]), Ok(None));
        assert_eq!(
            WebhookConfig::from_flags(url(), None, vec![]),
            Err(WebhookConfigError::NoSecret)
        );
        assert_eq!(
            WebhookConfig::from_flags(url(), Some("whsec_!!".into()), vec![]),
            Err(WebhookConfigError::BadSecret)
        );
        assert_eq!(
            WebhookConfig::from_flags(url(), Some("short".into()), vec![]),
            Err(WebhookConfigError::BadSecret)
        );
        assert!(matches!(
            WebhookConfig::from_flags(
                vec!["ftp://x".into()],
                Some("0123456789abcdef".into()),
                vec![]
            ),
            Err(WebhookConfigError::BadUrl(_))
        ));
        assert!(matches!(
            WebhookConfig::from_flags(
                url(),
                Some("0123456789abcdef".into()),
                vec!["session.teleported".into()]
            ),
            Err(WebhookConfigError::UnknownType(_))
        ));
        let c = config("0123456789abcdef");
        let sessions = protocol::api::EventType::ALL
            .iter()
            .filter(|t| t.as_str().starts_with("session."))
            .count();
        assert_eq!(c.types.len(), sessions, "every session type by default");
        assert_eq!(sessions, 9);
        assert!(!format!("{c:?}").contains("0123"), "the key never shows");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = (Duration::from_secs(1), Duration::from_secs(300));
        let waits: Vec<u64> = (0..10).map(|n| backoff(n, b).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert_eq!(backoff(u32::MAX, b), Duration::from_secs(300));
    }
}

/// How one event's delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A 2xx.
    Delivered,
    /// Refused or unanswered until it was [`GIVE_UP_AFTER`] old.
    GaveUp,
    /// The broker stops; the event is sent again at the next start.
    Stopped,
}

/// Sends events to the receivers.
#[derive(Debug)]
pub struct Deliverer {
    config: WebhookConfig,
    http: reqwest::Client,
    counts: WebhookCounters,
}

impl Deliverer {
    /// A deliverer for `config`.
    pub fn new(config: WebhookConfig, counts: WebhookCounters) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .user_agent(concat!("arcade-broker/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            config,
            http,
            counts,
        })
    }

    /// The receivers.
    pub fn urls(&self) -> &[String] {
        &self.config.urls
    }

    /// Whether the receivers take events of this type.
    pub fn wants(&self, kind: EventType) -> bool {
        self.config.types.contains(&kind)
    }

    /// Sends event `id` (as `body`, made at `at`) to `url` until a 2xx, retrying with
    /// backoff, until it is too old or `stop` fires.
    pub async fn deliver(
        &self,
        url: &str,
        id: u64,
        at: OffsetDateTime,
        body: &str,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Delivery {
        let mut failures = 0u32;
        loop {
            let mut request = self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_owned());
            for (name, value) in self.config.headers(id, body) {
                request = request.header(name, value);
            }
            let outcome = tokio::select! {
                () = stop.cancelled() => return Delivery::Stopped,
                r = request.send() => r,
            };
            match outcome {
                Ok(r) if r.status().is_success() => {
                    self.counts.delivered.inc();
                    return Delivery::Delivered;
                }
                Ok(r) => {
                    tracing::warn!(%url, event = id, status = r.status().as_u16(), "webhook refused; retrying");
                }
                Err(e) => {
                    tracing::warn!(%url, event = id, error = %e, "webhook not answered; retrying");
                }
            }
            self.counts.failed_attempts.inc();
            if OffsetDateTime::now_utc() - at > GIVE_UP_AFTER {
                tracing::error!(%url, event = id, "webhook never delivered; given up");
                self.counts.given_up.inc();
                return Delivery::GaveUp;
            }
            let wait = backoff(failures, self.config.backoff);
            failures = failures.saturating_add(1);
            tokio::select! {
                () = stop.cancelled() => return Delivery::Stopped,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
