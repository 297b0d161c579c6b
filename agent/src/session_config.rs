//! A session's own copy of its game's config file, with the keys the catalog sets for it
//! (its ports, its display) and the settings its start chose.
//!
//! The format is GamingAnywhere's: `key = value` lines, an optional `# comment` after the
//! value, `[section]` headers, `include = FILE` lines, blank lines and comment lines. The copy
//! keeps every line it does not set byte for byte; a line whose key is set gets the new value
//! (and keeps its comment); every occurrence of the key is set, in whichever section; a key
//! found nowhere is appended at the end. `include` is never set: it is structure, not a
//! value. A relative include names a file beside the original, so in the copy (which lives
//! elsewhere) it is made absolute against the original's directory, and resolves to the same
//! file.
//!
//! Values never hold a line break or another control character (the broker and the catalog
//! refuse them), so a value can never add a line to the file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use protocol::SessionId;

/// The key of an `include` line.
const INCLUDE: &str = "include";

/// A session's own files: `STATE_DIR/sessions/SESSION_ID`, removed when its game is gone.
pub fn dir(state_dir: &Path, id: &SessionId) -> PathBuf {
    state_dir.join("sessions").join(id.as_str())
}

/// A session's copy of its config: where it goes, what it is a copy of, the keys it sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The copy: in the session's [`dir`], under the original's file name.
    pub path: PathBuf,
    /// The config the start chose (inside the game's `config_dir`).
    pub original: PathBuf,
    /// The keys to set, with their values for this session.
    pub set: Vec<(String, String)>,
}

/// Writes the copy (its directory made first), readable by the game whatever user it runs
/// as. Blocking.
pub fn write(c: &SessionConfig) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let original = std::fs::read_to_string(&c.original)?;
    let base = c.original.parent().unwrap_or(Path::new("/"));
    let text = rewrite(&original, &c.set, base);
    if let Some(parent) = c.path.parent() {
        std::fs::create_dir_all(parent)?;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::write(&c.path, text)?;
    std::fs::set_permissions(&c.path, std::fs::Permissions::from_mode(0o644))
}

/// Whether `v` can be written as a value: no control character (so no line break).
pub use protocol::catalog::is_safe_value;

/// A `key = value` line taken apart: the key, and where the value starts and ends in the line
/// (before a `#` comment and trailing blanks).
fn key_value(line: &str) -> Option<(&str, usize, usize)> {
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with(['#', ';', '[']) {
        return None;
    }
    let eq = line.find('=')?;
    let key = line[..eq].trim();
    if key.is_empty() {
        return None;
    }
    let rest = &line[eq + 1..];
    let lead = rest.len() - rest.trim_start().len();
    let start = eq + 1 + lead;
    let end_of_value = line[start..].find('#').map_or(line.len(), |i| start + i);
    let end = start + line[start..end_of_value].trim_end().len();
    Some((key, start, end))
}

/// The copy of `original` with `set` applied (see the module's doc); relative includes are
/// made absolute against `base`, the original's directory.
pub fn rewrite(original: &str, set: &[(String, String)], base: &Path) -> String {
    let mut out = String::with_capacity(original.len() + 64);
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for line in original.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(b) => match b.strip_suffix('\r') {
                Some(b) => (b, "\r\n"),
                None => (b, "\n"),
            },
            None => (line, ""),
        };
        let Some((key, start, end)) = key_value(body) else {
            out.push_str(line);
            continue;
        };
        if key == INCLUDE {
            let target = &body[start..end];
            if Path::new(target).is_relative() && !target.is_empty() {
                out.push_str(&body[..start]);
                out.push_str(&base.join(target).display().to_string());
                out.push_str(&body[end..]);
                out.push_str(newline);
            } else {
                out.push_str(line);
            }
            continue;
        }
        match set.iter().find(|(k, _)| k == key) {
            Some((k, v)) => {
                seen.insert(k.as_str());
                out.push_str(&body[..start]);
                out.push_str(v);
                out.push_str(&body[end..]);
                out.push_str(newline);
            }
            None => out.push_str(line),
        }
    }
    let missing: Vec<&(String, String)> = set
        .iter()
        .filter(|(k, _)| k != INCLUDE && !seen.contains(k.as_str()))
        .collect();
    if !missing.is_empty() {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("# set by arcade-agent for this session\n");
        for (k, v) in missing {
            out.push_str(k);
            out.push_str(" = ");
            out.push_str(v);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server config as GamingAnywhere ships them: includes, sections, comments after
    /// values, keys with brackets.
    const GA: &str = "\
# GamingAnywhere event-driven server
[core]
include = common/server-common.conf
include = /etc/ga/common/controller.conf
include = common/video-x264.conf

[video]
video-fps = 60                  # Video frame-per-sec (FPS). Valid range: 1-144
video-specific[b] = 18000000    # Video bitrate

[ga-server-event-driven]
server-port = 8554
display = :0
enable-audio = true
";

    fn set(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn sets_keys_in_place_keeps_every_other_line_and_appends_the_missing() {
        let out = rewrite(
            GA,
            &set(&[
                ("server-port", "20004"),
                ("control-port", "20005"),
                ("display", ":3"),
                ("video-fps", "30"),
            ]),
            Path::new("/opt/ga/config"),
        );
        let want = "\
# GamingAnywhere event-driven server
[core]
include = /opt/ga/config/common/server-common.conf
include = /etc/ga/common/controller.conf
include = /opt/ga/config/common/video-x264.conf

[video]
video-fps = 30                  # Video frame-per-sec (FPS). Valid range: 1-144
video-specific[b] = 18000000    # Video bitrate

[ga-server-event-driven]
server-port = 20004
display = :3
enable-audio = true
# set by arcade-agent for this session
control-port = 20005
";
        assert_eq!(out, want);
    }

    #[test]
    fn nothing_set_changes_only_relative_includes() {
        let out = rewrite(GA, &[], Path::new("/opt/ga/config"));
        let changed: Vec<(&str, &str)> = GA
            .lines()
            .zip(out.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert!(changed.iter().all(|(a, _)| a.starts_with("include")));
        assert_eq!(GA.lines().count(), out.lines().count());
    }

    #[test]
    fn every_occurrence_is_set_crlf_and_a_last_line_without_newline_kept() {
        let original = "a = 1\r\n[x]\na=2\n; note\nb = 3";
        let out = rewrite(original, &set(&[("a", "9"), ("c", "4")]), Path::new("/"));
        assert_eq!(
            out,
            "a = 9\r\n[x]\na=9\n; note\nb = 3\n# set by arcade-agent for this session\nc = 4\n"
        );
    }

    #[test]
    fn include_is_never_set_and_values_with_control_characters_are_not_safe() {
        let out = rewrite(
            "x = 1\n",
            &set(&[("include", "/etc/passwd")]),
            Path::new("/"),
        );
        assert_eq!(out, "x = 1\n");
        assert!(is_safe_value("1920x1080"));
        for bad in ["30\ninclude = /etc/shadow", "a\rb", "tab\there", "nul\0"] {
            assert!(!is_safe_value(bad), "{bad:?}");
        }
    }
}
