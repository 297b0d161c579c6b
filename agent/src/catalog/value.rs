//! A mode or a config name, as a request or an entry's `modes` gives it: the one check of such
//! a value, and how a name is cut short for a message.

/// The longest mode or config name accepted in a request, in bytes.
pub const MAX_VALUE_LEN: usize = 255;

/// Why a mode or config name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// It is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// `mode` or `config`.
        what: &'static str,
    },
    /// It is longer than [`MAX_VALUE_LEN`].
    #[error("{what} is longer than {max} bytes", max = MAX_VALUE_LEN)]
    TooLong {
        /// `mode` or `config`.
        what: &'static str,
    },
    /// It holds control characters.
    #[error("{what} must not hold control characters")]
    ControlChars {
        /// `mode` or `config`.
        what: &'static str,
    },
}

/// Checks a mode or config name (`what`): not empty, at most [`MAX_VALUE_LEN`] bytes, no
/// control character.
pub(super) fn check_value(what: &'static str, v: &str) -> Result<(), ValueError> {
    if v.is_empty() {
        return Err(ValueError::Empty { what });
    }
    if v.len() > MAX_VALUE_LEN {
        return Err(ValueError::TooLong { what });
    }
    if v.chars().any(char::is_control) {
        return Err(ValueError::ControlChars { what });
    }
    Ok(())
}

/// The first 64 characters of `s`, for a message.
pub(super) fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}
