//! How long the client waits: shared by [`crate::client`]'s calls, [`crate::events`]' streams,
//! and the messages of [`crate::error`].

use std::time::Duration;

/// How long to wait for the TCP connection to the broker.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole call may take, answer included. Generous, because a start waits for the
/// game's launch and an end for its processes to be gone.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an event stream may stay open (it is reconnected past this).
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);
