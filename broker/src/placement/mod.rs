//! Placement: which host gets a new session. [`place`] is a pure function over a view of the
//! hosts and a [`Request`]; [`HostIndex`] gives the same answers from an index kept up to
//! date as hosts change, for thousands of hosts. Neither does IO; both are tested by tables
//! (and against each other) and benchmarked alone.
//!
//! The rules, in one place ([`takes`], [`Strategy::cmp`]):
//!
//! - a host can take a session of a game when it is online, offers the game (in the mode
//!   asked), has the game's `slots` free of its `max_sessions` and the game's `gpus` free,
//!   and has every label the start requires (a game's own `labels` are enforced before: its
//!   hosts only offer it where they fit);
//! - of those, the ones with more of the start's `prefer` labels come first;
//! - then the [`Strategy`]: `spread`, the least loaded (then the least CPU); `pack`, the
//!   fullest, so whole hosts stay empty and can be powered down; then the lowest host id, so
//!   the choice is deterministic.

mod index;

use std::cmp::Ordering;
use std::sync::Arc;

use protocol::api::HostStatus;
use protocol::labels::{self, Labels};
use protocol::wire::GameOffer;
use protocol::{GameId, HostId};

pub use index::HostIndex;

/// How placement chooses among the hosts that can take a session (`--placement`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// The least loaded host: sessions spread evenly.
    #[default]
    Spread,
    /// The fullest host that fits: load concentrates, whole hosts go idle.
    Pack,
}

impl Strategy {
    /// Orders two hosts' loads, the one placement prefers first. `a` is `a_used` of `a_max`
    /// with `a_cpu`; likewise `b`.
    fn cmp(self, a: Load<'_>, b: Load<'_>) -> Ordering {
        // a.used / a.max  vs  b.used / b.max, exactly, by cross-multiplying.
        let la = u64::from(a.used) * u64::from(b.max.max(1));
        let lb = u64::from(b.used) * u64::from(a.max.max(1));
        match self {
            Self::Spread => la
                .cmp(&lb)
                .then(a.cpu.total_cmp(&b.cpu))
                .then_with(|| a.host.cmp(b.host)),
            Self::Pack => lb.cmp(&la).then_with(|| a.host.cmp(b.host)),
        }
    }
}

/// What the strategies compare of a host.
#[derive(Debug, Clone, Copy)]
struct Load<'a> {
    used: u32,
    max: u32,
    cpu: f32,
    host: &'a HostId,
}

/// What placement needs to know of a host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostView {
    /// The host.
    pub host_id: HostId,
    /// Only `Online` hosts take new sessions.
    pub status: HostStatus,
    /// The games it offers.
    pub games: Vec<GameOffer>,
    /// Its capacity, in slots.
    pub max_sessions: u32,
    /// Slots taken: the `slots` of its sessions not over, reservations included.
    pub used: u32,
    /// CPU use from its last heartbeat, 0 to 100.
    pub cpu_percent: f32,
    /// Its labels.
    pub labels: Arc<Labels>,
    /// Its GPUs no session holds.
    pub gpus_free: u32,
}

impl HostView {
    fn load(&self) -> Load<'_> {
        Load {
            used: self.used,
            max: self.max_sessions,
            cpu: self.cpu_percent,
            host: &self.host_id,
        }
    }

    /// Its offer of `game` (the first, if listed twice).
    pub fn offer(&self, game: &GameId) -> Option<&GameOffer> {
        self.games.iter().find(|g| &g.game_id == game)
    }
}

/// Whether `host` can take a session of its offer `offer` now, labels aside: online, the
/// game's slots and GPUs free.
pub fn takes(host: &HostView, offer: &GameOffer) -> bool {
    host.status == HostStatus::Online
        && host.used.saturating_add(offer.slots.max(1)) <= host.max_sessions
        && host.gpus_free >= offer.gpus
}

/// A start, as placement sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The game.
    pub game: &'a GameId,
    /// Its mode; `None` for the game's default.
    pub mode: Option<&'a str>,
    /// Labels the host must have.
    pub labels: &'a Labels,
    /// Labels the host had better have.
    pub prefer: &'a Labels,
}

/// No labels.
static NO_LABELS: Labels = Labels::new();

impl<'a> Request<'a> {
    /// A start of `game` in `mode`, wherever.
    pub fn new(game: &'a GameId, mode: Option<&'a str>) -> Self {
        Self {
            game,
            mode,
            labels: &NO_LABELS,
            prefer: &NO_LABELS,
        }
    }

    /// The same start, only on hosts with `labels`, rather on those with `prefer`.
    pub fn with_labels(self, labels: &'a Labels, prefer: &'a Labels) -> Self {
        Self {
            labels,
            prefer,
            ..self
        }
    }
}

/// Why no host was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementError {
    /// No known host offers the game.
    UnknownGame,
    /// Hosts offer the game, but none in this mode; these are the modes they offer.
    UnknownMode(Vec<String>),
    /// Hosts offer it, but none is online with room, the GPUs and the labels asked for.
    NoCapacity,
}

/// The chosen host and the mode the session runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The host.
    pub host_id: HostId,
    /// The requested mode, or the host's default for the game.
    pub mode: String,
}

/// Picks a host for `req` by the module's rules, `strategy` deciding among equals in
/// preference.
pub fn place<'a>(
    hosts: impl IntoIterator<Item = &'a HostView>,
    req: &Request<'_>,
    strategy: Strategy,
) -> Result<Choice, PlacementError> {
    let mut offered = false;
    let mut mode_known = req.mode.is_none();
    let mut modes_offered: Vec<String> = Vec::new();
    let mut best: Option<(&HostView, &str, usize)> = None;
    for h in hosts {
        let Some(offer) = h.offer(req.game) else {
            continue;
        };
        offered = true;
        let chosen = match req.mode {
            None => offer.modes.first(),
            Some(m) => {
                for x in &offer.modes {
                    if !modes_offered.contains(x) {
                        modes_offered.push(x.clone());
                    }
                }
                offer.modes.iter().find(|x| *x == m)
            }
        };
        let Some(chosen) = chosen else { continue };
        mode_known = true;
        if !takes(h, offer) || !labels::fits(&h.labels, req.labels) {
            continue;
        }
        let score = labels::matches(&h.labels, req.prefer);
        let better = best.is_none_or(|(b, _, s)| {
            score
                .cmp(&s)
                .reverse()
                .then_with(|| strategy.cmp(h.load(), b.load()))
                == Ordering::Less
        });
        if better {
            best = Some((h, chosen.as_str(), score));
        }
    }
    match best {
        Some((h, m, _)) => Ok(Choice {
            host_id: h.host_id.clone(),
            mode: m.to_owned(),
        }),
        None if !offered => Err(PlacementError::UnknownGame),
        None if !mode_known => Err(PlacementError::UnknownMode(modes_offered)),
        None => Err(PlacementError::NoCapacity),
    }
}

#[cfg(test)]
pub(crate) mod tests;
