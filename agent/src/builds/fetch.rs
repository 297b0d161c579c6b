//! One build brought from the broker to this host's cache: downloaded with the agent token
//! into `.partial/<sha256>` (resumed with `Range` from what an earlier try or a killed agent
//! left), checked against its sha256 before anything uses it, then unpacked (an archive,
//! by `archive::unpack`: into a temporary directory, read-only, renamed into place) or made a
//! read-only executable (a single file) at `<sha256>`. A failure leaves no build in place
//! and says why; a mismatch also drops the partial file, so the next try starts over.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use protocol::api::BuildKind;
use protocol::BuildId;
use tokio::io::AsyncWriteExt;

/// A download that receives nothing for this long is given up (and resumed by the next try).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a build is not in the cache.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The broker's answer was not the build.
    #[error("download from the broker failed: {0}")]
    Download(String),
    /// What came differs from the build's sha256: dropped, fetched again next time.
    #[error("the download's sha256 is {got}, not the build's: dropped, fetched again")]
    Mismatch {
        /// What the bytes hash to.
        got: BuildId,
    },
    /// The cache's disk refused a write (full, permissions).
    #[error("cannot write the build under {}: {source}", dir.display())]
    Write {
        /// The cache directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The archive could not be unpacked.
    #[error("cannot unpack the build: {0}")]
    Unpack(#[from] archive::UnpackError),
}

/// Where one fetch reads from and writes to.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    /// The HTTP client.
    pub client: &'a reqwest::Client,
    /// The broker's HTTP API (`…/v1/builds/{sha}/content` is appended).
    pub url: &'a str,
    /// The agent token, sent as a bearer token.
    pub token: Option<&'a str>,
}

/// The build's place in the cache.
pub fn path(dir: &Path, build: &BuildId) -> PathBuf {
    dir.join(build.as_str())
}

fn partial(dir: &Path, build: &BuildId) -> PathBuf {
    dir.join(".partial").join(build.as_str())
}

/// Brings `build` (`size` bytes, of `kind`) into the cache at `dir`; `limit` bounds what an
/// archive unpacks to. Answers the bytes it takes on disk.
pub async fn fetch(
    from: &Source<'_>,
    dir: &Path,
    build: &BuildId,
    kind: BuildKind,
    size: u64,
    limit: u64,
) -> Result<u64, FetchError> {
    let part = partial(dir, build);
    let write = |source| FetchError::Write {
        dir: dir.to_owned(),
        source,
    };
    tokio::fs::create_dir_all(part.parent().unwrap_or(dir))
        .await
        .map_err(write)?;
    match download(from, &part, build, size).await {
        Ok(()) => {}
        Err(e @ FetchError::Write { .. }) => {
            // A full disk: what was kept cannot grow, and holds space others need.
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
        Err(e) => return Err(e),
    }
    let (dir, build) = (dir.to_owned(), build.clone());
    tokio::task::spawn_blocking(move || settle(&dir, &part, &build, kind, limit))
        .await
        .map_err(|e| FetchError::Download(format!("the check was cut short: {e}")))?
}

/// Downloads what `part` lacks of the build's `size` bytes, resuming from its length.
async fn download(
    from: &Source<'_>,
    part: &Path,
    build: &BuildId,
    size: u64,
) -> Result<(), FetchError> {
    let write = |source| FetchError::Write {
        dir: part.parent().unwrap_or(part).to_owned(),
        source,
    };
    let mut have = match tokio::fs::metadata(part).await {
        Ok(m) if m.len() <= size => m.len(),
        _ => 0,
    };
    if have == size {
        return Ok(());
    }
    let url = format!(
        "{}/v1/builds/{build}/content",
        from.url.trim_end_matches('/')
    );
    let mut req = from.client.get(&url);
    if let Some(t) = from.token {
        req = req.bearer_auth(t);
    }
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let resp = tokio::time::timeout(IDLE_TIMEOUT, req.send())
        .await
        .map_err(|_| FetchError::Download(format!("{url}: no answer within {IDLE_TIMEOUT:?}")))?
        .map_err(|e| FetchError::Download(format!("{url}: {e}")))?;
    match resp.status() {
        reqwest::StatusCode::PARTIAL_CONTENT if have > 0 => {}
        // The whole build: whatever was kept is replaced.
        reqwest::StatusCode::OK => have = 0,
        s => return Err(FetchError::Download(format!("{url} answered {s}"))),
    }
    if have > 0 {
        tracing::info!(%build, from = have, size, "resuming the build's download");
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(have == 0)
        .append(have > 0)
        .open(part)
        .await
        .map_err(write)?;
    let mut body = resp.bytes_stream();
    loop {
        let chunk = tokio::time::timeout(IDLE_TIMEOUT, body.next())
            .await
            .map_err(|_| {
                FetchError::Download(format!("{url}: nothing received for {IDLE_TIMEOUT:?}"))
            })?;
        let Some(chunk) = chunk else { break };
        let chunk = chunk.map_err(|e| FetchError::Download(format!("{url}: {e}")))?;
        let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
        if have.saturating_add(len) > size {
            let _ = tokio::fs::remove_file(part).await;
            return Err(FetchError::Download(format!(
                "{url} sent more than the build's {size} bytes"
            )));
        }
        file.write_all(&chunk).await.map_err(write)?;
        have += len;
    }
    file.flush().await.map_err(write)?;
    if have != size {
        return Err(FetchError::Download(format!(
            "{url} ended after {have} of {size} bytes"
        )));
    }
    Ok(())
}

/// Blocking: checks the whole download against `build`, then puts it in place.
fn settle(
    dir: &Path,
    part: &Path,
    build: &BuildId,
    kind: BuildKind,
    limit: u64,
) -> Result<u64, FetchError> {
    let write = |source| FetchError::Write {
        dir: dir.to_owned(),
        source,
    };
    let got = sha256_of(part).map_err(write)?;
    if got != *build {
        let _ = std::fs::remove_file(part);
        return Err(FetchError::Mismatch { got });
    }
    let into = path(dir, build);
    let placed = match kind {
        BuildKind::Archive => archive::unpack(part, &into, limit).map_err(FetchError::from),
        BuildKind::File => {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(part, std::fs::Permissions::from_mode(0o555))
                .and_then(|()| std::fs::rename(part, &into))
                .map_err(write)
        }
    };
    let _ = std::fs::remove_file(part);
    placed?;
    Ok(disk_usage(&into))
}

/// The sha256 of a file's bytes.
fn sha256_of(path: &Path) -> std::io::Result<BuildId> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let digest = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    Ok(BuildId::of_digest(&out))
}

/// Blocking: the bytes a build takes in the cache (its files' sizes; links count nothing).
pub fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return if meta.file_type().is_symlink() {
            0
        } else {
            meta.len()
        };
    }
    std::fs::read_dir(path).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| disk_usage(&e.path()))
            .sum()
    })
}
