//! Central games as stored (API.md, "Builds and central games"): each game's catalog entry
//! (JSON, the keys a host's TOML entry takes), its build and the build before it, and a
//! version that grows at every change (its `ETag`, checked by `If-Match` as for pools).

use protocol::api::{CentralGame, EventType, RolloutSpec, RolloutState};
use protocol::{BuildId, GameId, HostId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::pools::Precondition;
use super::{Store, StoreError};
use crate::session::Actor;

/// A central game as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GameRecord {
    /// The game.
    pub game_id: GameId,
    /// Its catalog entry, as JSON (checked before it was stored).
    pub entry: String,
    /// The build its new sessions run (once its rollout lets them).
    pub build: BuildId,
    /// The build before the last change of `build`.
    pub previous_build: Option<BuildId>,
    /// The entry that ran `previous_build` (`None`: `entry`, as stored before there was one).
    pub previous_entry: Option<String>,
    /// The rollout of `build`, since it last changed (`None`: the game's first build, or a
    /// rollback: every host runs `build`).
    pub rollout: Option<RolloutRecord>,
    /// Grows at every write.
    pub version: u64,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
}

impl GameRecord {
    /// What a host needs to run it: the labels its entry requires, and its GPUs per session
    /// (none for an entry that cannot be read: the agent says why).
    pub fn needs(&self) -> (protocol::labels::Labels, usize) {
        match serde_json::from_str::<protocol::catalog::GameEntry>(&self.entry) {
            Ok(e) => (e.labels, e.gpus.unwrap_or(0) as usize),
            Err(_) => Default::default(),
        }
    }

    /// The entry that runs `build`, if it is one of the game's two.
    pub fn entry_of(&self, build: &BuildId) -> Option<&str> {
        if *build == self.build {
            Some(&self.entry)
        } else if self.previous_build.as_ref() == Some(build) {
            Some(self.previous_entry.as_deref().unwrap_or(&self.entry))
        } else {
            None
        }
    }
}

/// A rollout as stored, with its game's `build` (the new one) and `previous_build`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// How it goes.
    pub spec: RolloutSpec,
    /// Where it is.
    pub state: RolloutState,
    /// The hosts chosen as canaries (empty until the driver chose).
    pub canaries: Vec<HostId>,
    /// When every canary had the new build ready: the hold counts from here.
    #[serde(with = "time::serde::rfc3339::option")]
    pub hold_from: Option<OffsetDateTime>,
    /// Failed launches of the new build counted so far.
    pub failures: u32,
    /// Why it halted.
    pub last_error: Option<String>,
    /// When it began.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
}

/// What a write of a central game is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GameChange {
    /// Set its entry and build; a changed build moves the old one (and its entry) to
    /// `previous_build` and starts a rollout as `rollout` says.
    Set {
        /// The entry, as JSON.
        entry: String,
        /// Its build.
        build: BuildId,
        /// How a changed build rolls out.
        rollout: RolloutSpec,
    },
    /// Back to `previous_build` (which becomes the previous one in turn), on every host at
    /// once: no rollout.
    Rollback,
    /// A rollout's step, by the replica driving rollouts.
    Rollout(RolloutStep),
}

/// A rollout's step; each applies only from the states it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutStep {
    /// `canary`, none chosen yet: these hosts are the canaries.
    Canaries(Vec<HostId>),
    /// `canary`: every canary has the new build; the hold begins.
    Hold,
    /// `canary` or `rolling`: the failed launches counted now.
    Failures(u32),
    /// `canary`, held long enough: every host switches.
    Promote,
    /// `canary`: the canary failed, for this reason.
    Halt(String),
    /// `rolling`: every host switched.
    Done,
}

/// The answer to writing a central game.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GameWrite {
    /// A new game.
    Created(GameRecord),
    /// Changed (its version grew).
    Updated(GameRecord),
    /// The condition did not hold: nothing was written.
    PreconditionFailed,
    /// The change does not apply to the game as it is (a rollback without a previous build,
    /// a rollout step from another state, no such game): nothing was written.
    NotApplied,
}

/// The answer to removing a central game.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GameRemoved {
    /// Removed; it was this.
    Removed(Box<GameRecord>),
    /// There was none.
    NotFound,
    /// The condition did not hold: nothing was removed.
    PreconditionFailed,
}

/// Applies `change` to `current` (`None`: no such game yet), at `now`: the one place a
/// central game or its rollout changes. `None` when the change does not apply.
pub fn apply(
    game_id: &GameId,
    current: Option<&GameRecord>,
    change: &GameChange,
    now: OffsetDateTime,
) -> Option<GameRecord> {
    let version = current.map_or(1, |c| c.version + 1);
    match (change, current) {
        (
            GameChange::Set {
                entry,
                build,
                rollout,
            },
            cur,
        ) => {
            let (previous_build, previous_entry, rollout) = match cur {
                Some(c) if c.build != *build => (
                    Some(c.build.clone()),
                    Some(c.entry.clone()),
                    Some(RolloutRecord {
                        spec: *rollout,
                        state: if rollout.canary_hosts == 0 {
                            RolloutState::Rolling
                        } else {
                            RolloutState::Canary
                        },
                        canaries: Vec::new(),
                        hold_from: None,
                        failures: 0,
                        last_error: None,
                        started_at: now,
                    }),
                ),
                Some(c) => (
                    c.previous_build.clone(),
                    c.previous_entry.clone(),
                    c.rollout.clone(),
                ),
                None => (None, None, None),
            };
            Some(GameRecord {
                game_id: game_id.clone(),
                entry: entry.clone(),
                build: build.clone(),
                previous_build,
                previous_entry,
                rollout,
                version,
                updated_at: now,
            })
        }
        (GameChange::Rollback, Some(c)) => {
            let previous = c.previous_build.clone()?;
            Some(GameRecord {
                entry: c.previous_entry.clone().unwrap_or_else(|| c.entry.clone()),
                build: previous,
                previous_build: Some(c.build.clone()),
                previous_entry: Some(c.entry.clone()),
                rollout: None,
                version,
                updated_at: now,
                ..c.clone()
            })
        }
        (GameChange::Rollout(step), Some(c)) => {
            let mut r = c.rollout.clone()?;
            use RolloutState::{Canary, Rolling};
            match (step, r.state) {
                (RolloutStep::Canaries(hosts), Canary) if r.canaries.is_empty() => {
                    r.canaries.clone_from(hosts);
                }
                (RolloutStep::Hold, Canary) if r.hold_from.is_none() => r.hold_from = Some(now),
                (RolloutStep::Failures(n), Canary | Rolling) if *n != r.failures => {
                    r.failures = *n;
                }
                (RolloutStep::Promote, Canary) => r.state = Rolling,
                (RolloutStep::Halt(why), Canary) => {
                    r.state = RolloutState::Halted;
                    r.last_error = Some(why.clone());
                }
                (RolloutStep::Done, Rolling) => r.state = RolloutState::Done,
                _ => return None,
            }
            Some(GameRecord {
                rollout: Some(r),
                version,
                updated_at: now,
                ..c.clone()
            })
        }
        (GameChange::Rollback | GameChange::Rollout(_), None) => None,
    }
}

impl Store {
    /// Writes central game `id` by `change`, if `cond` (when given) holds of its version.
    pub async fn put_game(
        &self,
        id: &GameId,
        change: &GameChange,
        cond: Option<&Precondition>,
        now: OffsetDateTime,
    ) -> Result<GameWrite, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.put_game(id, change, cond, now)),
            Self::Mysql(m) => m.put_game(id, change, cond, now).await,
        }
    }

    /// Central game `id`, if there is one.
    pub async fn game(&self, id: &GameId) -> Result<Option<GameRecord>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.game(id)),
            Self::Mysql(m) => m.game(id).await,
        }
    }

    /// The central games, by id.
    pub async fn games(&self) -> Result<Vec<GameRecord>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.games()),
            Self::Mysql(m) => m.games().await,
        }
    }

    /// Appends a game or rollout event to the stream.
    pub async fn append_game_event(
        &self,
        kind: EventType,
        game: &CentralGame,
        actor: Actor,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => {
                m.append_game_event(kind, game, actor, at);
                Ok(())
            }
            Self::Mysql(m) => m.append_game_event(kind, game, actor, at).await,
        }
    }

    /// Sessions of `build` created at or after `since` whose launch failed or timed out: a
    /// rollout's failures.
    pub async fn failed_launches(
        &self,
        build: &BuildId,
        since: OffsetDateTime,
    ) -> Result<u32, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.failed_launches(build, since)),
            Self::Mysql(m) => m.failed_launches(build, since).await,
        }
    }

    /// Removes central game `id`, if `cond` (when given) holds.
    pub async fn delete_game(
        &self,
        id: &GameId,
        cond: Option<&Precondition>,
    ) -> Result<GameRemoved, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.delete_game(id, cond)),
            Self::Mysql(m) => m.delete_game(id, cond).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(n: u8) -> BuildId {
        BuildId::of_digest(&[n; 32])
    }

    fn set(b: u8) -> GameChange {
        GameChange::Set {
            entry: format!("{{\"v\":{b}}}"),
            build: build(b),
            rollout: RolloutSpec::default(),
        }
    }

    #[test]
    fn a_changed_build_keeps_the_previous_one_and_a_rollback_swaps_them() {
        let id = GameId::new("g").unwrap();
        let now = OffsetDateTime::UNIX_EPOCH;
        let v1 = apply(&id, None, &set(1), now).unwrap();
        assert_eq!((v1.version, v1.previous_build.clone()), (1, None));
        assert_eq!(v1.rollout, None, "a first build has nothing to roll from");
        assert_eq!(apply(&id, Some(&v1), &GameChange::Rollback, now), None);
        // The same build again: the previous one stays what it was, no rollout starts.
        let v2 = apply(&id, Some(&v1), &set(1), now).unwrap();
        assert_eq!((v2.version, v2.previous_build.clone()), (2, None));
        assert_eq!(v2.rollout, None);
        let v3 = apply(&id, Some(&v2), &set(2), now).unwrap();
        assert_eq!(
            (v3.build.clone(), v3.previous_build.clone()),
            (build(2), Some(build(1)))
        );
        assert_eq!(
            v3.entry_of(&build(1)),
            Some("{\"v\":1}"),
            "the old entry runs the old build"
        );
        assert_eq!(v3.rollout.as_ref().unwrap().state, RolloutState::Canary);
        let back = apply(&id, Some(&v3), &GameChange::Rollback, now).unwrap();
        assert_eq!(
            (
                back.build.clone(),
                back.previous_build.clone(),
                back.version
            ),
            (build(1), Some(build(2)), 4)
        );
        assert_eq!(back.entry, "{\"v\":1}");
        assert_eq!(back.entry_of(&build(2)), Some("{\"v\":2}"));
        assert_eq!(back.rollout, None, "a rollback is on every host at once");
        assert_eq!(apply(&id, None, &GameChange::Rollback, now), None);
    }

    #[test]
    fn rollout_steps_apply_only_from_their_states() {
        use RolloutState::{Canary, Done, Halted, Rolling};
        use RolloutStep as S;
        let id = GameId::new("g").unwrap();
        let now = OffsetDateTime::UNIX_EPOCH;
        let v1 = apply(&id, None, &set(1), now).unwrap();
        let at = |state: RolloutState| {
            let mut g = apply(&id, Some(&v1), &set(2), now).unwrap();
            g.rollout.as_mut().unwrap().state = state;
            g
        };
        let host = HostId::new("h").unwrap();
        // (step, from, the state after, or None: refused)
        let table: &[(S, RolloutState, Option<RolloutState>)] = &[
            (S::Canaries(vec![host.clone()]), Canary, Some(Canary)),
            (S::Canaries(vec![host.clone()]), Rolling, None),
            (S::Hold, Canary, Some(Canary)),
            (S::Hold, Rolling, None),
            (S::Failures(1), Canary, Some(Canary)),
            (S::Failures(1), Rolling, Some(Rolling)),
            (S::Failures(0), Canary, None),
            (S::Failures(1), Halted, None),
            (S::Promote, Canary, Some(Rolling)),
            (S::Promote, Rolling, None),
            (S::Promote, Halted, None),
            (S::Halt("x".into()), Canary, Some(Halted)),
            (S::Halt("x".into()), Rolling, None),
            (S::Halt("x".into()), Done, None),
            (S::Done, Rolling, Some(Done)),
            (S::Done, Canary, None),
            (S::Done, Halted, None),
        ];
        for (step, from, to) in table {
            let g = at(*from);
            let next = apply(&id, Some(&g), &GameChange::Rollout(step.clone()), now);
            assert_eq!(
                next.as_ref().map(|n| n.rollout.as_ref().unwrap().state),
                *to,
                "{step:?} from {from:?}"
            );
            if let Some(n) = next {
                assert_eq!(n.version, g.version + 1);
                assert_eq!((n.build, n.previous_build), (g.build, g.previous_build));
            }
        }
        // Canaries are chosen once, and the hold begins once.
        let g = at(Canary);
        let chosen = apply(
            &id,
            Some(&g),
            &GameChange::Rollout(S::Canaries(vec![host.clone()])),
            now,
        )
        .unwrap();
        assert_eq!(
            apply(
                &id,
                Some(&chosen),
                &GameChange::Rollout(S::Canaries(vec![])),
                now
            ),
            None
        );
        let held = apply(&id, Some(&g), &GameChange::Rollout(S::Hold), now).unwrap();
        assert_eq!(
            apply(&id, Some(&held), &GameChange::Rollout(S::Hold), now),
            None
        );
        // A halt says why; a game without a rollout takes no step.
        let halted = apply(
            &id,
            Some(&g),
            &GameChange::Rollout(S::Halt("2 failed".into())),
            now,
        )
        .unwrap();
        assert_eq!(
            halted.rollout.unwrap().last_error.as_deref(),
            Some("2 failed")
        );
        assert_eq!(
            apply(&id, Some(&v1), &GameChange::Rollout(S::Promote), now),
            None
        );
        // canary_hosts = 0 starts at rolling.
        let no_canary = GameChange::Set {
            entry: "{}".into(),
            build: build(3),
            rollout: RolloutSpec {
                canary_hosts: 0,
                ..RolloutSpec::default()
            },
        };
        let g = apply(&id, Some(&v1), &no_canary, now).unwrap();
        assert_eq!(g.rollout.unwrap().state, Rolling);
    }
}
