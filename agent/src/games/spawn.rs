//! Starting a game's process: its request resolved through the catalog into a program, argv
//! and environment (nothing of the agent's own), the session's config copy written, its output
//! sent to its log, and the process spawned, without a shell, as the leader of a new process
//! group, with its resource limits applied. And, once the game has ended, removing the
//! session's own files.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use protocol::wire::{LaunchFailure, LaunchRequest};
use protocol::SessionId;
use tokio::process::{Child, Command};

use super::group::signal_group;
use super::run_as::run_as;
use super::Games;
use crate::catalog::{ReadyCheck, ResolveError};
use crate::output;
use crate::ports::Lease;
use crate::session_config;
use crate::state;

/// A started game process.
#[derive(Debug)]
pub(super) struct Spawned {
    /// The game's process, the leader of its group.
    pub(super) child: Child,
    /// Its PID, which is also its group's id.
    pub(super) pid: u32,
    /// Its start time, to tell a reused PID apart later.
    pub(super) start_time: Option<u64>,
    /// Whether it got a cgroup.
    pub(super) limited: bool,
    /// Its readiness check and how long it may take.
    pub(super) ready: Option<(ReadyCheck, Duration)>,
}

impl Games {
    /// Resolves and starts the game's process. Blocking.
    pub(super) fn start_process(
        &self,
        req: &LaunchRequest,
        lease: &Lease,
    ) -> Result<Spawned, (LaunchFailure, String)> {
        let session_dir = session_config::dir(&self.config.state_dir, &req.session_id);
        let spec = self
            .game_for(req)
            .and_then(|(game, build)| {
                let build = build.map(|b| b.display().to_string());
                game.resolve(req, lease, &session_dir, build.as_deref())
            })
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
}

/// Removes a session's own files (its config copy), if it has any. Off the async threads.
pub(super) async fn remove_session_dir(state_dir: &Path, id: &SessionId) {
    let dir = session_config::dir(state_dir, id);
    let _ = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a session's files");
        }
        _ => {}
    })
    .await;
}
