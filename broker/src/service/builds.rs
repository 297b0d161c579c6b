//! Builds (API.md, "Builds and central games"): an upload kept under its sha256, listed,
//! read back by range, removed. The bytes are [`crate::builds::BuildStore`]'s, the records
//! the store's; a record is written only after the bytes are kept.

use bytes::Bytes;
use futures::Stream;
use protocol::api::Build;
use protocol::BuildId;
use time::OffsetDateTime;

use super::Service;
use crate::builds::{BuildError, Span};
use crate::error::Error;
use crate::store::builds::BuildRecord;
use crate::store::games::GameRecord;

/// A build as the API shows it, with the central games among `games` that hold it (as
/// their build or the one they roll back to). `hosts` stays 0 until agents hold builds.
fn api(r: BuildRecord, games: &[GameRecord]) -> Build {
    let holding = games
        .iter()
        .filter(|g| g.build == r.build || g.previous_build.as_ref() == Some(&r.build))
        .map(|g| g.game_id.clone())
        .collect();
    Build {
        build: r.build,
        size: r.size,
        kind: r.kind,
        created_at: r.created_at,
        games: holding,
        hosts: 0,
    }
}

impl From<BuildError> for Error {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::NotFound(id) => Self::NoBuild(id),
            BuildError::TooLarge(max) => Self::BuildTooLarge(max),
            BuildError::Busy(n) => Self::TooManyUploads(n),
            BuildError::BadRange { size } => Self::BadRange { size },
            e @ (BuildError::Mismatch { .. } | BuildError::Refused(_) | BuildError::Broken(_)) => {
                Self::Invalid(e.to_string())
            }
            BuildError::Io(e) => Self::Internal(format!("build storage: {e}")),
            BuildError::Objects(e) => {
                tracing::warn!(error = %e, "the builds' object store failed");
                Self::NotReady(crate::error::Dependency::Nats)
            }
        }
    }
}

impl Service {
    /// The largest build taken (`--max-build-size`).
    pub fn max_build_size(&self) -> u64 {
        self.builds.max_size()
    }

    /// Keeps `body` as build `id` (and `true`: it is new), or answers the build as stored
    /// (and `false`) without reading the body. Nothing is kept unless the body hashes to `id`
    /// and, for an archive, is safe to unpack.
    pub async fn put_build<S, E>(&self, id: &BuildId, body: S) -> Result<(Build, bool), Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if let Some(r) = self.store.build(id).await? {
            if self.builds.has(id).await? {
                return Ok((api(r, &[]), false));
            }
        }
        let got = self.builds.receive(id, body).await?;
        let record = BuildRecord {
            build: id.clone(),
            size: got.size,
            kind: got.kind,
            created_at: OffsetDateTime::now_utc(),
        };
        let new = self.store.put_build(&record).await?;
        let record = match new {
            true => record,
            false => self.store.build(id).await?.unwrap_or(record),
        };
        tracing::info!(build = %id, size = got.size, kind = got.kind.as_str(), "build stored");
        // A concurrent upload of the same build recorded it first: it is not new here.
        Ok((api(record, &[]), new))
    }

    /// Build `id`, as stored.
    pub async fn build(&self, id: &BuildId) -> Result<Build, Error> {
        let r = self
            .store
            .build(id)
            .await?
            .ok_or_else(|| Error::NoBuild(id.clone()))?;
        Ok(api(r, &self.store.games().await?))
    }

    /// Build `id`'s size (a download's ranges are read against it).
    pub async fn build_size(&self, id: &BuildId) -> Result<u64, Error> {
        self.store
            .build(id)
            .await?
            .map(|r| r.size)
            .ok_or_else(|| Error::NoBuild(id.clone()))
    }

    /// The builds, newest first.
    pub async fn builds(&self) -> Result<Vec<Build>, Error> {
        let games = self.store.games().await?;
        Ok(self
            .store
            .builds()
            .await?
            .into_iter()
            .map(|r| api(r, &games))
            .collect())
    }

    /// Build `id`'s size, and `span` of its bytes (all: `None`).
    pub async fn build_content(
        &self,
        id: &BuildId,
        span: Option<Span>,
    ) -> Result<(u64, crate::builds::BuildBytes), Error> {
        if self.store.build(id).await?.is_none() {
            return Err(Error::NoBuild(id.clone()));
        }
        Ok(self.builds.read(id, span).await?)
    }

    /// Forgets build `id`: its record, then its bytes. Without a record, bytes a failed
    /// removal left are removed still (and the answer is 404).
    pub async fn delete_build(&self, id: &BuildId) -> Result<Build, Error> {
        let b = match self.build(id).await {
            Ok(b) => b,
            Err(e @ Error::NoBuild(_)) => {
                self.builds.remove(id).await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if let Some(game) = self.game_using(id).await? {
            return Err(Error::Conflict(format!(
                "build {id} is central game {game}'s (its build, or the one it rolls back to): set another build or delete the game first"
            )));
        }
        let live = self.store.active(None).await?;
        if let Some(s) = live.iter().find(|s| s.build.as_ref() == Some(id)) {
            return Err(Error::Conflict(format!(
                "build {id} runs in session {}: end its sessions first",
                s.session_id
            )));
        }
        self.store.delete_build(id).await?;
        self.builds.remove(id).await?;
        tracing::info!(build = %id, "build removed");
        Ok(b)
    }
}
