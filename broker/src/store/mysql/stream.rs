//! The event stream in MySQL: host events appended on their own, and reading the stream
//! from a sequence number. Session events are appended by the procedures that record each
//! change (see `schema`), in the change's transaction.

use mysql_async::prelude::Queryable;
use mysql_async::TxOpts;
use protocol::api::{CentralGame, Event, EventSubject, EventType, Host, Session};
use time::PrimitiveDateTime;

use super::rows::{unavailable, utc};
use super::{append_session_event, procs, MysqlStore};
use crate::session::Actor;
use crate::store::StoreError;

impl MysqlStore {
    /// Appends a host event, numbered next, in a transaction of its own.
    pub(in crate::store) async fn append_host_event(
        &self,
        kind: EventType,
        host: &Host,
        actor: Actor,
        at: time::OffsetDateTime,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(host).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.append_alone(kind, actor, at, Some(host.host_id.as_str()), body)
            .await
    }

    /// Appends a game or rollout event, numbered next, in a transaction of its own.
    pub(in crate::store) async fn append_game_event(
        &self,
        kind: EventType,
        game: &CentralGame,
        actor: Actor,
        at: time::OffsetDateTime,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(game).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.append_alone(kind, actor, at, None, body).await
    }

    /// Appends an event of no session, numbered next, in a transaction of its own.
    async fn append_alone(
        &self,
        kind: EventType,
        actor: Actor,
        at: time::OffsetDateTime,
        host: Option<&str>,
        body: String,
    ) -> Result<(), StoreError> {
        let body = &body;
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let mut tx = conn
                .start_transaction(TxOpts::default())
                .await
                .map_err(unavailable)?;
            tx.exec_drop(
                procs::CALL.append_event.as_str(),
                (
                    utc(at),
                    kind.as_str(),
                    actor.as_str(),
                    None::<String>,
                    host,
                    body,
                ),
            )
            .await
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)
        })
        .await
    }

    /// Appends a session's notice of `kind` while it runs, unless one was: the row of
    /// `session_notices` and the event commit together.
    pub(in crate::store) async fn notice_once(
        &self,
        kind: EventType,
        s: &Session,
        actor: Actor,
        at: time::OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let mut tx = conn
                .start_transaction(TxOpts::default())
                .await
                .map_err(unavailable)?;
            // Only while it runs: the row is locked, so an end committed meanwhile is seen.
            tx.exec_drop(
                "INSERT IGNORE INTO session_notices (session_id, type, at) \
                 SELECT session_id, ?, ? FROM sessions \
                 WHERE session_id = ? AND status = 'running' FOR UPDATE",
                (kind.as_str(), utc(at), s.session_id.as_str()),
            )
            .await
            .map_err(unavailable)?;
            if tx.affected_rows() == 0 {
                tx.rollback().await.map_err(unavailable)?;
                return Ok(false);
            }
            append_session_event(&mut tx, kind, s, actor, at).await?;
            tx.commit().await.map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    /// Events numbered above `after`, in order, at most `limit`.
    pub(in crate::store) async fn stream_after(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let rows: Vec<(
                u64,
                PrimitiveDateTime,
                String,
                String,
                Option<String>,
                String,
            )> = conn
                .exec(
                    "SELECT seq, at, type, actor, session_id, body FROM stream_events \
                     WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after, limit),
                )
                .await
                .map_err(unavailable)?;
            rows.into_iter()
                .map(|(id, at, kind, actor, session, body)| {
                    let bad = |e: serde_json::Error| {
                        StoreError::Backend(format!("event {id} does not decode: {e}"))
                    };
                    let kind = EventType::parse(&kind).unwrap_or(EventType::Unknown);
                    let mut event = Event {
                        id,
                        kind,
                        at: at.assume_utc(),
                        actor,
                        session: None,
                        host: None,
                        game: None,
                    };
                    match (session, kind.subject()) {
                        (Some(_), _) => {
                            event.session = Some(serde_json::from_str(&body).map_err(bad)?);
                        }
                        (None, EventSubject::Game) => {
                            event.game = Some(serde_json::from_str(&body).map_err(bad)?);
                        }
                        (None, _) => event.host = Some(serde_json::from_str(&body).map_err(bad)?),
                    }
                    Ok(event)
                })
                .collect()
        })
        .await
    }

    /// The number of the last event appended (0: none yet).
    pub(in crate::store) async fn stream_head(&self) -> Result<u64, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let n: Option<u64> = conn
                .query_first("SELECT n FROM stream_seq WHERE id = 1")
                .await
                .map_err(unavailable)?;
            Ok(n.unwrap_or(0))
        })
        .await
    }

    /// The last event receiver `endpoint` took, if it has a cursor yet.
    pub(in crate::store) async fn webhook_cursor(
        &self,
        endpoint: &str,
    ) -> Result<Option<u64>, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            conn.exec_first(
                "SELECT seq FROM webhook_cursors WHERE endpoint = ?",
                (endpoint,),
            )
            .await
            .map_err(unavailable)
        })
        .await
    }

    /// Moves receiver `endpoint`'s cursor to `seq`.
    pub(in crate::store) async fn set_webhook_cursor(
        &self,
        endpoint: &str,
        seq: u64,
    ) -> Result<(), StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            conn.exec_drop(
                "INSERT INTO webhook_cursors (endpoint, seq, updated_at) \
                 VALUES (?, ?, UTC_TIMESTAMP(6)) \
                 ON DUPLICATE KEY UPDATE seq = VALUES(seq), updated_at = VALUES(updated_at)",
                (endpoint, seq),
            )
            .await
            .map_err(unavailable)
        })
        .await
    }

    /// Forgets events that happened before `before`, at most `limit` at once; answers how
    /// many.
    pub(in crate::store) async fn trim_stream(
        &self,
        before: time::OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            conn.exec_drop(
                "DELETE FROM stream_events WHERE at < ? ORDER BY seq LIMIT ?",
                (utc(before), limit),
            )
            .await
            .map_err(unavailable)?;
            let events = conn.affected_rows();
            // A notice is sent at most a minute before its session ends: one older than the
            // stream's retention is of a session long over.
            conn.exec_drop(
                "DELETE FROM session_notices WHERE at < ? LIMIT ?",
                (utc(before), limit),
            )
            .await
            .map_err(unavailable)?;
            // A join token lives minutes: one expired before the stream's retention is of no
            // use to anyone.
            conn.exec_drop(
                "DELETE FROM session_joins WHERE expires_at < ? LIMIT ?",
                (utc(before), limit),
            )
            .await
            .map_err(unavailable)?;
            Ok(events)
        })
        .await
    }
}
