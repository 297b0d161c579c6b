//! Waiting for a launched game's readiness check (catalog `ready`) to pass within its
//! `ready_timeout`; a game that exits first, or is not ready in time, fails its launch.

use std::time::{Duration, Instant};

use protocol::wire::{ExitStatus, LaunchFailure, Launched};
use tokio::sync::watch;

use super::Games;
use crate::catalog::ReadyCheck;
use crate::output;
use crate::ready;

impl Games {
    /// Waits for a launched game's readiness check to pass, within `within`. A game that
    /// exits first, or is not ready in time (it is then stopped), fails the launch.
    pub(super) async fn wait_ready(
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
}

/// How a game ended, in words.
fn describe_exit(status: Option<ExitStatus>) -> String {
    match status {
        Some(ExitStatus::Code(c)) => format!("exit code {c}"),
        Some(ExitStatus::Signal(s)) => format!("signal {s}"),
        Some(ExitStatus::Unknown) | None => "how is unknown".into(),
    }
}
