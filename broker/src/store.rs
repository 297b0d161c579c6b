//! Session records' storage, behind one narrow interface.
//!
//! [`Store`] is a closed enum over the storage kinds (today the in-memory one; MySQL joins it
//! in its own variant), so calls are static and every kind answers the same contract. Every
//! state change goes through [`Store::transition`], which applies [`crate::session::apply`]
//! atomically with respect to other changes of the same session.
//!
//! Only this module (and its submodules) knows how sessions are stored.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use protocol::api::{Session, SessionQuery, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT};
use protocol::{HostId, SessionId};
use time::OffsetDateTime;

use crate::session::{apply, SessionEvent, TransitionError};

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
    /// The storage cannot be reached.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

/// The session store.
#[derive(Debug)]
pub enum Store {
    /// Kept in this process; lost on restart.
    Memory(MemoryStore),
}

impl Store {
    /// An empty in-memory store.
    pub fn memory() -> Self {
        Self::Memory(MemoryStore::default())
    }

    /// Records a new session.
    pub async fn insert(&self, s: Session) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => m.insert(s),
        }
    }

    /// One session.
    pub async fn get(&self, id: &SessionId) -> Result<Session, StoreError> {
        match self {
            Self::Memory(m) => m.get(id),
        }
    }

    /// Sessions matching `q`, newest first.
    pub async fn list(&self, q: &SessionQuery) -> Result<Vec<Session>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.list(q)),
        }
    }

    /// Applies `event` to a session and returns it as it now is.
    pub async fn transition(
        &self,
        id: &SessionId,
        event: &SessionEvent,
        now: OffsetDateTime,
    ) -> Result<Session, StoreError> {
        match self {
            Self::Memory(m) => m.transition(id, event, now),
        }
    }

    /// The session, not yet over, whose game runs at `ip` with `pid`.
    pub async fn find_active_by_addr(
        &self,
        ip: IpAddr,
        pid: u32,
    ) -> Result<Option<Session>, StoreError> {
        match self {
            Self::Memory(m) => {
                Ok(m.find(|s| !s.status.is_terminal() && s.ip == Some(ip) && s.pid == Some(pid)))
            }
        }
    }

    /// Sessions on `host` that are not over.
    pub async fn active_on_host(&self, host: &HostId) -> Result<Vec<Session>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.filter(|s| !s.status.is_terminal() && &s.host_id == host)),
        }
    }
}

/// The in-memory store, in insertion order, so "newest first" is a reverse walk. Keeps at
/// most [`MemoryStore::MAX_SESSIONS`] records, forgetting the oldest finished ones past that.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RwLock<Memory>,
}

#[derive(Debug, Default)]
struct Memory {
    by_seq: BTreeMap<u64, Session>,
    index: HashMap<SessionId, u64>,
    next: u64,
}

impl MemoryStore {
    /// Records kept at most.
    pub const MAX_SESSIONS: usize = 100_000;

    fn read(&self) -> RwLockReadGuard<'_, Memory> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Memory> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, s: Session) -> Result<(), StoreError> {
        let mut m = self.write();
        if m.index.contains_key(&s.session_id) {
            return Err(StoreError::Duplicate(s.session_id));
        }
        let seq = m.next;
        m.next += 1;
        m.index.insert(s.session_id.clone(), seq);
        m.by_seq.insert(seq, s);
        if m.by_seq.len() > Self::MAX_SESSIONS {
            let excess = m.by_seq.len() - Self::MAX_SESSIONS;
            let old: Vec<u64> = m
                .by_seq
                .iter()
                .filter(|(_, s)| s.status.is_terminal())
                .take(excess)
                .map(|(seq, _)| *seq)
                .collect();
            for seq in old {
                if let Some(s) = m.by_seq.remove(&seq) {
                    m.index.remove(&s.session_id);
                }
            }
        }
        Ok(())
    }

    fn get(&self, id: &SessionId) -> Result<Session, StoreError> {
        let m = self.read();
        m.index
            .get(id)
            .and_then(|seq| m.by_seq.get(seq))
            .cloned()
            .ok_or_else(|| StoreError::NotFound(id.clone()))
    }

    fn list(&self, q: &SessionQuery) -> Vec<Session> {
        let limit = q
            .limit
            .unwrap_or(DEFAULT_LIST_LIMIT)
            .clamp(1, MAX_LIST_LIMIT) as usize;
        self.read()
            .by_seq
            .values()
            .rev()
            .filter(|s| q.status.is_none_or(|st| s.status == st))
            .filter(|s| q.game_id.as_ref().is_none_or(|g| &s.game_id == g))
            .filter(|s| q.host_id.as_ref().is_none_or(|h| &s.host_id == h))
            .take(limit)
            .cloned()
            .collect()
    }

    fn find(&self, f: impl Fn(&Session) -> bool) -> Option<Session> {
        self.read().by_seq.values().find(|s| f(s)).cloned()
    }

    fn filter(&self, f: impl Fn(&Session) -> bool) -> Vec<Session> {
        self.read()
            .by_seq
            .values()
            .filter(|s| f(s))
            .cloned()
            .collect()
    }

    fn transition(
        &self,
        id: &SessionId,
        event: &SessionEvent,
        now: OffsetDateTime,
    ) -> Result<Session, StoreError> {
        let mut m = self.write();
        let seq = *m
            .index
            .get(id)
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let s = m
            .by_seq
            .get_mut(&seq)
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        apply(s, event, now)?;
        Ok(s.clone())
    }
}
