//! Central games (API.md, "Builds and central games"): catalog entries kept by the broker,
//! each with its build, set, read, rolled back and removed under `If-Match`. An entry is
//! checked by `protocol::catalog::check`, the check a host runs on its own TOML, and its build
//! must be stored first.

use protocol::api::{self, CentralGame, EventType, GameSource, RolloutSpec};
use protocol::catalog::GameEntry;
use protocol::wire::{MAX_CENTRAL_GAMES, MAX_ENTRY_JSON};
use protocol::{BuildId, GameId};
use time::OffsetDateTime;

use super::rollout::{self, HostBuilds};
use super::Service;
use crate::error::Error;
use crate::session::Actor;
use crate::store::games::{GameChange, GameRecord, GameRemoved, GameWrite};
use crate::store::pools::Precondition;

fn entry_of(r: &GameRecord) -> Result<GameEntry, Error> {
    serde_json::from_str(&r.entry)
        .map_err(|e| Error::Internal(format!("central game {} does not decode: {e}", r.game_id)))
}

/// `r` as the API shows it, its rollout as `hosts` are.
pub(super) fn api(r: &GameRecord, hosts: &[HostBuilds]) -> Result<CentralGame, Error> {
    Ok(CentralGame {
        game_id: r.game_id.clone(),
        build: r.build.clone(),
        previous_build: r.previous_build.clone(),
        entry: entry_of(r)?,
        version: r.version,
        updated_at: r.updated_at,
        rollout: rollout::view(r, hosts),
    })
}

/// A `PUT /v1/games/{id}` body taken apart: its build, and its catalog entry (every other
/// key), checked as a host checks its own.
fn parse(
    id: &GameId,
    mut body: serde_json::Map<String, serde_json::Value>,
) -> Result<(BuildId, GameEntry, RolloutSpec), Error> {
    let build = match body.remove("build") {
        Some(serde_json::Value::String(b)) => {
            BuildId::new(b).map_err(|e| Error::Invalid(e.to_string()))?
        }
        _ => {
            return Err(Error::Invalid(
                "\"build\" is required: the sha256 of a stored build (PUT /v1/builds/{sha256})"
                    .into(),
            ))
        }
    };
    let rollout = match body.remove("rollout") {
        None | Some(serde_json::Value::Null) => RolloutSpec::default(),
        Some(r) => serde_json::from_value(r)
            .map_err(|e| Error::Invalid(format!("game {id}: \"rollout\": {e}")))?,
    };
    // With none allowed, a canary would halt before any launch could succeed.
    if rollout.max_failures == 0 {
        return Err(Error::Invalid(format!(
            "game {id}: \"rollout\": max_failures must be at least 1"
        )));
    }
    let entry: GameEntry = serde_json::from_value(serde_json::Value::Object(body))
        .map_err(|e| Error::Invalid(format!("game {id}: {e}")))?;
    protocol::catalog::check(entry.clone())
        .map_err(|e| Error::Invalid(format!("game {id}: {e}")))?;
    Ok((build, entry, rollout))
}

impl Service {
    /// Sets central game `id` from a `PUT` body (its `build` and its catalog keys), if
    /// `cond` holds: the game, and whether it is new.
    pub async fn put_game(
        &self,
        id: &GameId,
        body: serde_json::Map<String, serde_json::Value>,
        cond: Option<&Precondition>,
    ) -> Result<(CentralGame, bool), Error> {
        let (build, entry, rollout) = parse(id, body)?;
        if self.store.build(&build).await?.is_none() {
            return Err(Error::Invalid(format!(
                "no build {build}: upload it first (PUT /v1/builds/{build})"
            )));
        }
        let entry = serde_json::to_string(&entry).map_err(|e| Error::Internal(e.to_string()))?;
        if entry.len() > MAX_ENTRY_JSON {
            return Err(Error::Invalid(format!(
                "game {id}: the entry is over {MAX_ENTRY_JSON} bytes"
            )));
        }
        if self.store.game(id).await?.is_none()
            && self.store.games().await?.len() >= MAX_CENTRAL_GAMES
        {
            return Err(Error::Conflict(format!(
                "there are {MAX_CENTRAL_GAMES} central games, the most a broker keeps"
            )));
        }
        let change = GameChange::Set {
            entry,
            build,
            rollout,
        };
        self.write_game(id, &change, cond).await
    }

    /// Returns central game `id` to its previous build at once.
    pub async fn rollback_game(&self, id: &GameId) -> Result<CentralGame, Error> {
        self.write_game(id, &GameChange::Rollback, None)
            .await
            .map(|(g, _)| g)
    }

    async fn write_game(
        &self,
        id: &GameId,
        change: &GameChange,
        cond: Option<&Precondition>,
    ) -> Result<(CentralGame, bool), Error> {
        let now = OffsetDateTime::now_utc();
        let (record, new) = match self.store.put_game(id, change, cond, now).await? {
            GameWrite::Created(r) => (r, true),
            GameWrite::Updated(r) => (r, false),
            GameWrite::PreconditionFailed => return Err(Error::GameChanged(id.clone())),
            GameWrite::NotApplied => {
                return match self.store.game(id).await? {
                    None => Err(Error::NoCentralGame(id.clone())),
                    Some(_) => Err(Error::Conflict(format!(
                        "game {id} has no previous build to roll back to"
                    ))),
                }
            }
        };
        tracing::info!(game = %id, build = %record.build, version = record.version, "central game set");
        self.central_changed();
        let hosts = self.host_builds().await.unwrap_or_default();
        self.game_event(&record, &hosts, EventType::GameUpdated, Actor::Admin)
            .await;
        Ok((api(&record, &hosts)?, new))
    }

    /// Central game `id`.
    pub async fn central_game(&self, id: &GameId) -> Result<CentralGame, Error> {
        match self.store.game(id).await? {
            Some(r) => api(&r, &self.host_builds().await?),
            None => Err(Error::NoCentralGame(id.clone())),
        }
    }

    /// Removes central game `id`, if `cond` holds: no new sessions of it; running ones go on.
    pub async fn delete_game(
        &self,
        id: &GameId,
        cond: Option<&Precondition>,
    ) -> Result<CentralGame, Error> {
        match self.store.delete_game(id, cond).await? {
            GameRemoved::Removed(r) => {
                tracing::info!(game = %id, "central game removed");
                self.central_changed();
                let hosts = self.host_builds().await.unwrap_or_default();
                self.game_event(&r, &hosts, EventType::GameUpdated, Actor::Admin)
                    .await;
                api(&r, &hosts)
            }
            GameRemoved::NotFound => Err(Error::NoCentralGame(id.clone())),
            GameRemoved::PreconditionFailed => Err(Error::GameChanged(id.clone())),
        }
    }

    /// The central game that uses `build` (as its build or the one it rolls back to), if any.
    pub(super) async fn game_using(&self, build: &BuildId) -> Result<Option<GameId>, Error> {
        Ok(self
            .store
            .games()
            .await?
            .into_iter()
            .find(|g| g.build == *build || g.previous_build.as_ref() == Some(build))
            .map(|g| g.game_id))
    }

    /// `offered` (the hosts' games) with the central games added: a central game's build and
    /// source, and one no host offers yet with its entry's modes and settings.
    pub(super) async fn with_central_games(
        &self,
        mut offered: Vec<api::Game>,
    ) -> Result<Vec<api::Game>, Error> {
        let games = self.store.games().await?;
        let hosts = if games.is_empty() {
            Vec::new()
        } else {
            self.host_builds().await?
        };
        for r in games {
            let entry = entry_of(&r)?;
            let rollout = rollout::view(&r, &hosts);
            match offered.iter_mut().find(|g| g.game_id == r.game_id) {
                Some(g) => {
                    g.build = Some(r.build.clone());
                    g.source = GameSource::Central;
                    g.rollout = rollout;
                }
                None => {
                    let checked = protocol::catalog::check(entry)
                        .map_err(|e| Error::Internal(format!("central game {}: {e}", r.game_id)))?;
                    offered.push(api::Game {
                        game_id: r.game_id.clone(),
                        modes: checked.modes,
                        hosts: 0,
                        settings: checked.settings,
                        build: Some(r.build.clone()),
                        source: GameSource::Central,
                        rollout,
                    });
                }
            }
        }
        offered.sort_by(|a, b| a.game_id.cmp(&b.game_id));
        Ok(offered)
    }

    /// Records a game or rollout event carrying `g` as the API shows it.
    pub(super) async fn game_event(
        &self,
        g: &GameRecord,
        hosts: &[HostBuilds],
        kind: EventType,
        actor: Actor,
    ) {
        let game = match api(g, hosts) {
            Ok(game) => game,
            Err(e) => {
                tracing::warn!(game = %g.game_id, error = %e, "cannot record a game event");
                return;
            }
        };
        match self
            .store
            .append_game_event(kind, &game, actor, OffsetDateTime::now_utc())
            .await
        {
            Ok(()) => self.feed.wake(),
            Err(e) => tracing::warn!(game = %g.game_id, error = %e, "cannot record a game event"),
        }
    }
}
