//! Builds' records (API.md, "Builds and central games"): which builds exist, how large, of
//! what kind, since when. The bytes are [`crate::builds`]'s; a record is written only once
//! they are kept, so a recorded build can always be read.

use protocol::api::BuildKind;
use protocol::BuildId;
use time::OffsetDateTime;

use super::{Store, StoreError};

/// The most builds one listing answers.
pub const MAX_BUILDS_LISTED: u32 = 1000;

/// A build as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRecord {
    /// Its sha256.
    pub build: BuildId,
    /// Its size in bytes.
    pub size: u64,
    /// An archive or one file.
    pub kind: BuildKind,
    /// When it was first stored.
    pub created_at: OffsetDateTime,
}

impl Store {
    /// Records `b` unless it is recorded already: whether this call recorded it. Idempotent
    /// (a build never changes).
    pub async fn put_build(&self, b: &BuildRecord) -> Result<bool, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.put_build(b)),
            Self::Mysql(m) => m.put_build(b).await,
        }
    }

    /// Build `id`'s record, if it has one.
    pub async fn build(&self, id: &BuildId) -> Result<Option<BuildRecord>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.build(id)),
            Self::Mysql(m) => m.build(id).await,
        }
    }

    /// The builds, newest first, at most [`MAX_BUILDS_LISTED`].
    pub async fn builds(&self) -> Result<Vec<BuildRecord>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.builds()),
            Self::Mysql(m) => m.builds().await,
        }
    }

    /// Forgets build `id`'s record: whether it had one.
    pub async fn delete_build(&self, id: &BuildId) -> Result<bool, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.delete_build(id)),
            Self::Mysql(m) => m.delete_build(id).await,
        }
    }
}
