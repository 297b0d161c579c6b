//! A mode or a config name, as a request or an entry's `modes` gives it: checked by the one
//! check every part of Arcade runs ([`protocol::settings::check_value`]), and how a name is
//! cut short for a message.

pub use protocol::settings::{check_value, ValueError, MAX_VALUE_LEN};

/// The first 64 characters of `s`, for a message.
pub(super) fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}
