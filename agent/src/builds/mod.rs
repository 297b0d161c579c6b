//! Central games on this host (API.md, "Builds and central games"): the games the broker
//! keeps, each with the builds this host is to hold, and what the host offers of them.
//!
//! The broker says which central games exist ([`CentralGames`]) and, for each, its builds in
//! order of preference ([`CentralGame`]). Each build missing here is fetched once by a task of
//! its own ([`fetch`]: the agent token, `Range` to resume, the sha256 checked before anything
//! runs, unpacked read-only under `--state-dir/builds`), tried again with backoff while some
//! game wants it. A game is offered with the first of its builds that is ready; until one is,
//! a host's own catalog entry of the same id is offered instead, and once one is, the central
//! game takes its place (logged once). Whatever changes what the host offers wakes one
//! reporter task, which sends the latest [`AgentMessage::Offers`]: never an older one after a
//! newer.
//!
//! The cache stays within `--build-cache` bytes: once a build is placed, the least recently
//! used builds that no game wants and no running session holds are removed.
//!
//! Knows nothing of processes: the games' table holds builds for its sessions through
//! [`Central::hold`] and [`Central::release`].

mod fetch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use protocol::api::BuildKind;
use protocol::catalog::GameEntry;
use protocol::wire::{AgentMessage, BuildState, BuildStatus, CentralGame, CentralGames, GameOffer};
use protocol::{BuildId, GameId};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::{Catalog, Game};

pub use fetch::FetchError;

/// The first pause before a failed build is tried again; it doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);
/// The longest pause between tries of a failed build.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Settings of [`Central`].
#[derive(Debug, Clone)]
pub struct CentralConfig {
    /// Where builds are kept (`--state-dir/builds`).
    pub dir: PathBuf,
    /// The bytes the cache may take (`--build-cache`); also the most one build may unpack to.
    pub budget: u64,
    /// The agent token, for downloads.
    pub token: Option<String>,
    /// TLS trust for the broker's HTTP API, as for the link.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The host's labels, which a central game's may require.
    pub labels: protocol::labels::Labels,
    /// How many GPUs the host has.
    pub gpus: usize,
}

/// The central games of this host and their builds.
#[derive(Debug)]
pub struct Central {
    config: CentralConfig,
    own: Catalog,
    client: reqwest::Client,
    state: Mutex<State>,
    changed: Notify,
    events: mpsc::Sender<AgentMessage>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

#[derive(Debug, Default)]
struct State {
    /// The broker's HTTP API, once it said.
    url: Option<String>,
    games: BTreeMap<GameId, Vec<Wanted>>,
    builds: HashMap<BuildId, Held>,
    /// Running sessions per build.
    sessions: HashMap<BuildId, usize>,
    /// Games whose host entry a central game replaced, said once each.
    replaced: HashSet<GameId>,
}

/// One build a game wants.
#[derive(Debug)]
struct Wanted {
    build: BuildId,
    kind: BuildKind,
    size: u64,
    entry: Result<GameEntry, String>,
    /// The entry checked against the unpacked build, once it is ready.
    game: Option<Result<Arc<Game>, String>>,
}

/// A build on (or on its way to) this host's disk.
#[derive(Debug)]
struct Held {
    status: Status,
    /// Bytes on disk, once ready.
    bytes: u64,
    /// When a session last launched it (or it was placed).
    used: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Fetching,
    Ready,
    Failed(String),
}

/// Why [`Central::new`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CentralError {
    /// The cache directory cannot be made or read.
    #[error("cannot use the build cache {}: {source}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP client cannot be made.
    #[error("cannot make the HTTP client for builds: {0}")]
    Client(String),
}

impl Central {
    /// Opens the cache at `config.dir` (the builds already there are ready; what an
    /// interrupted unpack left is removed; partial downloads stay, to be resumed). Blocking.
    pub fn new(
        config: CentralConfig,
        own: Catalog,
        events: mpsc::Sender<AgentMessage>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, CentralError> {
        let dir_err = |source| CentralError::Dir {
            dir: config.dir.clone(),
            source,
        };
        std::fs::create_dir_all(&config.dir).map_err(dir_err)?;
        let mut builds = HashMap::new();
        for entry in std::fs::read_dir(&config.dir).map_err(dir_err)? {
            let entry = entry.map_err(dir_err)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(build) = BuildId::new(name.clone()) {
                let used = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                let bytes = fetch::disk_usage(&entry.path());
                builds.insert(
                    build,
                    Held {
                        status: Status::Ready,
                        bytes,
                        used,
                    },
                );
            } else if name.contains(".unpacking-") {
                let _ = archive::make_writable(&entry.path());
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let mut client = reqwest::Client::builder()
            .connect_timeout(fetch::IDLE_TIMEOUT)
            .user_agent(concat!("arcade-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(tls) = &config.tls {
            client = client.use_preconfigured_tls((**tls).clone());
        }
        let client = client
            .build()
            .map_err(|e| CentralError::Client(e.to_string()))?;
        let me = Arc::new(Self {
            config,
            own,
            client,
            state: Mutex::new(State {
                builds,
                ..State::default()
            }),
            changed: Notify::new(),
            events,
            tracker,
            shutdown,
        });
        let reporter = Arc::clone(&me);
        me.tracker.spawn(async move { reporter.report().await });
        Ok(me)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The broker's set of central games: any other is dropped.
    pub fn set_games(self: &Arc<Self>, set: CentralGames) {
        {
            let mut st = self.lock();
            st.url = Some(set.builds_url);
            let keep: HashSet<&GameId> = set.games.iter().collect();
            st.games.retain(|id, _| keep.contains(id));
        }
        self.evict();
        self.changed.notify_one();
    }

    /// One central game's builds for this host, the one to offer first.
    pub fn set_game(self: &Arc<Self>, game: CentralGame) {
        let mut fetch = Vec::new();
        {
            let mut st = self.lock();
            let wanted: Vec<Wanted> = game
                .builds
                .into_iter()
                .map(|b| {
                    let entry = serde_json::from_str::<GameEntry>(&b.entry)
                        .map_err(|e| format!("the game's entry does not decode: {e}"));
                    let mut w = Wanted {
                        build: b.build,
                        kind: b.kind,
                        size: b.size,
                        entry,
                        game: None,
                    };
                    if st.builds.get(&w.build).map(|h| &h.status) == Some(&Status::Ready) {
                        w.game = Some(self.check(&w));
                    }
                    w
                })
                .collect();
            for w in &wanted {
                // A build already known is placed, or has its task fetching it.
                if !st.builds.contains_key(&w.build) {
                    st.builds.insert(
                        w.build.clone(),
                        Held {
                            status: Status::Fetching,
                            bytes: 0,
                            used: SystemTime::now(),
                        },
                    );
                    fetch.push((w.build.clone(), w.kind, w.size));
                }
            }
            st.games.insert(game.game_id, wanted);
        }
        for (build, kind, size) in fetch {
            let me = Arc::clone(self);
            self.tracker
                .spawn(async move { me.fetch_while_wanted(build, kind, size).await });
        }
        self.changed.notify_one();
    }

    /// `w`'s entry checked against its unpacked build.
    fn check(&self, w: &Wanted) -> Result<Arc<Game>, String> {
        let entry = w.entry.clone()?;
        let game = Game::check_central(entry, &fetch::path(&self.config.dir, &w.build))
            .map_err(|e| format!("the game's entry: {e}"))?;
        match game.misfit(&self.config.labels, self.config.gpus) {
            Some(why) => Err(format!("this host cannot run it: {why}")),
            None => Ok(Arc::new(game)),
        }
    }

    /// Fetches `build` until it is placed, or no game wants it any more, or the agent stops.
    async fn fetch_while_wanted(self: Arc<Self>, build: BuildId, kind: BuildKind, size: u64) {
        let mut pause = RETRY_MIN;
        loop {
            let url = {
                let mut st = self.lock();
                let url = st.url.clone();
                let wanted = st.games.values().flatten().any(|w| w.build == build);
                if !wanted || url.is_none() {
                    // Forgotten: a game that wants it again starts a new task.
                    st.builds.remove(&build);
                    return;
                }
                url.unwrap_or_default()
            };
            let from = fetch::Source {
                client: &self.client,
                url: &url,
                token: self.config.token.as_deref(),
            };
            tracing::info!(%build, size, "fetching a build");
            let result = tokio::select! {
                () = self.shutdown.cancelled() => return,
                r = fetch::fetch(&from, &self.config.dir, &build, kind, size, self.config.budget) => r,
            };
            match result {
                Ok(bytes) => {
                    tracing::info!(%build, bytes, "build ready");
                    self.placed(&build, bytes);
                    self.evict();
                    self.changed.notify_one();
                    return;
                }
                Err(e) => {
                    let why = describe(&e);
                    tracing::warn!(%build, error = %why, retry_in = ?pause, "cannot fetch a build; the host keeps what it offers");
                    if let Some(h) = self.lock().builds.get_mut(&build) {
                        h.status = Status::Failed(why);
                    }
                    self.changed.notify_one();
                }
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(RETRY_MAX);
            if let Some(h) = self.lock().builds.get_mut(&build) {
                h.status = Status::Fetching;
            }
            self.changed.notify_one();
        }
    }

    /// `build` is in place: its games' entries are checked against it.
    fn placed(&self, build: &BuildId, bytes: u64) {
        let mut st = self.lock();
        st.builds.insert(
            build.clone(),
            Held {
                status: Status::Ready,
                bytes,
                used: SystemTime::now(),
            },
        );
        let mut checked = Vec::new();
        for (id, wanted) in &st.games {
            for (i, w) in wanted.iter().enumerate() {
                if w.build == *build {
                    checked.push((id.clone(), i, self.check(w)));
                }
            }
        }
        for (id, i, game) in checked {
            if let Some(w) = st.games.get_mut(&id).and_then(|ws| ws.get_mut(i)) {
                if let Err(e) = &game {
                    tracing::warn!(game = %id, %build, error = %e, "central game cannot run here");
                }
                w.game = Some(game);
            }
        }
    }

    /// Removes least recently used builds that nothing needs while the cache is over its
    /// budget (on the blocking pool).
    fn evict(self: &Arc<Self>) {
        let doomed = {
            let mut st = self.lock();
            let needed: HashSet<BuildId> = st
                .games
                .values()
                .flatten()
                .map(|w| w.build.clone())
                .chain(st.sessions.keys().cloned())
                .collect();
            let mut total: u64 = st.builds.values().map(|h| h.bytes).sum();
            let mut spare: Vec<(SystemTime, BuildId, u64)> = st
                .builds
                .iter()
                .filter(|(b, h)| h.status == Status::Ready && !needed.contains(*b))
                .map(|(b, h)| (h.used, b.clone(), h.bytes))
                .collect();
            spare.sort();
            let mut doomed = Vec::new();
            for (_, build, bytes) in spare {
                if total <= self.config.budget {
                    break;
                }
                total -= bytes;
                st.builds.remove(&build);
                doomed.push(build);
            }
            doomed
        };
        if doomed.is_empty() {
            return;
        }
        let dir = self.config.dir.clone();
        self.tracker.spawn_blocking(move || {
            for build in doomed {
                let path = fetch::path(&dir, &build);
                let _ = archive::make_writable(&path);
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                match removed {
                    Ok(()) => tracing::info!(%build, "build removed from the cache"),
                    Err(e) => tracing::warn!(%build, error = %e, "cannot remove a build"),
                }
            }
        });
    }

    /// The checked game and its build's place, for a launch of `game` on `build`: only one
    /// this host offers or keeps ready.
    pub fn game(&self, game: &GameId, build: &BuildId) -> Option<(Arc<Game>, PathBuf)> {
        let st = self.lock();
        if st.builds.get(build).map(|h| &h.status) != Some(&Status::Ready) {
            return None;
        }
        let w = st.games.get(game)?.iter().find(|w| w.build == *build)?;
        let g = w.game.as_ref()?.as_ref().ok()?;
        Some((Arc::clone(g), fetch::path(&self.config.dir, build)))
    }

    /// A session of `build` runs: the build is kept while it does.
    pub fn hold(&self, build: &BuildId) {
        let mut st = self.lock();
        *st.sessions.entry(build.clone()).or_default() += 1;
        if let Some(h) = st.builds.get_mut(build) {
            h.used = SystemTime::now();
        }
    }

    /// A session of `build` ended.
    pub fn release(self: &Arc<Self>, build: &BuildId) {
        {
            let mut st = self.lock();
            if let Some(n) = st.sessions.get_mut(build) {
                *n -= 1;
                if *n == 0 {
                    st.sessions.remove(build);
                }
            }
        }
        self.evict();
    }

    /// What this host offers now: its own games (unless a central game of the same id is
    /// ready) and each central game with its first ready build; and where it is with each
    /// central game's builds.
    pub fn offers(&self) -> (Vec<GameOffer>, Vec<BuildState>) {
        let mut st = self.lock();
        let mut games = Vec::new();
        let mut states = Vec::new();
        let mut newly_replaced = Vec::new();
        for (id, wanted) in &st.games {
            let ready = wanted.iter().find_map(|w| {
                let ok = st.builds.get(&w.build).map(|h| &h.status) == Some(&Status::Ready);
                match (&w.game, ok) {
                    (Some(Ok(g)), true) => Some(g.offer(id, Some(w.build.clone()))),
                    _ => None,
                }
            });
            if let Some(offer) = ready {
                if self.own.game(id).is_some() && !st.replaced.contains(id) {
                    newly_replaced.push(id.clone());
                }
                games.push(offer);
            }
            for w in wanted {
                let status = match (&w.game, st.builds.get(&w.build).map(|h| &h.status)) {
                    (Some(Err(e)), _) => BuildStatus::Failed(e.clone()),
                    (_, Some(Status::Ready)) => BuildStatus::Ready,
                    (_, Some(Status::Failed(e))) if !e.is_empty() => BuildStatus::Failed(e.clone()),
                    _ => BuildStatus::Fetching,
                };
                states.push(BuildState {
                    game_id: id.clone(),
                    build: w.build.clone(),
                    status,
                });
            }
        }
        let central: HashSet<GameId> = games.iter().map(|g| g.game_id.clone()).collect();
        games.extend(
            self.own
                .offers()
                .into_iter()
                .filter(|o| !central.contains(&o.game_id)),
        );
        games.sort_by(|a, b| a.game_id.cmp(&b.game_id));
        for id in newly_replaced {
            tracing::info!(game = %id, "a central game takes the place of this host's own entry");
            st.replaced.insert(id);
        }
        (games, states)
    }

    /// Sends the latest offers whenever they change, until the agent stops.
    async fn report(self: Arc<Self>) {
        let mut last = self.offers();
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = self.changed.notified() => {}
            }
            let now = self.offers();
            if now == last {
                continue;
            }
            let (games, builds) = now.clone();
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                sent = self.events.send(AgentMessage::Offers { games, builds }) => {
                    if sent.is_err() {
                        return;
                    }
                }
            }
            last = now;
        }
    }
}

/// `e` and every cause under it its message does not already say: an unpack's "failed to
/// unpack x" says why only in its cause ("No space left on device").
fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_says_its_deepest_cause() {
        let disk = std::io::Error::from_raw_os_error(28);
        let tar = std::io::Error::other(Wrapped(disk));
        let e = FetchError::Unpack(archive::UnpackError::Write {
            dir: "/b".into(),
            source: tar,
        });
        let text = describe(&e);
        assert!(
            text.starts_with("cannot unpack the build: cannot unpack into /b: failed"),
            "{text}"
        );
        assert!(
            text.ends_with("No space left on device (os error 28)"),
            "{text}"
        );
        assert_eq!(text.matches("failed to unpack").count(), 1, "{text}");
    }

    /// An error that says less than its cause, as tar's does.
    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("failed to unpack `x`")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
