//! Checking a catalog entry at load: `protocol::catalog::check` (everything that needs no
//! host, the same check the broker runs on a central game), then what needs this host's disk:
//! that `config_dir` exists (resolved, symlinks followed) and that `default_config` is in it.
//! A checked entry is a [`Game`].

use std::path::Path;

use super::entry::{EntryError, GameEntry};
use super::Game;

impl Game {
    pub(super) fn check(entry: GameEntry) -> Result<Self, EntryError> {
        Self::check_in(entry, None)
    }

    /// Checks a central game's entry for its build unpacked at `build`: `{build}` may be used,
    /// and a relative `config_dir` is inside the build.
    pub fn check_central(entry: GameEntry, build: &Path) -> Result<Self, EntryError> {
        Self::check_in(entry, Some(build))
    }

    fn check_in(entry: GameEntry, build: Option<&Path>) -> Result<Self, EntryError> {
        let c = protocol::catalog::check(entry)?;
        // A host's own entry has no build (central games come with theirs).
        if c.uses_build && build.is_none() {
            return Err(EntryError::BuildOutsideCentral);
        }
        let config_dir = match c.config_dir.map(|d| match build {
            Some(b) if d.is_relative() => b.join(d),
            _ => d,
        }) {
            Some(dir) => Some(
                dir.canonicalize()
                    .map_err(|source| EntryError::ConfigDir { path: dir, source })?,
            ),
            None => None,
        };
        let game = Self {
            command: c.command,
            args: c.args,
            modes: c.modes,
            config_dir,
            default_config: c.default_config,
            env: c.env,
            limits: c.limits,
            ready: c.ready,
            ready_timeout: c.ready_timeout,
            ports: c.ports,
            config_set: c.config_set,
            settings: c.settings,
            max_duration_s: c.max_duration_s,
            idle_timeout_s: c.idle_timeout_s,
            slots: c.slots,
            gpus: c.gpus,
            labels: c.labels,
        };
        if let Some(default) = &game.default_config {
            game.resolve_config_in(default)
                .map_err(|e| EntryError::DefaultConfig(e.to_string()))?;
        }
        Ok(game)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::super::entry::SettingEntry;

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
            r#"catalog game "g": unknown placeholder {nope} in "/bin/{nope}": use {mode}, {config}, {port}, {port1}..., {slot}, {session_id}, {gpu} or (a central game) {build}"#
        );
        assert_eq!(
            load_error(entry("/bin/{port16}")),
            r#"catalog game "g": unknown placeholder {port16} in "/bin/{port16}": use {mode}, {config}, {port}, {port1}..., {slot}, {session_id}, {gpu} or (a central game) {build}"#
        );
        assert_eq!(
            load_error(entry("{build}/run")),
            r#"catalog game "g": {build} is a central game's (PUT /v1/games/{id}); a host's own entry names its files"#
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
