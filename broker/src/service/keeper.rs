//! The pool keeper: one loop that keeps every pool at its size, on the one replica holding the
//! `pools` lease (always, for a broker alone).
//!
//! Each round reads the pools and their live sessions from the store, then for each pool:
//! retires its ready games on draining hosts; launches games for what is missing (after each
//! claim, a ready game that exited, a launch that failed, a host lost); retires ready games
//! past the size; and replaces its oldest ready game once it is older than `max_age_s`, one at
//! a time, launching the replacement first so the pool never runs short for it. A ready game
//! of a central game's build its host no longer offers (a rollout switched the host, a
//! rollback) is replaced the same way. Ready games of a pool that no longer exists are
//! retired.
//!
//! Bounds: pool launches in flight are at most [`LAUNCHES_PER_HOST`] per online host (spread
//! by placement, which picks the least loaded host); a pool whose launches fail waits
//! [`BACKOFF_FIRST`], doubling to [`BACKOFF_MAX`], before it launches again, and reports why in
//! its `last_error` (a new spec starts it afresh). A retirement only ever stops a game still
//! `ready` ([`SessionEvent::Retired`]), so it never races a player's claim.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use protocol::api::{HostStatus, Session, SessionStatus, StartSession};
use protocol::{HostId, PoolId, SessionId};
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pools::{by_pool, PoolSessions};
use super::Service;
use crate::error::Error;
use crate::session::{Actor, SessionEvent};
use crate::store::pools::{LaunchResult, PoolRecord};
use crate::store::StoreError;

/// How often the keeper looks at the pools without being woken.
const ROUND: Duration = Duration::from_millis(500);
/// The lease of the pool keeper among replicas.
const POOL_LEASE: &str = "pools";
/// Pool launches in flight at most, per online host.
pub const LAUNCHES_PER_HOST: usize = 2;
/// A failing pool's first wait before it launches again.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Its longest.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// What the keeper knows between rounds that the store does not say.
#[derive(Debug, Default)]
pub(super) struct Keeper(Mutex<KeeperState>);

#[derive(Debug, Default)]
struct KeeperState {
    /// Each pool's launches in flight here, failures in a row, and when it may launch again.
    pools: HashMap<PoolId, Track>,
    /// Ready games being retired.
    retiring: HashSet<SessionId>,
    /// The last round found no pool, no pool's game and nothing in flight: until a pool
    /// appears, rounds read only the pools.
    idle: bool,
}

#[derive(Debug, Default, Clone)]
struct Track {
    launching: usize,
    failures: u32,
    retry_at: Option<Instant>,
    /// The spec's version the failures were counted under.
    version: u64,
}

impl Keeper {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeeperState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn launching(&self) -> usize {
        self.lock().pools.values().map(|t| t.launching).sum()
    }
}

/// The wait after `failures` failures in a row.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
}

/// What a round does for one pool.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// Games to launch.
    pub launch: usize,
    /// Ready games to retire.
    pub retire: Vec<SessionId>,
}

/// A pool's plan for this round: `ready` oldest first, `starting` launches in flight,
/// `draining` the hosts that take no new games, `stale` the ready games of a build their host
/// no longer offers, `now` the time.
pub(super) fn plan(
    pool: &PoolRecord,
    live: &PoolSessions,
    starting: usize,
    draining: &HashSet<HostId>,
    stale: &HashSet<SessionId>,
    now: OffsetDateTime,
) -> Plan {
    let size = pool.spec.size as usize;
    let (leaving, ready): (Vec<&Session>, Vec<&Session>) = live
        .ready
        .iter()
        .partition(|s| draining.contains(&s.host_id));
    let mut retire: Vec<SessionId> = leaving.iter().map(|s| s.session_id.clone()).collect();
    let have = ready.len() + starting;
    let max_age = time::Duration::seconds(i64::try_from(pool.max_age_s()).unwrap_or(i64::MAX));
    let aged = |s: &Session| s.started_at.is_some_and(|at| now - at >= max_age);
    let old_build = |s: &Session| stale.contains(&s.session_id);
    let mut launch = 0;
    if ready.len() > size {
        // Launches in flight do not count here: a game goes only for one that is ready. Games
        // of an old build go first, then the oldest.
        let excess = ready.len() - size;
        let (old, current): (Vec<&Session>, Vec<&Session>) =
            ready.iter().partition(|s| old_build(s));
        retire.extend(
            old.iter()
                .chain(current.iter())
                .take(excess)
                .map(|s| s.session_id.clone()),
        );
    } else if have < size {
        launch = size - have;
    } else if starting == 0
        && (ready.first().is_some_and(|s| aged(s)) || ready.iter().any(|s| old_build(s)))
    {
        // Its replacement first; the aged game (or the old build's) goes once the
        // replacement is ready (the pool is then over its size by one).
        launch = 1;
    }
    Plan { launch, retire }
}

impl Service {
    /// Keeps the pools full until `shutdown` fires.
    pub async fn run_pools(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            if self.holds_lease(POOL_LEASE, ROUND * 8).await {
                if let Err(e) = self.keep_pools().await {
                    tracing::warn!(error = %e, "pools: cannot read the pools or their sessions");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.pool_wake.notified() => {}
                () = tokio::time::sleep(ROUND) => {}
            }
        }
    }

    /// One round of the keeper (see the module's doc).
    async fn keep_pools(self: &Arc<Self>) -> Result<(), Error> {
        let pools = self.store.pools().await?;
        if pools.is_empty() && self.keeper.lock().idle {
            return Ok(());
        }
        // Launches in flight are read before the sessions: one that ends in between is
        // counted twice (a round launches one fewer), never missed (one too many).
        let in_flight: HashMap<PoolId, usize> = self
            .keeper
            .lock()
            .pools
            .iter()
            .map(|(p, t)| (p.clone(), t.launching))
            .collect();
        let mut live = by_pool(self.store.active(None).await?);
        let hosts = self.hosts().await?;
        let draining: HashSet<HostId> = hosts
            .iter()
            .filter(|h| h.status == HostStatus::Draining)
            .map(|h| h.host_id.clone())
            .collect();
        let online = hosts
            .iter()
            .filter(|h| h.status == HostStatus::Online)
            .count();
        let stale = self.stale_builds(&live).await;
        let mut budget = (online * LAUNCHES_PER_HOST).saturating_sub(self.keeper.launching());
        let now = OffsetDateTime::now_utc();
        let known: HashSet<&PoolId> = pools.iter().map(|p| &p.pool_id).collect();
        let orphans: Vec<SessionId> = live
            .iter()
            .filter(|(id, _)| !known.contains(id))
            .flat_map(|(_, l)| l.ready.iter().map(|s| s.session_id.clone()))
            .collect();
        self.retire(orphans);
        for pool in &pools {
            let l = live.remove(&pool.pool_id).unwrap_or_default();
            let mine = in_flight.get(&pool.pool_id).copied().unwrap_or(0);
            let starting = mine.max(l.starting as usize);
            let p = plan(pool, &l, starting, &draining, &stale, now);
            self.retire(p.retire);
            if p.launch == 0 || budget == 0 || !self.may_launch(pool) {
                continue;
            }
            let n = p.launch.min(budget);
            budget -= n;
            for _ in 0..n {
                self.spawn_pool_launch(pool);
            }
        }
        let mut state = self.keeper.lock();
        state
            .pools
            .retain(|p, t| t.launching > 0 || known.contains(p));
        // Pools' games still live (orphans: `live` holds what no pool took) keep the next
        // round reading them.
        state.idle = pools.is_empty()
            && live.is_empty()
            && state.pools.is_empty()
            && state.retiring.is_empty();
        Ok(())
    }

    /// Whether `pool` is not backing off now (a new spec ends its backoff).
    fn may_launch(&self, pool: &PoolRecord) -> bool {
        let mut state = self.keeper.lock();
        let t = state.pools.entry(pool.pool_id.clone()).or_default();
        if t.version != pool.version {
            t.version = pool.version;
            t.failures = 0;
            t.retry_at = None;
        }
        t.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    /// Launches one game for `pool`, in a task of its own, and counts how it went.
    fn spawn_pool_launch(self: &Arc<Self>, pool: &PoolRecord) {
        let id = pool.pool_id.clone();
        self.keeper
            .lock()
            .pools
            .entry(id.clone())
            .or_default()
            .launching += 1;
        // Every field spelled out: the pool's spec decides each (a new one must be thought of
        // here). A pool's game has no player, nor a player's limit, until a start claims it.
        let req = StartSession {
            game_id: pool.spec.game_id.clone(),
            mode: pool.spec.mode.clone(),
            config: pool.spec.config.clone(),
            settings: pool.spec.settings.clone(),
            user_id: None,
            max_duration_s: None,
            labels: Default::default(),
            prefer: Default::default(),
        };
        let svc = Arc::clone(self);
        self.tasks.spawn_on(
            async move {
                let result = match svc.launch_for_pool(&id, req).await {
                    Ok(s) if s.status == SessionStatus::Ready => LaunchResult::Ready,
                    Ok(s) => LaunchResult::Failed(format!(
                        "its game was {} as soon as it was launched",
                        s.status
                    )),
                    Err(e) => LaunchResult::Failed(e.to_string()),
                };
                if let LaunchResult::Failed(why) = &result {
                    tracing::warn!(pool = %id, error = %why, "pool launch failed");
                }
                {
                    let mut state = svc.keeper.lock();
                    let t = state.pools.entry(id.clone()).or_default();
                    t.launching = t.launching.saturating_sub(1);
                    match result {
                        LaunchResult::Ready => {
                            t.failures = 0;
                            t.retry_at = None;
                        }
                        LaunchResult::Failed(_) => {
                            t.failures += 1;
                            t.retry_at = Some(Instant::now() + backoff(t.failures));
                        }
                    }
                }
                if let Err(e) = svc.store.pool_launched(&id, &result).await {
                    tracing::warn!(pool = %id, error = %e, "cannot count a pool launch");
                }
                svc.pool_wake.notify_one();
            },
            &self.runtime,
        );
    }

    /// The ready games of a central game's build that their host no longer offers: it
    /// offers the game with another build now (a rollout switched it, or a rollback).
    async fn stale_builds(&self, live: &HashMap<PoolId, PoolSessions>) -> HashSet<SessionId> {
        let central: Vec<&Session> = live
            .values()
            .flat_map(|l| l.ready.iter())
            .filter(|s| s.build.is_some())
            .collect();
        if central.is_empty() {
            return HashSet::new();
        }
        let Ok(hosts) = self.host_builds().await else {
            return HashSet::new();
        };
        central
            .into_iter()
            .filter(|s| {
                let offered = hosts
                    .iter()
                    .find(|h| h.host == s.host_id)
                    .and_then(|h| h.offered(&s.game_id));
                offered.is_some_and(|b| Some(b) != s.build.as_ref())
            })
            .map(|s| s.session_id.clone())
            .collect()
    }

    /// Retires ready games, each in a task of its own: recorded `stopping` only if still
    /// ready, then stopped like any end.
    pub(super) fn retire(self: &Arc<Self>, ids: Vec<SessionId>) {
        for id in ids {
            if !self.keeper.lock().retiring.insert(id.clone()) {
                continue; // Being retired already.
            }
            let svc = Arc::clone(self);
            self.tasks.spawn_on(
                async move {
                    svc.retire_now(&id).await;
                    svc.keeper.lock().retiring.remove(&id);
                },
                &self.runtime,
            );
        }
    }

    /// Retires the ready game `id` and answers once it is stopped; a game claimed (or ended)
    /// meanwhile is left alone: only a `ready` game can be retired.
    pub(super) async fn retire_now(self: &Arc<Self>, id: &SessionId) {
        match self.record(id, SessionEvent::Retired, Actor::Pool).await {
            Ok(_) => {
                if let Err(e) = self.end(id.clone(), Actor::Pool).await {
                    tracing::warn!(session = %id, error = %e, "cannot stop a retired pool game");
                }
            }
            Err(StoreError::Transition(_) | StoreError::NotFound(_)) => {}
            Err(e) => tracing::warn!(session = %id, error = %e, "cannot retire a pool game"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::api::PoolSpec;
    use protocol::GameId;

    fn pool(size: u32, max_age_s: u64) -> PoolRecord {
        PoolRecord {
            pool_id: PoolId::new("p").unwrap(),
            spec: PoolSpec {
                game_id: GameId::new("pong").unwrap(),
                mode: None,
                config: None,
                settings: Default::default(),
                size,
                max_age_s: Some(max_age_s),
            },
            version: 1,
            claims: 0,
            misses: 0,
            failures: 0,
            last_error: None,
        }
    }

    /// A ready game on `host`, ready `age_s` seconds before `now`.
    fn ready(id: &str, host: &str, age_s: i64, now: OffsetDateTime) -> Session {
        let mut s = crate::session::new_session(
            SessionId::new(id).unwrap(),
            GameId::new("pong").unwrap(),
            "default".into(),
            None,
            HostId::new(host).unwrap(),
            now - time::Duration::seconds(age_s + 1),
        );
        s.status = SessionStatus::Ready;
        s.started_at = Some(now - time::Duration::seconds(age_s));
        s
    }

    fn ids(v: &[&str]) -> Vec<SessionId> {
        v.iter().map(|s| SessionId::new(*s).unwrap()).collect()
    }

    #[test]
    fn each_round_launches_what_is_missing_and_retires_what_is_not_wanted() {
        let now = OffsetDateTime::now_utc();
        let none = HashSet::new();
        let draining_b: HashSet<HostId> = [HostId::new("b").unwrap()].into();
        let live = |v: Vec<Session>| PoolSessions {
            ready: v,
            starting: 0,
        };
        let two = || live(vec![ready("s1", "a", 50, now), ready("s2", "b", 10, now)]);
        // Name, pool, its live games, launches in flight, draining hosts, the plan.
        type Case<'a> = (
            &'a str,
            PoolRecord,
            PoolSessions,
            usize,
            &'a HashSet<HostId>,
            Plan,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "empty pool fills",
                pool(5, 3600),
                live(vec![]),
                0,
                &none,
                Plan {
                    launch: 5,
                    retire: vec![],
                },
            ),
            (
                "launches in flight count",
                pool(5, 3600),
                two(),
                2,
                &none,
                Plan {
                    launch: 1,
                    retire: vec![],
                },
            ),
            (
                "full: nothing",
                pool(2, 3600),
                two(),
                0,
                &none,
                Plan::default(),
            ),
            (
                "smaller: the oldest go",
                pool(1, 3600),
                two(),
                0,
                &none,
                Plan {
                    launch: 0,
                    retire: ids(&["s1"]),
                },
            ),
            (
                "aged: a replacement first",
                pool(2, 30),
                two(),
                0,
                &none,
                Plan {
                    launch: 1,
                    retire: vec![],
                },
            ),
            (
                "aged, replacement starting: wait",
                pool(2, 30),
                two(),
                1,
                &none,
                Plan::default(),
            ),
            (
                "aged, replacement ready: the aged one goes",
                pool(2, 30),
                live(vec![
                    ready("s1", "a", 50, now),
                    ready("s2", "b", 10, now),
                    ready("s3", "a", 1, now),
                ]),
                0,
                &none,
                Plan {
                    launch: 0,
                    retire: ids(&["s1"]),
                },
            ),
            (
                "draining host: its games go and are replaced",
                pool(2, 3600),
                two(),
                0,
                &draining_b,
                Plan {
                    launch: 1,
                    retire: ids(&["s2"]),
                },
            ),
            (
                "size 0: all go",
                pool(0, 3600),
                two(),
                0,
                &none,
                Plan {
                    launch: 0,
                    retire: ids(&["s1", "s2"]),
                },
            ),
        ];
        for (name, p, l, starting, draining, want) in cases {
            assert_eq!(
                plan(&p, &l, starting, draining, &HashSet::new(), now),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn a_game_of_a_build_its_host_left_is_replaced_replacement_first() {
        let now = OffsetDateTime::now_utc();
        let none = HashSet::new();
        let s2: HashSet<SessionId> = ids(&["s2"]).into_iter().collect();
        let two = PoolSessions {
            ready: vec![ready("s1", "a", 50, now), ready("s2", "b", 10, now)],
            starting: 0,
        };
        // Full, one of an old build: its replacement first.
        let p = plan(&pool(2, 3600), &two, 0, &none, &s2, now);
        assert_eq!((p.launch, p.retire.len()), (1, 0));
        // Replacement starting: wait.
        assert_eq!(
            plan(&pool(2, 3600), &two, 1, &none, &s2, now),
            Plan::default()
        );
        // Replacement ready: the old build's game goes, not the oldest.
        let three = PoolSessions {
            ready: vec![
                ready("s1", "a", 50, now),
                ready("s2", "b", 10, now),
                ready("s3", "b", 1, now),
            ],
            starting: 0,
        };
        let p = plan(&pool(2, 3600), &three, 0, &none, &s2, now);
        assert_eq!((p.launch, p.retire), (0, ids(&["s2"])));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), BACKOFF_FIRST);
        assert_eq!(backoff(2), BACKOFF_FIRST * 2);
        assert_eq!(backoff(3), BACKOFF_FIRST * 4);
        assert_eq!(backoff(100), BACKOFF_MAX);
    }
}
