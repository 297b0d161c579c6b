//! What every Arcade program (`arcade-broker`, `arcade-agent`) does at start and stop, written
//! once for all of them.
//!
//! - [`logs`]: the process's logger, to stderr as text or JSON lines (`--log-format`);
//! - [`wait_for_signal`]: waiting for SIGTERM or SIGINT, the signal to stop gracefully.

pub mod logs;
mod signal;

pub use logs::LogFormat;
pub use signal::wait_for_signal;
