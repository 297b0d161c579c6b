//! The in-memory store: the embedded default for `--dev` and trials. Sessions are kept in
//! insertion order (so "newest first" is a reverse walk and a cursor is a sequence number);
//! at most [`MemoryStore::MAX_SESSIONS`] records, forgetting the oldest finished ones past that,
//! and the last [`MemoryStore::MAX_EVENTS`] events of the stream.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use protocol::api::PoolSpec;
use protocol::api::{
    CentralGame, EndReason, Event, EventType, Host, Session, SessionQuery, SessionStatus,
    DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT,
};
use protocol::wire::HostFacts;
use protocol::{BuildId, GameId, HostId, PoolId, SessionId};
use time::OffsetDateTime;

use super::builds::{BuildRecord, MAX_BUILDS_LISTED};
use super::games::{apply as apply_game, GameChange, GameRecord, GameRemoved, GameWrite};
use super::joins::{JoinRecord, JoinRefusal, Redeemed};
use super::pools::{
    bounded_error, Claimant, LaunchResult, PoolRecord, PoolRemoved, PoolWrite, Precondition,
    ReadyClaim,
};
use super::{
    parse_cursor, Change, EventRecord, HostRecord, IdempotencyKey, Inserted, KeyMatch, Page,
    StoreError, IDEMPOTENCY_TTL,
};
use crate::session::{apply, Actor, SessionEvent};

/// The in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// Boxed: the store is one variant of [`super::Store`], whose other is a handle.
    inner: Box<RwLock<Memory>>,
}

#[derive(Debug, Default)]
struct Memory {
    by_seq: BTreeMap<u64, Entry>,
    index: HashMap<SessionId, u64>,
    next: u64,
    keys: HashMap<String, (String, SessionId, OffsetDateTime)>,
    hosts: BTreeMap<HostId, HostRecord>,
    /// The last events of the stream, oldest first.
    stream: VecDeque<Event>,
    /// The number of the last event appended.
    stream_head: u64,
    /// Each webhook receiver's last event taken.
    cursors: HashMap<String, u64>,
    /// Every game any host has offered.
    known_games: BTreeSet<GameId>,
    /// The pools.
    pools: BTreeMap<PoolId, PoolRecord>,
    /// Each pool's ready sessions, by sequence number (oldest first).
    ready: HashMap<PoolId, BTreeSet<u64>>,
    /// Secrets, made at first ask.
    secrets: HashMap<String, Vec<u8>>,
    /// Builds' records.
    builds: BTreeMap<BuildId, BuildRecord>,
    /// Central games.
    games: BTreeMap<GameId, GameRecord>,
}

#[derive(Debug)]
struct Entry {
    session: Session,
    events: Vec<EventRecord>,
    /// The notices sent for it (`session.expiring`).
    notices: Vec<EventType>,
    /// Its join token, as kept.
    join: Option<JoinRecord>,
}

fn record(event: &str, s: &Session, actor: Actor, at: OffsetDateTime) -> EventRecord {
    EventRecord {
        at,
        event: event.to_owned(),
        status: s.status.as_str().to_owned(),
        actor: actor.as_str().to_owned(),
    }
}

impl Memory {
    /// Appends an event to the stream, numbered next, forgetting the oldest past
    /// [`MemoryStore::MAX_EVENTS`].
    fn append(
        &mut self,
        kind: EventType,
        at: OffsetDateTime,
        actor: Actor,
        session: Option<&Session>,
        host: Option<&Host>,
    ) {
        self.push_event(Event {
            id: 0,
            kind,
            at,
            actor: actor.as_str().to_owned(),
            session: session.cloned(),
            host: host.cloned(),
            game: None,
        });
    }

    /// Numbers `event` next and keeps it (the oldest dropped past the limit).
    fn push_event(&mut self, mut event: Event) {
        self.stream_head += 1;
        if self.stream.len() >= MemoryStore::MAX_EVENTS {
            self.stream.pop_front();
        }
        event.id = self.stream_head;
        self.stream.push_back(event);
    }

    /// `id`'s entry, if it is kept.
    fn entry_mut(&mut self, id: &SessionId) -> Option<&mut Entry> {
        let seq = *self.index.get(id)?;
        self.by_seq.get_mut(&seq)
    }

    /// Keeps [`Memory::ready`] true of the session at `seq`, as it is now.
    fn index_ready(&mut self, seq: u64, s: &Session) {
        let Some(pool) = &s.pool_id else { return };
        if s.status == SessionStatus::Ready {
            self.ready.entry(pool.clone()).or_default().insert(seq);
        } else if let Some(set) = self.ready.get_mut(pool) {
            set.remove(&seq);
            if set.is_empty() {
                self.ready.remove(pool);
            }
        }
    }

    /// Applies `event` to a session, with its history and the stream.
    fn change(
        &mut self,
        id: &SessionId,
        event: &SessionEvent,
        actor: Actor,
        now: OffsetDateTime,
    ) -> Result<Session, StoreError> {
        let seq = *self
            .index
            .get(id)
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let e = self
            .by_seq
            .get_mut(&seq)
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let from = e.session.status;
        apply(&mut e.session, event, now)?;
        let r = record(event.name(), &e.session, actor, now);
        e.events.push(r);
        let s = e.session.clone();
        self.index_ready(seq, &s);
        if s.status != from {
            self.append(EventType::of_status(s.status), now, actor, Some(&s), None);
        }
        // A start that failed, whoever found it failed, forgets its key: it may be retried.
        if s.status == SessionStatus::Failed {
            self.keys.retain(|_, (_, bound, _)| bound != id);
        }
        Ok(s)
    }

    /// Adds a session with its history, forgetting the oldest finished ones past
    /// [`MemoryStore::MAX_SESSIONS`].
    fn add(&mut self, s: &Session, events: Vec<EventRecord>) {
        let seq = self.next;
        self.next += 1;
        self.index_ready(seq, s);
        self.index.insert(s.session_id.clone(), seq);
        self.by_seq.insert(
            seq,
            Entry {
                session: s.clone(),
                events,
                notices: Vec::new(),
                join: None,
            },
        );
        if self.by_seq.len() > MemoryStore::MAX_SESSIONS {
            let excess = self.by_seq.len() - MemoryStore::MAX_SESSIONS;
            let old: Vec<u64> = self
                .by_seq
                .iter()
                .filter(|(_, e)| e.session.status.is_terminal())
                .take(excess)
                .map(|(seq, _)| *seq)
                .collect();
            for seq in old {
                if let Some(e) = self.by_seq.remove(&seq) {
                    self.index.remove(&e.session.session_id);
                }
            }
        }
    }
}

impl MemoryStore {
    /// Records kept at most.
    pub const MAX_SESSIONS: usize = 100_000;
    /// Idempotency keys kept at most (besides expiry after [`IDEMPOTENCY_TTL`]).
    pub const MAX_KEYS: usize = 100_000;
    /// Events of the stream kept at most.
    pub const MAX_EVENTS: usize = 10_000;

    fn read(&self) -> RwLockReadGuard<'_, Memory> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Memory> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn insert(
        &self,
        s: &Session,
        key: Option<&IdempotencyKey>,
        actor: Actor,
    ) -> Result<Inserted, StoreError> {
        let mut m = self.write();
        if let Some(k) = key {
            let now = OffsetDateTime::now_utc();
            if m.keys.len() >= Self::MAX_KEYS {
                m.keys.retain(|_, (_, _, at)| now - *at < IDEMPOTENCY_TTL);
            }
            match m.keys.get(&k.key) {
                Some((_, _, at)) if now - *at >= IDEMPOTENCY_TTL => {}
                Some((request, _, _)) if request != &k.request => return Ok(Inserted::KeyConflict),
                Some((_, id, _)) => return Ok(Inserted::Existing(id.clone())),
                None if m.keys.len() >= Self::MAX_KEYS => {
                    return Err(StoreError::Unavailable(
                        "too many idempotency keys remembered".into(),
                    ))
                }
                None => {}
            }
        }
        if m.index.contains_key(&s.session_id) {
            return Err(StoreError::Duplicate(s.session_id.clone()));
        }
        if let Some(k) = key {
            m.keys.insert(
                k.key.clone(),
                (
                    k.request.clone(),
                    s.session_id.clone(),
                    OffsetDateTime::now_utc(),
                ),
            );
        }
        m.add(s, vec![record("created", s, actor, s.created_at)]);
        m.append(
            EventType::SessionCreated,
            s.created_at,
            actor,
            Some(s),
            None,
        );
        Ok(Inserted::New)
    }

    /// Records `s` as it is, with `events` as its history so far.
    pub(super) fn insert_with(&self, s: &Session, events: &[Change<'_>]) -> Result<(), StoreError> {
        let mut m = self.write();
        if m.index.contains_key(&s.session_id) {
            return Err(StoreError::Duplicate(s.session_id.clone()));
        }
        let history = events
            .iter()
            .map(|(after, event, actor, at)| record(event, after, *actor, *at))
            .collect();
        m.add(s, history);
        let mut before = None;
        for (after, _, actor, at) in events {
            if before != Some(after.status) {
                m.append(
                    EventType::of_status(after.status),
                    *at,
                    *actor,
                    Some(after),
                    None,
                );
            }
            before = Some(after.status);
        }
        Ok(())
    }

    pub(super) fn find_key(&self, key: &IdempotencyKey) -> Option<KeyMatch> {
        let m = self.read();
        let (request, id, at) = m.keys.get(&key.key)?;
        if OffsetDateTime::now_utc() - *at >= IDEMPOTENCY_TTL {
            return None;
        }
        Some(if request == &key.request {
            KeyMatch::Same(id.clone())
        } else {
            KeyMatch::Different
        })
    }

    pub(super) fn forget_key(&self, key: &str) {
        self.write().keys.remove(key);
    }

    pub(super) fn get(&self, id: &SessionId) -> Result<Session, StoreError> {
        let m = self.read();
        m.index
            .get(id)
            .and_then(|seq| m.by_seq.get(seq))
            .map(|e| e.session.clone())
            .ok_or_else(|| StoreError::NotFound(id.clone()))
    }

    pub(super) fn list(&self, q: &SessionQuery) -> Result<Page, StoreError> {
        let limit = q
            .limit
            .unwrap_or(DEFAULT_LIST_LIMIT)
            .clamp(1, MAX_LIST_LIMIT) as usize;
        let below = q
            .cursor
            .as_deref()
            .map(parse_cursor)
            .transpose()?
            .unwrap_or(u64::MAX);
        let m = self.read();
        let page: Vec<(u64, Session)> = m
            .by_seq
            .range(..below)
            .rev()
            .map(|(seq, e)| (*seq, &e.session))
            // A pool's games waiting for players are listed only when asked for.
            .filter(|(_, s)| match q.status {
                Some(st) => s.status == st,
                None => s.status != SessionStatus::Ready,
            })
            .filter(|(_, s)| q.game_id.as_ref().is_none_or(|g| &s.game_id == g))
            .filter(|(_, s)| q.host_id.as_ref().is_none_or(|h| &s.host_id == h))
            .filter(|(_, s)| q.user_id.is_none() || s.user_id == q.user_id)
            .take(limit)
            .map(|(seq, s)| (seq, s.clone()))
            .collect();
        let next_cursor = (page.len() == limit)
            .then(|| page.last().map(|(seq, _)| seq.to_string()))
            .flatten();
        Ok(Page {
            sessions: page.into_iter().map(|(_, s)| s).collect(),
            next_cursor,
        })
    }

    pub(super) fn transition(
        &self,
        id: &SessionId,
        event: &SessionEvent,
        actor: Actor,
        now: OffsetDateTime,
    ) -> Result<Session, StoreError> {
        self.write().change(id, event, actor, now)
    }

    pub(super) fn events(&self, id: &SessionId) -> Result<Vec<EventRecord>, StoreError> {
        let m = self.read();
        m.index
            .get(id)
            .and_then(|seq| m.by_seq.get(seq))
            .map(|e| e.events.clone())
            .ok_or_else(|| StoreError::NotFound(id.clone()))
    }

    pub(super) fn find_active_by_addr(&self, ip: IpAddr, pid: u32) -> Option<Session> {
        self.read()
            .by_seq
            .values()
            .map(|e| &e.session)
            .find(|s| !s.status.is_terminal() && s.ip == Some(ip) && s.pid == Some(pid))
            .cloned()
    }

    pub(super) fn live_of_user(&self, user: &str) -> Vec<SessionId> {
        self.read()
            .by_seq
            .values()
            .map(|e| &e.session)
            .filter(|s| !s.status.is_terminal() && s.user_id.as_deref() == Some(user))
            .map(|s| s.session_id.clone())
            .collect()
    }

    pub(super) fn active(&self, host: Option<&HostId>) -> Vec<Session> {
        self.read()
            .by_seq
            .values()
            .map(|e| &e.session)
            .filter(|s| !s.status.is_terminal() && host.is_none_or(|h| &s.host_id == h))
            .cloned()
            .collect()
    }

    pub(super) fn save_host(&self, host: &HostId, facts: &HostFacts, now: OffsetDateTime) {
        let mut m = self.write();
        let r = m.hosts.entry(host.clone()).or_insert_with(|| HostRecord {
            host_id: host.clone(),
            drained: false,
            facts: None,
            last_seen: now,
        });
        r.facts = Some(facts.clone());
        r.last_seen = now;
        m.known_games
            .extend(facts.games.iter().map(|g| g.game_id.clone()));
    }

    pub(super) fn is_known_game(&self, game: &GameId) -> bool {
        self.read().known_games.contains(game)
    }

    pub(super) fn set_drained(&self, host: &HostId, drained: bool, now: OffsetDateTime) {
        let mut m = self.write();
        let r = m.hosts.entry(host.clone()).or_insert_with(|| HostRecord {
            host_id: host.clone(),
            drained,
            facts: None,
            last_seen: now,
        });
        r.drained = drained;
    }

    pub(super) fn hosts(&self) -> Vec<HostRecord> {
        self.read().hosts.values().cloned().collect()
    }

    pub(super) fn append_host_event(
        &self,
        kind: EventType,
        host: &Host,
        actor: Actor,
        at: OffsetDateTime,
    ) {
        self.write().append(kind, at, actor, None, Some(host));
    }

    pub(super) fn append_game_event(
        &self,
        kind: EventType,
        game: &CentralGame,
        actor: Actor,
        at: OffsetDateTime,
    ) {
        self.write().push_event(Event {
            id: 0,
            kind,
            at,
            actor: actor.as_str().to_owned(),
            session: None,
            host: None,
            game: Some(game.clone()),
        });
    }

    /// Sessions of `build` created at or after `since` that never ran: their launch failed
    /// or timed out.
    pub(super) fn usage(&self, w: &super::usage::UsageWindow) -> Vec<super::usage::UsageSum> {
        use protocol::api::UsageBy;
        let mut sums: std::collections::BTreeMap<Option<String>, super::usage::UsageSum> =
            std::collections::BTreeMap::new();
        for e in self.read().by_seq.values() {
            let s = &e.session;
            let Some(started) = s.started_at else {
                continue;
            };
            // A pool's game no player claimed ran for nobody.
            if s.pool_id.is_some()
                && !e
                    .events
                    .iter()
                    .any(|x| x.event == crate::session::SessionEvent::Claimed.name())
            {
                continue;
            }
            if w.user_id
                .as_ref()
                .is_some_and(|u| s.user_id.as_ref() != Some(u))
                || w.game_id.as_ref().is_some_and(|g| &s.game_id != g)
            {
                continue;
            }
            let Some(micros) = super::usage::overlap(w, started, s.ended_at) else {
                continue;
            };
            let key = match w.by {
                UsageBy::User => s.user_id.clone(),
                UsageBy::Game => Some(s.game_id.to_string()),
                UsageBy::Host => Some(s.host_id.to_string()),
            };
            let sum = sums.entry(key.clone()).or_insert(super::usage::UsageSum {
                key,
                sessions: 0,
                micros: 0,
                gpu_micros: 0,
            });
            sum.sessions += 1;
            sum.micros += micros;
            sum.gpu_micros += micros * i64::try_from(s.gpus.len()).unwrap_or(0);
        }
        sums.into_values().collect()
    }

    pub(super) fn failed_launches(&self, build: &BuildId, since: OffsetDateTime) -> u32 {
        let n = self
            .read()
            .by_seq
            .values()
            .filter(|e| {
                e.session.build.as_ref() == Some(build)
                    && e.session.created_at >= since
                    && matches!(
                        e.session.end_reason,
                        Some(EndReason::LaunchFailed | EndReason::LaunchTimeout)
                    )
            })
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    pub(super) fn put_join(
        &self,
        id: &SessionId,
        join: &JoinRecord,
        replace: bool,
    ) -> Result<bool, StoreError> {
        let mut m = self.write();
        let e = m
            .entry_mut(id)
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        if e.join.is_some() && !replace {
            return Ok(false);
        }
        e.join = Some(join.clone());
        Ok(true)
    }

    pub(super) fn join_of(&self, id: &SessionId) -> Option<JoinRecord> {
        let m = self.read();
        let seq = m.index.get(id)?;
        m.by_seq.get(seq)?.join.clone()
    }

    pub(super) fn redeem(
        &self,
        id: &SessionId,
        hash: &[u8; 32],
        now: OffsetDateTime,
        actor: Actor,
    ) -> Redeemed {
        let mut m = self.write();
        let outcome = {
            let Some(e) = m.entry_mut(id) else {
                return Redeemed::Refused(JoinRefusal::NotFound);
            };
            let running = e.session.status == SessionStatus::Running;
            match &mut e.join {
                Some(j)
                    if running
                        && j.token_hash == *hash
                        && j.used_at.is_none()
                        && j.expires_at > now =>
                {
                    j.used_at = Some(now);
                    Ok(e.session.clone())
                }
                j => Err(JoinRefusal::of(Some(running), j.as_ref(), hash, now)),
            }
        };
        match outcome {
            Ok(s) => {
                m.append(EventType::SessionJoined, now, actor, Some(&s), None);
                Redeemed::Joined(Box::new(s))
            }
            Err(why) => Redeemed::Refused(why),
        }
    }

    pub(super) fn put_build(&self, b: &BuildRecord) -> bool {
        let mut m = self.write();
        if m.builds.contains_key(&b.build) {
            return false;
        }
        m.builds.insert(b.build.clone(), b.clone());
        true
    }

    pub(super) fn build(&self, id: &BuildId) -> Option<BuildRecord> {
        self.read().builds.get(id).cloned()
    }

    pub(super) fn builds(&self) -> Vec<BuildRecord> {
        let mut all: Vec<BuildRecord> = self.read().builds.values().cloned().collect();
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.build.cmp(&b.build)));
        all.truncate(MAX_BUILDS_LISTED as usize);
        all
    }

    pub(super) fn delete_build(&self, id: &BuildId) -> bool {
        self.write().builds.remove(id).is_some()
    }

    pub(super) fn put_game(
        &self,
        id: &GameId,
        change: &GameChange,
        cond: Option<&Precondition>,
        now: OffsetDateTime,
    ) -> GameWrite {
        let mut m = self.write();
        let current = m.games.get(id);
        if cond.is_some_and(|c| !c.holds(current.map(|g| g.version))) {
            return GameWrite::PreconditionFailed;
        }
        let created = current.is_none();
        let Some(next) = apply_game(id, current, change, now) else {
            return GameWrite::NotApplied;
        };
        m.games.insert(id.clone(), next.clone());
        if created {
            GameWrite::Created(next)
        } else {
            GameWrite::Updated(next)
        }
    }

    pub(super) fn game(&self, id: &GameId) -> Option<GameRecord> {
        self.read().games.get(id).cloned()
    }

    pub(super) fn games(&self) -> Vec<GameRecord> {
        self.read().games.values().cloned().collect()
    }

    pub(super) fn delete_game(&self, id: &GameId, cond: Option<&Precondition>) -> GameRemoved {
        let mut m = self.write();
        let current = m.games.get(id).map(|g| g.version);
        if cond.is_some_and(|c| !c.holds(current)) {
            return GameRemoved::PreconditionFailed;
        }
        match m.games.remove(id) {
            Some(g) => GameRemoved::Removed(Box::new(g)),
            None => GameRemoved::NotFound,
        }
    }

    pub(super) fn secret(&self, name: &str) -> Vec<u8> {
        self.write()
            .secrets
            .entry(name.to_owned())
            .or_insert_with(|| crate::join::random::<32>().to_vec())
            .clone()
    }

    pub(super) fn notice_once(
        &self,
        kind: EventType,
        s: &Session,
        actor: Actor,
        at: OffsetDateTime,
    ) -> bool {
        let mut m = self.write();
        let Some(e) = m
            .index
            .get(&s.session_id)
            .copied()
            .and_then(|seq| m.by_seq.get_mut(&seq))
        else {
            return false;
        };
        if e.session.status != SessionStatus::Running || e.notices.contains(&kind) {
            return false;
        }
        e.notices.push(kind);
        m.append(kind, at, actor, Some(s), None);
        true
    }

    pub(super) fn stream_after(&self, after: u64, limit: u32) -> Vec<Event> {
        let m = self.read();
        // Ids are consecutive: the first kept is `head - len + 1`.
        let first = m.stream_head + 1 - m.stream.len() as u64;
        let skip =
            usize::try_from(after.saturating_add(1).saturating_sub(first)).unwrap_or(usize::MAX);
        m.stream
            .iter()
            .skip(skip)
            .take(limit as usize)
            .cloned()
            .collect()
    }

    pub(super) fn stream_head(&self) -> u64 {
        self.read().stream_head
    }

    pub(super) fn webhook_cursor(&self, endpoint: &str) -> Option<u64> {
        self.read().cursors.get(endpoint).copied()
    }

    pub(super) fn set_webhook_cursor(&self, endpoint: &str, seq: u64) {
        self.write().cursors.insert(endpoint.to_owned(), seq);
    }

    pub(super) fn put_pool(
        &self,
        id: &PoolId,
        spec: &PoolSpec,
        cond: Option<&Precondition>,
    ) -> PoolWrite {
        let mut m = self.write();
        let current = m.pools.get(id).map(|p| p.version);
        if cond.is_some_and(|c| !c.holds(current)) {
            return PoolWrite::PreconditionFailed;
        }
        match m.pools.get_mut(id) {
            Some(p) => {
                p.spec = spec.clone();
                p.version += 1;
                PoolWrite::Updated(p.clone())
            }
            None => {
                let p = PoolRecord {
                    pool_id: id.clone(),
                    spec: spec.clone(),
                    version: 1,
                    claims: 0,
                    misses: 0,
                    failures: 0,
                    last_error: None,
                };
                m.pools.insert(id.clone(), p.clone());
                PoolWrite::Created(p)
            }
        }
    }

    pub(super) fn remove_pool(&self, id: &PoolId, cond: Option<&Precondition>) -> PoolRemoved {
        let mut m = self.write();
        let current = m.pools.get(id).map(|p| p.version);
        if current.is_none() {
            return PoolRemoved::NotFound;
        }
        if cond.is_some_and(|c| !c.holds(current)) {
            return PoolRemoved::PreconditionFailed;
        }
        match m.pools.remove(id) {
            Some(p) => PoolRemoved::Removed(p),
            None => PoolRemoved::NotFound,
        }
    }

    pub(super) fn pools(&self) -> Vec<PoolRecord> {
        self.read().pools.values().cloned().collect()
    }

    pub(super) fn pool_launched(&self, id: &PoolId, r: &LaunchResult) {
        let mut m = self.write();
        let Some(p) = m.pools.get_mut(id) else { return };
        match r {
            LaunchResult::Ready => p.last_error = None,
            LaunchResult::Failed(why) => {
                p.failures += 1;
                p.last_error = Some(bounded_error(why));
            }
        }
    }

    pub(super) fn claim_ready(
        &self,
        pool: &PoolId,
        actor: Actor,
        key: Option<&IdempotencyKey>,
        claimant: Claimant<'_>,
        now: OffsetDateTime,
    ) -> Result<ReadyClaim, StoreError> {
        let mut m = self.write();
        if let Some(k) = key {
            let taken = m
                .keys
                .get(&k.key)
                .is_some_and(|(_, _, at)| now - *at < IDEMPOTENCY_TTL);
            if taken {
                return Ok(ReadyClaim::KeyTaken);
            }
        }
        let oldest = m.ready.get(pool).and_then(|set| {
            set.iter()
                .filter_map(|seq| m.by_seq.get(seq))
                .find(|e| claimant.fits(&e.session))
                .map(|e| e.session.session_id.clone())
        });
        let Some(p) = m.pools.get_mut(pool) else {
            return Ok(ReadyClaim::Empty);
        };
        let Some(id) = oldest else {
            p.misses += 1;
            return Ok(ReadyClaim::Empty);
        };
        if let Some((u, Some(max))) = claimant.user {
            let mine = m
                .by_seq
                .values()
                .filter(|e| !e.session.status.is_terminal())
                .filter(|e| e.session.user_id.as_deref() == Some(u))
                .count();
            if mine >= max as usize {
                return Ok(ReadyClaim::Quota);
            }
        }
        let Some(p) = m.pools.get_mut(pool) else {
            return Ok(ReadyClaim::Empty);
        };
        p.claims += 1;
        if let Some(e) = m
            .index
            .get(&id)
            .copied()
            .and_then(|seq| m.by_seq.get_mut(&seq))
        {
            claimant.take(&mut e.session);
        }
        let s = m.change(&id, &SessionEvent::Claimed, actor, now)?;
        if let Some(k) = key {
            m.keys.insert(
                k.key.clone(),
                (k.request.clone(), s.session_id.clone(), now),
            );
        }
        Ok(ReadyClaim::Claimed(Box::new(s)))
    }
}
