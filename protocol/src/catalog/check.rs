//! The checks of a catalog entry that need no host: placeholders and the ports they name,
//! modes, `env`, `ready`, limits, `config_set` and `settings`, and that `default_config` has a
//! `config_dir`. What needs the host's disk (that `config_dir` exists, that `default_config`
//! is in it) is the agent's, after this.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;

use super::template::Template;
use super::MAX_DURATION_S;
use super::{
    EntryError, GameEntry, Limits, SettingEntry, DEFAULT_READY_TIMEOUT_SECS, MAX_GPUS, MAX_PORTS,
    MAX_SLOTS,
};
use crate::settings::{check_value, SettingOffer};
use crate::wire::{DEFAULT_MODE, MAX_READY_TIMEOUT_SECS};

/// Whether a value may be written into a config file: no control character (a line break
/// would add a line).
pub fn is_safe_value(v: &str) -> bool {
    !v.chars().any(char::is_control)
}

/// How a game's readiness is known, as checked.
#[derive(Debug, Clone)]
pub enum ReadySpec {
    /// A TCP connection to the session's port succeeds.
    Tcp,
    /// A line of the game's output matches.
    Log(Regex),
    /// A file exists (its path a template).
    File(Template),
}

/// A catalog entry as checked: its strings parsed, its defaults filled in.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The program.
    pub command: Template,
    /// Its arguments.
    pub args: Vec<Template>,
    /// Its modes, the default first.
    pub modes: Vec<String>,
    /// Where requested configs must live, as written (the host resolves it).
    pub config_dir: Option<PathBuf>,
    /// The config used when none is requested.
    pub default_config: Option<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Resource limits.
    pub limits: Limits,
    /// The readiness check, if any.
    pub ready: Option<ReadySpec>,
    /// How long the readiness check may take.
    pub ready_timeout: Duration,
    /// Ports each session gets.
    pub ports: u16,
    /// Keys written into the session's config copy.
    pub config_set: Vec<(String, Template)>,
    /// Keys a start may choose values for.
    pub settings: Vec<SettingOffer>,
    /// A session's longest life, in seconds.
    pub max_duration_s: Option<u32>,
    /// How long a session may go without a connection, in seconds.
    pub idle_timeout_s: Option<u32>,
    /// Whether any of its strings names `{build}` (only a central game may).
    pub uses_build: bool,
    /// How much of its host's `max_sessions` one session takes.
    pub slots: u32,
    /// How many GPUs one session gets.
    pub gpus: u32,
    /// Labels its host must have.
    pub labels: crate::labels::Labels,
}

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
    if entries.len() > crate::settings::MAX_SETTINGS {
        return Err(bad("", "too many settings"));
    }
    let mut offers = Vec::new();
    for (key, e) in entries {
        // `video-specific[b]` is a GamingAnywhere key: brackets are allowed in settings.
        if !is_config_key(&key.replace(['[', ']'], "_")) || !crate::settings::is_text(&key) {
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
        if let Some(v) = e.values.iter().find(|v| !crate::settings::is_text(v)) {
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

/// Checks `entry` as far as it can be without the host it will run on.
pub fn check(entry: GameEntry) -> Result<Checked, EntryError> {
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
    let config_dir = entry.config_dir;
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
            (Some(true), None, None) => ReadySpec::Tcp,
            (None, Some(re), None) => {
                ReadySpec::Log(Regex::new(&re).map_err(|e| EntryError::ReadyRegex(e.to_string()))?)
            }
            (None, None, Some(path)) => ReadySpec::File(Template::parse(&path)?),
            _ => return Err(EntryError::ReadyKind),
        }),
    };
    let ready_timeout = match entry.ready_timeout {
        None => Duration::from_secs(u64::from(DEFAULT_READY_TIMEOUT_SECS)),
        Some(_) if ready.is_none() => return Err(EntryError::ReadyTimeout),
        Some(t) if t > 0.0 && t <= f64::from(MAX_READY_TIMEOUT_SECS) => Duration::from_secs_f64(t),
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
        if !is_safe_value(&v) {
            return Err(EntryError::ConfigSetValue(k));
        }
        config_set.push((k, Template::parse(&v)?));
    }
    let templates = std::iter::once(&command)
        .chain(&args)
        .chain(config_set.iter().map(|(_, t)| t))
        .chain(match &ready {
            Some(ReadySpec::File(t)) => Some(t),
            _ => None,
        });
    let templates: Vec<&Template> = templates.collect();
    if let Some(index) = templates.iter().filter_map(|t| t.max_port()).max() {
        if index >= ports {
            return Err(EntryError::PortIndex { index });
        }
    }
    let uses_build = templates
        .iter()
        .any(|t| t.uses(super::template::Placeholder::Build));
    let slots = entry.slots.unwrap_or(1);
    if !(1..=MAX_SLOTS).contains(&slots) {
        return Err(EntryError::Slots);
    }
    let gpus = entry.gpus.unwrap_or(0);
    if gpus > MAX_GPUS {
        return Err(EntryError::Gpus);
    }
    if gpus == 0
        && templates
            .iter()
            .any(|t| t.uses(super::template::Placeholder::Gpu))
    {
        return Err(EntryError::GpuWithoutGpus);
    }
    crate::labels::check(&entry.labels)?;
    Ok(Checked {
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
        uses_build,
        slots,
        gpus,
        labels: entry.labels,
    })
}
