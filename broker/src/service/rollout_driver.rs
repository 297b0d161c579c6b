//! The rollouts' driver (API.md, "Builds and central games"): the duty of the replica holding
//! the sweep lease, run at each sweep round. What a rollout's next step is, is
//! `rollout::next_step`'s; this file reads what it needs (the games, the hosts' builds, the
//! failed launches), writes the step under the game's version, and tells the agents and the
//! event stream. A replica's death hands the lease, and so the rollouts, to another.

use std::collections::HashMap;

use protocol::api::RolloutState;
use time::OffsetDateTime;

use super::rollout::next_step;
use super::Service;
use crate::session::Actor;
use crate::store::games::{GameChange, GameRecord, GameWrite};
use crate::store::pools::Precondition;

impl Service {
    /// Moves every running rollout on by what it is due (the sweep-lease holder's duty).
    pub(super) async fn drive_rollouts(&self) {
        let games = match self.store.games().await {
            Ok(g) => g,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the central games for their rollouts");
                return;
            }
        };
        let running: Vec<&GameRecord> = games
            .iter()
            .filter(|g| {
                g.rollout.as_ref().is_some_and(|r| {
                    matches!(r.state, RolloutState::Canary | RolloutState::Rolling)
                })
            })
            .collect();
        if running.is_empty() {
            return;
        }
        let hosts = match self.host_builds().await {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the hosts for the rollouts");
                return;
            }
        };
        let mut failures = HashMap::new();
        for g in running {
            let Some(r) = &g.rollout else { continue };
            let failed = match failures.get(&g.build) {
                Some(n) => *n,
                None => match self.store.failed_launches(&g.build, r.started_at).await {
                    Ok(n) => {
                        failures.insert(g.build.clone(), n);
                        n
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot count a build's failed launches");
                        continue;
                    }
                },
            };
            let Some((step, event)) = next_step(g, &hosts, failed, OffsetDateTime::now_utc())
            else {
                continue;
            };
            let cond = Precondition::Version(vec![g.version]);
            let written = self
                .store
                .put_game(
                    &g.game_id,
                    &GameChange::Rollout(step.clone()),
                    Some(&cond),
                    OffsetDateTime::now_utc(),
                )
                .await;
            match written {
                Ok(GameWrite::Updated(next)) => {
                    tracing::info!(game = %g.game_id, build = %g.build, ?step, "rollout moved on");
                    self.central_changed();
                    if let Some(kind) = event {
                        self.game_event(&next, &hosts, kind, Actor::Sweep).await;
                    }
                }
                Ok(_) => {} // Changed meanwhile: looked at again next round.
                Err(e) => tracing::warn!(game = %g.game_id, error = %e, "cannot move a rollout on"),
            }
        }
    }
}
