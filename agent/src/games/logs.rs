//! Games' logs for the broker: a page of a session's output, read at its request, and the
//! sweep of ended sessions' logs after `--log-retention`. The files are [`crate::output`]'s.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use protocol::wire::{AgentMessage, LogPage, LogRequest, LogUnavailable};
use protocol::SessionId;

use super::Games;
use crate::output;

/// Log reads served at once, at most (each holds a page in memory and a blocking thread).
pub(super) const MAX_LOG_READS: usize = 4;

impl Games {
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
}
