//! A build's archive (API.md, "Builds and central games"): what an upload is ([`inspect`]: a
//! gzip stream is an archive, and every entry of it must be safe to unpack under a directory
//! of its own; anything else is one file), checked by the broker at upload, and [`unpack`],
//! by which an agent unpacks one under the same rules, whole or not at all.
//!
//! An archive is refused, naming the entry, when an entry has an absolute path or a `..`
//! component (in its header's name or in the name an extended header gives it), is placed
//! through a symbolic link, is a link whose target is absolute, holds a `..`, or is or
//! passes through another link (so no chain of links leaves the root), is a device, a FIFO
//! or any other special file, or when what it unpacks to (the entries and whatever the gzip
//! stream holds after them) would pass the limit. The check reads the stream once, in
//! bounded memory (extended headers are read whole, at most 64 KiB each), and stops at the
//! first refusal: a gzip bomb costs at most the limit's worth of inflating.
//!
//! Sync (it reads and writes files): callers run it on a blocking thread.

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

/// The largest extended header (a GNU long name or link, a PAX record set) read: they are
/// read whole, so they are bounded apart from the archive's limit.
const MAX_EXTENSION: u64 = 64 * 1024;

/// What the extended headers before an entry said of it (GNU `L`/`K`, PAX `path`/`linkpath`).
#[derive(Default)]
struct Pending {
    name: Option<String>,
    link: Option<String>,
}

/// What the build at `path` is, if it may be kept: an archive that unpacks to at most
/// `limit` bytes with every entry safe, or one file.
///
/// Entries are read raw: extended headers are seen here, bounded, and applied by this code,
/// and both an entry's own header name and the name an extension gives it are checked, so
/// no tool that reads the archive one way or the other finds a name this check did not.
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
        let entries = archive
            .entries()
            .map_err(|e| unreadable(e, &last))?
            .raw(true);
        let mut links = Links::default();
        let mut pending = Pending::default();
        for entry in entries {
            let mut entry = entry.map_err(|e| unreadable(e, &last))?;
            let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            last.clone_from(&raw_name);
            use tar::EntryType as T;
            let kind = entry.header().entry_type();
            if matches!(
                kind,
                T::GNULongName | T::GNULongLink | T::XHeader | T::XGlobalHeader
            ) {
                if entry.size() > MAX_EXTENSION {
                    return Err(refuse(&raw_name, "an extended header larger than 64 KiB"));
                }
                let mut body = Vec::new();
                entry
                    .read_to_end(&mut body)
                    .map_err(|e| unreadable(e, &last))?;
                extension(kind, &body, &mut pending, &raw_name)?;
                continue;
            }
            let taken = std::mem::take(&mut pending);
            let name = taken.name.unwrap_or_else(|| raw_name.clone());
            last.clone_from(&name);
            // The header's own names too: a tool that ignores the extension uses them.
            let raw_link = entry
                .header()
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            for n in [&raw_name, &name] {
                check_path(n)?;
                links.not_through(n)?;
            }
            let link = taken.link.or(raw_link.clone());
            check_entry(kind, &name, link.as_deref(), &links)?;
            if let (Some(raw), true) = (&raw_link, matches!(kind, T::Symlink | T::Link)) {
                check_entry(kind, &raw_name, Some(raw), &links)?;
            }
            if kind == T::Symlink {
                links.add(&name);
                links.add(&raw_name);
            }
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

/// Why an archive could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// It is not a build that may be unpacked: the check refused it.
    #[error(transparent)]
    Refused(#[from] ArchiveError),
    /// Writing it failed (a full disk, permissions): nothing is left of it.
    #[error("cannot unpack into {}: {source}", dir.display())]
    Write {
        /// Where it was being unpacked.
        dir: PathBuf,
        /// What failed.
        source: io::Error,
    },
}

/// Unpacks the archive at `path` into the directory `into` (which must not exist), whole or
/// not at all: it is checked by [`inspect`] first, unpacked into a temporary directory beside
/// `into`, made read-only, and only then renamed into place. A failure leaves nothing.
pub fn unpack(path: &Path, into: &Path, limit: u64) -> Result<(), UnpackError> {
    if inspect(path, limit)? != BuildKind::Archive {
        return Err(UnpackError::Refused(ArchiveError::Unreadable(
            "not a .tar.gz".into(),
        )));
    }
    let parent = into.parent().unwrap_or(Path::new("."));
    let name = into
        .file_name()
        .map_or_else(|| "build".into(), |n| n.to_string_lossy().into_owned());
    let temp = parent.join(format!(".{name}.unpacking-{}", std::process::id()));
    let write = |source: io::Error| UnpackError::Write {
        dir: into.to_owned(),
        source,
    };
    let _ = std::fs::remove_dir_all(&temp);
    let unpacked = (|| {
        std::fs::create_dir_all(&temp)?;
        let file = std::fs::File::open(path)?;
        let mut archive =
            tar::Archive::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(file)));
        archive.set_preserve_permissions(false);
        archive.set_unpack_xattrs(false);
        archive.set_overwrite(false);
        // `inspect` refused anything that could leave `temp`; tar's own guard stays on.
        archive.unpack(&temp)?;
        read_only(&temp)?;
        std::fs::rename(&temp, into)
    })();
    if let Err(e) = unpacked {
        let _ = make_writable(&temp);
        let _ = std::fs::remove_dir_all(&temp);
        return Err(write(e));
    }
    Ok(())
}

/// Removes every write permission under `dir`, itself included (links are left alone).
fn read_only(dir: &Path) -> io::Result<()> {
    set_writable(dir, false)
}

/// Gives write permission back under `dir`, so it can be removed.
pub fn make_writable(dir: &Path) -> io::Result<()> {
    set_writable(dir, true)
}

fn set_writable(dir: &Path, writable: bool) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    let mode = if writable {
        mode | 0o200
    } else {
        mode & !0o222
    };
    if meta.is_dir() {
        // Writable first when opening up, so the entries can be changed; last when closing.
        if writable {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
        }
        for entry in std::fs::read_dir(dir)? {
            set_writable(&entry?.path(), writable)?;
        }
        if !writable {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
        }
        return Ok(());
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// Applies an extended header to the entry that follows it.
fn extension(
    kind: tar::EntryType,
    body: &[u8],
    pending: &mut Pending,
    raw_name: &str,
) -> Result<(), ArchiveError> {
    use tar::EntryType as T;
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim_end_matches('\0').to_owned();
    match kind {
        T::GNULongName => pending.name = Some(text(body)),
        T::GNULongLink => pending.link = Some(text(body)),
        T::XHeader | T::XGlobalHeader => {
            for record in tar::PaxExtensions::new(body) {
                let record =
                    record.map_err(|e| ArchiveError::Unreadable(format!("a PAX header: {e}")))?;
                let key = record.key_bytes();
                if key == b"path" || key == b"linkpath" {
                    // A name for every entry that follows: refused.
                    if kind == T::XGlobalHeader {
                        return Err(refuse(raw_name, "a global header naming a path"));
                    }
                    let value = Some(text(record.value_bytes()));
                    if key == b"path" {
                        pending.name = value;
                    } else {
                        pending.link = value;
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn refuse(entry: &str, why: &'static str) -> ArchiveError {
    ArchiveError::Entry {
        entry: entry.to_owned(),
        why,
    }
}

/// A path with no absolute root and no `..`.
fn check_path(name: &str) -> Result<(), ArchiveError> {
    let path = Path::new(name);
    if path.is_absolute() || name.starts_with('/') {
        return Err(refuse(name, "an absolute path"));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(refuse(name, "a '..' in its path"));
    }
    Ok(())
}

/// The archive's symbolic links so far: no entry may be placed through one, so what a link
/// points to never changes where a later entry lands.
#[derive(Default)]
struct Links(std::collections::HashSet<PathBuf>);

impl Links {
    fn add(&mut self, name: &str) {
        self.0.insert(normal(name));
    }

    /// Refuses `name` if a directory on its way is a link.
    fn not_through(&self, name: &str) -> Result<(), ArchiveError> {
        let path = normal(name);
        let through = path.ancestors().skip(1).any(|a| self.0.contains(a));
        if through {
            return Err(refuse(name, "a path through a link"));
        }
        Ok(())
    }
}

/// `name` without `.` components or a trailing `/`.
fn normal(name: &str) -> PathBuf {
    Path::new(name)
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect()
}

/// An entry's kind, and its link's target: a link's target has no root and no `..` (so it
/// stays under the link's own directory, or the root for a hard link, whatever other links
/// the archive holds) and passes through no link.
fn check_entry(
    kind: tar::EntryType,
    name: &str,
    link: Option<&str>,
    links: &Links,
) -> Result<(), ArchiveError> {
    use tar::EntryType as T;
    match kind {
        T::Regular | T::Continuous | T::Directory => Ok(()),
        T::Symlink | T::Link => {
            let target = link
                .filter(|t| !t.is_empty())
                .ok_or_else(|| refuse(name, "a link without a target"))?;
            let t = Path::new(target);
            if t.is_absolute()
                || target.starts_with('/')
                || t.components().any(|c| c == Component::ParentDir)
            {
                return Err(refuse(name, "a link pointing outside the archive"));
            }
            let resolved = match kind {
                T::Symlink => Path::new(name).parent().unwrap_or(Path::new("")).join(t),
                _ => t.to_owned(),
            };
            if links.0.contains(&normal(&resolved.to_string_lossy()))
                || links.not_through(&resolved.to_string_lossy()).is_err()
            {
                return Err(refuse(name, "a link to or through another link"));
            }
            Ok(())
        }
        T::Char | T::Block => Err(refuse(name, "a device file")),
        T::Fifo => Err(refuse(name, "a FIFO")),
        // A sparse or extension type this check does not apply: refused rather than
        // left to whichever tool unpacks it.
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
                vec![("game/up", T::Symlink, Some("../run.sh"), &b""[..])],
                "game/up",
                "outside",
            ),
            // A chain: `d` is the root, so `l` (`d/x`) and anything under `d` are refused.
            (
                vec![
                    ("d", T::Symlink, Some("."), &b""[..]),
                    ("l", T::Symlink, Some("d/x"), &b""[..]),
                ],
                "l",
                "another link",
            ),
            (
                vec![
                    ("d", T::Symlink, Some("."), &b""[..]),
                    ("d/x", T::Regular, None, &b"x"[..]),
                ],
                "d/x",
                "through a link",
            ),
            // A GNU long name read raw: its `..` is seen even if the header's name is not.
            (
                vec![
                    (
                        "././@LongLink",
                        T::GNULongName,
                        None,
                        &b"../../etc/cron.d/x\0"[..],
                    ),
                    ("a", T::Regular, None, &b"x"[..]),
                ],
                "../../etc/cron.d/x",
                "'..'",
            ),
            (
                vec![("big", T::XHeader, None, &[b'0'; 70_000][..])],
                "big",
                "64 KiB",
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
    fn an_archive_is_unpacked_whole_and_read_only_or_not_at_all() {
        let ok = archive(&[
            ("bin/", T::Directory, None, b""),
            ("bin/run", T::Regular, None, b"#!/bin/sh\necho hi\n"),
            ("latest", T::Symlink, Some("bin/run"), b""),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let into = dir.path().join("abc");
        unpack(ok.path(), &into, 1 << 20).unwrap();
        assert_eq!(
            std::fs::read_to_string(into.join("bin/run")).unwrap(),
            "#!/bin/sh\necho hi\n"
        );
        assert_eq!(
            std::fs::read_link(into.join("latest")).unwrap(),
            Path::new("bin/run")
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode(&into.join("bin/run")) & 0o222, 0, "read-only");
        assert_eq!(mode(&into) & 0o222, 0, "read-only");
        // Nothing beside it but the build itself.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["abc"]);
        make_writable(&into).unwrap();

        // Refused by the check: nothing written.
        let bad = archive(&[("../evil", T::Regular, None, b"x")]);
        let into = dir.path().join("bad");
        assert!(matches!(
            unpack(bad.path(), &into, 1 << 20),
            Err(UnpackError::Refused(_))
        ));
        assert!(!into.exists());
        // Already there: not replaced, and no temporary directory left.
        let again = unpack(ok.path(), &dir.path().join("abc"), 1 << 20);
        assert!(matches!(again, Err(UnpackError::Write { .. })), "{again:?}");
        let left = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(left, 1, "only the first build");
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
