//! The MySQL / MariaDB store, on mysql_async: pooled, every call bounded by [`CALL_TIMEOUT`].
//! A state change is computed in Rust ([`crate::session::apply`]) and written by one `CALL`
//! of a stored procedure: one transaction that locks the session's row, writes it only if its
//! status is still the one the change was computed from (compare and set), and appends to the
//! history (`MysqlStore::transition`). A call returns only after its commit, so an
//! acknowledged change is on disk.
//!
//! The schema is created and migrated at start by [`MysqlStore::connect`]: versioned
//! migrations embedded in the binary ([`MIGRATIONS`]), applied in order under a lock (a row:
//! see [`schema`]), so two brokers starting at once do not race, then the stored procedures
//! this broker calls, each created once under a name that carries its text's hash. Tested on
//! MariaDB 10.11; written for MySQL 8 as well (no MariaDB-only syntax).
//!
//! - this file: the store, its connection pool and every call;
//! - [`cluster`]: what replicas share beyond sessions: host owners and epochs, claims,
//!   brokers, leases;
//! - [`pools`]: the pools table and the claim of a ready session;
//! - [`builds`]: builds' records; [`games`]: central games;
//! - [`joins`]: join tokens, their redeem, and the store's secrets;
//! - [`stream`]: the event stream: host events, and reading it from a number;
//! - [`nodes`]: the database's nodes (several in one URL: a Galera cluster), moving to the
//!   next when the one in use fails, and reading with `wsrep_sync_wait` on Galera;
//! - [`schema`]: bringing a database to the schema at start; [`migrations`]: the versioned
//!   migrations (frozen history); [`procs`]: the stored procedures, one definition each;
//! - [`rows`]: sessions to and from rows and parameters.
//!
//! This is the only module that knows SQL.

mod builds;
mod cluster;
mod games;
mod joins;
mod migrations;
mod nodes;
mod pools;
mod procs;
mod rows;
mod schema;
mod stream;
mod usage;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Row, TxOpts, Value};
use protocol::api::{
    EventType, Session, SessionQuery, SessionStatus, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT,
};
use protocol::wire::HostFacts;
use protocol::{GameId, HostId, SessionId};
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::session::{apply, Actor, SessionEvent};
use crate::store::{
    parse_cursor, Change, EventRecord, Fence, HostRecord, IdempotencyKey, Inserted, KeyMatch,
    Lease, Page, StoreError, IDEMPOTENCY_TTL,
};

pub use migrations::MIGRATIONS;
use nodes::Nodes;
use rows::{
    changed_values, event_params, insert_result, parse, session_row, session_values, unavailable,
    utc, LIVE_STATUSES, SESSION_COLUMNS,
};

/// Every store call, including waiting for a pooled connection, finishes within this.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write whose answer was lost is tried again until the store answers it (see
/// [`MysqlStore::settled`]): longer than the database stalls Arcade rides out (a Galera
/// node's eviction, a failover, a long fsync), well within a client's patience (the portal
/// client waits 120 s for a start).
pub const SETTLE_WAIT: Duration = Duration::from_secs(30);
/// The first connection at start may take this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many sessions [`MysqlStore`] remembers the last written state of. Past it the memory
/// starts over: it is only a hint (see [`MysqlStore::transition`]).
const KNOWN_CAP: usize = 65_536;

/// How many times a call that lost a race ([`StoreError::Conflict`]) is made, in all.
const CONFLICT_TRIES: u32 = 8;

/// The pause before try `tries + 1` of a call that lost a race: growing, with jitter, so
/// calls that collided do not collide again in step. 1-2 ms after the first, at most 32-64.
fn conflict_pause(tries: u32) -> Duration {
    use rand::Rng as _;
    let base = 1000u64 << tries.clamp(1, 6).saturating_sub(1);
    Duration::from_micros(base + rand::thread_rng().gen_range(0..base))
}

/// How many times a transition is computed again after a concurrent change of its session
/// before giving up. Statuses only move forward (at most three steps before a final one), so
/// each retry means another change made progress.
const CAS_TRIES: usize = 8;

/// The MySQL store.
#[derive(Debug, Clone)]
pub struct MysqlStore {
    /// The database's nodes (one, or a Galera cluster's), and which one is in use.
    nodes: Arc<Nodes>,
    /// The state this store last wrote for each session not yet over: what a transition is
    /// computed from, instead of reading the row first. Only a hint: the write is a compare
    /// and set on the status, so a stale entry (another broker changed the session) costs
    /// a read and a retry, never a wrong change. Never held across an `.await`.
    known: Arc<Mutex<HashMap<SessionId, Session>>>,
    /// Where each call's duration and failure are counted, once set.
    calls: Option<crate::metrics::StoreCalls>,
}

/// `url` with its password replaced by `***`, for messages and logs.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparsable URL>".into();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://{userinfo}@{host}"),
        },
        None => format!("{scheme}://{rest}"),
    }
}

/// A connection to the node in use at start, within [`CONNECT_TIMEOUT`]; errors name the URL
/// (`masked`).
async fn reach(nodes: &Nodes, masked: &str) -> Result<Conn, StoreError> {
    tokio::time::timeout(CONNECT_TIMEOUT, nodes.conn())
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!(
                "cannot reach {masked}: no answer within {CONNECT_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| StoreError::Unavailable(format!("cannot connect to {masked}: {e}")))
}

/// A stream event's body: the session as it is after the event.
fn stream_body(s: &Session) -> Result<String, StoreError> {
    serde_json::to_string(s).map_err(|e| StoreError::Backend(e.to_string()))
}

/// Appends an event of session `s` (as it is now), numbered next, in `tx`.
async fn append_session_event(
    tx: &mut mysql_async::Transaction<'_>,
    kind: EventType,
    s: &Session,
    actor: Actor,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    tx.exec_drop(
        procs::CALL.append_event.as_str(),
        (
            utc(at),
            kind.as_str(),
            actor.as_str(),
            s.session_id.as_str(),
            s.host_id.as_str(),
            stream_body(s)?,
        ),
    )
    .await
    .map_err(unavailable)
}

const INSERT_EVENT: &str =
    "INSERT INTO session_events (session_id, at, event, status, actor) VALUES (?, ?, ?, ?, ?)";

impl MysqlStore {
    /// Connects, checks the server answers, and creates or migrates the schema. `url` may name
    /// several servers, the nodes of a Galera cluster ([`nodes`]). Errors name the URL with its
    /// password masked.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let masked = &mask_url(url);
        let invalid =
            |e: String| StoreError::Unavailable(format!("invalid --database-url {masked}: {e}"));
        // Each step on the node in use, moving on to the next while a node answers but does
        // not serve (a Galera node outside the primary component takes connections and
        // refuses statements).
        let probe = Nodes::new(url, false).map_err(invalid)?;
        let mut tries = 0;
        let galera = loop {
            let i = probe.index();
            match async { nodes::is_galera(&mut reach(&probe, masked).await?).await }.await {
                Err(e @ StoreError::Unavailable(_)) if probe.move_on(i, &e, &mut tries) => {}
                other => break other?,
            }
        };
        let nodes = if galera {
            let index = probe.index();
            probe.close().await;
            let nodes = Nodes::new(url, true).map_err(invalid)?;
            nodes.start_at(index);
            tracing::info!(node = nodes.current(), "the database is a Galera cluster");
            nodes
        } else {
            probe
        };
        let mut tries = 0;
        loop {
            let i = nodes.index();
            match async { schema::migrate(&mut reach(&nodes, masked).await?).await }.await {
                Err(e @ StoreError::Unavailable(_)) if nodes.move_on(i, &e, &mut tries) => {}
                Err(StoreError::Unavailable(m)) => {
                    return Err(StoreError::Unavailable(format!("{masked}: {m}")))
                }
                other => break other?,
            }
        }
        Ok(Self {
            nodes: Arc::new(nodes),
            known: Arc::default(),
            calls: None,
        })
    }

    /// Closes every node's connections.
    pub async fn close(self) {
        self.nodes.close().await;
    }

    /// The database node in use now (`host:port`, as `--database-url` names it).
    pub fn node(&self) -> &str {
        self.nodes.current()
    }

    /// The store, counting each call's duration and failures into `calls`.
    pub fn observed(mut self, calls: crate::metrics::StoreCalls) -> Self {
        self.calls = Some(calls);
        self
    }

    /// Makes one call of the store (`call`, tried again as a whole while it loses a race:
    /// [`StoreError::Conflict`], at most [`CONFLICT_TRIES`] times, after a short pause with
    /// jitter), within [`CALL_TIMEOUT`] for all tries. A call that finds its node unreachable
    /// or silent makes the store move to the next node ([`Nodes::failed`]); it is not tried
    /// again here, since it may have been applied: [`Self::settled`] does that for writes.
    async fn bounded<T, F, Fut>(&self, mut call: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let t0 = std::time::Instant::now();
        let node = self.nodes.index();
        let tries = async {
            let mut tries = 1;
            loop {
                match call().await {
                    Err(StoreError::Conflict(e)) if tries < CONFLICT_TRIES => {
                        tracing::debug!(error = %e, tries, "a store call lost a race; trying it again");
                        if let Some(c) = &self.calls {
                            c.conflicts.inc();
                        }
                        tokio::time::sleep(conflict_pause(tries)).await;
                        tries += 1;
                    }
                    other => return other,
                }
            }
        };
        let result = tokio::time::timeout(CALL_TIMEOUT, tries)
            .await
            .map_err(|_| StoreError::Unavailable(format!("no answer within {CALL_TIMEOUT:?}")))
            .and_then(|r| r);
        if let Err(e) = &result {
            self.nodes.failed(node, e);
        }
        if let Some(c) = &self.calls {
            c.seconds.observe(t0.elapsed().as_secs_f64());
            if result.is_err() {
                c.errors.inc();
            }
        }
        result
    }

    /// Runs a write until the store answers it. A try that got no answer in time may have
    /// been applied, or may still be (the server runs a statement it received even after the
    /// client gave up on it): it is tried again, after a pause, until the store answers or
    /// [`SETTLE_WAIT`] has passed. Every write tried so is idempotent (a new session by its id,
    /// a key by its session, a change by its compare and set), so the try that is answered
    /// tells what the write became: `attempt(true)` reads "exists" or "is so already" as its
    /// own earlier try having landed. Only a store silent for all of [`SETTLE_WAIT`] leaves
    /// the outcome unknown ([`StoreError::Unavailable`]). A try that kept losing races
    /// ([`StoreError::Conflict`]) wrote nothing, and is tried again the same way.
    pub(super) async fn settled<T, F, Fut>(&self, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut(bool) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let t0 = std::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        let mut again = false;
        loop {
            match attempt(again).await {
                Err(StoreError::Unavailable(e) | StoreError::Conflict(e))
                    if t0.elapsed() + pause < SETTLE_WAIT =>
                {
                    tracing::warn!(
                        error = %e,
                        "a write went unanswered, or kept losing races; trying it again"
                    );
                    again = true;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        self.nodes.conn().await
    }

    pub(super) async fn insert(
        &self,
        s: &Session,
        key: Option<&IdempotencyKey>,
        actor: Actor,
        fence: Option<&Fence>,
    ) -> Result<Inserted, StoreError> {
        let inserted = self
            .settled(|again| async move {
                let inserted = self
                    .bounded(move || async move {
                        let mut conn = self.conn().await?;
                        match key {
                            None => {
                                let created = [(s, "created", actor, s.created_at)];
                                Self::call_insert(&mut conn, s, &created, fence)
                                    .await
                                    .map(|()| Inserted::New)
                            }
                            Some(k) => Self::insert_keyed(&mut conn, s, k, actor, fence).await,
                        }
                    })
                    .await;
                match inserted {
                    // An unanswered try of this very insert landed.
                    Err(StoreError::Duplicate(_)) if again => Ok(Inserted::New),
                    Ok(Inserted::Existing(first)) if again && first == s.session_id => {
                        Ok(Inserted::New)
                    }
                    other => other,
                }
            })
            .await?;
        if inserted == Inserted::New {
            self.remember(s);
        }
        Ok(inserted)
    }

    /// Records `s` as it is, with `events` (one or two) as its history so far; with `fence`,
    /// only while the host's owner is still at that epoch.
    pub(super) async fn insert_with(
        &self,
        s: &Session,
        events: &[Change<'_>],
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        self.settled(|again| async move {
            let inserted = self
                .bounded(move || async move {
                    Self::call_insert(&mut self.conn().await?, s, events, fence).await
                })
                .await;
            match inserted {
                // An unanswered try of this very insert landed.
                Err(StoreError::Duplicate(_)) if again => Ok(()),
                other => other,
            }
        })
        .await?;
        self.remember(s);
        Ok(())
    }

    async fn call_insert(
        conn: &mut Conn,
        s: &Session,
        events: &[Change<'_>],
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        if events.is_empty() || events.len() > 2 {
            return Err(StoreError::Backend(format!(
                "a new session takes one or two events, not {}",
                events.len()
            )));
        }
        let mut params = session_values(s);
        let mut before: Option<SessionStatus> = None;
        for i in 0..2 {
            match events.get(i) {
                Some((after, event, actor, at)) => {
                    let kind = (before != Some(after.status))
                        .then(|| EventType::of_status(after.status).as_str());
                    before = Some(after.status);
                    params.extend([
                        (*event).into(),
                        after.status.as_str().into(),
                        utc(*at).into(),
                        actor.as_str().into(),
                        kind.into(),
                        stream_body(after)?.into(),
                    ]);
                }
                None => params.extend(std::iter::repeat_n(Value::NULL, 6)),
            }
        }
        params.push(fence.map(|f| f.epoch).into());
        let called: Result<Option<u8>, _> = conn
            .exec_first(
                procs::CALL.insert_session.as_str(),
                Params::Positional(params),
            )
            .await;
        match insert_result(s, called)? {
            Some(1) => Ok(()),
            Some(2) => Err(StoreError::Fenced(s.host_id.clone())),
            other => Err(StoreError::Backend(format!(
                "arcade_insert_session answered {other:?}"
            ))),
        }
    }

    /// An insert under an `Idempotency-Key`: the key and the session in one transaction.
    async fn insert_keyed(
        conn: &mut Conn,
        s: &Session,
        k: &IdempotencyKey,
        actor: Actor,
        fence: Option<&Fence>,
    ) -> Result<Inserted, StoreError> {
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(unavailable)?;
        if let Some(f) = fence {
            let epoch: Option<u64> = tx
                .exec_first(
                    "SELECT epoch FROM hosts WHERE host_id = ? LOCK IN SHARE MODE",
                    (f.host.as_str(),),
                )
                .await
                .map_err(unavailable)?;
            if epoch != Some(f.epoch) {
                tx.rollback().await.map_err(unavailable)?;
                return Err(StoreError::Fenced(f.host.clone()));
            }
        }
        let now = OffsetDateTime::now_utc();
        // An expired key is as good as none.
        tx.exec_drop(
            "DELETE FROM idempotency_keys WHERE idem_key = ? AND created_at < ?",
            (&k.key, utc(now - IDEMPOTENCY_TTL)),
        )
        .await
        .map_err(unavailable)?;
        let existing: Option<(String, String)> = tx
            .exec_first(
                "SELECT request, session_id FROM idempotency_keys WHERE idem_key = ? FOR UPDATE",
                (&k.key,),
            )
            .await
            .map_err(unavailable)?;
        if let Some((request, id)) = existing {
            tx.rollback().await.map_err(unavailable)?;
            return Ok(if request == k.request {
                Inserted::Existing(parse("session id", &id)?)
            } else {
                Inserted::KeyConflict
            });
        }
        tx.exec_drop(
            "INSERT INTO idempotency_keys (idem_key, request, session_id, created_at) VALUES (?, ?, ?, ?)",
            (&k.key, &k.request, s.session_id.as_str(), utc(now)),
        )
        .await
        .map_err(unavailable)?;
        let inserted = tx
            .exec_drop(
                "INSERT INTO sessions (session_id, game_id, mode, config, status, host_id, ip, port, pid, \
                 created_at, started_at, ended_at, end_reason, exit_code, pool_id, settings, ports, \
                 user_id, max_duration_s, build, slots, gpus, gpu_count, labels, unclaimed) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                Params::Positional(session_values(s)),
            )
            .await;
        insert_result(s, inserted)?;
        tx.exec_drop(
            INSERT_EVENT,
            event_params(&s.session_id, s, "created", actor, s.created_at),
        )
        .await
        .map_err(unavailable)?;
        append_session_event(&mut tx, EventType::SessionCreated, s, actor, s.created_at).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Inserted::New)
    }

    pub(super) async fn find_key(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<KeyMatch>, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let found: Option<(String, String)> = conn
                .exec_first(
                    "SELECT request, session_id FROM idempotency_keys WHERE idem_key = ? AND created_at >= ?",
                    (&key.key, utc(OffsetDateTime::now_utc() - IDEMPOTENCY_TTL)),
                )
                .await
                .map_err(unavailable)?;
            found
                .map(|(request, id)| {
                    Ok(if request == key.request {
                        KeyMatch::Same(parse("session id", &id)?)
                    } else {
                        KeyMatch::Different
                    })
                })
                .transpose()
        })
        .await
    }

    pub(super) async fn forget_key(&self, key: &str) -> Result<(), StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            conn.exec_drop("DELETE FROM idempotency_keys WHERE idem_key = ?", (key,))
                .await
                .map_err(unavailable)
        })
        .await
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(move || async move {
            self.conn()
                .await?
                // A table, not `DO 1`: a Galera node outside the primary component
                // answers that, but refuses to read a table (1047).
                .query_drop("SELECT 1 FROM schema_migrations LIMIT 1")
                .await
                .map_err(unavailable)
        })
        .await
    }

    pub(super) async fn get(&self, id: &SessionId) -> Result<Session, StoreError> {
        self.bounded(move || async move { Self::read(&mut self.conn().await?, id).await })
            .await
    }

    pub(super) async fn list(&self, q: &SessionQuery) -> Result<Page, StoreError> {
        let limit = q
            .limit
            .unwrap_or(DEFAULT_LIST_LIMIT)
            .clamp(1, MAX_LIST_LIMIT);
        let below = q.cursor.as_deref().map(parse_cursor).transpose()?;
        // Only the filters given, so each query can use its (filter, seq) index.
        let mut sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE 1 = 1");
        let mut params: Vec<Value> = Vec::new();
        match q.status {
            Some(st) => {
                sql.push_str(" AND status = ?");
                params.push(st.as_str().into());
            }
            // A pool's games waiting for players are listed only when asked for.
            None => sql.push_str(" AND status <> 'ready'"),
        }
        if let Some(g) = &q.game_id {
            sql.push_str(" AND game_id = ?");
            params.push(g.as_str().into());
        }
        if let Some(h) = &q.host_id {
            sql.push_str(" AND host_id = ?");
            params.push(h.as_str().into());
        }
        if let Some(u) = &q.user_id {
            sql.push_str(" AND user_id = ?");
            params.push(u.as_str().into());
        }
        if let Some(b) = below {
            sql.push_str(" AND seq < ?");
            params.push(b.into());
        }
        sql.push_str(" ORDER BY seq DESC LIMIT ?");
        params.push(limit.into());
        let (sql, params) = (sql.as_str(), &params);
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let rows: Vec<Row> = conn
                .exec(sql, Params::Positional(params.clone()))
                .await
                .map_err(unavailable)?;
            let page = rows
                .into_iter()
                .map(session_row)
                .collect::<Result<Vec<_>, _>>()?;
            let next_cursor = (page.len() == limit as usize)
                .then(|| page.last().map(|(seq, _)| seq.to_string()))
                .flatten();
            Ok(Page {
                sessions: page.into_iter().map(|(_, s)| s).collect(),
                next_cursor,
            })
        })
        .await
    }

    /// Applies `event` by compare and set: computes the new state from the last known one
    /// (remembered, or read), and `arcade_transition` writes it only if the row's status is
    /// still the one it was computed from. Statuses only move forward and every change but a
    /// repeated stop request moves it, so an equal status means an equal row. On a mismatch
    /// the row is read and the change computed again. One round trip when the state is known.
    pub(super) async fn transition(
        &self,
        id: &SessionId,
        event: &SessionEvent,
        actor: Actor,
        now: OffsetDateTime,
    ) -> Result<Session, StoreError> {
        self.transition_fenced(id, event, actor, now, None).await
    }

    /// [`Self::transition`], applied only while `fence` holds (when given): a write about a
    /// host by its owner, which changes nothing once another connection owns the host
    /// ([`StoreError::Fenced`]).
    pub async fn transition_fenced(
        &self,
        id: &SessionId,
        event: &SessionEvent,
        actor: Actor,
        now: OffsetDateTime,
        fence: Option<&Fence>,
    ) -> Result<Session, StoreError> {
        self.transition_guarded(id, event, actor, now, fence, None)
            .await
    }

    /// [`Self::transition_fenced`], applied also only while `lease` is held
    /// ([`StoreError::LeaseLost`] otherwise): a change made for a duty one replica does at a
    /// time.
    pub async fn transition_leased(
        &self,
        id: &SessionId,
        event: &SessionEvent,
        actor: Actor,
        now: OffsetDateTime,
        fence: Option<&Fence>,
        lease: &Lease,
    ) -> Result<Session, StoreError> {
        self.transition_guarded(id, event, actor, now, fence, Some(lease))
            .await
    }

    async fn transition_guarded(
        &self,
        id: &SessionId,
        event: &SessionEvent,
        actor: Actor,
        now: OffsetDateTime,
        fence: Option<&Fence>,
        lease: Option<&Lease>,
    ) -> Result<Session, StoreError> {
        // What the last try sent: found so by a later try, it landed.
        let sent: Mutex<Option<Session>> = Mutex::new(None);
        let sent = &sent;
        let result = self
            .settled(|again| async move {
                self.bounded(move || async move {
                    let mut conn = self.conn().await?;
                    let mut known = if again { None } else { self.recall(id) };
                    for _ in 0..CAS_TRIES {
                        let (mut s, fresh) = match known.take() {
                            Some(s) => (s, false),
                            None => (Self::read(&mut conn, id).await?, true),
                        };
                        let from = s.status;
                        let found = s.clone();
                        if let Err(e) = apply(&mut s, event, now) {
                            let mine = sent.lock().unwrap_or_else(PoisonError::into_inner).clone();
                            if again
                                && mine
                                    .is_some_and(|m| (m.status, m.pid) == (found.status, found.pid))
                            {
                                // An unanswered try of this very change landed.
                                return Ok(found);
                            }
                            if fresh {
                                return Err(e.into());
                            }
                            // What we remembered may be stale: decide on the row itself.
                            continue;
                        }
                        let mut params = vec![id.as_str().into(), from.as_str().into()];
                        params.extend(changed_values(&s));
                        params.extend([
                            utc(now).into(),
                            event.name().into(),
                            actor.as_str().into(),
                        ]);
                        let kind =
                            (s.status != from).then(|| EventType::of_status(s.status).as_str());
                        params.extend([kind.into(), stream_body(&s)?.into()]);
                        params.extend([
                            fence.map(|f| f.host.as_str()).into(),
                            fence.map(|f| f.epoch).into(),
                            lease.map(|l| l.name.as_str()).into(),
                            lease.map(|l| l.holder.as_str()).into(),
                            lease.map(|l| l.epoch).into(),
                        ]);
                        *sent.lock().unwrap_or_else(PoisonError::into_inner) = Some(s.clone());
                        let answer: Option<(u8, Option<String>)> = conn
                            .exec_first(procs::CALL.transition.as_str(), Params::Positional(params))
                            .await
                            .map_err(unavailable)?;
                        match answer {
                            Some((1, _)) => return Ok(s),
                            Some((2, _)) => {
                                let host = fence.map(|f| f.host.clone()).unwrap_or(s.host_id);
                                return Err(StoreError::Fenced(host));
                            }
                            Some((3, _)) => {
                                let name = lease.map(|l| l.name.clone()).unwrap_or_default();
                                return Err(StoreError::LeaseLost(name));
                            }
                            Some((_, Some(_))) => {} // changed meanwhile: read it, try again
                            Some((_, None)) => return Err(StoreError::NotFound(id.clone())),
                            None => {
                                return Err(StoreError::Backend(
                                    "arcade_transition answered no row".into(),
                                ))
                            }
                        }
                    }
                    Err(StoreError::Conflict(format!(
                        "session {id} kept changing: {CAS_TRIES} attempts to record {} failed",
                        event.name()
                    )))
                })
                .await
            })
            .await;
        match &result {
            Ok(s) => self.remember(s),
            Err(_) => self.forget(id),
        }
        result
    }

    /// One session's row, as it is.
    async fn read<Q: Queryable + Send>(
        conn: &mut Q,
        id: &SessionId,
    ) -> Result<Session, StoreError> {
        let row: Option<Row> = conn
            .exec_first(
                format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = ?"),
                (id.as_str(),),
            )
            .await
            .map_err(unavailable)?;
        let row = row.ok_or_else(|| StoreError::NotFound(id.clone()))?;
        Ok(session_row(row)?.1)
    }

    /// The state last written for `id`, if remembered.
    fn recall(&self, id: &SessionId) -> Option<Session> {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Remembers `s` as written; forgets it once it is over (it never changes again).
    fn remember(&self, s: &Session) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if s.status.is_terminal() {
            known.remove(&s.session_id);
            return;
        }
        if known.len() >= KNOWN_CAP && !known.contains_key(&s.session_id) {
            // Entries of sessions ended by another broker are never removed here: start over.
            known.clear();
        }
        known.insert(s.session_id.clone(), s.clone());
    }

    fn forget(&self, id: &SessionId) {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    pub(super) async fn events(&self, id: &SessionId) -> Result<Vec<EventRecord>, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let rows: Vec<(PrimitiveDateTime, String, String, String)> = conn
                .exec(
                    "SELECT at, event, status, actor FROM session_events WHERE session_id = ? ORDER BY id",
                    (id.as_str(),),
                )
                .await
                .map_err(unavailable)?;
            if rows.is_empty() {
                return Err(StoreError::NotFound(id.clone()));
            }
            Ok(rows
                .into_iter()
                .map(|(at, event, status, actor)| EventRecord {
                    at: at.assume_utc(),
                    event,
                    status,
                    actor,
                })
                .collect())
        })
        .await
    }

    pub(super) async fn find_active_by_addr(
        &self,
        ip: IpAddr,
        pid: u32,
    ) -> Result<Option<Session>, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let row: Option<Row> = conn
                .exec_first(
                    format!(
                        "SELECT {SESSION_COLUMNS} FROM sessions WHERE ip = ? AND pid = ? \
                         AND status IN {LIVE_STATUSES} ORDER BY seq DESC LIMIT 1"
                    ),
                    (ip.to_string(), pid),
                )
                .await
                .map_err(unavailable)?;
            row.map(|r| session_row(r).map(|(_, s)| s)).transpose()
        })
        .await
    }

    pub(super) async fn live_of_user(&self, user: &str) -> Result<Vec<SessionId>, StoreError> {
        self.bounded(move || async move {
            let ids: Vec<String> = self
                .conn()
                .await?
                .exec(
                    format!(
                        "SELECT session_id FROM sessions WHERE user_id = ? AND status IN {LIVE_STATUSES}"
                    ),
                    (user,),
                )
                .await
                .map_err(unavailable)?;
            ids.iter().map(|id| parse("session id", id)).collect()
        })
        .await
    }

    pub(super) async fn active(&self, host: Option<&HostId>) -> Result<Vec<Session>, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let active = format!("status IN {LIVE_STATUSES}");
            let rows: Vec<Row> = match host {
                Some(h) => conn
                    .exec(
                        format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE host_id = ? AND {active} ORDER BY seq"),
                        (h.as_str(),),
                    )
                    .await
                    .map_err(unavailable)?,
                None => conn
                    .query(format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE {active} ORDER BY seq"))
                    .await
                    .map_err(unavailable)?,
            };
            rows.into_iter().map(|r| session_row(r).map(|(_, s)| s)).collect()
        })
        .await
    }

    pub(super) async fn save_host(
        &self,
        host: &HostId,
        facts: &HostFacts,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let games: Vec<String> = facts.games.iter().map(|g| g.game_id.to_string()).collect();
        let facts = serde_json::to_string(facts).map_err(|e| StoreError::Backend(e.to_string()))?;
        let (games, facts) = (&games, facts.as_str());
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            conn.exec_drop(
                "INSERT INTO hosts (host_id, drained, facts, last_seen) VALUES (?, FALSE, ?, ?) \
                 ON DUPLICATE KEY UPDATE facts = VALUES(facts), last_seen = VALUES(last_seen)",
                (host.as_str(), facts, utc(now)),
            )
            .await
            .map_err(unavailable)?;
            Self::remember_games(&mut conn, games, now).await
        })
        .await
    }

    /// Remembers the games a host offers, beyond its current catalog.
    pub(super) async fn remember_games(
        q: &mut impl Queryable,
        games: &[String],
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        q.exec_batch(
            "INSERT INTO known_games (game_id, first_offered_at, last_offered_at) \
             VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE last_offered_at = VALUES(last_offered_at)",
            games.iter().map(|g| (g.as_str(), utc(now), utc(now))),
        )
        .await
        .map_err(unavailable)
    }

    pub(super) async fn is_known_game(&self, game: &GameId) -> Result<bool, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let found: Option<u8> = conn
                .exec_first(
                    "SELECT 1 FROM known_games WHERE game_id = ?",
                    (game.as_str(),),
                )
                .await
                .map_err(unavailable)?;
            Ok(found.is_some())
        })
        .await
    }

    pub(super) async fn set_drained(
        &self,
        host: &HostId,
        drained: bool,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            conn.exec_drop(
                "INSERT INTO hosts (host_id, drained, facts, last_seen) VALUES (?, ?, NULL, ?) \
                 ON DUPLICATE KEY UPDATE drained = VALUES(drained)",
                (host.as_str(), drained, utc(now)),
            )
            .await
            .map_err(unavailable)
        })
        .await
    }

    pub(super) async fn hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let rows: Vec<(String, bool, Option<String>, PrimitiveDateTime)> = conn
                .query("SELECT host_id, drained, facts, last_seen FROM hosts ORDER BY host_id")
                .await
                .map_err(unavailable)?;
            rows.into_iter()
                .map(|(id, drained, facts, last_seen)| {
                    Ok(HostRecord {
                        host_id: parse("host id", &id)?,
                        drained,
                        // Facts of an older shape are dropped, not fatal: the host re-sends them.
                        facts: facts.and_then(|f| serde_json::from_str(&f).ok()),
                        last_seen: last_seen.assume_utc(),
                    })
                })
                .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::mask_url;

    #[test]
    fn masks_passwords() {
        assert_eq!(
            mask_url("mysql://arcade:s3cret@db:3306/arcade"),
            "mysql://arcade:***@db:3306/arcade"
        );
        assert_eq!(
            mask_url("mysql://root@127.0.0.1:3306/x"),
            "mysql://root@127.0.0.1:3306/x"
        );
        assert_eq!(mask_url("mysql://u:p@ss@h/db"), "mysql://u:***@h/db");
        assert_eq!(mask_url("nonsense"), "<unparsable URL>");
    }
}
