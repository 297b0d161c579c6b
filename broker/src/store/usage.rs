//! Usage: how long sessions ran within a window, summed by user, game or host. Computed from
//! the sessions' own records (`started_at`, when a session began running or a player claimed
//! it; `ended_at`; its GPUs): in SQL on MariaDB, over an index that holds every column read,
//! or in memory.

use protocol::api::UsageBy;
use protocol::GameId;
use time::OffsetDateTime;

use super::{Store, StoreError};

/// What usage is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageWindow {
    /// The window's start.
    pub from: OffsetDateTime,
    /// Its end, after `from`.
    pub to: OffsetDateTime,
    /// Sessions still running count until this moment (now, or `to` if earlier).
    pub now: OffsetDateTime,
    /// What to sum by.
    pub by: UsageBy,
    /// Only this user's sessions.
    pub user_id: Option<String>,
    /// Only this game's sessions.
    pub game_id: Option<GameId>,
}

/// One key's sums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSum {
    /// The user, game or host (`None`: sessions without a user).
    pub key: Option<String>,
    /// Sessions that ran within the window.
    pub sessions: u64,
    /// Microseconds they ran within it.
    pub micros: i64,
    /// Those microseconds times each one's GPUs.
    pub gpu_micros: i64,
}

/// The part of `[started, ended)` (`ended`: `None` while it runs, until `now`) inside the
/// window, in microseconds; `None` when it has none.
pub fn overlap(
    w: &UsageWindow,
    started: OffsetDateTime,
    ended: Option<OffsetDateTime>,
) -> Option<i64> {
    let begin = started.max(w.from);
    let end = ended.unwrap_or(w.now).min(w.to);
    (end > begin).then(|| i64::try_from((end - begin).whole_microseconds()).unwrap_or(i64::MAX))
}

impl Store {
    /// The sums of the sessions that ran within `w`, by `w.by`, the most time first.
    pub async fn usage(&self, w: &UsageWindow) -> Result<Vec<UsageSum>, StoreError> {
        let mut sums = match self {
            Self::Memory(m) => m.usage(w),
            Self::Mysql(m) => m.usage(w).await?,
        };
        sums.sort_by(|a, b| b.micros.cmp(&a.micros).then_with(|| a.key.cmp(&b.key)));
        Ok(sums)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_session_counts_only_inside_the_window() {
        let w = UsageWindow {
            from: datetime!(2026-11-01 00:00 UTC),
            to: datetime!(2026-12-01 00:00 UTC),
            now: datetime!(2026-11-20 00:00 UTC),
            by: UsageBy::User,
            user_id: None,
            game_id: None,
        };
        let hour = 3_600_000_000;
        // Begun before the window, ended inside: from the window's start.
        let before = overlap(
            &w,
            datetime!(2026-10-31 23:00 UTC),
            Some(datetime!(2026-11-01 01:00 UTC)),
        );
        assert_eq!(before, Some(hour));
        // Inside.
        let inside = overlap(
            &w,
            datetime!(2026-11-02 10:00 UTC),
            Some(datetime!(2026-11-02 12:00 UTC)),
        );
        assert_eq!(inside, Some(2 * hour));
        // Still running: until now.
        let live = overlap(&w, datetime!(2026-11-19 23:00 UTC), None);
        assert_eq!(live, Some(hour));
        // Outside, either side.
        assert_eq!(
            overlap(
                &w,
                datetime!(2026-10-01 00:00 UTC),
                Some(datetime!(2026-10-02 00:00 UTC))
            ),
            None
        );
        assert_eq!(overlap(&w, datetime!(2026-12-01 00:00 UTC), None), None);
    }
}
