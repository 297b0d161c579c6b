//! Join tokens in MySQL: the `session_joins` row of each session that has a token, the
//! redeem's one conditional `UPDATE`, and the `store_secrets` row game keys are made with.

use mysql_async::prelude::Queryable;
use mysql_async::TxOpts;
use protocol::api::EventType;
use protocol::SessionId;
use time::{OffsetDateTime, PrimitiveDateTime};

use super::rows::{unavailable, utc};
use super::{append_session_event, MysqlStore};
use crate::session::Actor;
use crate::store::joins::{JoinRecord, JoinRefusal, Redeemed};
use crate::store::StoreError;

/// A `session_joins` row: hash, seal, expiry, use.
type JoinRow = (
    Vec<u8>,
    Option<Vec<u8>>,
    PrimitiveDateTime,
    Option<PrimitiveDateTime>,
);

fn join_record((hash, sealed, expires, used): JoinRow) -> Result<JoinRecord, StoreError> {
    let bad = || StoreError::Backend("a session_joins row has a hash of the wrong size".into());
    Ok(JoinRecord {
        token_hash: hash.try_into().map_err(|_| bad())?,
        sealed: sealed
            .map(|s| s.try_into().map_err(|_| bad()))
            .transpose()?,
        expires_at: expires.assume_utc(),
        used_at: used.map(PrimitiveDateTime::assume_utc),
    })
}

impl MysqlStore {
    pub(in crate::store) async fn put_join(
        &self,
        id: &SessionId,
        join: &JoinRecord,
        replace: bool,
    ) -> Result<bool, StoreError> {
        // Only for a session that exists; a replace clears the previous token's use.
        let sql = if replace {
            "INSERT INTO session_joins (session_id, token_hash, sealed, expires_at) \
             SELECT session_id, ?, ?, ? FROM sessions WHERE session_id = ? \
             ON DUPLICATE KEY UPDATE token_hash = VALUES(token_hash), sealed = VALUES(sealed), \
             expires_at = VALUES(expires_at), used_at = NULL"
        } else {
            "INSERT IGNORE INTO session_joins (session_id, token_hash, sealed, expires_at) \
             SELECT session_id, ?, ?, ? FROM sessions WHERE session_id = ?"
        };
        let params = (
            join.token_hash.to_vec(),
            join.sealed.map(|s| s.to_vec()),
            utc(join.expires_at),
            id.as_str(),
        );
        // Either form lands once however often it is tried; a try that finds its own earlier
        // one landed reads as kept.
        self.settled(|again| {
            let params = &params;
            async move {
                self.bounded(move || async move {
                    let mut conn = self.conn().await?;
                    conn.exec_drop(sql, params.clone())
                        .await
                        .map_err(unavailable)?;
                    if conn.affected_rows() > 0 {
                        return Ok(true);
                    }
                    match Self::join_row(&mut conn, id).await? {
                        Some(j) if again && j.token_hash == join.token_hash => Ok(true),
                        Some(_) => Ok(false),
                        None => Err(StoreError::NotFound(id.clone())),
                    }
                })
                .await
            }
        })
        .await
    }

    pub(in crate::store) async fn join_of(
        &self,
        id: &SessionId,
    ) -> Result<Option<JoinRecord>, StoreError> {
        self.bounded(move || async move { Self::join_row(&mut self.conn().await?, id).await })
            .await
    }

    async fn join_row(
        conn: &mut mysql_async::Conn,
        id: &SessionId,
    ) -> Result<Option<JoinRecord>, StoreError> {
        let row: Option<JoinRow> = conn
            .exec_first(
                "SELECT token_hash, sealed, expires_at, used_at FROM session_joins \
                 WHERE session_id = ?",
                (id.as_str(),),
            )
            .await
            .map_err(unavailable)?;
        row.map(join_record).transpose()
    }

    pub(in crate::store) async fn redeem(
        &self,
        id: &SessionId,
        hash: &[u8; 32],
        now: OffsetDateTime,
        actor: Actor,
    ) -> Result<Redeemed, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let mut tx = conn
                .start_transaction(TxOpts::default())
                .await
                .map_err(unavailable)?;
            // The one write: it applies only to an unused, unexpired token of a running
            // session, so of concurrent redeems one applies and the others find it used.
            tx.exec_drop(
                "UPDATE session_joins j JOIN sessions s ON s.session_id = j.session_id \
                 SET j.used_at = ? \
                 WHERE j.session_id = ? AND j.token_hash = ? AND j.used_at IS NULL \
                 AND j.expires_at > ? AND s.status = 'running'",
                (utc(now), id.as_str(), hash.to_vec(), utc(now)),
            )
            .await
            .map_err(unavailable)?;
            if tx.affected_rows() == 1 {
                let s = Self::read(&mut tx, id).await?;
                append_session_event(&mut tx, EventType::SessionJoined, &s, actor, now).await?;
                tx.commit().await.map_err(unavailable)?;
                return Ok(Redeemed::Joined(Box::new(s)));
            }
            tx.rollback().await.map_err(unavailable)?;
            let status: Option<String> = conn
                .exec_first(
                    "SELECT status FROM sessions WHERE session_id = ?",
                    (id.as_str(),),
                )
                .await
                .map_err(unavailable)?;
            let join = Self::join_row(&mut conn, id).await?;
            Ok(Redeemed::Refused(JoinRefusal::of(
                status.map(|s| s == "running"),
                join.as_ref(),
                hash,
                now,
            )))
        })
        .await
    }

    pub(in crate::store) async fn secret(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let fresh = &crate::join::random::<32>().to_vec();
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            // The first replica to ask makes it; every other reads that one.
            conn.exec_drop(
                "INSERT IGNORE INTO store_secrets (name, value) VALUES (?, ?)",
                (name, fresh),
            )
            .await
            .map_err(unavailable)?;
            conn.exec_first("SELECT value FROM store_secrets WHERE name = ?", (name,))
                .await
                .map_err(unavailable)?
                .ok_or_else(|| StoreError::Backend(format!("secret {name:?} vanished")))
        })
        .await
    }
}
