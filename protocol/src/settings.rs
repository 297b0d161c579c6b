//! Settings a start may choose for its game (a frame rate, a resolution): what a game offers,
//! and the one check of a request against it, which the broker runs before it places anything
//! and the agent runs again before it writes the session's config. Also the one check of a
//! start's mode and config names ([`check_value`]), run by both as well.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The longest setting key or value accepted, in bytes.
pub const MAX_SETTING_LEN: usize = 255;
/// The most settings a game may offer.
pub const MAX_SETTINGS: usize = 64;

/// A setting a game offers (catalog `[games.X.settings.KEY]`): an allow-list of values, or a
/// numeric range, and the value used when a start does not choose one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettingOffer {
    /// The key, as written in the game's config file.
    pub key: String,
    /// The values allowed; empty when the setting is a number between `min` and `max`.
    #[serde(default)]
    pub values: Vec<String>,
    /// The smallest number allowed.
    #[serde(default)]
    pub min: Option<f64>,
    /// The largest number allowed.
    #[serde(default)]
    pub max: Option<f64>,
    /// The value when a start does not choose one; without it the config's own stays.
    #[serde(default)]
    pub default: Option<String>,
}

/// Why a start's settings are refused. Each names the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingError {
    /// The game has no such setting.
    #[error("setting {key:?} is not one this game takes; it takes: {}", if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") })]
    UnknownKey {
        /// The key asked for.
        key: String,
        /// The keys the game takes.
        allowed: Vec<String>,
    },
    /// The value is not in the setting's list.
    #[error("setting {key:?}: {value:?} is not one of {}", values.join(", "))]
    NotAllowed {
        /// The key.
        key: String,
        /// The value asked for.
        value: String,
        /// The values allowed.
        values: Vec<String>,
    },
    /// The value is not a number in the setting's range.
    #[error("setting {key:?}: {value:?} is not a number from {} to {}", fmt_bound(*min), fmt_bound(*max))]
    OutOfRange {
        /// The key.
        key: String,
        /// The value asked for.
        value: String,
        /// The smallest allowed.
        min: Option<f64>,
        /// The largest allowed.
        max: Option<f64>,
    },
    /// The key or value is empty, too long, or holds a control character (a line break would
    /// add a line to the config file).
    #[error("setting {key:?}: keys and values must be 1 to {MAX_SETTING_LEN} bytes without control characters")]
    BadText {
        /// The key (cut to 64 characters).
        key: String,
    },
}

/// The longest mode or config name accepted, in bytes.
pub const MAX_VALUE_LEN: usize = 255;

/// Why a start's mode or config name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// It is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// `mode` or `config`.
        what: String,
    },
    /// It is longer than [`MAX_VALUE_LEN`].
    #[error("{what} is longer than {max} bytes", max = MAX_VALUE_LEN)]
    TooLong {
        /// `mode` or `config`.
        what: String,
    },
    /// It holds control characters.
    #[error("{what} must not hold control characters")]
    ControlChars {
        /// `mode` or `config`.
        what: String,
    },
}

/// A start's mode or config name (`what` says which): 1 to [`MAX_VALUE_LEN`] bytes, no
/// control character.
pub fn check_value(what: &str, v: &str) -> Result<(), ValueError> {
    let what = what.to_owned();
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

fn fmt_bound(b: Option<f64>) -> String {
    b.map_or_else(|| "any".to_owned(), |v| v.to_string())
}

/// Whether `v` may be written in a config file: 1 to [`MAX_SETTING_LEN`] bytes, no control
/// character.
pub fn is_text(v: &str) -> bool {
    !v.is_empty() && v.len() <= MAX_SETTING_LEN && !v.chars().any(char::is_control)
}

impl SettingOffer {
    /// Whether `value` is allowed.
    pub fn check(&self, value: &str) -> Result<(), SettingError> {
        if !is_text(value) {
            return Err(SettingError::BadText {
                key: self.key.clone(),
            });
        }
        if !self.values.is_empty() {
            if self.values.iter().any(|v| v == value) {
                return Ok(());
            }
            return Err(SettingError::NotAllowed {
                key: self.key.clone(),
                value: value.to_owned(),
                values: self.values.clone(),
            });
        }
        let n: Option<f64> = value.trim().parse().ok().filter(|n: &f64| n.is_finite());
        let within = n.is_some_and(|n| {
            self.min.is_none_or(|min| n >= min) && self.max.is_none_or(|max| n <= max)
        });
        if within && value.trim() == value {
            Ok(())
        } else {
            Err(SettingError::OutOfRange {
                key: self.key.clone(),
                value: value.chars().take(64).collect(),
                min: self.min,
                max: self.max,
            })
        }
    }
}

/// The settings a session runs with: each requested one checked against `offers`, and the
/// defaults of the ones not requested.
pub fn apply(
    offers: &[SettingOffer],
    requested: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, SettingError> {
    let mut applied = BTreeMap::new();
    for (key, value) in requested {
        if !is_text(key) {
            return Err(SettingError::BadText {
                key: key.chars().take(64).collect(),
            });
        }
        let offer =
            offers
                .iter()
                .find(|o| &o.key == key)
                .ok_or_else(|| SettingError::UnknownKey {
                    key: key.clone(),
                    allowed: offers.iter().map(|o| o.key.clone()).collect(),
                })?;
        offer.check(value)?;
        applied.insert(key.clone(), value.clone());
    }
    for o in offers {
        if let (Some(d), false) = (&o.default, applied.contains_key(&o.key)) {
            applied.insert(o.key.clone(), d.clone());
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offers() -> Vec<SettingOffer> {
        vec![
            SettingOffer {
                key: "video-fps".into(),
                values: vec!["30".into(), "60".into()],
                min: None,
                max: None,
                default: Some("60".into()),
            },
            SettingOffer {
                key: "video-specific[b]".into(),
                values: vec![],
                min: Some(1_000_000.0),
                max: Some(20_000_000.0),
                default: None,
            },
        ]
    }

    fn req(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn requested_values_are_checked_and_defaults_filled_in() {
        assert_eq!(
            apply(&offers(), &req(&[])).unwrap(),
            req(&[("video-fps", "60")])
        );
        assert_eq!(
            apply(
                &offers(),
                &req(&[("video-fps", "30"), ("video-specific[b]", "8000000")])
            )
            .unwrap(),
            req(&[("video-fps", "30"), ("video-specific[b]", "8000000")])
        );
    }

    #[test]
    fn each_refusal_names_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("resolution", "4k")], "not one this game takes"),
            (&[("video-fps", "144")], "is not one of 30, 60"),
            (
                &[("video-specific[b]", "999")],
                "is not a number from 1000000 to 20000000",
            ),
            (&[("video-specific[b]", "1e400")], "is not a number"),
            (&[("video-specific[b]", " 2000000")], "is not a number"),
            (
                &[("video-fps", "30\ninclude = /etc/shadow")],
                "without control characters",
            ),
            (&[("video-fps", "")], "without control characters"),
            (&[("bad\nkey", "1")], "without control characters"),
        ];
        for (pairs, says) in cases {
            let e = apply(&offers(), &req(pairs)).unwrap_err().to_string();
            assert!(e.contains(says), "{pairs:?}: {e}");
            let key = pairs[0].0.replace('\n', "\\n");
            assert!(e.contains(&key), "{pairs:?}: {e}");
        }
    }
}
