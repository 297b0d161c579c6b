//! Checking a catalog entry at load: everything that can be checked once — placeholders and
//! the ports they name, modes, `config_dir` and `default_config`, `env`, `ready`, limits,
//! `config_set` and `settings`. A checked entry is a [`Game`].

use std::collections::BTreeMap;
use std::time::Duration;

use protocol::api::MAX_DURATION_S;
use protocol::settings::SettingOffer;
use protocol::wire::{DEFAULT_MODE, MAX_READY_TIMEOUT_SECS};
use regex::Regex;

use super::entry::{EntryError, GameEntry, SettingEntry, DEFAULT_READY_TIMEOUT_SECS, MAX_PORTS};
use super::template::Template;
use super::value::check_value;
use super::{Game, Ready};

/// Whether `k` may be a key set in a config file: not empty, not `include`, no blank at either
/// end, no `=`, `#`, `[` or control character.
fn is_config_key(k: &str) -> bool {
    !(k.trim().is_empty()
        || k.trim() != k
        || k == "include"
        || k.contains(['=', '#', '['])
        || k.chars().any(char::is_control))
}

/// A catalog entry's settings, checked, as offered to the broker.
fn check_settings(
    entries: BTreeMap<String, SettingEntry>,
    config_set: &BTreeMap<String, String>,
) -> Result<Vec<SettingOffer>, EntryError> {
    let bad = |key: &str, why: &str| EntryError::Setting {
        key: key.to_owned(),
        why: why.to_owned(),
    };
    if entries.len() > protocol::settings::MAX_SETTINGS {
        return Err(bad("", "too many settings"));
    }
    let mut offers = Vec::new();
    for (key, e) in entries {
        // `video-specific[b]` is a GamingAnywhere key: brackets are allowed in settings.
        if !is_config_key(&key.replace(['[', ']'], "_")) || !protocol::settings::is_text(&key) {
            return Err(bad(&key, "not a key that can be set"));
        }
        if config_set.contains_key(&key) {
            return Err(bad(&key, "also in config_set"));
        }
        let range = e.min.is_some() || e.max.is_some();
        if e.values.is_empty() != range {
            return Err(bad(&key, "give either values or a min and max"));
        }
        if e.min.zip(e.max).is_some_and(|(lo, hi)| lo > hi) {
            return Err(bad(&key, "min is above max"));
        }
        if let Some(v) = e.values.iter().find(|v| !protocol::settings::is_text(v)) {
            return Err(bad(
                &key,
                &format!("value {v:?} is empty, too long or holds control characters"),
            ));
        }
        let offer = SettingOffer {
            key: key.clone(),
            values: e.values,
            min: e.min,
            max: e.max,
            default: e.default,
        };
        if let Some(d) = &offer.default {
            offer
                .check(d)
                .map_err(|err| bad(&key, &format!("default: {err}")))?;
        }
        offers.push(offer);
    }
    Ok(offers)
}

impl Game {
    pub(super) fn check(entry: GameEntry) -> Result<Self, EntryError> {
        if entry.command.is_empty() {
            return Err(EntryError::EmptyCommand);
        }
        let command = Template::parse(&entry.command)?;
        let args = entry
            .args
            .iter()
            .map(|a| Template::parse(a))
            .collect::<Result<Vec<_>, _>>()?;
        let modes = if entry.modes.is_empty() {
            vec![DEFAULT_MODE.to_owned()]
        } else {
            for m in &entry.modes {
                check_value("mode", m)?;
            }
            entry.modes
        };
        let config_dir = match entry.config_dir {
            Some(dir) => Some(
                dir.canonicalize()
                    .map_err(|source| EntryError::ConfigDir { path: dir, source })?,
            ),
            None => None,
        };
        if entry.default_config.is_some() && config_dir.is_none() {
            return Err(EntryError::DefaultConfigWithoutDir);
        }
        for k in entry.env.keys() {
            if k.is_empty() || k.contains(['=', '\0']) || k.starts_with("ARCADE_") {
                return Err(EntryError::EnvKey(k.clone()));
            }
        }
        let ready = match entry.ready {
            None => None,
            Some(r) => Some(match (r.tcp, r.log, r.file) {
                (Some(true), None, None) => Ready::Tcp,
                (None, Some(re), None) => {
                    Ready::Log(Regex::new(&re).map_err(|e| EntryError::ReadyRegex(e.to_string()))?)
                }
                (None, None, Some(path)) => Ready::File(Template::parse(&path)?),
                _ => return Err(EntryError::ReadyKind),
            }),
        };
        let ready_timeout = match entry.ready_timeout {
            None => Duration::from_secs(u64::from(DEFAULT_READY_TIMEOUT_SECS)),
            Some(_) if ready.is_none() => return Err(EntryError::ReadyTimeout),
            Some(t) if t > 0.0 && t <= f64::from(MAX_READY_TIMEOUT_SECS) => {
                Duration::from_secs_f64(t)
            }
            Some(_) => return Err(EntryError::ReadyTimeout),
        };
        for (key, limit) in [
            ("max_duration_s", entry.max_duration_s),
            ("idle_timeout_s", entry.idle_timeout_s),
        ] {
            if limit.is_some_and(|l| !(1..=MAX_DURATION_S).contains(&l)) {
                return Err(EntryError::Limit(key));
            }
        }
        let ports = entry.ports.unwrap_or(1);
        if !(1..=MAX_PORTS).contains(&ports) {
            return Err(EntryError::Ports);
        }
        if (!entry.config_set.is_empty() || !entry.settings.is_empty()) && config_dir.is_none() {
            return Err(EntryError::ConfigSetWithoutConfig);
        }
        let settings = check_settings(entry.settings, &entry.config_set)?;
        let mut config_set = Vec::new();
        for (k, v) in entry.config_set {
            if !is_config_key(&k) {
                return Err(EntryError::ConfigSetKey(k));
            }
            if !crate::session_config::is_safe_value(&v) {
                return Err(EntryError::ConfigSetValue(k));
            }
            config_set.push((k, Template::parse(&v)?));
        }
        let templates = std::iter::once(&command)
            .chain(&args)
            .chain(config_set.iter().map(|(_, t)| t))
            .chain(match &ready {
                Some(Ready::File(t)) => Some(t),
                _ => None,
            });
        if let Some(index) = templates.filter_map(Template::max_port).max() {
            if index >= ports {
                return Err(EntryError::PortIndex { index });
            }
        }
        let game = Self {
            command,
            args,
            modes,
            config_dir,
            default_config: entry.default_config,
            env: entry.env,
            limits: entry.limits.unwrap_or_default(),
            ready,
            ready_timeout,
            ports,
            config_set,
            settings,
            max_duration_s: entry.max_duration_s,
            idle_timeout_s: entry.idle_timeout_s,
        };
        if let Some(default) = &game.default_config {
            game.resolve_config_in(default)
                .map_err(EntryError::DefaultConfig)?;
        }
        Ok(game)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::catalog::test_support::*;
    use crate::catalog::{Catalog, CatalogError, ReadyCheck};

    #[test]
    fn readiness_checks_are_read_checked_and_offered() {
        let cat = load(
            r#"
[games.ga]
command = "/opt/ga/server"
ready = { tcp = true }
ready_timeout = 2.5

[games.logged]
command = "/opt/ga/server"
ready = { log = "^listening on [0-9]+$" }

[games.touched]
command = "/opt/ga/server"
ready = { file = "/run/ga/{session_id}.ready" }

[games.plain]
command = "/bin/sleep"
"#,
        )
        .unwrap();
        let timeouts: Vec<(String, Option<u32>)> = cat
            .offers()
            .into_iter()
            .map(|o| (o.game_id.to_string(), o.ready_timeout_ms))
            .collect();
        assert_eq!(
            timeouts,
            [
                ("ga".into(), Some(2500)),
                ("logged".into(), Some(60_000)),
                ("plain".into(), None),
                ("touched".into(), Some(60_000)),
            ]
        );
        let ready = |g: &str| {
            cat.resolve(
                &req(game(g), None, None, &BTreeMap::new()),
                &lease(1),
                Path::new("/run/arcade/s"),
            )
            .unwrap()
            .ready
        };
        assert_eq!(
            ready("ga"),
            Some((ReadyCheck::Tcp, Duration::from_millis(2500)))
        );
        assert_eq!(
            ready("touched").unwrap().0,
            ReadyCheck::File(PathBuf::from("/run/ga/s-1.ready"))
        );
        assert!(
            matches!(ready("logged").unwrap().0, ReadyCheck::Log(re) if re.is_match("listening on 20000"))
        );
        assert_eq!(ready("plain"), None);

        for (bad, says) in [
            ("ready = { tcp = false }", "ready must be one of"),
            (
                "ready = { tcp = true, log = \"x\" }",
                "ready must be one of",
            ),
            ("ready = {}", "ready must be one of"),
            ("ready = { log = \"(\" }", "ready.log"),
            ("ready = { tcp = true }\nready_timeout = 0", "ready_timeout"),
            (
                "ready = { tcp = true }\nready_timeout = 601",
                "ready_timeout",
            ),
            ("ready_timeout = 5", "ready_timeout"),
            ("max_duration_s = 0", "max_duration_s must be 1 to"),
            ("idle_timeout_s = 2592001", "idle_timeout_s must be 1 to"),
            ("ready = { file = \"/x/{nope}\" }", "unknown placeholder"),
            ("ready = { http = \"/\" }", "unknown field"),
        ] {
            let toml = format!("[games.g]\ncommand = \"/bin/true\"\n{bad}\n");
            let e = load(&toml).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn load_refuses_bad_entries() {
        let bad = [
            ("bad id/", "/bin/true", None),
            ("g", "", None),
            ("g", "/bin/{nope}", None),
            ("g", "/bin/{mode", None),
            ("g", "/bin/true", Some("/definitely/not/here")),
        ];
        for (name, command, dir) in bad {
            let r = Catalog::from_entries([(
                name.to_owned(),
                GameEntry {
                    command: command.into(),
                    args: vec![],
                    modes: vec![],
                    config_dir: dir.map(PathBuf::from),
                    default_config: None,
                    env: BTreeMap::new(),
                    ..GameEntry::default()
                },
            )]);
            assert!(r.is_err(), "{name} {command}");
        }
    }

    #[test]
    fn entry_messages() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let with = |f: &dyn Fn(&mut GameEntry)| {
            let mut e = entry("/bin/true");
            f(&mut e);
            load_error(e)
        };
        assert_eq!(
            load_error(entry("")),
            r#"catalog game "g": command is empty"#
        );
        assert_eq!(
            load_error(entry("/bin/{mode")),
            r#"catalog game "g": unclosed '{' in "/bin/{mode""#
        );
        assert_eq!(
            load_error(entry("/bin/{nope}")),
            r#"catalog game "g": unknown placeholder {nope} in "/bin/{nope}": use {mode}, {config}, {port}, {port1}..., {slot} or {session_id}"#
        );
        assert_eq!(
            load_error(entry("/bin/{port16}")),
            r#"catalog game "g": unknown placeholder {port16} in "/bin/{port16}": use {mode}, {config}, {port}, {port1}..., {slot} or {session_id}"#
        );
        assert_eq!(
            load_error(entry("/bin/g{port2}")),
            r#"catalog game "g": {port2} needs ports = 3 or more"#
        );
        assert_eq!(
            with(&|e| e.ports = Some(0)),
            r#"catalog game "g": ports must be 1 to 16"#
        );
        assert_eq!(
            with(&|e| e.config_set = BTreeMap::from([("a".into(), "1".into())])),
            r#"catalog game "g": config_set and settings need a config_dir"#
        );
        for key in ["", "include", "a=b", "a#", "[x]", " a", "a\nb"] {
            assert_eq!(
                with(&|e| {
                    e.config_dir = Some(dir.clone());
                    e.config_set = BTreeMap::from([(key.to_owned(), "1".into())]);
                }),
                format!("catalog game \"g\": config_set key {key:?} is not allowed")
            );
        }
        assert_eq!(
            with(&|e| {
                e.config_dir = Some(dir.clone());
                e.config_set = BTreeMap::from([("fps".into(), "30\ninclude = /x".into())]);
            }),
            r#"catalog game "g": config_set value of "fps" must not hold control characters"#
        );
        let setting = |key: &str, entry: SettingEntry| {
            with(&|e| {
                e.config_dir = Some(dir.clone());
                e.settings = BTreeMap::from([(key.to_owned(), entry.clone())]);
            })
        };
        let values = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        for (key, entry, why) in [
            (
                "fps",
                SettingEntry::default(),
                "give either values or a min and max",
            ),
            (
                "fps",
                SettingEntry {
                    values: values(&["30"]),
                    min: Some(1.0),
                    ..SettingEntry::default()
                },
                "give either values or a min and max",
            ),
            (
                "fps",
                SettingEntry {
                    min: Some(60.0),
                    max: Some(30.0),
                    ..SettingEntry::default()
                },
                "min is above max",
            ),
            (
                "fps",
                SettingEntry {
                    values: values(&["30", "6\n0"]),
                    ..SettingEntry::default()
                },
                "holds control characters",
            ),
            (
                "fps",
                SettingEntry {
                    values: values(&["30"]),
                    default: Some("60".into()),
                    ..SettingEntry::default()
                },
                "default: setting \"fps\": \"60\" is not one of 30",
            ),
            (
                "include",
                SettingEntry {
                    values: values(&["x"]),
                    ..SettingEntry::default()
                },
                "not a key that can be set",
            ),
        ] {
            let message = setting(key, entry);
            assert!(message.contains(why), "{message}");
        }
        assert_eq!(
            with(&|e| e.modes = vec![String::new()]),
            r#"catalog game "g": mode must not be empty"#
        );
        assert_eq!(
            with(&|e| e.modes = vec!["m".repeat(300)]),
            r#"catalog game "g": mode is longer than 255 bytes"#
        );
        assert_eq!(
            with(&|e| e.modes = vec!["a\nb".into()]),
            r#"catalog game "g": mode must not hold control characters"#
        );
        let missing = dir.join("missing");
        assert_eq!(
            with(&|e| e.config_dir = Some(missing.clone())),
            format!(
                r#"catalog game "g": config_dir {}: {}"#,
                missing.display(),
                missing.canonicalize().unwrap_err()
            )
        );
        assert_eq!(
            with(&|e| e.default_config = Some("x".into())),
            r#"catalog game "g": default_config needs a config_dir"#
        );
        assert_eq!(
            with(&|e| {
                e.env.insert("ARCADE_X".into(), "1".into());
            }),
            r#"catalog game "g": env key "ARCADE_X" is not allowed"#
        );
        assert_eq!(
            with(&|e| {
                e.config_dir = Some(dir.clone());
                e.default_config = Some("absent.conf".into());
            }),
            r#"catalog game "g": default_config: config "absent.conf" does not exist"#
        );
        match Catalog::from_entries([("bad id/".to_owned(), entry("/bin/true"))]) {
            Err(CatalogError::Entry { game, .. }) => assert_eq!(game, "bad id/"),
            other => panic!("{other:?}"),
        }
    }
}
