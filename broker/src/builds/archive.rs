//! What a build is, checked once at upload (API.md, "Builds and central games"): a gzip
//! stream is an archive, and every entry of it must be safe to unpack under a directory of
//! its own; anything else is one file.
//!
//! An archive is refused, naming the entry, when an entry has an absolute path or a `..`
//! component, is a link whose target leaves the archive's root, is a device, a FIFO or any
//! other special file, or when what it unpacks to (the entries and whatever the gzip stream
//! holds after them) would pass the limit. The check reads the stream once, in constant
//! memory, and stops at the first refusal: a gzip bomb costs at most the limit's worth of
//! inflating.
//!
//! Sync (it reads a file): callers run it on a blocking thread.

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use protocol::api::BuildKind;

/// How many bytes after the archive's end marker may be zeros (tar pads to its record
/// size, 10 KiB by default; some tools pad more).
const MAX_TRAILING: u64 = 1 << 20;

/// Why an upload is not a build.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An entry that may not be unpacked.
    #[error("archive entry {entry:?}: {why}")]
    Entry {
        /// The entry's path, as the archive names it.
        entry: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// It unpacks to more than the limit.
    #[error("the archive unpacks to more than {limit} bytes (at entry {entry:?})")]
    TooLarge {
        /// The limit.
        limit: u64,
        /// The entry being read when it passed.
        entry: String,
    },
    /// Bytes after the archive's end that are not padding.
    #[error("the archive has {0} bytes of data after its end")]
    Trailing(u64),
    /// Not a readable gzip'd tar.
    #[error("not a readable .tar.gz: {0}")]
    Unreadable(String),
    /// The file could not be read.
    #[error("cannot read the upload: {0}")]
    Io(#[from] io::Error),
}

/// A reader that fails once more than `limit` bytes have come through it.
struct Capped<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::other(OverLimit));
        }
        Ok(n)
    }
}

#[derive(Debug)]
struct OverLimit;

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("over the limit")
    }
}

impl std::error::Error for OverLimit {}

fn over_limit(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<OverLimit>())
}

/// What the build at `path` is, if it may be kept: an archive that unpacks to at most
/// `limit` bytes with every entry safe, or one file.
pub fn inspect(path: &Path, limit: u64) -> Result<BuildKind, ArchiveError> {
    let mut file = std::fs::File::open(path)?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    if n < 2 || magic != [0x1f, 0x8b] {
        return Ok(BuildKind::File);
    }
    let file = std::fs::File::open(path)?;
    let inflated = Capped {
        inner: flate2::read::MultiGzDecoder::new(io::BufReader::new(file)),
        read: 0,
        limit,
    };
    let mut archive = tar::Archive::new(inflated);
    let mut last = String::new();
    let unreadable = |e: io::Error, last: &str| {
        if over_limit(&e) {
            ArchiveError::TooLarge {
                limit,
                entry: last.to_owned(),
            }
        } else {
            ArchiveError::Unreadable(e.to_string())
        }
    };
    {
        let entries = archive.entries().map_err(|e| unreadable(e, &last))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| unreadable(e, &last))?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            last.clone_from(&name);
            check_entry(&entry, &name)?;
            // Through the whole entry, so its bytes count against the limit.
            io::copy(&mut entry, &mut io::sink()).map_err(|e| unreadable(e, &last))?;
        }
    }
    // After the end marker: padding only, and not much of it.
    let mut rest = archive.into_inner();
    let mut trailing = 0u64;
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Err(unreadable(e, &last)),
        };
        trailing += n as u64;
        if buf[..n].iter().any(|b| *b != 0) || trailing > MAX_TRAILING {
            return Err(ArchiveError::Trailing(trailing));
        }
    }
    Ok(BuildKind::Archive)
}

fn refuse(entry: &str, why: &'static str) -> ArchiveError {
    ArchiveError::Entry {
        entry: entry.to_owned(),
        why,
    }
}

/// Whether `rel` stays under the root: no absolute path, no `..` that climbs out of it.
fn inside(rel: &Path) -> bool {
    let mut depth: i64 = 0;
    for c in rel.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn check_entry<R: Read>(entry: &tar::Entry<'_, R>, name: &str) -> Result<(), ArchiveError> {
    let path = PathBuf::from(name);
    if path.is_absolute() {
        return Err(refuse(name, "an absolute path"));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(refuse(name, "a '..' in its path"));
    }
    use tar::EntryType as T;
    match entry.header().entry_type() {
        T::Regular | T::Continuous | T::Directory => Ok(()),
        // Extended headers of the entry that follows: `tar` applies them itself.
        T::XHeader | T::XGlobalHeader | T::GNULongName | T::GNULongLink => Ok(()),
        kind @ (T::Symlink | T::Link) => {
            let target = entry
                .link_name_bytes()
                .map(|b| PathBuf::from(String::from_utf8_lossy(&b).into_owned()))
                .ok_or_else(|| refuse(name, "a link without a target"))?;
            // A symbolic link resolves from its own directory; a hard link from the root.
            let from = if kind == T::Symlink {
                path.parent().unwrap_or(Path::new("")).join(&target)
            } else {
                target.clone()
            };
            if target.is_absolute() || !inside(&from) {
                return Err(refuse(name, "a link pointing outside the archive"));
            }
            Ok(())
        }
        T::Char | T::Block => Err(refuse(name, "a device file")),
        T::Fifo => Err(refuse(name, "a FIFO")),
        _ => Err(refuse(name, "a special file")),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A .tar.gz with `entries` (path, type, link target, content) written raw, so that
    /// hostile ones are possible.
    fn archive(entries: &[(&str, tar::EntryType, Option<&str>, &[u8])]) -> tempfile::NamedTempFile {
        let mut tarred = tar::Builder::new(Vec::new());
        for (path, kind, link, content) in entries {
            let mut h = tar::Header::new_gnu();
            // Raw bytes: `set_path` refuses `..` and absolute paths, as it should.
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_entry_type(*kind);
            h.set_size(content.len() as u64);
            h.set_mode(0o755);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_cksum();
            tarred.append(&h, *content).unwrap();
        }
        let tarred = tarred.into_inner().unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tarred).unwrap();
        f.write_all(&gz.finish().unwrap()).unwrap();
        f
    }

    use tar::EntryType as T;

    #[test]
    fn a_plain_archive_and_a_plain_file_are_builds() {
        let ok = archive(&[
            ("game/", T::Directory, None, b""),
            ("game/run.sh", T::Regular, None, b"echo hi\n"),
            ("game/latest", T::Symlink, Some("run.sh"), b""),
            ("game/lib/up", T::Symlink, Some("../run.sh"), b""),
            ("game/again", T::Link, Some("game/run.sh"), b""),
        ]);
        assert_eq!(inspect(ok.path(), 1 << 20).unwrap(), BuildKind::Archive);
        let mut exe = tempfile::NamedTempFile::new().unwrap();
        exe.write_all(b"\x7fELF...").unwrap();
        assert_eq!(inspect(exe.path(), 1 << 20).unwrap(), BuildKind::File);
    }

    #[test]
    fn hostile_entries_are_refused_by_name() {
        for (entries, named, why) in [
            (
                vec![("../evil", T::Regular, None, &b"x"[..])],
                "../evil",
                "'..'",
            ),
            (
                vec![("/etc/evil", T::Regular, None, &b"x"[..])],
                "/etc/evil",
                "absolute",
            ),
            (
                vec![("game/out", T::Symlink, Some("../../etc/passwd"), &b""[..])],
                "game/out",
                "outside",
            ),
            (
                vec![("game/abs", T::Symlink, Some("/etc/passwd"), &b""[..])],
                "game/abs",
                "outside",
            ),
            (
                vec![("game/hard", T::Link, Some("../x"), &b""[..])],
                "game/hard",
                "outside",
            ),
            (
                vec![("game/tty", T::Char, None, &b""[..])],
                "game/tty",
                "device",
            ),
            (
                vec![("game/pipe", T::Fifo, None, &b""[..])],
                "game/pipe",
                "FIFO",
            ),
        ] {
            let f = archive(&entries);
            let e = inspect(f.path(), 1 << 20).unwrap_err().to_string();
            assert!(e.contains(named) && e.contains(why), "{named}: {e}");
        }
    }

    #[test]
    fn a_bomb_is_refused_after_the_limit_not_after_inflating_it_all() {
        // 64 MiB of zeros after a tiny archive's end, and one entry larger than the limit.
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vec![0u8; 64 << 20]).unwrap();
        f.write_all(&gz.finish().unwrap()).unwrap();
        let e = inspect(f.path(), 8 << 20).unwrap_err();
        assert!(
            matches!(e, ArchiveError::Trailing(_) | ArchiveError::TooLarge { .. }),
            "{e}"
        );
        let big = vec![7u8; 2 << 20];
        let f = archive(&[("game/big", T::Regular, None, &big)]);
        let e = inspect(f.path(), 1 << 20).unwrap_err().to_string();
        assert!(e.contains("game/big") && e.contains("more than"), "{e}");
    }
}
