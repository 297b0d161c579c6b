//! The games this agent runs: launching, watching and stopping their process groups.
//!
//! [`Games`] owns every running game. Each game is started directly (no shell) as the leader
//! of a new process group, and gets one supervising task that reaps it and then watches the
//! group: a launcher that forks the real game and exits does not end the session. A session
//! ends when no process of its group is left.
//!
//! This file holds [`Games`] and its settings; each concern adds its methods in a file of its
//! own:
//!
//! - [`table`]: what is known of each game, the port pool, launches in flight and exits
//!   remembered, under one lock;
//! - [`launch`]: a launch request, from its reservation to its answer; [`spawn`]: starting a
//!   game's process (and removing the session's own files once it has ended);
//!   [`readiness`]: waiting for a launched game's readiness check; [`run_as`]: `--run-as`;
//! - [`supervise`]: the task that reaps a game and watches its group until it is gone;
//!   [`group`]: signalling, probing and reaping a process group;
//! - [`stop`]: SIGTERM, then SIGKILL after the grace;
//! - [`persist`]: recording the table in the state file, by group commit;
//! - [`adopt`]: leaving the games running at exit, and taking them back at the next start;
//! - [`report`]: what the link tells the broker of the games running and ended;
//! - [`logs`]: a page of a game's output for the broker, and the sweep of old logs.
//!
//! Their dependencies run one way: `launch` uses `readiness`, `spawn`, `supervise` and
//! `persist`; `adopt` uses `supervise` and `persist`; `readiness` uses `stop`; `supervise`
//! uses `spawn` and `persist`; `spawn` uses `run_as`; `spawn`, `supervise` and `stop` use
//! `group`; most use `table`, which, like `group` and `run_as`, uses none of the others.

mod adopt;
mod group;
mod launch;
mod logs;
mod persist;
mod readiness;
mod report;
mod run_as;
mod spawn;
mod stop;
mod supervise;
mod table;

pub use run_as::{RunAs, RunAsError};
pub use supervise::become_subreaper;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::wire::{AgentMessage, LaunchRequest, PortRange};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::builds::Central;
use crate::catalog::{Catalog, Game, ResolveError};
use crate::metrics::AgentMetrics;
use crate::ports::PortPool;
use crate::state;
use logs::MAX_LOG_READS;
use table::Table;

/// Settings of [`Games`].
#[derive(Debug, Clone)]
pub struct GamesConfig {
    /// Concurrent games at most.
    pub max_sessions: u32,
    /// Ports handed to games.
    pub port_range: PortRange,
    /// Where each session's stdout and stderr go (`<session_id>.log`).
    pub log_dir: PathBuf,
    /// SIGTERM, then SIGKILL after this long.
    pub stop_grace: Duration,
    /// Where [`crate::state`] is kept.
    pub state_dir: PathBuf,
    /// The unprivileged user games run as, if any.
    pub run_as: Option<RunAs>,
    /// The host's GPU indexes, each held by one session at a time.
    pub gpus: Vec<u32>,
}

/// The running games of this host.
#[derive(Debug)]
pub struct Games {
    table: Mutex<Table>,
    catalog: Catalog,
    /// The central games and their builds.
    central: Arc<Central>,
    config: GamesConfig,
    events: mpsc::Sender<AgentMessage>,
    tracker: TaskTracker,
    /// Log reads at once; past it the broker is told
    /// [`LogUnavailable::Busy`](protocol::wire::LogUnavailable::Busy).
    log_reads: Arc<Semaphore>,
    /// What is counted.
    metrics: Arc<AgentMetrics>,
    /// The state file's writer; its lock serialises writes, so the last holds the latest state.
    /// A blocking lock: it is taken only on the blocking pool (see [`Games::persist_blocking`]).
    state_file: Mutex<state::StateFile>,
    /// Woken whenever a launch leaves `pending`, for a stop that came during its launch.
    launch_settled: tokio::sync::Notify,
    /// Changes asking to be written, counted; see [`Games::persist_blocking`].
    changes: AtomicU64,
    /// The count of changes the last completed write includes.
    written: AtomicU64,
    /// A deferred write is scheduled; see [`Games::persist_later`].
    deferred: AtomicBool,
    /// Cancelled when the agent exits leaving its games running: supervising tasks return
    /// without touching the games.
    leave: CancellationToken,
}

impl Games {
    /// An empty table. `events` receives `Exited` for games that end by themselves.
    pub fn new(
        catalog: Catalog,
        central: Arc<Central>,
        config: GamesConfig,
        state_file: state::StateFile,
        events: mpsc::Sender<AgentMessage>,
        tracker: TaskTracker,
        metrics: Arc<AgentMetrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            table: Mutex::new(Table {
                games: HashMap::new(),
                ports: PortPool::new(config.port_range, config.max_sessions, &config.gpus),
                exited: VecDeque::new(),
                pending: HashMap::new(),
                builds: HashMap::new(),
            }),
            catalog,
            central,
            config,
            events,
            tracker,
            log_reads: Arc::new(Semaphore::new(MAX_LOG_READS)),
            metrics,
            state_file: Mutex::new(state_file),
            launch_settled: tokio::sync::Notify::new(),
            changes: AtomicU64::new(0),
            written: AtomicU64::new(0),
            deferred: AtomicBool::new(false),
            leave: CancellationToken::new(),
        })
    }

    /// The catalog this host offers.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The central games and their builds.
    pub fn central(&self) -> &Arc<Central> {
        &self.central
    }

    /// The game a launch request names, with its build's place for a central game.
    pub(crate) fn game_for(
        &self,
        req: &LaunchRequest,
    ) -> Result<(Arc<Game>, Option<PathBuf>), ResolveError> {
        match &req.build {
            None => self
                .catalog
                .game(&req.game_id)
                .map(|g| (Arc::clone(g), None))
                .ok_or_else(|| ResolveError::UnknownGame(req.game_id.to_string())),
            Some(build) => self
                .central
                .game(&req.game_id, build)
                .map(|(g, dir)| (g, Some(dir)))
                .ok_or_else(|| {
                    ResolveError::UnknownGame(format!("{} (build {build})", req.game_id))
                }),
        }
    }
}
