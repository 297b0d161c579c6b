//! `GET /v1/usage` in SQL: one grouped scan of the `sessions_usage` index (migration 20),
//! which holds every column the query reads. Sessions that ended before the window began are
//! outside the index range read; those begun after it ended are skipped inside it.

use mysql_async::prelude::Queryable;
use mysql_async::{Params, Value};
use protocol::api::UsageBy;

use super::rows::{take, unavailable, utc};
use super::MysqlStore;
use crate::store::usage::{UsageSum, UsageWindow};
use crate::store::StoreError;

/// The query for `w`: the key's column, and the filters asked for.
pub(super) fn usage_sql(w: &UsageWindow) -> String {
    let key = match w.by {
        UsageBy::User => "user_id",
        UsageBy::Game => "game_id",
        UsageBy::Host => "host_id",
    };
    let mut sql = format!(
        "SELECT {key}, COUNT(*), \
         CAST(SUM(TIMESTAMPDIFF(MICROSECOND, GREATEST(started_at, ?), \
           LEAST(COALESCE(ended_at, ?), ?))) AS SIGNED), \
         CAST(SUM(TIMESTAMPDIFF(MICROSECOND, GREATEST(started_at, ?), \
           LEAST(COALESCE(ended_at, ?), ?)) * gpu_count) AS SIGNED) \
         FROM sessions FORCE INDEX (sessions_usage) \
         WHERE (ended_at > ? OR ended_at IS NULL) AND started_at < ? \
         AND LEAST(COALESCE(ended_at, ?), ?) > GREATEST(started_at, ?) AND NOT unclaimed"
    );
    if w.user_id.is_some() {
        sql.push_str(" AND user_id = ?");
    }
    if w.game_id.is_some() {
        sql.push_str(" AND game_id = ?");
    }
    sql.push_str(&format!(" GROUP BY {key}"));
    sql
}

/// The parameters of [`usage_sql`]'s query, in order.
pub(super) fn usage_params(w: &UsageWindow) -> Params {
    let (from, to, now): (Value, Value, Value) =
        (utc(w.from).into(), utc(w.to).into(), utc(w.now).into());
    let mut p = vec![
        from.clone(),
        now.clone(),
        to.clone(),
        from.clone(),
        now.clone(),
        to.clone(),
        from.clone(),
        to.clone(),
        now,
        to,
        from,
    ];
    if let Some(u) = &w.user_id {
        p.push(u.as_str().into());
    }
    if let Some(g) = &w.game_id {
        p.push(g.as_str().into());
    }
    Params::Positional(p)
}

impl MysqlStore {
    pub(in crate::store) async fn usage(
        &self,
        w: &UsageWindow,
    ) -> Result<Vec<UsageSum>, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let rows: Vec<mysql_async::Row> = conn
                .exec(usage_sql(w), usage_params(w))
                .await
                .map_err(unavailable)?;
            rows.into_iter()
                .map(|mut r| {
                    Ok(UsageSum {
                        key: take(&mut r, 0)?,
                        sessions: take(&mut r, 1)?,
                        micros: take::<Option<i64>>(&mut r, 2)?.unwrap_or(0),
                        gpu_micros: take::<Option<i64>>(&mut r, 3)?.unwrap_or(0),
                    })
                })
                .collect()
        })
        .await
    }
}

impl MysqlStore {
    /// The server's plan for the usage query of `w` (`EXPLAIN`), a line per table read:
    /// `table`, access `type`, `key` used, estimated `rows`, `Extra`. For the benchmark and
    /// the test that show the index is what the query reads.
    pub async fn explain_usage(&self, w: &UsageWindow) -> Result<Vec<String>, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let rows: Vec<mysql_async::Row> = conn
                .exec(format!("EXPLAIN {}", usage_sql(w)), usage_params(w))
                .await
                .map_err(unavailable)?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    let col = |name: &str| -> String {
                        r.get_opt::<Option<String>, &str>(name)
                            .and_then(Result::ok)
                            .flatten()
                            .unwrap_or_else(|| "NULL".into())
                    };
                    format!(
                        "table={} type={} key={} rows={} Extra={}",
                        col("table"),
                        col("type"),
                        col("key"),
                        col("rows"),
                        col("Extra")
                    )
                })
                .collect())
        })
        .await
    }
}
