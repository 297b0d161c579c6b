//! [`ClientError`]: why a call to the broker failed, for calls and event streams alike.

use protocol::api::ErrorCode;
use reqwest::StatusCode;

use crate::serde_name;
use crate::timeouts::REQUEST_TIMEOUT;

/// Why a call to the broker failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker answered with an error of the API: `{"error": {"code", "message"}}`.
    #[error("{}", api_message(*code, message, *retry_after))]
    Api {
        /// The HTTP status (400, 401, 403, 404, 409, 413, 502, 503, 504, ...).
        status: u16,
        /// The machine-readable code.
        code: ErrorCode,
        /// What happened and what to do, as the broker says it.
        message: String,
        /// Seconds to wait before trying again, from `Retry-After` (sent with `no_capacity`).
        retry_after: Option<u64>,
    },
    /// An event stream broke off or carried something that is not Server-Sent Events.
    #[error("the event stream broke: {0}")]
    Stream(String),
    /// The broker (or whatever answered at the URL) sent an error status whose body is not the
    /// API's error shape.
    #[error("{}", unexpected_message(*status, body))]
    UnexpectedStatus {
        /// The HTTP status.
        status: u16,
        /// The start of the body (at most 200 characters), as text.
        body: String,
    },
    /// No answer: the broker could not be reached, the connection broke, or it did not answer
    /// in time. The underlying error is the [`source`](std::error::Error::source).
    #[error("{}", transport_message(base_url, source))]
    Transport {
        /// The broker's base URL (as given to [`Client::new`], without a trailing `/`).
        base_url: String,
        /// What went wrong.
        #[source]
        source: reqwest::Error,
    },
    /// A success answer whose body is not the JSON the API documents for the call.
    #[error("cannot read the broker's answer to {request}")]
    Decode {
        /// The call, such as `GET /v1/hosts`.
        request: String,
        /// Why the body did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// The base URL given to [`Client::new`] cannot be used.
    #[error("invalid broker URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A header value (the API key, an idempotency key) cannot be sent over HTTP.
    #[error("invalid {0}: it must be non-empty, printable ASCII without spaces")]
    InvalidHeader(&'static str),
}

impl ClientError {
    /// The HTTP status the broker answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::UnexpectedStatus { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API's error code, if the broker answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn api_message(code: ErrorCode, message: &str, retry_after: Option<u64>) -> String {
    let mut text = format!("{}: {message}", serde_name(&code));
    if let Some(secs) = retry_after {
        text.push_str(&format!(" (retry after {secs} s)"));
    }
    text
}

fn unexpected_message(status: u16, body: &str) -> String {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(|r| format!(" {r}"))
        .unwrap_or_default();
    if body.is_empty() {
        format!("the broker answered HTTP {status}{reason} with an empty body")
    } else {
        format!("the broker answered HTTP {status}{reason}: {body}")
    }
}

fn transport_message(base_url: &str, err: &reqwest::Error) -> String {
    if err.is_connect() {
        format!("cannot reach the broker at {base_url} (is arcade-broker running?)")
    } else if err.is_timeout() {
        format!(
            "the broker at {base_url} did not answer within {} s",
            REQUEST_TIMEOUT.as_secs()
        )
    } else if err.is_builder() {
        format!("cannot build a request to the broker at {base_url}")
    } else {
        format!("the connection to the broker at {base_url} failed")
    }
}
