//! Central games as stored (API.md, "Builds and central games"): each game's catalog entry
//! (JSON, the keys a host's TOML entry takes), its build and the build before it, and a
//! version that grows at every change (its `ETag`, checked by `If-Match` as for pools).

use protocol::{BuildId, GameId};
use time::OffsetDateTime;

use super::pools::Precondition;
use super::{Store, StoreError};

/// A central game as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GameRecord {
    /// The game.
    pub game_id: GameId,
    /// Its catalog entry, as JSON (checked before it was stored).
    pub entry: String,
    /// The build its new sessions run.
    pub build: BuildId,
    /// The build before the last change of `build`.
    pub previous_build: Option<BuildId>,
    /// Grows at every write.
    pub version: u64,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
}

/// What a write of a central game is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GameChange {
    /// Set its entry and build (a changed build moves the old one to `previous_build`).
    Set {
        /// The entry, as JSON.
        entry: String,
        /// Its build.
        build: BuildId,
    },
    /// Back to `previous_build` (which becomes the previous one in turn).
    Rollback,
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
    /// A rollback of a game with no previous build (or no such game): nothing was written.
    NothingToRollBack,
}

/// The answer to removing a central game.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GameRemoved {
    /// Removed; it was this.
    Removed(GameRecord),
    /// There was none.
    NotFound,
    /// The condition did not hold: nothing was removed.
    PreconditionFailed,
}

/// Applies `change` to `current` (`None`: no such game yet), at `now`.
pub fn apply(
    game_id: &GameId,
    current: Option<&GameRecord>,
    change: &GameChange,
    now: OffsetDateTime,
) -> Option<GameRecord> {
    let version = current.map_or(1, |c| c.version + 1);
    match (change, current) {
        (GameChange::Set { entry, build }, cur) => Some(GameRecord {
            game_id: game_id.clone(),
            entry: entry.clone(),
            build: build.clone(),
            previous_build: match cur {
                Some(c) if c.build != *build => Some(c.build.clone()),
                Some(c) => c.previous_build.clone(),
                None => None,
            },
            version,
            updated_at: now,
        }),
        (GameChange::Rollback, Some(c)) => {
            let previous = c.previous_build.clone()?;
            Some(GameRecord {
                build: previous,
                previous_build: Some(c.build.clone()),
                version,
                updated_at: now,
                ..c.clone()
            })
        }
        (GameChange::Rollback, None) => None,
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

    #[test]
    fn a_changed_build_keeps_the_previous_one_and_a_rollback_swaps_them() {
        let id = GameId::new("g").unwrap();
        let now = OffsetDateTime::UNIX_EPOCH;
        let set = |b: u8| GameChange::Set {
            entry: "{}".into(),
            build: build(b),
        };
        let v1 = apply(&id, None, &set(1), now).unwrap();
        assert_eq!((v1.version, v1.previous_build.clone()), (1, None));
        assert_eq!(apply(&id, Some(&v1), &GameChange::Rollback, now), None);
        // The same build again: the previous one stays what it was.
        let v2 = apply(&id, Some(&v1), &set(1), now).unwrap();
        assert_eq!((v2.version, v2.previous_build.clone()), (2, None));
        let v3 = apply(&id, Some(&v2), &set(2), now).unwrap();
        assert_eq!(
            (v3.build.clone(), v3.previous_build.clone()),
            (build(2), Some(build(1)))
        );
        let back = apply(&id, Some(&v3), &GameChange::Rollback, now).unwrap();
        assert_eq!(
            (back.build, back.previous_build, back.version),
            (build(1), Some(build(2)), 4)
        );
        assert_eq!(apply(&id, None, &GameChange::Rollback, now), None);
    }
}
