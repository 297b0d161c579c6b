//! Builds' bytes (API.md, "Builds and central games"): received while hashed, checked, kept
//! whole or not at all, and read back by range. What a build is (its size, kind, when) is a
//! store record; this module keeps only the bytes.
//!
//! An upload is written to a temporary file under `<build store>/.incoming` while its sha256
//! is computed, never whole in memory; past the size limit it stops. Only when the whole body
//! has arrived, hashed to its name and passed [`archive::inspect`], is it synced and renamed
//! into place (and the directory synced): a build is visible complete or not at all, also
//! after a `kill -9` mid-upload (what a dead upload leaves in `.incoming` is removed at the
//! next start).
//!
//! What an upload is, and whether an archive is safe to unpack, is the `archive` crate's,
//! whose rules agents unpack by.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use protocol::api::BuildKind;
use protocol::BuildId;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// An upload that sends nothing for this long is given up (its spool removed).
pub const UPLOAD_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Why a build cannot be received or read.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No such build is kept.
    #[error("no build {0}")]
    NotFound(BuildId),
    /// As many uploads are being received as the store takes at once.
    #[error("{0} uploads are being received, the most at once")]
    Busy(usize),
    /// The body is larger than `--max-build-size`.
    #[error("the build is larger than --max-build-size ({0} bytes)")]
    TooLarge(u64),
    /// The body's sha256 is not the build's name: nothing was kept.
    #[error("the body's sha256 is {got}, not {expected}: nothing was kept")]
    Mismatch {
        /// The name it was sent under.
        expected: BuildId,
        /// What its bytes hash to.
        got: BuildId,
    },
    /// An archive that may not be unpacked: nothing was kept.
    #[error("{0}; nothing was kept")]
    Refused(archive::ArchiveError),
    /// The body stopped before its end (the client went away or broke the stream).
    #[error("the upload broke off: {0}")]
    Broken(String),
    /// The range asked for is not within the build.
    #[error("the range starts at or past the build's end ({size} bytes)")]
    BadRange {
        /// The build's size.
        size: u64,
    },
    /// The disk failed us.
    #[error("build storage: {0}")]
    Io(#[from] io::Error),
    /// The replicas' object store failed us.
    #[error(transparent)]
    Objects(#[from] crate::nats::ObjectError),
}

/// What an upload became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Its size.
    pub size: u64,
    /// What it is.
    pub kind: BuildKind,
}

/// Where builds' bytes are kept: a directory of one file per build, or, among replicas, the
/// NATS JetStream object store every replica reads (the directory then only spools uploads).
#[derive(Debug, Clone)]
pub struct BuildStore {
    dir: PathBuf,
    objects: Option<crate::nats::Objects>,
    /// This broker's own spool: `.incoming/<broker id>`, so brokers sharing a directory never
    /// clear each other's uploads.
    incoming: PathBuf,
    max_size: u64,
    /// Uploads being received, at most [`MAX_UPLOADS`]: each holds a spool file growing to
    /// `--max-build-size` and a hash's CPU.
    uploads: Arc<Semaphore>,
}

/// Uploads received at once, at most: past it, `PUT /v1/builds` answers 503 with
/// `Retry-After` (another replica may have room).
pub const MAX_UPLOADS: usize = 4;

/// Part of a build to read: `start` to `end`, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The first byte.
    pub start: u64,
    /// The last byte.
    pub end: u64,
}

impl BuildStore {
    /// The store in `dir` (made if missing) of broker `owner`, taking builds of at most
    /// `max_size` bytes; what its dead uploads left behind is removed.
    pub fn open(dir: PathBuf, owner: &str, max_size: u64) -> io::Result<Self> {
        let owner: String = owner
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let incoming = dir.join(".incoming").join(owner);
        if incoming.exists() {
            std::fs::remove_dir_all(&incoming)?;
        }
        std::fs::create_dir_all(&incoming)?;
        Ok(Self {
            dir,
            objects: None,
            incoming,
            max_size,
            uploads: Arc::new(Semaphore::new(MAX_UPLOADS)),
        })
    }

    /// Keeps builds in `objects` (replicas) rather than in the directory.
    pub fn with_objects(mut self, objects: crate::nats::Objects) -> Self {
        self.objects = Some(objects);
        self
    }

    /// The largest build taken.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    fn path(&self, id: &BuildId) -> PathBuf {
        self.dir.join(id.as_str())
    }

    /// Whether build `id`'s bytes are kept.
    pub async fn has(&self, id: &BuildId) -> Result<bool, BuildError> {
        match &self.objects {
            Some(o) => Ok(o.size(id.as_str()).await?.is_some()),
            None => Ok(tokio::fs::try_exists(self.path(id)).await?),
        }
    }

    /// Receives `body` as build `id`: hashed while written, checked, then kept. Nothing is
    /// kept unless all of it is right.
    pub async fn receive<S, E>(&self, id: &BuildId, body: S) -> Result<Received, BuildError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        // Held until the build is kept or refused.
        let _turn = Arc::clone(&self.uploads)
            .try_acquire_owned()
            .map_err(|_| BuildError::Busy(MAX_UPLOADS))?;
        let temp = Incoming::new(&self.incoming);
        let (size, got) = self.spool(&temp.path, body).await?;
        if got != *id {
            return Err(BuildError::Mismatch {
                expected: id.clone(),
                got,
            });
        }
        // An archive unpacks to at most what an upload may be, times four.
        let limit = self.max_size.saturating_mul(4);
        let path = temp.path.clone();
        let kind = tokio::task::spawn_blocking(move || archive::inspect(&path, limit))
            .await
            .map_err(|e| BuildError::Io(io::Error::other(e)))?
            .map_err(|e| match e {
                archive::ArchiveError::Io(e) => BuildError::Io(e),
                other => BuildError::Refused(other),
            })?;
        match &self.objects {
            // Stored already (by a concurrent upload): the same bytes, as the name is their
            // hash; putting them again would purge the stored chunks under its readers.
            Some(o) if o.size(id.as_str()).await?.is_some() => {}
            Some(o) => {
                let mut file = tokio::fs::File::open(&temp.path).await?;
                o.put(id.as_str(), &mut file).await?;
            }
            None => {
                tokio::fs::rename(&temp.path, self.path(id)).await?;
                temp.kept();
                sync_dir(&self.dir).await?;
            }
        }
        Ok(Received { size, kind })
    }

    /// Writes `body` to `path`, synced, hashing it: its size and sha256.
    async fn spool<S, E>(&self, path: &Path, mut body: S) -> Result<(u64, BuildId), BuildError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut file = tokio::fs::File::create(path).await?;
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        let mut size = 0u64;
        loop {
            let next = tokio::time::timeout(UPLOAD_IDLE, body.next())
                .await
                .map_err(|_| {
                    BuildError::Broken(format!("nothing arrived for {}s", UPLOAD_IDLE.as_secs()))
                })?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| BuildError::Broken(e.to_string()))?;
            size += chunk.len() as u64;
            if size > self.max_size {
                return Err(BuildError::TooLarge(self.max_size));
            }
            hash.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.sync_all().await?;
        let digest: [u8; 32] = hash
            .finish()
            .as_ref()
            .try_into()
            .map_err(|_| BuildError::Io(io::Error::other("sha256 is 32 bytes")))?;
        Ok((size, BuildId::of_digest(&digest)))
    }

    /// Build `id`'s size, and `span` of it (all of it: `None`) as a stream of chunks.
    pub async fn read(
        &self,
        id: &BuildId,
        span: Option<Span>,
    ) -> Result<(u64, BuildBytes), BuildError> {
        if let Some(o) = &self.objects {
            let local = tokio::fs::try_exists(self.path(id)).await.unwrap_or(false);
            match span {
                // The whole build: straight from the object store.
                None if !local => {
                    let size = o
                        .size(id.as_str())
                        .await?
                        .ok_or_else(|| BuildError::NotFound(id.clone()))?;
                    let object = o
                        .get(id.as_str())
                        .await?
                        .ok_or_else(|| BuildError::NotFound(id.clone()))?;
                    let reader: Box<dyn tokio::io::AsyncRead + Unpin + Send> = Box::new(object);
                    return Ok((
                        size,
                        tokio_util::io::ReaderStream::with_capacity(reader, 64 * 1024),
                    ));
                }
                // A range (a download resuming): the object store reads only from the start,
                // so this replica keeps a copy of its own once, and seeks in it.
                Some(_) if !local => self.copy_here(o, id).await?,
                _ => {}
            }
        }
        let mut file = match tokio::fs::File::open(self.path(id)).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BuildError::NotFound(id.clone()))
            }
            Err(e) => return Err(e.into()),
        };
        let size = file.metadata().await?.len();
        let (start, len) = span_of(span, size)?;
        file.seek(io::SeekFrom::Start(start)).await?;
        let reader: Box<dyn tokio::io::AsyncRead + Unpin + Send> = Box::new(file.take(len));
        Ok((
            size,
            tokio_util::io::ReaderStream::with_capacity(reader, 64 * 1024),
        ))
    }

    /// Copies build `id` from the object store into this replica's directory, whole or not
    /// at all (spooled, then renamed).
    async fn copy_here(&self, o: &crate::nats::Objects, id: &BuildId) -> Result<(), BuildError> {
        let mut object = o
            .get(id.as_str())
            .await?
            .ok_or_else(|| BuildError::NotFound(id.clone()))?;
        let temp = Incoming::new(&self.incoming);
        let mut file = tokio::fs::File::create(&temp.path).await?;
        tokio::io::copy(&mut object, &mut file).await?;
        file.sync_all().await?;
        tokio::fs::rename(&temp.path, self.path(id)).await?;
        temp.kept();
        Ok(())
    }

    /// Forgets build `id`'s bytes (none kept: nothing to do).
    pub async fn remove(&self, id: &BuildId) -> Result<(), BuildError> {
        if let Some(o) = &self.objects {
            o.delete(id.as_str()).await?;
        }
        match tokio::fs::remove_file(self.path(id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A build's bytes as read: a stream of chunks.
pub type BuildBytes = tokio_util::io::ReaderStream<Box<dyn tokio::io::AsyncRead + Unpin + Send>>;

/// Where `span` of a build of `size` bytes starts, and how long it is.
fn span_of(span: Option<Span>, size: u64) -> Result<(u64, u64), BuildError> {
    match span {
        None => Ok((0, size)),
        Some(s) if s.start >= size || s.end < s.start => Err(BuildError::BadRange { size }),
        Some(s) => Ok((s.start, s.end.min(size - 1) - s.start + 1)),
    }
}

/// A file being received; removed unless it was kept.
struct Incoming {
    path: PathBuf,
    kept: bool,
}

impl Incoming {
    fn new(dir: &Path) -> Self {
        let name = format!("{}.part", uuid::Uuid::now_v7());
        Self {
            path: dir.join(name),
            kept: false,
        }
    }

    fn kept(mut self) {
        self.kept = true;
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.kept {
            // A large file's removal can take a while: not on an async thread.
            let path = std::mem::take(&mut self.path);
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || std::fs::remove_file(path))),
                Err(_) => {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

/// Makes a rename in `dir` durable.
async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, io::Error>> + Unpin {
        futures::stream::iter(
            chunks
                .iter()
                .map(|c| Ok(Bytes::from_static(c)))
                .collect::<Vec<_>>(),
        )
    }

    fn id_of(data: &[u8]) -> BuildId {
        let d = ring::digest::digest(&ring::digest::SHA256, data);
        BuildId::of_digest(d.as_ref().try_into().unwrap())
    }

    #[tokio::test]
    async fn a_build_is_kept_whole_under_its_hash_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = BuildStore::open(dir.path().join("builds"), "b1:7070", 16).unwrap();
        let id = id_of(b"hello, world");
        let got = store
            .receive(&id, body(&[b"hello, ", b"world"]))
            .await
            .unwrap();
        assert_eq!(
            got,
            Received {
                size: 12,
                kind: BuildKind::File
            }
        );
        assert!(store.has(&id).await.unwrap());
        let (size, part) = store
            .read(&id, Some(Span { start: 7, end: 100 }))
            .await
            .unwrap();
        let part: Vec<Bytes> = part.map(Result::unwrap).collect().await;
        assert_eq!((size, part.concat()), (12, b"world".to_vec()));
        assert!(matches!(
            store.read(&id, Some(Span { start: 12, end: 20 })).await,
            Err(BuildError::BadRange { size: 12 })
        ));

        // Another body under that name, a body too large: nothing kept, nothing left over.
        let other = id_of(b"other");
        assert!(matches!(
            store.receive(&other, body(&[b"not other"])).await,
            Err(BuildError::Mismatch { .. })
        ));
        assert!(matches!(
            store
                .receive(&other, body(&[b"0123456789", b"0123456789"]))
                .await,
            Err(BuildError::TooLarge(16))
        ));
        assert!(!store.has(&other).await.unwrap());
        let left = std::fs::read_dir(dir.path().join("builds/.incoming/b1_7070"))
            .unwrap()
            .count();
        assert_eq!(left, 0);
        store.remove(&id).await.unwrap();
        assert!(matches!(
            store.read(&id, None).await,
            Err(BuildError::NotFound(_))
        ));
    }
}
