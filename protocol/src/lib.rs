//! Arcade's wire types, shared by the broker, the agent and the portal client.
//!
//! This crate does no IO of its own. It defines:
//!
//! - [`ids`]: typed identifiers (`SessionId`, `HostId`, `GameId`) and their validation;
//! - [`wire`]: the agent link's messages: a versioned handshake, then one closed enum per
//!   direction ([`wire::AgentMessage`], [`wire::BrokerMessage`]);
//! - [`codec`]: the framing and payload format of the agent link (length-delimited frames of at
//!   most [`codec::MAX_FRAME_LEN`] bytes carrying bincode 2, always decoded with a limit). The
//!   payload format is chosen in that one module, so it can be swapped there alone;
//! - [`api`]: the HTTP API's JSON request and response types (serde only), used by the broker
//!   to answer and by `portal-client` to ask;
//! - [`labels`]: host labels, and whether a host fits a start's or a game's;
//! - [`settings`]: the settings a game offers a start, and the one check of a request against
//!   them;
//! - [`catalog`]: a game's catalog entry, and (feature `catalog`) its one check without the
//!   host, shared by the agent (a host's TOML) and the broker (a central game's JSON);
//! - `openapi` (feature `openapi`): the OpenAPI schemas the derive cannot say (ids, and the
//!   enums whose `Unknown` is for clients only).

pub mod api;
pub mod catalog;
pub mod codec;
pub mod ids;
pub mod labels;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod settings;
pub mod wire;

pub use ids::{BuildId, BuildIdError, GameId, HostId, IdError, PoolId, SessionId};
