//! `GET /v1/usage`: how long sessions ran, summed by user, game or host, over a window.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What usage is summed by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UsageBy {
    /// The session's `user_id` (`null` for sessions started without one).
    #[default]
    User,
    /// The game.
    Game,
    /// The host.
    Host,
}

impl UsageBy {
    /// Its name, as in `?by=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Game => "game",
            Self::Host => "host",
        }
    }
}

/// `GET /v1/usage` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// The window's start (RFC 3339); default: 30 days before `to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The window's end (RFC 3339); default: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// What to sum by (default `user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<UsageBy>,
    /// Only this player's sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Only this game's sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub game_id: Option<crate::GameId>,
}

/// One line of usage: the sessions of one user, game or host that ran within the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageRow {
    /// The user, game or host; `null` for sessions without a user.
    pub key: Option<String>,
    /// Sessions that ran within the window (for any part of it).
    pub sessions: u64,
    /// Seconds they ran within it: from `running` to their end (or now), cut to the window.
    pub seconds: f64,
    /// Those seconds times each session's GPUs.
    pub gpu_seconds: f64,
}

/// `GET /v1/usage` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    /// The window's start.
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    /// The window's end.
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    /// What the rows are summed by.
    pub by: UsageBy,
    /// By key; the most seconds first.
    pub rows: Vec<UsageRow>,
}

impl Usage {
    /// The rows as CSV: a header line, then `key,sessions,seconds,gpu_seconds` per row (a key
    /// holding `,`, `"` or a line break quoted; no key: empty).
    pub fn to_csv(&self) -> String {
        let mut out = format!("{},sessions,seconds,gpu_seconds\n", self.by.as_str());
        for r in &self.rows {
            let key = r.key.as_deref().unwrap_or("");
            if key.contains([',', '"', '\n', '\r']) {
                out.push('"');
                out.push_str(&key.replace('"', "\"\""));
                out.push('"');
            } else {
                out.push_str(key);
            }
            out.push_str(&format!(
                ",{},{:.3},{:.3}\n",
                r.sessions, r.seconds, r.gpu_seconds
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_would_break_a_line() {
        let u = Usage {
            from: OffsetDateTime::UNIX_EPOCH,
            to: OffsetDateTime::UNIX_EPOCH,
            by: UsageBy::User,
            rows: vec![
                UsageRow {
                    key: Some("ann".into()),
                    sessions: 2,
                    seconds: 90.5,
                    gpu_seconds: 181.0,
                },
                UsageRow {
                    key: Some("a,\"b\"".into()),
                    sessions: 1,
                    seconds: 1.0,
                    gpu_seconds: 0.0,
                },
                UsageRow {
                    key: None,
                    sessions: 1,
                    seconds: 0.25,
                    gpu_seconds: 0.0,
                },
            ],
        };
        assert_eq!(
            u.to_csv(),
            "user,sessions,seconds,gpu_seconds\nann,2,90.500,181.000\n\"a,\"\"b\"\"\",1,1.000,0.000\n,1,0.250,0.000\n"
        );
    }
}
