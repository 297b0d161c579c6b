//! Recording the table in the state file, so that a restarted agent finds its games again.
//!
//! The state file is written by group commit ([`Games::persist_blocking`]): concurrent changes
//! share one write, on the blocking pool (a launch's together with its spawn). A launch waits
//! for exactly one write, the *pending* record made before the spawn, which is enough to find
//! the game again after a crash (by its environment). Later writes (the PID after the spawn,
//! an exit, a stop) are not waited for before answering the broker: losing one only means the
//! next start of the agent looks the game up by its environment, or finds it gone, which is
//! what happened anyway. So they are put off a little ([`Games::persist_later`]), and under
//! load one write serves many.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::Games;
use crate::state;

/// How long a state write that nobody waits for is put off, so that it serves every change
/// made meanwhile: under load, one write for many launches and exits instead of one each.
const DEFERRED_WRITE: Duration = Duration::from_millis(20);

/// `d` in whole seconds, as the state file keeps it.
fn saturating_secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

impl Games {
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
    pub(super) fn persist_blocking(&self) -> std::io::Result<()> {
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
                    g.build = t.builds.get(id).cloned();
                    g
                })
                .chain(t.pending.iter().map(|(id, lease)| {
                    let mut g = state::SavedGame::new(id, 0, lease, None, true);
                    g.build = t.builds.get(id).cloned();
                    g
                }))
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
    pub(super) async fn persist(self: &Arc<Self>) -> std::io::Result<()> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.persist_blocking())
            .await
            .map_err(std::io::Error::other)?
    }

    /// Writes the state file soon, in a tracked task, not waited for; see the module docs.
    /// One such write is scheduled at a time, [`DEFERRED_WRITE`] ahead, and includes every
    /// change made until it snapshots the table: the flag is cleared before the snapshot, so a
    /// change it misses schedules the next one.
    pub(super) fn persist_later(self: &Arc<Self>) {
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
}
