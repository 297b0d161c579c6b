//! Agents: their connections, their handles, and what the broker knows of their hosts.
//!
//! - [`handle`]: [`AgentLink`](handle::AgentLink), the only way to reach an agent, and
//!   [`HostEvent`](handle::HostEvent), what agents say on their own; imports nothing else of
//!   the broker's;
//! - [`registry`]: hosts, their load and slots, atomic place-and-reserve; holds links;
//! - [`conn`]: the listener, the handshake, and one task per connection, which registers its
//!   link and serves it.
//!
//! The dependencies run one way: `conn` → `registry` → `handle`. The service uses all three
//! and none of them knows the service or session records.

pub mod conn;
pub mod handle;
pub mod registry;

pub use conn::{serve, LinkSettings};
pub use handle::{AgentLink, HostEvent, LaunchReply, LinkError};
pub use registry::{Placed, Registry};
