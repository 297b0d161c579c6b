//! Session records' storage, behind one narrow interface.
//!
//! [`Store`] is a closed enum over the storage kinds — [`memory::MemoryStore`] (the default,
//! lost on restart) and [`mysql::MysqlStore`] (MySQL 8 or MariaDB 10.11) — so calls are static
//! and every kind answers the same contract, which one test suite checks against both.
//!
//! Every state change goes through [`Store::transition`], which applies
//! [`crate::session::apply`] atomically with respect to other changes of the same session and
//! appends the change to the session's event history, with who caused it, and (when the
//! status changes) to the event stream, numbered in commit order without a gap. A call returns
//! only once the change is durable (for MySQL: committed).
//!
//! Replicas share the store: what only they need (hosts' owners and epochs, claims, brokers,
//! leases) is part of the same face ([`cluster`]), answered by MySQL.
//!
//! Only this module (and its submodules) knows how sessions are stored; only
//! [`mysql`] knows SQL.

pub mod builds;
mod cluster;
pub mod games;
mod joins;
pub mod memory;
pub mod mysql;
pub mod pools;
pub mod usage;

pub use cluster::{BrokerRecord, Claimed, Fence, HostLoad, Lease, SharedHost};
pub use joins::{JoinRecord, JoinRefusal, Redeemed};

use std::net::IpAddr;

use protocol::api::{Event, EventType, Host, Session, SessionQuery, StartSession};
use protocol::wire::HostFacts;
use protocol::{GameId, HostId, SessionId};
use time::OffsetDateTime;

use crate::session::{Actor, SessionEvent, TransitionError};

/// Why the store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No such session.
    #[error("no session {0}")]
    NotFound(SessionId),
    /// A session with this id exists already.
    #[error("session {0} exists already")]
    Duplicate(SessionId),
    /// The change is not allowed by the lifecycle.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// A listing cursor that this store did not hand out.
    #[error("invalid cursor {0:?}: pass the next_cursor of a previous page")]
    BadCursor(String),
    /// The storage cannot be reached (or did not answer in time).
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The database rolled the change back as a whole because a concurrent one won (a
    /// deadlock, or a certification conflict with a commit on another Galera node): nothing
    /// was written and the call may be made again. The MySQL store makes it again itself,
    /// a bounded number of times; this reaches a caller only when every try lost.
    #[error("session store conflict: {0}")]
    Conflict(String),
    /// The storage answered with an error that is a fault of ours (a bug, a schema problem).
    #[error("session store error: {0}")]
    Backend(String),
    /// A write about a host by a replica that no longer owns it (its agent connected to
    /// another since): nothing was written.
    #[error("host {0} is now owned by another connection")]
    Fenced(HostId),
    /// A write for a duty one replica does at a time, by a replica whose lease on it expired
    /// or passed to another since: nothing was written.
    #[error("this replica no longer holds the lease {0:?}")]
    LeaseLost(String),
    /// A call only a store shared by replicas answers, made of one that is not.
    #[error("this session store is not shared by replicas")]
    NotShared,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Newest first.
    pub sessions: Vec<Session>,
    /// Where the next page starts, when there may be one.
    pub next_cursor: Option<String>,
}

/// One recorded change of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// When.
    pub at: OffsetDateTime,
    /// What happened (`created`, `launched`, `stop requested`, ...).
    pub event: String,
    /// The session's state after it.
    pub status: String,
    /// Who caused it.
    pub actor: String,
}

/// What the store knows of a host across restarts.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRecord {
    /// The host.
    pub host_id: HostId,
    /// Drained by a provider; survives restarts.
    pub drained: bool,
    /// What it said in its last handshake.
    pub facts: Option<HostFacts>,
    /// When it was last registered.
    pub last_seen: OffsetDateTime,
}

/// The answer to inserting a session under an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// The session is recorded.
    New,
    /// The key was used before with the same request: this is its session; nothing was written.
    Existing(SessionId),
    /// The key was used before with a different request; nothing was written.
    KeyConflict,
}

/// What an `Idempotency-Key` was used for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMatch {
    /// The same request: this is its session.
    Same(SessionId),
    /// Another request.
    Different,
}

/// An `Idempotency-Key` and the request it is bound to (sent as is to a host's owner).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdempotencyKey {
    /// The key as the client sent it.
    pub key: String,
    /// The request, canonically encoded, to tell a retry from a reuse.
    pub request: String,
}

impl IdempotencyKey {
    /// Binds `key` to `request`.
    pub fn new(key: String, request: &StartSession) -> Self {
        Self {
            key,
            // Field order is fixed by the struct, so equal requests encode equally.
            request: serde_json::to_string(request).unwrap_or_default(),
        }
    }
}

/// One change in a new session's history: the session as it is after it, the change's name,
/// who caused it, when.
type Change<'a> = (&'a Session, &'a str, Actor, OffsetDateTime);

/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_TTL: time::Duration = time::Duration::hours(24);

/// The session store.
#[derive(Debug)]
pub enum Store {
    /// Kept in this process; lost on restart.
    Memory(memory::MemoryStore),
    /// MySQL or MariaDB.
    Mysql(mysql::MysqlStore),
}

impl Store {
    /// An empty in-memory store.
    pub fn memory() -> Self {
        Self::Memory(memory::MemoryStore::default())
    }

    /// The database node in use now, for a MySQL store.
    pub fn node(&self) -> Option<&str> {
        match self {
            Self::Memory(_) => None,
            Self::Mysql(m) => Some(m.node()),
        }
    }

    /// Whether records survive a restart.
    pub fn is_durable(&self) -> bool {
        matches!(self, Self::Mysql(_))
    }

    /// Records a new session (`starting`), created by `actor`, bound to `key` when given;
    /// with `fence` (a host's owner among replicas), only while it holds.
    pub async fn insert(
        &self,
        s: &Session,
        key: Option<&IdempotencyKey>,
        actor: Actor,
        fence: Option<&Fence>,
    ) -> Result<Inserted, StoreError> {
        match self {
            Self::Memory(m) => m.insert(s, key, actor),
            Self::Mysql(m) => m.insert(s, key, actor, fence).await,
        }
    }

    /// Records a new session together with what happened to it before it was recorded: `s`
    /// as created by `actor`, then `event` by `event_actor` at `now`, as one change (one
    /// commit), with both in its history. Returns the session as recorded. A start whose
    /// launch answered at once is recorded so. With `fence` (a host's owner among replicas),
    /// only while it holds.
    pub async fn insert_after(
        &self,
        s: &Session,
        actor: Actor,
        event: &SessionEvent,
        event_actor: Actor,
        now: OffsetDateTime,
        fence: Option<&Fence>,
    ) -> Result<Session, StoreError> {
        let mut after = s.clone();
        crate::session::apply(&mut after, event, now)?;
        let events = [
            (s, "created", actor, s.created_at),
            (&after, event.name(), event_actor, now),
        ];
        match self {
            Self::Memory(m) => m.insert_with(&after, &events)?,
            Self::Mysql(m) => m.insert_with(&after, &events, fence).await?,
        }
        Ok(after)
    }

    /// What `key` was used for, if it is remembered (and not expired).
    pub async fn find_key(&self, key: &IdempotencyKey) -> Result<Option<KeyMatch>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.find_key(key)),
            Self::Mysql(m) => m.find_key(key).await,
        }
    }

    /// Forgets an `Idempotency-Key` (its start failed, so a retry may start again).
    pub async fn forget_key(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => {
                m.forget_key(key);
                Ok(())
            }
            Self::Mysql(m) => m.forget_key(key).await,
        }
    }

    /// Whether the store answers now (a round trip, bounded like every call).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Mysql(m) => m.ping().await,
        }
    }

    /// One session.
    pub async fn get(&self, id: &SessionId) -> Result<Session, StoreError> {
        match self {
            Self::Memory(m) => m.get(id),
            Self::Mysql(m) => m.get(id).await,
        }
    }

    /// Sessions matching `q`, newest first, one page.
    pub async fn list(&self, q: &SessionQuery) -> Result<Page, StoreError> {
        match self {
            Self::Memory(m) => m.list(q),
            Self::Mysql(m) => m.list(q).await,
        }
    }

    /// Applies `event`, caused by `actor`, to a session and returns it as it now is.
    pub async fn transition(
        &self,
        id: &SessionId,
        event: &SessionEvent,
        actor: Actor,
        now: OffsetDateTime,
    ) -> Result<Session, StoreError> {
        match self {
            Self::Memory(m) => m.transition(id, event, actor, now),
            Self::Mysql(m) => m.transition(id, event, actor, now).await,
        }
    }

    /// [`Self::transition`] for a change about a host made by its owner, applied only while
    /// `fence` holds ([`StoreError::Fenced`] otherwise). Only MySQL has replicas, so only it
    /// has fences: the memory store serves one broker, which owns every host, and has none to
    /// check.
    pub async fn transition_fenced(
        &self,
        id: &SessionId,
        event: &SessionEvent,
        actor: Actor,
        now: OffsetDateTime,
        fence: Option<&Fence>,
    ) -> Result<Session, StoreError> {
        match self {
            Self::Memory(m) => m.transition(id, event, actor, now),
            Self::Mysql(m) => m.transition_fenced(id, event, actor, now, fence).await,
        }
    }

    /// [`Self::transition_fenced`] for a change made for a duty one replica does at a time
    /// (the sweep), applied only while `lease` is held ([`StoreError::LeaseLost`] otherwise).
    /// The memory store serves one broker, which holds every duty: it has no lease to check.
    pub async fn transition_leased(
        &self,
        id: &SessionId,
        event: &SessionEvent,
        actor: Actor,
        now: OffsetDateTime,
        fence: Option<&Fence>,
        lease: Option<&Lease>,
    ) -> Result<Session, StoreError> {
        match (self, lease) {
            (Self::Memory(m), _) => m.transition(id, event, actor, now),
            (Self::Mysql(m), Some(l)) => m.transition_leased(id, event, actor, now, fence, l).await,
            (Self::Mysql(m), None) => m.transition_fenced(id, event, actor, now, fence).await,
        }
    }

    /// A session's history, oldest first.
    pub async fn events(&self, id: &SessionId) -> Result<Vec<EventRecord>, StoreError> {
        match self {
            Self::Memory(m) => m.events(id),
            Self::Mysql(m) => m.events(id).await,
        }
    }

    /// The session, not yet over, whose game runs at `ip` with `pid`.
    pub async fn find_active_by_addr(
        &self,
        ip: IpAddr,
        pid: u32,
    ) -> Result<Option<Session>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.find_active_by_addr(ip, pid)),
            Self::Mysql(m) => m.find_active_by_addr(ip, pid).await,
        }
    }

    /// The sessions not over whose start named `user`.
    pub async fn live_of_user(&self, user: &str) -> Result<Vec<SessionId>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.live_of_user(user)),
            Self::Mysql(m) => m.live_of_user(user).await,
        }
    }

    /// Sessions not yet over, on `host`, or on every host.
    pub async fn active(&self, host: Option<&HostId>) -> Result<Vec<Session>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.active(host)),
            Self::Mysql(m) => m.active(host).await,
        }
    }

    /// Records a host's handshake facts (keeping its drained flag), and remembers the games
    /// it offers.
    pub async fn save_host(
        &self,
        host: &HostId,
        facts: &HostFacts,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => {
                m.save_host(host, facts, now);
                Ok(())
            }
            Self::Mysql(m) => m.save_host(host, facts, now).await,
        }
    }

    /// Whether any host has ever offered `game` (with MySQL, across restarts).
    pub async fn is_known_game(&self, game: &GameId) -> Result<bool, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.is_known_game(game)),
            Self::Mysql(m) => m.is_known_game(game).await,
        }
    }

    /// Records a host's drained flag.
    pub async fn set_drained(
        &self,
        host: &HostId,
        drained: bool,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => {
                m.set_drained(host, drained, now);
                Ok(())
            }
            Self::Mysql(m) => m.set_drained(host, drained, now).await,
        }
    }

    /// Appends a host event to the stream (session events are appended by the changes that
    /// make them, in the same commit).
    pub async fn append_host_event(
        &self,
        kind: EventType,
        host: &Host,
        actor: Actor,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => {
                m.append_host_event(kind, host, actor, at);
                Ok(())
            }
            Self::Mysql(m) => m.append_host_event(kind, host, actor, at).await,
        }
    }

    /// Appends a session event that changes nothing (`session.expiring`) to the stream, once
    /// per session and type however often it is asked for, by any replica, and only while the
    /// session is `running`: true when this call appended it.
    pub async fn notice_once(
        &self,
        kind: EventType,
        s: &Session,
        actor: Actor,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.notice_once(kind, s, actor, at)),
            Self::Mysql(m) => m.notice_once(kind, s, actor, at).await,
        }
    }

    /// The stream's events numbered above `after`, in order, at most `limit`. Numbers are
    /// consecutive and commit in order, so a reader that has seen `n` has seen every event up
    /// to `n`.
    pub async fn stream_after(&self, after: u64, limit: u32) -> Result<Vec<Event>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.stream_after(after, limit)),
            Self::Mysql(m) => m.stream_after(after, limit).await,
        }
    }

    /// The number of the stream's last event (0: none yet).
    pub async fn stream_head(&self) -> Result<u64, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.stream_head()),
            Self::Mysql(m) => m.stream_head().await,
        }
    }

    /// Forgets the stream's events that happened before `before`, at most `limit` at once
    /// (the memory store keeps its last 10,000 anyway); answers how many.
    pub async fn trim_stream(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        match self {
            Self::Memory(_) => Ok(0),
            Self::Mysql(m) => m.trim_stream(before, limit).await,
        }
    }

    /// The last event webhook receiver `endpoint` took, if it has a cursor yet.
    pub async fn webhook_cursor(&self, endpoint: &str) -> Result<Option<u64>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.webhook_cursor(endpoint)),
            Self::Mysql(m) => m.webhook_cursor(endpoint).await,
        }
    }

    /// Moves webhook receiver `endpoint`'s cursor to `seq` (durable with MySQL).
    pub async fn set_webhook_cursor(&self, endpoint: &str, seq: u64) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => {
                m.set_webhook_cursor(endpoint, seq);
                Ok(())
            }
            Self::Mysql(m) => m.set_webhook_cursor(endpoint, seq).await,
        }
    }

    /// Every host ever recorded.
    pub async fn hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.hosts()),
            Self::Mysql(m) => m.hosts().await,
        }
    }
}

/// Parses a listing cursor: the sequence number below which the next page starts.
fn parse_cursor(c: &str) -> Result<u64, StoreError> {
    c.parse::<u64>()
        .map_err(|_| StoreError::BadCursor(c.chars().take(64).collect()))
}
