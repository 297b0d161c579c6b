//! Warm pools in MySQL: the `pools` table, and the claim of a ready session.
//!
//! A claim is one transaction of two round trips: `SELECT ... FOR UPDATE SKIP LOCKED` takes
//! the pool's oldest ready session that no concurrent claim holds (so concurrent claims, from
//! any replica, take different sessions without waiting on each other), then
//! `arcade_claim_ready` writes the claim, computed in Rust like every change, and commits.

use mysql_async::prelude::Queryable;
use mysql_async::{Params, Row, TxOpts};
use protocol::api::{EventType, PoolSpec, SessionStatus};
use protocol::{GameId, PoolId};
use time::OffsetDateTime;

use super::rows::{
    parse, session_row, settings_json, settings_parse, take, unavailable, utc, SESSION_COLUMNS,
};
use super::{stream_body, MysqlStore};
use crate::session::{apply, Actor, SessionEvent};
use crate::store::pools::{
    bounded_error, Claimant, LaunchResult, PoolRecord, PoolRemoved, PoolWrite, Precondition,
    ReadyClaim,
};
use crate::store::{IdempotencyKey, StoreError, IDEMPOTENCY_TTL};

/// MySQL's error for a duplicate key.
const DUPLICATE_KEY: u16 = 1062;

/// The columns of `pools`, in the order [`pool_row`] reads them.
const POOL_COLUMNS: &str =
    "pool_id, game_id, mode, config, size, max_age_s, version, claims, misses, failures, last_error, \
     settings";

fn pool_row(mut row: Row) -> Result<PoolRecord, StoreError> {
    let pool_id: String = take(&mut row, 0)?;
    let game_id: String = take(&mut row, 1)?;
    let settings: Option<String> = take(&mut row, 11)?;
    Ok(PoolRecord {
        pool_id: parse("pool id", &pool_id)?,
        spec: PoolSpec {
            game_id: parse::<GameId>("game id", &game_id)?,
            mode: take(&mut row, 2)?,
            config: take(&mut row, 3)?,
            size: take(&mut row, 4)?,
            max_age_s: Some(take(&mut row, 5)?),
            settings: settings_parse(settings.as_deref())?,
        },
        version: take(&mut row, 6)?,
        claims: take(&mut row, 7)?,
        misses: take(&mut row, 8)?,
        failures: take(&mut row, 9)?,
        last_error: take(&mut row, 10)?,
    })
}

impl MysqlStore {
    pub(in crate::store) async fn put_pool(
        &self,
        id: &PoolId,
        spec: &PoolSpec,
        cond: Option<&Precondition>,
    ) -> Result<PoolWrite, StoreError> {
        let max_age = spec
            .max_age_s
            .unwrap_or(protocol::api::DEFAULT_POOL_MAX_AGE_SECS);
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let mut tx = conn
                .start_transaction(TxOpts::default())
                .await
                .map_err(unavailable)?;
            let current: Option<u64> = tx
                .exec_first(
                    "SELECT version FROM pools WHERE pool_id = ? FOR UPDATE",
                    (id.as_str(),),
                )
                .await
                .map_err(unavailable)?;
            if cond.is_some_and(|c| !c.holds(current)) {
                tx.rollback().await.map_err(unavailable)?;
                return Ok(PoolWrite::PreconditionFailed);
            }
            let now = utc(OffsetDateTime::now_utc());
            let values = (
                spec.game_id.as_str(),
                spec.mode.as_deref(),
                spec.config.as_deref(),
                spec.size,
                max_age,
                settings_json(&spec.settings),
                now,
                id.as_str(),
            );
            match current {
                Some(_) => tx.exec_drop(
                    "UPDATE pools SET game_id = ?, mode = ?, config = ?, size = ?, max_age_s = ?, \
                     settings = ?, updated_at = ?, version = version + 1 WHERE pool_id = ?",
                    values,
                ),
                None => tx.exec_drop(
                    "INSERT INTO pools (game_id, mode, config, size, max_age_s, settings, \
                     updated_at, pool_id, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                    values,
                ),
            }
            .await
            .map_err(unavailable)?;
            let row: Option<Row> = tx
                .exec_first(
                    format!("SELECT {POOL_COLUMNS} FROM pools WHERE pool_id = ?"),
                    (id.as_str(),),
                )
                .await
                .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            let p = pool_row(row.ok_or_else(|| {
                StoreError::Backend(format!("pool {id} is not there after its write"))
            })?)?;
            Ok(match current {
                Some(_) => PoolWrite::Updated(p),
                None => PoolWrite::Created(p),
            })
        })
        .await
    }

    pub(in crate::store) async fn remove_pool(
        &self,
        id: &PoolId,
        cond: Option<&Precondition>,
    ) -> Result<PoolRemoved, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let mut tx = conn
                .start_transaction(TxOpts::default())
                .await
                .map_err(unavailable)?;
            let row: Option<Row> = tx
                .exec_first(
                    format!("SELECT {POOL_COLUMNS} FROM pools WHERE pool_id = ? FOR UPDATE"),
                    (id.as_str(),),
                )
                .await
                .map_err(unavailable)?;
            let Some(p) = row.map(pool_row).transpose()? else {
                tx.rollback().await.map_err(unavailable)?;
                return Ok(PoolRemoved::NotFound);
            };
            if cond.is_some_and(|c| !c.holds(Some(p.version))) {
                tx.rollback().await.map_err(unavailable)?;
                return Ok(PoolRemoved::PreconditionFailed);
            }
            tx.exec_drop("DELETE FROM pools WHERE pool_id = ?", (id.as_str(),))
                .await
                .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(PoolRemoved::Removed(p))
        })
        .await
    }

    pub(in crate::store) async fn pools(&self) -> Result<Vec<PoolRecord>, StoreError> {
        self.bounded(move || async move {
            let rows: Vec<Row> = self
                .conn()
                .await?
                .query(format!("SELECT {POOL_COLUMNS} FROM pools ORDER BY pool_id"))
                .await
                .map_err(unavailable)?;
            rows.into_iter().map(pool_row).collect()
        })
        .await
    }

    pub(in crate::store) async fn pool_launched(
        &self,
        id: &PoolId,
        r: &LaunchResult,
    ) -> Result<(), StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            match r {
                LaunchResult::Ready => conn.exec_drop(
                    "UPDATE pools SET last_error = NULL WHERE pool_id = ? AND last_error IS NOT NULL",
                    (id.as_str(),),
                ),
                LaunchResult::Failed(why) => conn.exec_drop(
                    "UPDATE pools SET failures = failures + 1, last_error = ? WHERE pool_id = ?",
                    (bounded_error(why), id.as_str()),
                ),
            }
            .await
            .map_err(unavailable)
        })
        .await
    }

    pub(in crate::store) async fn claim_ready(
        &self,
        pool: &PoolId,
        actor: Actor,
        key: Option<&IdempotencyKey>,
        claimant: Claimant<'_>,
        now: OffsetDateTime,
    ) -> Result<ReadyClaim, StoreError> {
        let claimed = self
            .bounded(move || async move {
                let mut conn = self.conn().await?;
                let mut tx = conn
                    .start_transaction(TxOpts::default())
                    .await
                    .map_err(unavailable)?;
                // Settings as `settings_value` stores them (canonical JSON: sorted keys).
                let (any_settings, settings) = match claimant.settings {
                    None => (true, None),
                    Some(s) => (false, settings_json(s)),
                };
                let row: Option<Row> = tx
                    .exec_first(
                        format!(
                            "SELECT {SESSION_COLUMNS} FROM sessions FORCE INDEX (sessions_pool) \
                             WHERE pool_id = ? AND status = 'ready' \
                             AND (? OR settings <=> ?) \
                             AND EXISTS (SELECT 1 FROM pools WHERE pool_id = ?) \
                             ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED"
                        ),
                        (pool.as_str(), any_settings, settings, pool.as_str()),
                    )
                    .await
                    .map_err(unavailable)?;
                let Some(row) = row else {
                    tx.exec_drop(
                        "UPDATE pools SET misses = misses + 1 WHERE pool_id = ?",
                        (pool.as_str(),),
                    )
                    .await
                    .map_err(unavailable)?;
                    tx.commit().await.map_err(unavailable)?;
                    return Ok(ReadyClaim::Empty);
                };
                let (_, mut s) = session_row(row)?;
                claimant.take(&mut s);
                apply(&mut s, &SessionEvent::Claimed, now)?;
                let params = vec![
                    s.session_id.as_str().into(),
                    pool.as_str().into(),
                    s.status.as_str().into(),
                    utc(now).into(),
                    actor.as_str().into(),
                    EventType::of_status(SessionStatus::Running).as_str().into(),
                    stream_body(&s)?.into(),
                    s.host_id.as_str().into(),
                    key.map(|k| k.key.as_str()).into(),
                    key.map(|k| k.request.as_str()).into(),
                    utc(now - IDEMPOTENCY_TTL).into(),
                    claimant.user.map(|(u, _)| u).into(),
                    claimant.user.and_then(|(_, max)| max).into(),
                    s.max_duration_s.into(),
                ];
                let called: Result<Option<(String, u64)>, _> = tx
                    .exec_first(
                        super::procs::CALL.claim_ready.as_str(),
                        Params::Positional(params),
                    )
                    .await;
                match called {
                    Ok(Some((what, _))) if what == "quota" => Ok(ReadyClaim::Quota),
                    Ok(_) => Ok(ReadyClaim::Claimed(Box::new(s))),
                    Err(mysql_async::Error::Server(e)) if e.code == DUPLICATE_KEY => {
                        Ok(ReadyClaim::KeyTaken)
                    }
                    Err(e) => Err(unavailable(e)),
                }
            })
            .await?;
        if let ReadyClaim::Claimed(s) = &claimed {
            self.remember(s);
        }
        Ok(claimed)
    }
}
