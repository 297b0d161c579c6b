//! `GET /v1/usage`: the window asked for, checked, and the store's sums as the API shows
//! them. With replicas every replica reads the same store, so any answers for all.

use protocol::api::{Usage, UsageQuery, UsageRow};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::Service;
use crate::error::Error;
use crate::store::usage::UsageWindow;

/// The window when `from` is not given: this long before `to`.
const DEFAULT_WINDOW: time::Duration = time::Duration::days(30);
/// The longest window asked for at once.
const MAX_WINDOW: time::Duration = time::Duration::days(366);

/// An RFC 3339 instant of the query.
fn instant(what: &str, v: &str) -> Result<OffsetDateTime, Error> {
    OffsetDateTime::parse(v, &Rfc3339)
        .map_err(|e| Error::Invalid(format!("{what} must be an RFC 3339 time ({e})")))
}

/// The window `q` asks for, at `now`.
fn window(q: &UsageQuery, now: OffsetDateTime) -> Result<UsageWindow, Error> {
    let to = match &q.to {
        Some(t) => instant("to", t)?,
        None => now,
    };
    let from = match &q.from {
        Some(f) => instant("from", f)?,
        None => to - DEFAULT_WINDOW,
    };
    if from >= to {
        return Err(Error::Invalid("from must be before to".into()));
    }
    if to - from > MAX_WINDOW {
        return Err(Error::Invalid("the window may be at most 366 days".into()));
    }
    Ok(UsageWindow {
        from,
        to,
        now: now.min(to),
        by: q.by.unwrap_or_default(),
        user_id: q.user_id.clone(),
        game_id: q.game_id.clone(),
    })
}

impl Service {
    /// The sessions that ran within the window `q` asks for, and for how long, summed by
    /// user, game or host.
    pub async fn usage(&self, q: &UsageQuery) -> Result<Usage, Error> {
        let w = window(q, OffsetDateTime::now_utc())?;
        let sums = self.store.usage(&w).await?;
        let secs = |micros: i64| micros as f64 / 1e6;
        Ok(Usage {
            from: w.from,
            to: w.to,
            by: w.by,
            rows: sums
                .into_iter()
                .map(|s| UsageRow {
                    key: s.key,
                    sessions: s.sessions,
                    seconds: secs(s.micros),
                    gpu_seconds: secs(s.gpu_micros),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::api::UsageBy;
    use time::macros::datetime;

    #[test]
    fn the_window_defaults_to_thirty_days_to_now_and_is_checked() {
        let now = datetime!(2026-12-05 12:00 UTC);
        let w = window(&UsageQuery::default(), now).unwrap();
        assert_eq!((w.from, w.to, w.now), (now - DEFAULT_WINDOW, now, now));
        assert_eq!(w.by, UsageBy::User);
        let past = UsageQuery {
            from: Some("2026-11-01T00:00:00Z".into()),
            to: Some("2026-12-01T00:00:00Z".into()),
            by: Some(UsageBy::Game),
            ..UsageQuery::default()
        };
        let w = window(&past, now).unwrap();
        assert_eq!(
            w.now, w.to,
            "a window in the past counts live sessions to its end"
        );
        for bad in [
            ("2026-12-01T00:00:00Z", "2026-11-01T00:00:00Z"),
            ("yesterday", "2026-11-01T00:00:00Z"),
            ("2024-01-01T00:00:00Z", "2026-11-01T00:00:00Z"),
        ] {
            let q = UsageQuery {
                from: Some(bad.0.into()),
                to: Some(bad.1.into()),
                ..UsageQuery::default()
            };
            assert!(matches!(window(&q, now), Err(Error::Invalid(_))), "{bad:?}");
        }
    }
}
