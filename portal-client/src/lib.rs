//! A typed async client for Arcade's HTTP API, and the `arcade` command line built on it.
//!
//! - [`client`]: [`Client`], one method per `/v1` call of the broker, returning the JSON types
//!   of [`protocol::api`]; every failure is a [`ClientError`] that says whether the broker
//!   answered with an API error (`{"error": {"code", "message"}}`), answered with something
//!   else, or could not be reached.
//! - [`cli`]: the `arcade` command line (`arcade [--url URL] [--api-key KEY] [--json] COMMAND`),
//!   as a library so it can be tested; `src/main.rs` only parses the arguments and calls
//!   [`cli::run`]; [`follow`]: `arcade events`, following the event stream; [`tail`]:
//!   `arcade logs`, a game's output.
//! - [`error`]: [`ClientError`]; [`timeouts`]: how long calls and streams wait.
//! - [`events`]: reading `GET /v1/events` (a Server-Sent Events parser).
//!
//! ```no_run
//! use portal_client::Client;
//! use protocol::api::StartSession;
//! use protocol::GameId;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new("http://127.0.0.1:8080", Some("portal-key".to_owned()))?;
//! let session = client
//!     .start_session(&StartSession::new(GameId::new("sleeper")?))
//!     .await?;
//! println!("connect to {:?}:{:?}", session.ip, session.port);
//! client.end_session(&session.session_id).await?;
//! # Ok(())
//! # }
//! ```

pub mod cli;
pub mod client;
pub mod error;
pub mod events;
pub mod follow;
pub mod tail;
pub mod timeouts;

#[cfg(test)]
mod test_server;

pub use client::{Client, ClientError, GameLog, LogRange};
/// The shared wire types, so users of this crate need not depend on `protocol` themselves.
pub use protocol;

/// The name a value of a serde-derived enum has in JSON (`ErrorCode::NoCapacity` gives
/// `no_capacity`), for enums of [`protocol::api`] that have no `as_str` of their own.
pub(crate) fn serde_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        Ok(other) => other.to_string(),
        Err(_) => "unknown".to_owned(),
    }
}
