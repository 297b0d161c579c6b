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

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use protocol::wire::{
    AgentMessage, ExitStatus, ExitedGame, LaunchFailure, LaunchRequest, Launched, PortRange,
    RunningGame,
};
use protocol::SessionId;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::{Catalog, ResolveError};
use crate::ports::PortPool;
use crate::state;

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
    /// Started; no stop asked.
    Running,
    /// SIGTERM sent; its end is answered with `Stopped`, not `Exited`.
    Stopping,
}

#[derive(Debug)]
struct Entry {
    pid: u32,
    port: u16,
    start_time: Option<u64>,
    state: GameState,
    gone: watch::Receiver<Option<ExitStatus>>,
}

#[derive(Debug)]
struct Table {
    games: HashMap<SessionId, Entry>,
    ports: PortPool,
    /// Exits reported again at each handshake until they age out, in case the link dropped
    /// before the broker read them.
    exited: VecDeque<(ExitedGame, Instant)>,
    /// Launches between their record and their spawn: session and port.
    pending: HashMap<SessionId, u16>,
}

/// Exits remembered for re-reporting: at most this many, for at most [`EXIT_MEMORY`].
const MAX_EXITS: usize = 256;
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

impl RunAs {
    /// Looks `name` up in the user database.
    pub fn lookup(name: &str) -> Result<Self, String> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(Self {
                name: name.to_owned(),
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            }),
            Ok(None) => Err(format!("--run-as: no user {name:?}")),
            Err(e) => Err(format!("--run-as {name:?}: {e}")),
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
    /// Serialises writes of the state file, so the last write holds the latest state.
    persist_lock: tokio::sync::Mutex<()>,
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
        events: mpsc::Sender<AgentMessage>,
        tracker: TaskTracker,
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
            persist_lock: tokio::sync::Mutex::new(()),
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
                        t.ports.claim(game.port);
                        t.games.insert(
                            game.session_id.clone(),
                            Entry {
                                pid: pgid,
                                port: game.port,
                                start_time,
                                state: GameState::Running,
                                gone: gone_rx,
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

    /// Writes the state file with what runs now (off the async threads).
    async fn persist(&self) -> std::io::Result<()> {
        let _writing = self.persist_lock.lock().await;
        let saved = {
            let t = self.table();
            let mut games: Vec<state::SavedGame> = t
                .games
                .iter()
                .map(|(id, e)| state::SavedGame {
                    session_id: id.clone(),
                    pid: e.pid,
                    port: e.port,
                    start_time: e.start_time,
                    pending: false,
                })
                .chain(t.pending.iter().map(|(id, port)| state::SavedGame {
                    session_id: id.clone(),
                    pid: 0,
                    port: *port,
                    start_time: None,
                    pending: true,
                }))
                .collect();
            games.sort_by(|a, b| a.session_id.cmp(&b.session_id));
            state::Saved {
                games,
                exited: t.exited.iter().map(|(e, _)| e.clone()).collect(),
            }
        };
        let dir = self.config.state_dir.clone();
        tokio::task::spawn_blocking(move || state::save(&dir, &saved))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Leaves the games running (the agent is exiting and will find them again): supervising
    /// tasks stop watching, and the state file is brought up to date.
    pub async fn leave_running(&self) {
        self.leave.cancel();
        if let Err(e) = self.persist().await {
            tracing::error!(error = %e, "cannot write the agent state; running games may not be found again");
        }
    }

    /// The catalog this host offers.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding this lock would be a bug in a few lines of map code; the table
        // itself stays consistent, so carry on with it.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The games running now.
    pub fn running(&self) -> Vec<RunningGame> {
        let t = self.table();
        let mut v: Vec<RunningGame> = t
            .games
            .iter()
            .map(|(id, e)| RunningGame {
                session_id: id.clone(),
                pid: e.pid,
                pgid: e.pid,
                port: e.port,
            })
            .collect();
        v.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        v
    }

    /// Starts a game and records it in the state file before answering. A repeated request
    /// for a session already running answers as the first one did and starts nothing. A game
    /// that cannot be recorded is killed and the launch fails: a game the agent could not find
    /// again after a restart must not run.
    pub async fn launch(
        self: &Arc<Self>,
        req: &LaunchRequest,
        ip: IpAddr,
    ) -> Result<Launched, (LaunchFailure, String)> {
        let port = {
            let mut t = self.table();
            if let Some(e) = t.games.get(&req.session_id) {
                return Ok(Launched {
                    session_id: req.session_id.clone(),
                    pid: e.pid,
                    ip,
                    port: e.port,
                });
            }
            if t.games.len() + t.pending.len() >= self.config.max_sessions as usize {
                return Err((
                    LaunchFailure::NoCapacity,
                    format!(
                        "host runs {} games, its max_sessions",
                        self.config.max_sessions
                    ),
                ));
            }
            let port = t.ports.take().ok_or_else(|| {
                (
                    LaunchFailure::NoCapacity,
                    "no free port in the host's --port-range".to_owned(),
                )
            })?;
            t.pending.insert(req.session_id.clone(), port);
            port
        };
        // Recorded before the spawn: an agent killed between the spawn and the next write still
        // finds the game again (by its environment), so it never runs unknown.
        if let Err(e) = self.persist().await {
            {
                let mut t = self.table();
                t.pending.remove(&req.session_id);
                t.ports.release(port);
            }
            return Err((
                LaunchFailure::SpawnFailed,
                format!(
                    "cannot record the game in --state-dir {}: {e}",
                    self.config.state_dir.display()
                ),
            ));
        }
        // Resolving the config (canonicalize), opening the log and fork/exec all block: off the
        // async threads.
        let spawned = {
            let me = Arc::clone(self);
            let req = req.clone();
            tokio::task::spawn_blocking(move || me.start_process(&req, port))
                .await
                .unwrap_or_else(|e| {
                    Err((
                        LaunchFailure::SpawnFailed,
                        format!("launch task failed: {e}"),
                    ))
                })
        };
        match spawned {
            Ok((child, pid, start_time)) => {
                let (gone_tx, gone_rx) = watch::channel(None);
                {
                    let mut t = self.table();
                    t.pending.remove(&req.session_id);
                    t.games.insert(
                        req.session_id.clone(),
                        Entry {
                            pid,
                            port,
                            start_time,
                            state: GameState::Running,
                            gone: gone_rx,
                        },
                    );
                }
                let me = Arc::clone(self);
                let session_id = req.session_id.clone();
                self.tracker.spawn(async move {
                    me.supervise(session_id, Some(child), pid, gone_tx).await
                });
                if let Err(e) = self.persist().await {
                    tracing::error!(session = %req.session_id, error = %e, "cannot record the game; killing it");
                    if let Some(entry) = self.table().games.get_mut(&req.session_id) {
                        entry.state = GameState::Stopping;
                    }
                    signal_group(pid, Signal::SIGKILL);
                    return Err((
                        LaunchFailure::SpawnFailed,
                        format!(
                            "cannot record the game in --state-dir {}: {e}",
                            self.config.state_dir.display()
                        ),
                    ));
                }
                tracing::info!(session = %req.session_id, game = %req.game_id, pid, port, "game launched");
                Ok(Launched {
                    session_id: req.session_id.clone(),
                    pid,
                    ip,
                    port,
                })
            }
            Err(e) => {
                {
                    let mut t = self.table();
                    t.pending.remove(&req.session_id);
                    t.ports.release(port);
                }
                if let Err(pe) = self.persist().await {
                    tracing::warn!(error = %pe, "cannot write the agent state");
                }
                tracing::warn!(session = %req.session_id, game = %req.game_id, error = %e.1, "launch refused");
                Err(e)
            }
        }
    }

    /// Resolves and starts the game's process; returns it, its PID and its start time.
    /// Blocking.
    fn start_process(
        &self,
        req: &LaunchRequest,
        port: u16,
    ) -> Result<(Child, u32, Option<u64>), (LaunchFailure, String)> {
        let spec = self
            .catalog
            .resolve(
                &req.game_id,
                req.mode.as_deref(),
                req.config.as_deref(),
                port,
                &req.session_id,
            )
            .map_err(|e| match e {
                ResolveError::UnknownGame(_) => (LaunchFailure::UnknownGame, e.to_string()),
                ResolveError::BadRequest(_) => (LaunchFailure::BadRequest, e.to_string()),
            })?;
        let spawn_err = |what: String| (LaunchFailure::SpawnFailed, what);
        let log_path = self.config.log_dir.join(format!("{}.log", req.session_id));
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
        Ok((child, pid, state::proc_stat(pid).map(|(_, start)| start)))
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
        let state = {
            let mut t = self.table();
            let entry = t.games.remove(&session_id);
            if let Some(e) = &entry {
                t.ports.release(e.port);
            }
            entry.map(|e| e.state)
        };
        {
            let id = session_id.clone();
            let _ = tokio::task::spawn_blocking(move || crate::limits::remove(&id)).await;
        }
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
        if state.is_some() {
            if let Err(e) = self.persist().await {
                tracing::error!(error = %e, "cannot write the agent state");
            }
        }
        match state {
            Some(GameState::Running) => {
                tracing::info!(session = %session_id, status = ?last, "game exited by itself");
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
            None => {}
        }
    }

    /// Stops a session's game: SIGTERM to its group, SIGKILL after the grace. Returns when no
    /// process of the group is left (or, for a process stuck in the kernel, after a bound).
    /// A session this agent does not run is already stopped.
    pub async fn stop(&self, session_id: &SessionId) {
        let found = {
            let mut t = self.table();
            t.games.get_mut(session_id).map(|e| {
                e.state = GameState::Stopping;
                (e.pid, e.gone.clone())
            })
        };
        let Some((pgid, mut gone)) = found else {
            return;
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
            return;
        }
        tracing::info!(session = %session_id, pgid, "game ignored SIGTERM; sending SIGKILL");
        signal_group(pgid, Signal::SIGKILL);
        if !wait_gone(&mut gone, KILL_WAIT).await {
            tracing::error!(session = %session_id, pgid, "game's process group outlived SIGKILL");
        }
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

    /// Stops every game, all at once.
    pub async fn stop_all(&self) {
        let ids: Vec<SessionId> = self.table().games.keys().cloned().collect();
        futures::future::join_all(ids.iter().map(|id| self.stop(id))).await;
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
