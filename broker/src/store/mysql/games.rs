//! Central games in MySQL: the `central_games` table, each write a transaction that locks the
//! game's row, checks `If-Match` against its version and applies the change.

use mysql_async::prelude::Queryable;
use mysql_async::TxOpts;
use protocol::{BuildId, GameId};
use time::{OffsetDateTime, PrimitiveDateTime};

use super::rows::{unavailable, utc};
use super::MysqlStore;
use crate::store::games::{apply, GameChange, GameRecord, GameRemoved, GameWrite};
use crate::store::pools::Precondition;
use crate::store::StoreError;

const COLUMNS: &str =
    "game_id, entry, build, previous_build, version, updated_at, previous_entry, rollout";

type Row = (
    String,
    String,
    String,
    Option<String>,
    u64,
    PrimitiveDateTime,
    Option<String>,
    Option<String>,
);

fn record(
    (game, entry, build, previous, version, at, previous_entry, rollout): Row,
) -> Result<GameRecord, StoreError> {
    let bad = |e: String| StoreError::Backend(format!("a central_games row: {e}"));
    Ok(GameRecord {
        game_id: GameId::new(game).map_err(|e| bad(e.to_string()))?,
        entry,
        build: BuildId::new(build).map_err(|e| bad(e.to_string()))?,
        previous_build: previous
            .map(BuildId::new)
            .transpose()
            .map_err(|e| bad(e.to_string()))?,
        previous_entry,
        rollout: rollout
            .map(|r| serde_json::from_str(&r))
            .transpose()
            .map_err(|e| bad(e.to_string()))?,
        version,
        updated_at: at.assume_utc(),
    })
}

/// Game `id`'s row, locked until the transaction ends (a write's first step).
async fn locked(
    tx: &mut mysql_async::Transaction<'_>,
    id: &GameId,
) -> Result<Option<GameRecord>, StoreError> {
    let row: Option<Row> = tx
        .exec_first(
            format!("SELECT {COLUMNS} FROM central_games WHERE game_id = ? FOR UPDATE"),
            (id.as_str(),),
        )
        .await
        .map_err(unavailable)?;
    row.map(record).transpose()
}

impl MysqlStore {
    pub(in crate::store) async fn put_game(
        &self,
        id: &GameId,
        change: &GameChange,
        cond: Option<&Precondition>,
        now: OffsetDateTime,
    ) -> Result<GameWrite, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let mut tx = conn
                .start_transaction(TxOpts::default())
                .await
                .map_err(unavailable)?;
            let current = locked(&mut tx, id).await?;
            if cond.is_some_and(|c| !c.holds(current.as_ref().map(|g| g.version))) {
                tx.rollback().await.map_err(unavailable)?;
                return Ok(GameWrite::PreconditionFailed);
            }
            let Some(next) = apply(id, current.as_ref(), change, now) else {
                tx.rollback().await.map_err(unavailable)?;
                return Ok(GameWrite::NotApplied);
            };
            let rollout = next
                .rollout
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            let values = (
                next.entry.as_str(),
                next.build.as_str(),
                next.previous_build.as_ref().map(BuildId::as_str),
                next.version,
                utc(next.updated_at),
                next.previous_entry.as_deref(),
                rollout,
                id.as_str(),
            );
            // A concurrent first write of the same game fails on the key (1062): a 503, and a
            // retry finds the game.
            match current {
                Some(_) => tx.exec_drop(
                    "UPDATE central_games SET entry = ?, build = ?, previous_build = ?, \
                     version = ?, updated_at = ?, previous_entry = ?, rollout = ? \
                     WHERE game_id = ?",
                    values,
                ),
                None => tx.exec_drop(
                    "INSERT INTO central_games (entry, build, previous_build, version, \
                     updated_at, previous_entry, rollout, game_id) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    values,
                ),
            }
            .await
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(match current {
                Some(_) => GameWrite::Updated(next),
                None => GameWrite::Created(next),
            })
        })
        .await
    }

    pub(in crate::store) async fn game(
        &self,
        id: &GameId,
    ) -> Result<Option<GameRecord>, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let row: Option<Row> = conn
                .exec_first(
                    format!("SELECT {COLUMNS} FROM central_games WHERE game_id = ?"),
                    (id.as_str(),),
                )
                .await
                .map_err(unavailable)?;
            row.map(record).transpose()
        })
        .await
    }

    pub(in crate::store) async fn games(&self) -> Result<Vec<GameRecord>, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let rows: Vec<Row> = conn
                .query(format!(
                    "SELECT {COLUMNS} FROM central_games ORDER BY game_id"
                ))
                .await
                .map_err(unavailable)?;
            rows.into_iter().map(record).collect()
        })
        .await
    }

    pub(in crate::store) async fn delete_game(
        &self,
        id: &GameId,
        cond: Option<&Precondition>,
    ) -> Result<GameRemoved, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let mut tx = conn
                .start_transaction(TxOpts::default())
                .await
                .map_err(unavailable)?;
            let current = locked(&mut tx, id).await?;
            if cond.is_some_and(|c| !c.holds(current.as_ref().map(|g| g.version))) {
                tx.rollback().await.map_err(unavailable)?;
                return Ok(GameRemoved::PreconditionFailed);
            }
            let Some(g) = current else {
                tx.rollback().await.map_err(unavailable)?;
                return Ok(GameRemoved::NotFound);
            };
            tx.exec_drop(
                "DELETE FROM central_games WHERE game_id = ?",
                (id.as_str(),),
            )
            .await
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(GameRemoved::Removed(Box::new(g)))
        })
        .await
    }

    /// Sessions of `build` created at or after `since` whose launch failed or timed out
    /// (the index on `(build, created_at)` finds them).
    pub(in crate::store) async fn failed_launches(
        &self,
        build: &BuildId,
        since: OffsetDateTime,
    ) -> Result<u32, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let n: Option<u32> = conn
                .exec_first(
                    "SELECT COUNT(*) FROM sessions WHERE build = ? AND created_at >= ? \
                     AND end_reason IN ('launch_failed', 'launch_timeout')",
                    (build.as_str(), utc(since)),
                )
                .await
                .map_err(unavailable)?;
            Ok(n.unwrap_or(0))
        })
        .await
    }
}
