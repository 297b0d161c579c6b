//! Host labels (`region=eu-west`, `gpu=rtx4090`): what they may hold, and the two questions
//! placement asks of them — does a host have every label a start or a game requires
//! ([`fits`]), and how many of a start's preferred ones ([`matches`]).
//!
//! One definition for the agent (`--label`, a catalog's `labels`), the broker (a start's
//! `labels` and `prefer`, `GET /v1/hosts?label=`) and the CLI, so a label one accepts is never
//! refused by another.

use std::collections::BTreeMap;

/// A set of labels, key to value.
pub type Labels = BTreeMap<String, String>;

/// The most labels a host, a game or a start may carry.
pub const MAX_LABELS: usize = 32;

/// The longest key or value, in bytes.
pub const MAX_LABEL_LEN: usize = 63;

/// What is wrong with a label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// Not `KEY=VALUE`.
    #[error("label {0:?} is not KEY=VALUE")]
    NotAPair(String),
    /// A key or value is empty, too long, or holds a character other than ASCII letters,
    /// digits, `.`, `_`, `-` and `/`.
    #[error("label {0:?}: keys and values are 1 to {MAX_LABEL_LEN} of A-Z a-z 0-9 . _ - /")]
    BadText(String),
    /// More than [`MAX_LABELS`].
    #[error("at most {MAX_LABELS} labels")]
    TooMany,
}

/// Whether `s` may be a label's key or value.
fn is_label_text(s: &str) -> bool {
    (1..=MAX_LABEL_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
}

/// Checks every key and value of `labels`, and their number.
pub fn check(labels: &Labels) -> Result<(), LabelError> {
    if labels.len() > MAX_LABELS {
        return Err(LabelError::TooMany);
    }
    for (k, v) in labels {
        if !is_label_text(k) || !is_label_text(v) {
            return Err(LabelError::BadText(format!("{k}={v}")));
        }
    }
    Ok(())
}

/// Parses one `KEY=VALUE`, as `--label` and `?label=` write it.
pub fn parse(pair: &str) -> Result<(String, String), LabelError> {
    let (k, v) = pair
        .split_once('=')
        .ok_or_else(|| LabelError::NotAPair(pair.to_owned()))?;
    if !is_label_text(k) || !is_label_text(v) {
        return Err(LabelError::BadText(pair.to_owned()));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// Whether a host with `host` labels has every one of `required`.
pub fn fits(host: &Labels, required: &Labels) -> bool {
    required.iter().all(|(k, v)| host.get(k) == Some(v))
}

/// How many of `preferred` a host with `host` labels has.
pub fn matches(host: &Labels, preferred: &Labels) -> usize {
    preferred
        .iter()
        .filter(|(k, v)| host.get(*k) == Some(*v))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn pairs_parse_and_bad_text_is_refused() {
        assert_eq!(
            parse("region=eu-west").unwrap(),
            ("region".into(), "eu-west".into())
        );
        assert_eq!(
            parse("k8s.io/zone=a_1").unwrap(),
            ("k8s.io/zone".into(), "a_1".into())
        );
        for bad in [
            "region",
            "=x",
            "x=",
            "a b=c",
            "k=v=w",
            "k=\u{e9}",
            &"k".repeat(64),
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(check(&labels(&[("gpu", "rtx4090")])).is_ok());
        assert!(check(&labels(&[("gpu", "")])).is_err());
        let many: Labels = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert_eq!(check(&many), Err(LabelError::TooMany));
    }

    #[test]
    fn a_host_fits_when_it_has_every_required_label() {
        let host = labels(&[("region", "eu"), ("gpu", "rtx4090")]);
        assert!(fits(&host, &Labels::new()));
        assert!(fits(&host, &labels(&[("region", "eu")])));
        assert!(!fits(&host, &labels(&[("region", "us")])));
        assert!(!fits(&host, &labels(&[("region", "eu"), ("tier", "a")])));
        assert_eq!(
            matches(&host, &labels(&[("region", "eu"), ("tier", "a")])),
            1
        );
        assert_eq!(
            matches(&host, &labels(&[("gpu", "rtx4090"), ("region", "eu")])),
            2
        );
    }
}
