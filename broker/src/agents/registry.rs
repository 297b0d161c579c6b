//! The registry of hosts: what each agent offered, its load, whether it is connected or
//! draining, which sessions hold its slots and GPUs, and where each host is in its life
//! (idle since when, drained).
//!
//! Its lock is a `std::sync::Mutex` held only for map updates and for placement (a lookup in
//! a [`HostIndex`] kept up to date with every change, under a microsecond at 10,000 hosts),
//! never across an `.await`. Placing and reserving the slots and GPUs happen under the same
//! lock, so concurrent starts never put more on a host than its `max_sessions`, and never
//! give one GPU to two sessions.
//!
//! The registry holds each connected host's [`AgentLink`] (a channel to the task that owns the
//! connection), never the connection itself.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use protocol::api::{self, HostStatus};
use protocol::wire::{Hello, HostFacts, Load};
use protocol::{GameId, HostId, SessionId};
use time::OffsetDateTime;

use super::handle::AgentLink;
use crate::placement::{HostIndex, HostView, PlacementError, Request, Strategy};

/// Identifies one connection of a host, so a stale connection's disconnect does not unplug a
/// newer one.
pub type ConnId = u64;

#[derive(Debug)]
struct HostEntry {
    view: HostView,
    facts: HostFacts,
    mem_used_bytes: u64,
    last_seen: OffsetDateTime,
    last_seen_at: Instant,
    draining: bool,
    conn: Option<(ConnId, AgentLink)>,
    /// Set once the broker has squared its records with the host's games; until then the host
    /// takes no session.
    ready: bool,
    /// The epoch of this connection's ownership of the host, once recorded (replicas).
    epoch: Option<u64>,
    /// The sessions placed here and not over, with what each holds.
    held: HashMap<SessionId, Held>,
    /// Since when it has had no session while online, and whether `host.idle` was said of
    /// this idle period.
    idle: Option<(Instant, bool)>,
    /// Whether `host.drained` was said of this drain.
    drained_said: bool,
}

/// What one session holds of its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Its share of `max_sessions` (its game's `slots`).
    pub slots: u32,
    /// Its GPUs.
    pub gpus: Vec<u32>,
}

impl HostEntry {
    /// A host as first known: offline, not draining, no slot held, seen now.
    fn offline(host: &HostId, facts: HostFacts) -> Self {
        Self {
            view: HostView {
                host_id: host.clone(),
                status: HostStatus::Offline,
                games: facts.games.clone(),
                max_sessions: facts.max_sessions,
                used: 0,
                cpu_percent: 0.0,
                labels: Arc::new(facts.labels.clone()),
                gpus_free: u32::try_from(facts.gpus.len()).unwrap_or(u32::MAX),
            },
            facts,
            mem_used_bytes: 0,
            last_seen: OffsetDateTime::now_utc(),
            last_seen_at: Instant::now(),
            draining: false,
            conn: None,
            ready: false,
            epoch: None,
            held: HashMap::new(),
            idle: None,
            drained_said: false,
        }
    }

    /// GPUs of the host that sessions hold.
    fn gpus_used(&self) -> u32 {
        let n: usize = self.held.values().map(|h| h.gpus.len()).sum();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The host's GPUs no session holds, lowest listed first.
    fn free_gpus(&self) -> impl Iterator<Item = u32> + '_ {
        self.facts
            .gpus
            .iter()
            .copied()
            .filter(|g| !self.held.values().any(|h| h.gpus.contains(g)))
    }

    fn refresh_view(&mut self) {
        self.view.status = match (&self.conn, self.ready, self.draining) {
            (None, _, _) | (Some(_), false, _) => HostStatus::Offline,
            (Some(_), true, true) => HostStatus::Draining,
            (Some(_), true, false) => HostStatus::Online,
        };
        self.view.used = self
            .held
            .values()
            .fold(0u32, |n, h| n.saturating_add(h.slots));
        let gpus = u32::try_from(self.facts.gpus.len()).unwrap_or(u32::MAX);
        self.view.gpus_free = gpus.saturating_sub(self.gpus_used());
    }

    /// Takes the facts an agent sent: its games, capacity, labels.
    fn set_facts(&mut self, facts: HostFacts) {
        self.view.games.clone_from(&facts.games);
        self.view.max_sessions = facts.max_sessions;
        if *self.view.labels != facts.labels {
            self.view.labels = Arc::new(facts.labels.clone());
        }
        self.facts = facts;
    }

    fn to_api(&self) -> api::Host {
        api::Host {
            host_id: self.view.host_id.clone(),
            ip: self.facts.ip,
            status: self.view.status,
            max_sessions: self.view.max_sessions,
            sessions: u32::try_from(self.held.len()).unwrap_or(u32::MAX),
            cpu_percent: self.view.cpu_percent,
            mem_used_bytes: self.mem_used_bytes,
            mem_total_bytes: self.facts.mem_total_bytes,
            games: self.facts.games.iter().map(|g| g.game_id.clone()).collect(),
            last_seen: self.last_seen,
            broker_id: None,
            labels: (*self.view.labels).clone(),
            gpus: self.facts.gpus.clone(),
            gpus_used: self.gpus_used(),
            slots_used: self.view.used,
        }
    }
}

/// Why a host cannot register.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// Another connection holds this host id.
    #[error("host id {0} is already connected")]
    AlreadyConnected(HostId),
}

/// A placed session: where it goes and how to reach the agent.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The host.
    pub host_id: HostId,
    /// The mode chosen.
    pub mode: String,
    /// For a central game, the build the host offers it with.
    pub build: Option<protocol::BuildId>,
    /// The host's agent.
    pub link: AgentLink,
    /// What the session holds there: its game's slots, and its GPUs.
    pub held: Held,
    /// The host's labels.
    pub labels: protocol::labels::Labels,
}

/// A connected host, as [`Registry::links`] lists it.
#[derive(Debug, Clone)]
pub struct Linked {
    /// The host.
    pub host: HostId,
    /// Its connection.
    pub conn: ConnId,
    /// Its agent.
    pub link: AgentLink,
    /// Whether it holds (or fetches) central games' builds.
    pub holds_builds: bool,
    /// Its labels.
    pub labels: Arc<protocol::labels::Labels>,
    /// How many GPUs it has.
    pub gpus: usize,
}

/// A change in a host's life the broker announces (`host.idle`, `host.drained`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMoment {
    /// No session for the idle period.
    Idle,
    /// Draining, and its last session ended.
    Drained,
}

/// All hosts ever registered since the broker started.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
    next_conn: std::sync::atomic::AtomicU64,
}

/// The hosts and placement's index of them, changed together under one lock.
#[derive(Debug, Default)]
struct Inner {
    hosts: HashMap<HostId, HostEntry>,
    index: HostIndex,
}

impl Inner {
    /// Applies `change` to a known host and brings the index up to date.
    fn update<R>(&mut self, host: &HostId, change: impl FnOnce(&mut HostEntry) -> R) -> Option<R> {
        let e = self.hosts.get_mut(host)?;
        let r = change(e);
        self.index.upsert(&e.view);
        Some(r)
    }
}

impl Registry {
    /// An empty registry whose placement follows `strategy`.
    pub fn new(strategy: Strategy) -> Self {
        Self {
            inner: Mutex::new(Inner {
                hosts: HashMap::new(),
                index: HostIndex::new(strategy),
            }),
            next_conn: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connected agent. A known host keeps its slots and its drained flag.
    pub fn register(&self, hello: &Hello, link: AgentLink) -> Result<ConnId, RegisterError> {
        let id = self
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut inner = self.lock();
        let Inner { hosts, index } = &mut *inner;
        let now = OffsetDateTime::now_utc();
        let entry = hosts
            .entry(hello.host_id.clone())
            .or_insert_with(|| HostEntry::offline(&hello.host_id, hello.facts.clone()));
        if entry.conn.is_some() {
            return Err(RegisterError::AlreadyConnected(hello.host_id.clone()));
        }
        entry.set_facts(hello.facts.clone());
        entry.last_seen = now;
        entry.last_seen_at = Instant::now();
        entry.conn = Some((id, link));
        entry.ready = false;
        entry.epoch = None;
        entry.refresh_view();
        index.upsert(&entry.view);
        Ok(id)
    }

    /// A connected host's new offers (a central game's build became ready, or went), as its
    /// agent said: answers its facts now, for the store, or `None` if `conn` is not its
    /// connection any more.
    pub fn set_offers(
        &self,
        host: &HostId,
        conn: ConnId,
        games: Vec<protocol::wire::GameOffer>,
        builds: Vec<protocol::wire::BuildState>,
    ) -> Option<HostFacts> {
        self.lock()
            .update(host, |e| {
                if e.conn.as_ref().map(|(id, _)| *id) != Some(conn) {
                    return None;
                }
                let mut facts = e.facts.clone();
                facts.games = games;
                facts.builds = builds;
                e.set_facts(facts);
                Some(e.facts.clone())
            })
            .flatten()
    }

    /// The connected hosts' links, each with its connection's id and whether the host holds
    /// central games' builds.
    pub fn links(&self) -> Vec<Linked> {
        self.lock()
            .hosts
            .iter()
            .filter_map(|(h, e)| {
                let (id, link) = e.conn.as_ref()?;
                Some(Linked {
                    host: h.clone(),
                    conn: *id,
                    link: link.clone(),
                    holds_builds: !e.facts.builds.is_empty(),
                    labels: Arc::clone(&e.view.labels),
                    gpus: e.facts.gpus.len(),
                })
            })
            .collect()
    }

    /// Every host known here: whether it is online, and where it is with central games'
    /// builds.
    pub fn builds(&self) -> Vec<(HostId, bool, Vec<protocol::wire::BuildState>)> {
        self.lock()
            .hosts
            .iter()
            .map(|(h, e)| {
                (
                    h.clone(),
                    e.view.status == HostStatus::Online,
                    e.facts.builds.clone(),
                )
            })
            .collect()
    }

    /// Lets a registered host take sessions (its games are reconciled).
    pub fn mark_ready(&self, host: &HostId) {
        self.lock().update(host, |e| {
            e.ready = e.conn.is_some();
            e.refresh_view();
        });
    }

    /// Adds a host known from the store, offline until it reconnects. A host already known
    /// keeps what it has; `drained` is applied either way.
    pub fn restore(&self, host: &HostId, facts: Option<&HostFacts>, drained: bool) {
        let mut inner = self.lock();
        let Inner { hosts, index } = &mut *inner;
        // Last seen now, counted from the broker's start: a host gets the whole timeout to come
        // back.
        let entry = hosts.entry(host.clone()).or_insert_with(|| {
            let facts = facts.cloned().unwrap_or(HostFacts {
                hostname: String::new(),
                ip: IpAddr::from([0, 0, 0, 0]),
                cpus: 0,
                mem_total_bytes: 0,
                games: Vec::new(),
                max_sessions: 0,
                port_range: protocol::wire::PortRange { lo: 0, hi: 0 },
                builds: Vec::new(),
                labels: protocol::labels::Labels::new(),
                gpus: Vec::new(),
            });
            HostEntry::offline(host, facts)
        });
        entry.draining |= drained;
        entry.refresh_view();
        index.upsert(&entry.view);
    }

    /// How many hosts have an agent connected now.
    pub fn connected(&self) -> usize {
        self.lock()
            .hosts
            .values()
            .filter(|e| e.conn.is_some())
            .count()
    }

    /// Whether the host was ever known.
    pub fn knows(&self, host: &HostId) -> bool {
        self.lock().hosts.contains_key(host)
    }

    /// Marks a host's connection gone (if `conn` is still its connection), and answers the
    /// epoch its ownership had, if one was recorded.
    pub fn disconnect(&self, host: &HostId, conn: ConnId) -> Option<u64> {
        self.lock()
            .update(host, |e| {
                if e.conn.as_ref().is_some_and(|(c, _)| *c == conn) {
                    e.conn = None;
                    e.ready = false;
                    e.refresh_view();
                    e.epoch.take()
                } else {
                    None
                }
            })
            .flatten()
    }

    /// Records the epoch of a connected host's ownership (replicas).
    pub fn set_epoch(&self, host: &HostId, epoch: u64) {
        self.lock().update(host, |e| {
            if e.conn.is_some() {
                e.epoch = Some(epoch);
            }
        });
    }

    /// The epoch of a connected host's ownership, once recorded.
    pub fn epoch(&self, host: &HostId) -> Option<u64> {
        self.lock()
            .hosts
            .get(host)
            .filter(|e| e.conn.is_some())
            .and_then(|e| e.epoch)
    }

    /// The connected hosts whose ownership is recorded: each with its epoch, CPU use and
    /// memory in use from its last heartbeat.
    pub fn held(&self) -> Vec<(HostId, u64, f32, u64)> {
        self.lock()
            .hosts
            .values()
            .filter(|e| e.conn.is_some())
            .filter_map(|e| {
                let epoch = e.epoch?;
                Some((
                    e.view.host_id.clone(),
                    epoch,
                    e.view.cpu_percent,
                    e.mem_used_bytes,
                ))
            })
            .collect()
    }

    /// CPU and memory in use on a connected host, from its last heartbeat.
    pub fn load(&self, host: &HostId) -> Option<(f32, u64)> {
        self.lock()
            .hosts
            .get(host)
            .filter(|e| e.conn.is_some())
            .map(|e| (e.view.cpu_percent, e.mem_used_bytes))
    }

    /// Notes that a host was heard from, with its load when it sent one.
    pub fn seen(&self, host: &HostId, load: Option<&Load>) {
        // Not through `Inner::update`: the hottest path at scale (every heartbeat of every
        // agent) changes at most the CPU figure, which `set_cpu` re-ranks without comparing
        // or copying the whole view.
        let mut inner = self.lock();
        let Inner { hosts, index } = &mut *inner;
        let Some(e) = hosts.get_mut(host) else {
            return;
        };
        e.last_seen = OffsetDateTime::now_utc();
        e.last_seen_at = Instant::now();
        if let Some(l) = load {
            e.view.cpu_percent = l.cpu_percent;
            e.mem_used_bytes = l.mem_used_bytes;
            index.set_cpu(host, l.cpu_percent);
        }
    }

    /// Chooses a host for a new session of `req` and reserves its slots and GPUs there for
    /// `session`: `prefer` when it can take the session, else placement's choice among the
    /// hosts here. Exact: the choice and the reservation are made under one lock, and the
    /// GPUs given are the lowest free ones of the host's list.
    pub fn place(
        &self,
        req: &Request<'_>,
        session: &SessionId,
        prefer: Option<&HostId>,
    ) -> Result<Placed, PlacementError> {
        let mut inner = self.lock();
        let preferred = prefer.and_then(|h| {
            let e = inner.hosts.get(h)?;
            crate::placement::place(std::iter::once(&e.view), req, Strategy::Spread).ok()
        });
        let choice = match preferred {
            Some(c) => c,
            None => inner.index.place(req)?,
        };
        let placed = inner
            .update(&choice.host_id, |e| {
                let link = e.conn.as_ref().map(|(_, l)| l.clone())?;
                let offer = e.facts.games.iter().find(|g| &g.game_id == req.game)?;
                let (build, slots, wanted) = (offer.build.clone(), offer.slots.max(1), offer.gpus);
                let gpus: Vec<u32> = e.free_gpus().take(wanted as usize).collect();
                if gpus.len() < wanted as usize {
                    return None;
                }
                let held = Held { slots, gpus };
                e.held.insert(session.clone(), held.clone());
                e.idle = None;
                e.refresh_view();
                Some((link, build, held, (*e.view.labels).clone()))
            })
            .flatten();
        let (link, build, held, labels) = placed.ok_or(PlacementError::NoCapacity)?;
        Ok(Placed {
            host_id: choice.host_id,
            mode: choice.mode,
            build,
            link,
            held,
            labels,
        })
    }

    /// Holds what a session found running on a host (after a reconnect) holds: its slots and
    /// GPUs, as its agent says.
    pub fn hold(&self, host: &HostId, session: &SessionId, held: Held) {
        self.lock().update(host, |e| {
            e.held.insert(session.clone(), held);
            e.idle = None;
            e.refresh_view();
        });
    }

    /// Takes back a moment [`Registry::moments`] gave that could not be announced: it is
    /// given again at the next call, if it still holds.
    pub fn unsay(&self, host: &HostId, moment: HostMoment) {
        if let Some(e) = self.lock().hosts.get_mut(host) {
            match moment {
                HostMoment::Idle => {
                    if let Some((_, told)) = &mut e.idle {
                        *told = false;
                    }
                }
                HostMoment::Drained => e.drained_said = false,
            }
        }
    }

    /// Frees what a session held.
    pub fn release(&self, host: &HostId, session: &SessionId) {
        self.lock().update(host, |e| {
            if e.held.remove(session).is_some() {
                e.refresh_view();
            }
        });
    }

    /// The moments of its hosts' lives to announce now, each once: `host.drained` for a
    /// draining host with no session left, `host.idle` for an online one without a session
    /// for `idle_after` (again after each busy period). Only hosts whose agent is connected
    /// here: with replicas, each host's owner says it.
    pub fn moments(&self, idle_after: Duration) -> Vec<(HostMoment, api::Host)> {
        let now = Instant::now();
        let mut said = Vec::new();
        for e in self.lock().hosts.values_mut() {
            let online = e.conn.is_some() && e.ready;
            if !e.draining {
                e.drained_said = false;
            }
            if !online {
                e.idle = None;
                continue;
            }
            let empty = e.held.is_empty();
            if e.draining && empty && !e.drained_said {
                e.drained_said = true;
                said.push((HostMoment::Drained, e.to_api()));
            }
            if !empty || e.draining {
                e.idle = None;
                continue;
            }
            let (since, told) = e.idle.get_or_insert((now, false));
            if !*told && now.duration_since(*since) >= idle_after {
                *told = true;
                said.push((HostMoment::Idle, e.to_api()));
            }
        }
        said
    }

    /// The agent of a connected host.
    pub fn link(&self, host: &HostId) -> Option<AgentLink> {
        self.lock()
            .hosts
            .get(host)
            .and_then(|e| e.conn.as_ref().map(|(_, l)| l.clone()))
    }

    /// How `host` offers `game` (its modes, readiness timeout, settings and limits); `None`
    /// when the host or its offer of the game is not known.
    pub fn offer(&self, host: &HostId, game: &GameId) -> Option<protocol::wire::GameOffer> {
        let inner = self.lock();
        inner
            .hosts
            .get(host)?
            .facts
            .games
            .iter()
            .find(|g| &g.game_id == game)
            .cloned()
    }

    /// The settings a game offers, as a connected host that offers it says.
    pub fn game_settings(&self, game: &GameId) -> Option<Vec<protocol::settings::SettingOffer>> {
        let inner = self.lock();
        inner
            .hosts
            .values()
            .filter(|e| e.conn.is_some())
            .flat_map(|e| e.facts.games.iter())
            .find(|g| &g.game_id == game)
            .map(|g| g.settings.clone())
    }

    /// Whether any host's agent is connected (its host online or draining).
    pub fn any_connected(&self) -> bool {
        self.lock().hosts.values().any(|e| e.conn.is_some())
    }

    /// The IP a host advertises.
    pub fn ip(&self, host: &HostId) -> Option<IpAddr> {
        self.lock().hosts.get(host).map(|e| e.facts.ip)
    }

    /// Drains (`true`) or resumes (`false`) a host; `None` for an unknown host.
    pub fn set_draining(&self, host: &HostId, draining: bool) -> Option<api::Host> {
        self.lock().update(host, |e| {
            e.draining = draining;
            e.refresh_view();
            e.to_api()
        })
    }

    /// Every host, by id.
    pub fn hosts(&self) -> Vec<api::Host> {
        let inner = self.lock();
        let mut v: Vec<api::Host> = inner.hosts.values().map(HostEntry::to_api).collect();
        v.sort_by(|a, b| a.host_id.cmp(&b.host_id));
        v
    }

    /// The games of online hosts, by id, with the modes any of them offers.
    pub fn games(&self) -> Vec<api::Game> {
        games_on_offer(self.lock().hosts.values().map(|e| &e.view))
    }

    /// Hosts not connected for longer than `timeout` that still hold slots.
    pub fn lost_hosts(&self, timeout: Duration) -> Vec<HostId> {
        self.lock()
            .hosts
            .values()
            .filter(|e| e.conn.is_none() && !e.held.is_empty())
            .filter(|e| e.last_seen_at.elapsed() > timeout)
            .map(|e| e.view.host_id.clone())
            .collect()
    }
}

/// The games of the online hosts among `views`, by id, with the modes any of them offers.
pub fn games_on_offer<'a>(views: impl IntoIterator<Item = &'a HostView>) -> Vec<api::Game> {
    let mut games: BTreeMap<GameId, api::Game> = BTreeMap::new();
    for v in views.into_iter().filter(|v| v.status == HostStatus::Online) {
        for offer in &v.games {
            let g = games
                .entry(offer.game_id.clone())
                .or_insert_with(|| api::Game {
                    game_id: offer.game_id.clone(),
                    modes: Vec::new(),
                    hosts: 0,
                    settings: offer.settings.clone(),
                    build: None,
                    source: api::GameSource::Host,
                    rollout: None,
                });
            g.hosts += 1;
            for m in &offer.modes {
                if !g.modes.contains(m) {
                    g.modes.push(m.clone());
                }
            }
        }
    }
    games.into_values().collect()
}
