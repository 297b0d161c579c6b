//! The games this agent runs: launching, watching and stopping their process groups.
//!
//! [`Games`] owns every running game. Each game is started directly (no shell) as the leader
//! of a new process group, and gets one supervising task that reaps it and then watches the
//! group: a launcher that forks the real game and exits does not end the session. A session
//! ends when no process of its group is left.
//!
//! The agent makes itself a child subreaper (Linux `PR_SET_CHILD_SUBREAPER`), so orphaned
//! members of a game's group are re-parented to the agent instead of init; the supervising task
//! reaps them (`waitpid(-pgid)`) and so learns how the last one ended. Without that, a group
//! whose leader has exited would leave zombies that nobody reaps in a container without an init.
//!
//! Locking: one `std::sync::Mutex` around the table, held only for map and pool updates, never
//! across an `.await`.
//!
//! Persistence: the state file is written by group commit ([`Games::persist_blocking`]):
//! concurrent changes share one write, on the blocking pool (a launch's together with its
//! spawn). A launch waits for exactly one write, the *pending* record made
//! before the spawn, which is enough to find the game again after a crash (by its
//! environment). Later writes (the PID after the spawn, an exit, a stop) are not waited for
//! before answering the broker: losing one only means the next start of the agent looks the
//! game up by its environment, or finds it gone, which is what happened anyway. So they are
//! put off a little (`Games::persist_later`), and under load one write serves many.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use protocol::wire::{
    AgentMessage, ExitStatus, ExitedGame, LaunchFailure, LaunchRequest, Launched, LogPage,
    LogRequest, LogUnavailable, PortRange, RunningGame,
};
use protocol::SessionId;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::{Catalog, ReadyCheck, ResolveError};
use crate::metrics::{AgentMetrics, LaunchOutcome, StopOutcome};
use crate::output;
use crate::ports::{Lease, PortPool};
use crate::ready;
use crate::session_config;
use crate::state;

/// Log reads served at once, at most (each holds a page in memory and a blocking thread).
const MAX_LOG_READS: usize = 4;

/// How long after SIGKILL we wait for a group to be gone before giving up on it. SIGKILL
/// cannot be ignored, so only a process stuck in the kernel (uninterruptible IO) outlives this.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The first and the longest pause between two looks at a group whose leader has exited.
const GROUP_POLL_MIN: Duration = Duration::from_millis(20);
const GROUP_POLL_MAX: Duration = Duration::from_millis(250);

/// A game's process state. Transitions happen only in [`Games::stop`] (Running -> Stopping) and
/// in the supervising task (any -> removed, when the group is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GameState {
    /// Started, its readiness check not passed yet; its end is answered by the launch
    /// (`LaunchFailed`), not `Exited`.
    Readying,
    /// Started (and ready); no stop asked.
    Running,
    /// SIGTERM sent; its end is answered with `Stopped`, not `Exited`.
    Stopping,
}

#[derive(Debug)]
struct Entry {
    pid: u32,
    /// Its ports and slot.
    lease: Lease,
    start_time: Option<u64>,
    state: GameState,
    /// Whether a cgroup may exist for it, to remove when it ends.
    limited: bool,
    gone: watch::Receiver<Option<ExitStatus>>,
    /// With an idle timeout: since when nobody has been connected to its ports.
    idle: Option<IdleWatch>,
}

/// A game's idle timeout (catalog `idle_timeout_s`) and when it last had a connection.
#[derive(Debug, Clone, Copy)]
struct IdleWatch {
    timeout: Duration,
    /// Its launch, its last connection seen, or (for a game of a previous run) the agent's
    /// start.
    last_active: Instant,
}

impl IdleWatch {
    fn new(timeout: Option<Duration>) -> Option<Self> {
        timeout.map(|timeout| Self {
            timeout,
            last_active: Instant::now(),
        })
    }
}

/// A started game process.
#[derive(Debug)]
struct Spawned {
    child: Child,
    pid: u32,
    /// Its start time, to tell a reused PID apart later.
    start_time: Option<u64>,
    /// Whether it got a cgroup.
    limited: bool,
    /// Its readiness check and how long it may take.
    ready: Option<(ReadyCheck, Duration)>,
}

/// What [`Games::reserve`] found for a launch request.
#[derive(Debug)]
enum Reserved {
    /// A slot and these ports are taken; launch.
    Taken(Lease),
    /// The session's game runs already: this is its answer.
    Running(Launched),
    /// The session's launch is in flight; its answer will come.
    InFlight,
    /// Refused, with the reason.
    Refused((LaunchFailure, String)),
}

/// A launched game not watched yet: [`Games::launch_and_report`] starts watching it once its
/// `Launched` is queued, so the broker never hears `Exited` before `Launched`.
#[derive(Debug)]
struct Unwatched {
    session_id: SessionId,
    leader: Child,
    pgid: u32,
    gone: watch::Sender<Option<ExitStatus>>,
    /// Its readiness check, to pass before it is reported `Launched`.
    ready: Option<(ReadyCheck, Duration)>,
}

#[derive(Debug)]
struct Table {
    games: HashMap<SessionId, Entry>,
    ports: PortPool,
    /// Exits reported again at each handshake until they age out, in case the link dropped
    /// before the broker read them.
    exited: VecDeque<(ExitedGame, Instant)>,
    /// Launches between their record and their spawn: session, ports and slot.
    pending: HashMap<SessionId, Lease>,
}

/// Exits remembered for re-reporting: at most this many, for at most [`EXIT_MEMORY`].
const MAX_EXITS: usize = 256;
/// How long a state write that nobody waits for is put off, so that it serves every change
/// made meanwhile: under load, one write for many launches and exits instead of one each.
const DEFERRED_WRITE: Duration = Duration::from_millis(20);
const EXIT_MEMORY: Duration = Duration::from_secs(600);

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
}

/// A user to run games as (`--run-as`), resolved once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user's name, for messages.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

/// Why a `--run-as` user cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum RunAsError {
    /// The user database has no such user.
    #[error("--run-as: no user {0:?}")]
    NoUser(String),
    /// The user database cannot be read.
    #[error("--run-as {name:?}: {source}")]
    Lookup {
        /// The user asked for.
        name: String,
        /// Why the lookup failed.
        source: nix::Error,
    },
}

impl RunAs {
    /// Looks `name` up in the user database.
    pub fn lookup(name: &str) -> Result<Self, RunAsError> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(Self {
                name: name.to_owned(),
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            }),
            Ok(None) => Err(RunAsError::NoUser(name.to_owned())),
            Err(source) => Err(RunAsError::Lookup {
                name: name.to_owned(),
                source,
            }),
        }
    }
}

/// Makes `cmd` run as `user`: its uid and primary gid. The agent's supplementary groups
/// (root's among them) do not follow: when root sets a uid, std clears them (`setgroups(0)`)
/// before `setuid`, so no `pre_exec` is needed and the spawn stays a plain one.
fn run_as(cmd: &mut Command, user: &RunAs) {
    cmd.uid(user.uid).gid(user.gid);
}

/// The running games of this host.
#[derive(Debug)]
pub struct Games {
    table: Mutex<Table>,
    catalog: Catalog,
    config: GamesConfig,
    events: mpsc::Sender<AgentMessage>,
    tracker: TaskTracker,
    /// Log reads at once; past it the broker is told [`LogUnavailable::Busy`].
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

/// Makes this process the reaper of its orphaned descendants; see the module docs.
pub fn become_subreaper() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "cannot become a child subreaper; orphaned game processes will be reaped by init");
    }
}

impl Games {
    /// An empty table. `events` receives `Exited` for games that end by themselves.
    pub fn new(
        catalog: Catalog,
        config: GamesConfig,
        state_file: state::StateFile,
        events: mpsc::Sender<AgentMessage>,
        tracker: TaskTracker,
        metrics: Arc<AgentMetrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            table: Mutex::new(Table {
                games: HashMap::new(),
                ports: PortPool::new(config.port_range),
                exited: VecDeque::new(),
                pending: HashMap::new(),
            }),
            catalog,
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

    /// Takes back the games of a previous run of the agent (from `saved`): those still running
    /// are watched again; those gone are remembered as exited, how unknown. A PID now used by
    /// another program is never touched.
    pub async fn adopt(self: &Arc<Self>, saved: state::Saved) {
        let now = Instant::now();
        // Reading /proc blocks: off the async threads.
        let found = tokio::task::spawn_blocking(move || {
            saved
                .games
                .into_iter()
                .map(|g| {
                    let f = state::find(&g);
                    (g, f)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (game, found) in found {
            match found {
                state::Found::Running { pgid, start_time } => {
                    let (gone_tx, gone_rx) = watch::channel(None);
                    {
                        let mut t = self.table();
                        let lease = saved_lease(&mut t.ports, &game);
                        t.games.insert(
                            game.session_id.clone(),
                            Entry {
                                pid: pgid,
                                lease,
                                start_time,
                                state: GameState::Running,
                                // A previous run may have made it a cgroup.
                                limited: true,
                                gone: gone_rx,
                                idle: IdleWatch::new(
                                    game.idle_timeout_s
                                        .map(|s| Duration::from_secs(u64::from(s))),
                                ),
                            },
                        );
                    }
                    tracing::info!(session = %game.session_id, pid = pgid, "found a game of a previous run; watching it again");
                    let me = Arc::clone(self);
                    self.tracker.spawn(async move {
                        me.supervise(game.session_id, None, pgid, gone_tx).await
                    });
                }
                state::Found::Gone => {
                    tracing::info!(session = %game.session_id, pid = game.pid, "a game of a previous run ended meanwhile");
                    self.table().exited.push_back((
                        ExitedGame {
                            session_id: game.session_id,
                            status: ExitStatus::Unknown,
                        },
                        now,
                    ));
                }
            }
        }
        {
            let mut t = self.table();
            for e in saved.exited {
                if !t.exited.iter().any(|(x, _)| x.session_id == e.session_id) {
                    t.exited.push_back((e, now));
                }
            }
        }
        if let Err(e) = self.persist().await {
            tracing::error!(error = %e, "cannot write the agent state");
        }
    }

    /// Exits to report again at the next handshake.
    pub fn exited(&self) -> Vec<ExitedGame> {
        let mut t = self.table();
        while t
            .exited
            .front()
            .is_some_and(|(_, at)| at.elapsed() > EXIT_MEMORY)
        {
            t.exited.pop_front();
        }
        t.exited.iter().map(|(e, _)| e.clone()).collect()
    }

    /// Makes the state file hold the table as it is now, or newer (group commit).
    ///
    /// Every caller changes the table first, then counts its change here. Whoever holds the
    /// write lock reads the count, snapshots the table (so the snapshot includes every change
    /// counted so far) and writes it; a caller whose change an earlier write already included
    /// returns without writing. Under load, one write serves many changes.
    ///
    /// Blocking: the write itself, and the wait for another caller's write. Called on the
    /// blocking pool, by [`Games::persist`] or, for a launch, together with its spawn, so that
    /// a launch costs one hop to the blocking pool, not two.
    fn persist_blocking(&self) -> std::io::Result<()> {
        let mine = self.changes.fetch_add(1, Ordering::SeqCst) + 1;
        let mut file = self.state_file.lock().unwrap_or_else(|p| p.into_inner());
        if self.written.load(Ordering::SeqCst) >= mine {
            return Ok(());
        }
        let upto = self.changes.load(Ordering::SeqCst);
        let saved = {
            let t = self.table();
            let mut games: Vec<state::SavedGame> = t
                .games
                .iter()
                .map(|(id, e)| {
                    let mut g = state::SavedGame::new(id, e.pid, &e.lease, e.start_time, false);
                    g.idle_timeout_s = e.idle.map(|w| saturating_secs(w.timeout));
                    g
                })
                .chain(
                    t.pending
                        .iter()
                        .map(|(id, lease)| state::SavedGame::new(id, 0, lease, None, true)),
                )
                .collect();
            games.sort_by(|a, b| a.session_id.cmp(&b.session_id));
            state::Saved {
                games,
                exited: t.exited.iter().map(|(e, _)| e.clone()).collect(),
            }
        };
        let written = file.write(&saved);
        self.metrics.state_write(written.is_ok());
        written?;
        self.written.store(upto, Ordering::SeqCst);
        Ok(())
    }

    /// [`Games::persist_blocking`] from async code.
    async fn persist(self: &Arc<Self>) -> std::io::Result<()> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.persist_blocking())
            .await
            .map_err(std::io::Error::other)?
    }

    /// Writes the state file soon, in a tracked task, not waited for; see the module docs.
    /// One such write is scheduled at a time, [`DEFERRED_WRITE`] ahead, and includes every
    /// change made until it snapshots the table: the flag is cleared before the snapshot, so a
    /// change it misses schedules the next one.
    fn persist_later(self: &Arc<Self>) {
        if self.deferred.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = Arc::clone(self);
        self.tracker.spawn(async move {
            tokio::time::sleep(DEFERRED_WRITE).await;
            me.deferred.store(false, Ordering::SeqCst);
            if let Err(e) = me.persist().await {
                tracing::error!(error = %e, "cannot write the agent state");
            }
        });
    }

    /// Leaves the games running (the agent is exiting and will find them again): supervising
    /// tasks stop watching, and the state file is brought up to date.
    pub async fn leave_running(self: &Arc<Self>) {
        self.leave.cancel();
        if let Err(e) = self.persist().await {
            tracing::error!(error = %e, "cannot write the agent state; running games may not be found again");
        }
    }

    /// The catalog this host offers.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Ends a launch's pending state (it started, or will not).
    fn unpend(&self, t: &mut Table, session_id: &SessionId) {
        t.pending.remove(session_id);
        self.launch_settled.notify_waiters();
    }

    /// Gives back a launch's slot and lease: it will not start.
    fn abandon_launch(&self, session_id: &SessionId, lease: &Lease) {
        let mut t = self.table();
        self.unpend(&mut t, session_id);
        t.ports.release(lease);
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding this lock would be a bug in a few lines of map code; the table
        // itself stays consistent, so carry on with it.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The games running now.
    pub fn running(&self) -> Vec<RunningGame> {
        self.running_seen(None)
    }

    /// Whether any game has an idle timeout: only then is the TCP table worth reading.
    pub fn watches_idle(&self) -> bool {
        self.table().games.values().any(|e| e.idle.is_some())
    }

    /// [`Self::running`], as of `connected`, the local ports with an established TCP
    /// connection now (when read): a game with a connection on any of its ports is active
    /// now, and one without any for at least its idle timeout says for how long.
    pub fn running_seen(&self, connected: Option<&HashSet<u16>>) -> Vec<RunningGame> {
        let now = Instant::now();
        let mut t = self.table();
        let mut v: Vec<RunningGame> = t
            .games
            .iter_mut()
            .map(|(id, e)| {
                let idle_ms = match (e.idle.as_mut(), connected) {
                    (Some(w), Some(connected)) => {
                        if e.lease.ports.iter().any(|p| connected.contains(p)) {
                            w.last_active = now;
                        }
                        let idle = now.duration_since(w.last_active);
                        (e.state == GameState::Running && idle >= w.timeout)
                            .then(|| u64::try_from(idle.as_millis()).unwrap_or(u64::MAX))
                    }
                    _ => None,
                };
                RunningGame {
                    session_id: id.clone(),
                    pid: e.pid,
                    pgid: e.pid,
                    port: e.lease.port(),
                    idle_ms,
                }
            })
            .collect();
        drop(t);
        v.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        v
    }

    /// Launches a game in a tracked task and reports `Launched` or `LaunchFailed` on the event
    /// channel; that task then watches the game until its group is gone. Launches run
    /// concurrently, so their state writes are shared (see [`Games::persist_blocking`]).
    ///
    /// The slot and port are taken here, before the task starts, so two requests for one
    /// session never both launch: a repeat of a launch still in flight gets no answer of its
    /// own (the first one's answer is the answer for that session).
    pub fn launch_and_report(self: &Arc<Self>, req: LaunchRequest, ip: IpAddr) {
        let reserved = self.reserve(&req, ip);
        if matches!(reserved, Reserved::InFlight) {
            tracing::debug!(session = %req.session_id, "launch already in flight");
            return;
        }
        let me = Arc::clone(self);
        self.tracker.spawn(async move {
            let outcome = match reserved {
                Reserved::Taken(lease) => me.launch(&req, ip, lease).await,
                Reserved::Running(launched) => Ok((launched, None)),
                Reserved::Refused(e) => Err(e),
                Reserved::InFlight => return,
            };
            let outcome = match outcome {
                Ok((launched, Some(mut u))) => match u.ready.take() {
                    // Watched from now, so an exit during the check is seen; the check's
                    // verdict is the launch's answer.
                    Some((check, within)) => {
                        let gone = u.gone.subscribe();
                        let watcher = Arc::clone(&me);
                        me.tracker.spawn(async move {
                            watcher
                                .supervise(u.session_id, Some(u.leader), u.pgid, u.gone)
                                .await;
                        });
                        let verdict = me.wait_ready(&launched, &check, within, gone).await;
                        me.report_ready(launched, verdict).await;
                        return;
                    }
                    None => Ok((launched, Some(u))),
                },
                other => other,
            };
            let (msg, unwatched) = match outcome {
                Ok((launched, unwatched)) => (AgentMessage::Launched(launched), unwatched),
                Err((kind, message)) => (
                    AgentMessage::LaunchFailed {
                        session_id: req.session_id,
                        kind,
                        message,
                    },
                    None,
                ),
            };
            me.count_launch(&msg);
            // Fails only when the agent is shutting down; the broker learns at the handshake.
            let _ = me.events.send(msg).await;
            if let Some(u) = unwatched {
                me.supervise(u.session_id, Some(u.leader), u.pgid, u.gone)
                    .await;
            }
        });
    }

    /// Counts a launch's answer.
    fn count_launch(&self, msg: &AgentMessage) {
        let outcome = match msg {
            AgentMessage::LaunchFailed { kind, .. } => match kind {
                LaunchFailure::BadRequest | LaunchFailure::UnknownGame => LaunchOutcome::Refused,
                LaunchFailure::NoCapacity => LaunchOutcome::NoCapacity,
                LaunchFailure::SpawnFailed => LaunchOutcome::SpawnFailed,
                LaunchFailure::NotReady => LaunchOutcome::NotReady,
                LaunchFailure::ExitedBeforeReady => LaunchOutcome::ExitedBeforeReady,
            },
            _ => LaunchOutcome::Launched,
        };
        self.metrics.launch(outcome);
    }

    /// Waits for a launched game's readiness check to pass, within `within`. A game that
    /// exits first, or is not ready in time (it is then stopped), fails the launch.
    async fn wait_ready(
        &self,
        launched: &Launched,
        check: &ReadyCheck,
        within: Duration,
        mut gone: watch::Receiver<Option<ExitStatus>>,
    ) -> Result<(), (LaunchFailure, String)> {
        let id = &launched.session_id;
        let addr = std::net::SocketAddr::new(launched.ip, launched.port);
        let log = output::path(&self.config.log_dir, id);
        let started = Instant::now();
        tokio::select! {
            () = ready::wait(check, addr, &log) => {
                tracing::info!(session = %id, after = ?started.elapsed(), "game ready");
                Ok(())
            }
            status = async { gone.wait_for(Option::is_some).await.ok().and_then(|s| *s) } => {
                Err((
                    LaunchFailure::ExitedBeforeReady,
                    format!("the game ended ({}) before it was ready", describe_exit(status)),
                ))
            }
            // The agent is exiting and leaves its games running: the broker learns how this
            // one is at the next handshake.
            () = self.leave.cancelled() => Err((
                LaunchFailure::ExitedBeforeReady,
                "the agent is restarting; the game's readiness was not settled".into(),
            )),
            () = tokio::time::sleep(within) => {
                let what = ready::describe(check, addr);
                tracing::warn!(session = %id, ?within, %what, "game not ready in time; stopping it");
                self.stop(id).await;
                Err((
                    LaunchFailure::NotReady,
                    format!("the game was not ready within {within:?} ({what}); it was stopped"),
                ))
            }
        }
    }

    /// Answers a launch whose readiness check has its verdict: `Launched` if the game is
    /// still there and ready (it is then `Running`, so its later exit is reported as
    /// `Exited`, after this), else `LaunchFailed`. The answer's place in the queue is taken
    /// before the table is looked at, so no `Exited` of the game can overtake it.
    async fn report_ready(&self, launched: Launched, verdict: Result<(), (LaunchFailure, String)>) {
        let Ok(permit) = self.events.reserve().await else {
            return;
        };
        let id = launched.session_id.clone();
        let msg = {
            let mut t = self.table();
            match verdict {
                Ok(()) => match t.games.get_mut(&id) {
                    Some(e) if e.state == GameState::Readying => {
                        e.state = GameState::Running;
                        AgentMessage::Launched(launched)
                    }
                    _ => AgentMessage::LaunchFailed {
                        session_id: id,
                        kind: LaunchFailure::ExitedBeforeReady,
                        message: "the game ended or was stopped as it became ready".into(),
                    },
                },
                Err((kind, message)) => AgentMessage::LaunchFailed {
                    session_id: id,
                    kind,
                    message,
                },
            }
        };
        self.count_launch(&msg);
        permit.send(msg);
    }

    /// Takes a slot and a port for a launch, or says why not. A repeated request for a
    /// session already running answers as the first one did and starts nothing.
    fn reserve(&self, req: &LaunchRequest, ip: IpAddr) -> Reserved {
        let mut t = self.table();
        if let Some(e) = t.games.get(&req.session_id) {
            if e.state == GameState::Readying {
                return Reserved::InFlight;
            }
            return Reserved::Running(Launched {
                session_id: req.session_id.clone(),
                pid: e.pid,
                ip,
                port: e.lease.port(),
                ports: e.lease.ports.clone(),
            });
        }
        if t.pending.contains_key(&req.session_id) {
            return Reserved::InFlight;
        }
        if t.games.len() + t.pending.len() >= self.config.max_sessions as usize {
            return Reserved::Refused((
                LaunchFailure::NoCapacity,
                format!(
                    "host runs {} games, its max_sessions",
                    self.config.max_sessions
                ),
            ));
        }
        let wanted = usize::from(self.catalog.ports_of(&req.game_id));
        let Some(lease) = t.ports.take(wanted) else {
            return Reserved::Refused((
                LaunchFailure::NoCapacity,
                format!("fewer than {wanted} free ports in the host's --port-range"),
            ));
        };
        t.pending.insert(req.session_id.clone(), lease.clone());
        Reserved::Taken(lease)
    }

    /// Starts a game on its reserved `lease` once its launch is recorded in the state file.
    /// Returns the answer and the game to watch.
    async fn launch(
        self: &Arc<Self>,
        req: &LaunchRequest,
        ip: IpAddr,
        lease: Lease,
    ) -> Result<(Launched, Option<Unwatched>), (LaunchFailure, String)> {
        let port = lease.port();
        // One hop to the blocking pool for all that blocks: the record made before the spawn
        // (an agent killed between the spawn and the next write still finds the game again,
        // by its environment, so it never runs unknown; a game that cannot be recorded is not
        // started), then resolving the config (canonicalize), opening the log, and the spawn.
        let blocking = {
            let me = Arc::clone(self);
            let req = req.clone();
            let lease = lease.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                me.persist_blocking()?;
                Ok(me.start_process(&req, &lease))
            })
            .await
        };
        let spawned = match blocking {
            Ok(Ok(spawned)) => spawned,
            Ok(Err(e)) => {
                self.abandon_launch(&req.session_id, &lease);
                return Err((
                    LaunchFailure::SpawnFailed,
                    format!(
                        "cannot record the game in --state-dir {}: {e}",
                        self.config.state_dir.display()
                    ),
                ));
            }
            Err(e) => Err((
                LaunchFailure::SpawnFailed,
                format!("launch task failed: {e}"),
            )),
        };
        match spawned {
            Ok(Spawned {
                child,
                pid,
                start_time,
                limited,
                ready,
            }) => {
                let (gone_tx, gone_rx) = watch::channel(None);
                {
                    let mut t = self.table();
                    self.unpend(&mut t, &req.session_id);
                    t.games.insert(
                        req.session_id.clone(),
                        Entry {
                            pid,
                            lease: lease.clone(),
                            start_time,
                            state: if ready.is_some() {
                                GameState::Readying
                            } else {
                                GameState::Running
                            },
                            limited,
                            gone: gone_rx,
                            idle: IdleWatch::new(self.catalog.idle_timeout(&req.game_id)),
                        },
                    );
                }
                // The pending record already lets a restarted agent find the game; the PID
                // makes that cheaper, and need not be waited for.
                self.persist_later();
                tracing::info!(session = %req.session_id, game = %req.game_id, pid, port, "game launched");
                let launched = Launched {
                    session_id: req.session_id.clone(),
                    pid,
                    ip,
                    port,
                    ports: lease.ports.clone(),
                };
                let unwatched = Unwatched {
                    session_id: req.session_id.clone(),
                    leader: child,
                    pgid: pid,
                    gone: gone_tx,
                    ready,
                };
                Ok((launched, Some(unwatched)))
            }
            Err(e) => {
                self.abandon_launch(&req.session_id, &lease);
                remove_session_dir(&self.config.state_dir, &req.session_id).await;
                self.persist_later();
                tracing::warn!(session = %req.session_id, game = %req.game_id, error = %e.1, "launch refused");
                Err(e)
            }
        }
    }

    /// Resolves and starts the game's process. Blocking.
    fn start_process(
        &self,
        req: &LaunchRequest,
        lease: &Lease,
    ) -> Result<Spawned, (LaunchFailure, String)> {
        let session_dir = session_config::dir(&self.config.state_dir, &req.session_id);
        let spec = self
            .catalog
            .resolve(req, lease, &session_dir)
            .map_err(|e| match e {
                ResolveError::UnknownGame(_) => (LaunchFailure::UnknownGame, e.to_string()),
                ResolveError::BadRequest(_) => (LaunchFailure::BadRequest, e.to_string()),
            })?;
        let spawn_err = |what: String| (LaunchFailure::SpawnFailed, what);
        if let Some(copy) = &spec.session_config {
            session_config::write(copy).map_err(|e| {
                spawn_err(format!(
                    "cannot write the session's config {}: {e}",
                    copy.path.display()
                ))
            })?;
        }
        let log_path = output::path(&self.config.log_dir, &req.session_id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| spawn_err(format!("cannot open log {}: {e}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| spawn_err(format!("cannot open log {}: {e}", log_path.display())))?;
        let mut cmd = Command::new(&spec.program);
        if let Some(user) = &self.config.run_as {
            run_as(&mut cmd, user);
        }
        // The game's environment is the catalog's `env` and the ARCADE_* variables, nothing of
        // the agent's own (its token, for one).
        cmd.env_clear()
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0)
            .kill_on_drop(false);
        let child = cmd
            .spawn()
            .map_err(|e| spawn_err(format!("cannot start {}: {e}", spec.program)))?;
        let pid = child
            .id()
            .ok_or_else(|| spawn_err("the game exited before its pid was read".into()))?;
        if spec.limits.any() {
            if let Err(e) = crate::limits::apply(&req.session_id, pid, &spec.limits) {
                signal_group(pid, Signal::SIGKILL);
                crate::limits::remove(&req.session_id);
                return Err(spawn_err(format!(
                    "the game's resource limits could not be applied: {e}"
                )));
            }
        }
        Ok(Spawned {
            child,
            pid,
            start_time: state::proc_stat(pid).map(|(_, start)| start),
            limited: spec.limits.any(),
            ready: spec.ready,
        })
    }

    /// Reaps the leader, then watches (and reaps) the rest of its group until none is left.
    /// A game adopted from a previous run has no `leader` handle: it is not our child, so it
    /// is only watched, and how it ends is unknown. Returns early, leaving the game be, when
    /// the agent exits leaving its games running.
    async fn supervise(
        self: Arc<Self>,
        session_id: SessionId,
        leader: Option<Child>,
        pgid: u32,
        gone: watch::Sender<Option<ExitStatus>>,
    ) {
        let mut last = ExitStatus::Unknown;
        if let Some(mut child) = leader {
            tokio::select! {
                () = self.leave.cancelled() => return,
                st = child.wait() => {
                    last = match st {
                        Ok(st) => exit_status(st),
                        Err(e) => {
                            tracing::error!(session = %session_id, error = %e, "cannot wait for game");
                            ExitStatus::Unknown
                        }
                    };
                }
            }
        }
        let mut pause = GROUP_POLL_MIN;
        loop {
            if let Some(st) = reap_group(pgid) {
                last = st;
            }
            if !group_alive(pgid) {
                break;
            }
            tokio::select! {
                () = self.leave.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(GROUP_POLL_MAX);
        }
        let (state, limited) = {
            let mut t = self.table();
            let entry = t.games.remove(&session_id);
            if let Some(e) = &entry {
                t.ports.release(&e.lease);
            }
            (
                entry.as_ref().map(|e| e.state),
                entry.is_some_and(|e| e.limited),
            )
        };
        if limited {
            let id = session_id.clone();
            let _ = tokio::task::spawn_blocking(move || crate::limits::remove(&id)).await;
        }
        remove_session_dir(&self.config.state_dir, &session_id).await;
        gone.send_replace(Some(last));
        if state == Some(GameState::Running) {
            let mut t = self.table();
            if t.exited.len() >= MAX_EXITS {
                t.exited.pop_front();
            }
            t.exited.push_back((
                ExitedGame {
                    session_id: session_id.clone(),
                    status: last,
                },
                Instant::now(),
            ));
        }
        match state {
            Some(GameState::Running) => {
                tracing::info!(session = %session_id, status = ?last, "game exited by itself");
                self.metrics.exit();
                let msg = AgentMessage::Exited {
                    session_id,
                    status: last,
                };
                if self.events.send(msg).await.is_err() {
                    tracing::debug!("agent is shutting down; exit not reported");
                }
            }
            Some(GameState::Stopping) => {
                tracing::info!(session = %session_id, status = ?last, "game stopped");
            }
            Some(GameState::Readying) => {
                tracing::info!(session = %session_id, status = ?last, "game ended before it was ready");
            }
            None => {}
        }
        // After the report, and not waited for: a restarted agent that misses this write
        // finds the game gone, which it is.
        if state.is_some() {
            self.persist_later();
        }
    }

    /// Stops a session's game: SIGTERM to its group, SIGKILL after the grace. Returns when no
    /// process of the group is left (or, for a process stuck in the kernel, after a bound).
    /// A session this agent does not run is already stopped.
    pub async fn stop(&self, session_id: &SessionId) -> StopOutcome {
        let outcome = self.stop_group(session_id).await;
        self.metrics.stop(outcome);
        outcome
    }

    async fn stop_group(&self, session_id: &SessionId) -> StopOutcome {
        // A stop that overtakes its launch waits for the launch to settle, then stops the game
        // it started (launches are bounded: a state write and a spawn).
        loop {
            let settled = self.launch_settled.notified();
            if !self.table().pending.contains_key(session_id) {
                break;
            }
            settled.await;
        }
        let found = {
            let mut t = self.table();
            t.games.get_mut(session_id).map(|e| {
                e.state = GameState::Stopping;
                (e.pid, e.gone.clone())
            })
        };
        let Some((pgid, mut gone)) = found else {
            return StopOutcome::NotRunning;
        };
        signal_group(pgid, Signal::SIGTERM);
        let wait_gone = |gone: &mut watch::Receiver<Option<ExitStatus>>, within| {
            let mut gone = gone.clone();
            async move {
                tokio::time::timeout(within, gone.wait_for(Option::is_some))
                    .await
                    .is_ok()
            }
        };
        if wait_gone(&mut gone, self.config.stop_grace).await {
            return StopOutcome::Terminated;
        }
        tracing::info!(session = %session_id, pgid, "game ignored SIGTERM; sending SIGKILL");
        signal_group(pgid, Signal::SIGKILL);
        if !wait_gone(&mut gone, KILL_WAIT).await {
            tracing::error!(session = %session_id, pgid, "game's process group outlived SIGKILL");
            return StopOutcome::Stuck;
        }
        StopOutcome::Killed
    }

    /// Stops a session's game in a tracked task and reports `Stopped` on the event channel.
    pub fn stop_and_report(self: &Arc<Self>, session_id: SessionId) {
        let me = Arc::clone(self);
        self.tracker.spawn(async move {
            me.stop(&session_id).await;
            // Fails only when the agent is shutting down; the broker learns on reconnect.
            let _ = me.events.send(AgentMessage::Stopped { session_id }).await;
        });
    }

    /// Reads a page of a session's output in a tracked task and reports it as `Log`.
    pub fn read_log_and_report(self: &Arc<Self>, req: LogRequest) {
        let permit = Arc::clone(&self.log_reads).try_acquire_owned();
        let me = Arc::clone(self);
        self.tracker.spawn(async move {
            let result = match permit {
                Err(_) => Err(LogUnavailable::Busy),
                Ok(permit) => {
                    let dir = me.config.log_dir.clone();
                    let (id, what) = (req.session_id.clone(), req.read);
                    tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        output::read(&dir, &id, what)
                    })
                    .await
                    .unwrap_or(Err(LogUnavailable::Unreadable))
                }
            };
            me.metrics.log_read(match &result {
                Ok(_) => "read",
                Err(LogUnavailable::NotFound) => "not_found",
                Err(LogUnavailable::Unreadable) => "unreadable",
                Err(LogUnavailable::Busy) => "busy",
            });
            let page = LogPage {
                request_id: req.request_id,
                result,
            };
            // Fails only when the agent is shutting down.
            let _ = me.events.send(AgentMessage::Log(page)).await;
        });
    }

    /// Removes the logs of sessions that ended more than `retention` ago; answers how many.
    pub async fn sweep_logs(&self, retention: Duration) -> usize {
        let running: HashSet<SessionId> = {
            let t = self.table();
            t.games.keys().chain(t.pending.keys()).cloned().collect()
        };
        let dir = self.config.log_dir.clone();
        tokio::task::spawn_blocking(move || output::sweep(&dir, retention, &running))
            .await
            .unwrap_or(0)
    }

    /// How many games run now.
    pub fn running_count(&self) -> usize {
        self.table().games.len()
    }

    /// Stops every game, all at once.
    pub async fn stop_all(&self) {
        let ids: Vec<SessionId> = self.table().games.keys().cloned().collect();
        futures::future::join_all(ids.iter().map(|id| self.stop(id))).await;
    }
}

/// `d` in whole seconds, as the state file keeps it.
fn saturating_secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// How a game ended, in words.
fn describe_exit(status: Option<ExitStatus>) -> String {
    match status {
        Some(ExitStatus::Code(c)) => format!("exit code {c}"),
        Some(ExitStatus::Signal(s)) => format!("signal {s}"),
        Some(ExitStatus::Unknown) | None => "how is unknown".into(),
    }
}

fn exit_status(st: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => ExitStatus::Code(c),
        (None, Some(s)) => ExitStatus::Signal(s),
        (None, None) => ExitStatus::Unknown,
    }
}

fn group_pid(pgid: u32) -> Option<Pid> {
    // A pgid of 0 or 1, or one that does not fit an i32, would address the wrong group.
    i32::try_from(pgid)
        .ok()
        .filter(|p| *p > 1)
        .map(Pid::from_raw)
}

/// Reaps every exited member of the group that is our child (re-parented orphans); returns how
/// the last one reaped ended.
fn reap_group(pgid: u32) -> Option<ExitStatus> {
    let group = group_pid(pgid)?;
    let mut last = None;
    loop {
        match waitpid(Pid::from_raw(-group.as_raw()), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => last = Some(ExitStatus::Code(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => last = Some(ExitStatus::Signal(sig as i32)),
            Ok(WaitStatus::StillAlive) | Err(_) => return last,
            Ok(_) => {}
        }
    }
}

/// Whether any process of the group is left.
fn group_alive(pgid: u32) -> bool {
    let Some(group) = group_pid(pgid) else {
        return false;
    };
    !matches!(killpg(group, None), Err(Errno::ESRCH))
}

fn signal_group(pgid: u32, sig: Signal) {
    if let Some(group) = group_pid(pgid) {
        match killpg(group, sig) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => tracing::warn!(pgid, signal = %sig, error = %e, "cannot signal game"),
        }
    }
}

/// A saved game's lease, taken again from `pool` (a state of an older agent has no slot: it
/// gets the lowest free one).
fn saved_lease(pool: &mut PortPool, g: &state::SavedGame) -> Lease {
    let lease = Lease {
        ports: std::iter::once(g.port)
            .chain(g.more_ports.iter().copied())
            .collect(),
        slot: g.slot.unwrap_or_else(|| pool.free_slot()),
    };
    pool.claim(&lease);
    lease
}

/// Removes a session's own files (its config copy), if it has any. Off the async threads.
async fn remove_session_dir(state_dir: &Path, id: &SessionId) {
    let dir = session_config::dir(state_dir, id);
    let _ = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a session's files");
        }
        _ => {}
    })
    .await;
}
