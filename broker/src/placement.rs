//! Placement: which host gets a new session. [`place`] is a pure function over a view of the
//! hosts, the specification; [`HostIndex`] gives the same answers from an index kept up to
//! date as hosts change, for thousands of hosts. Neither does IO; both are tested by tables
//! (and against each other) and benchmarked alone.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use protocol::api::HostStatus;
use protocol::wire::GameOffer;
use protocol::{GameId, HostId};

/// What placement needs to know of a host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostView {
    /// The host.
    pub host_id: HostId,
    /// Only `Online` hosts take new sessions.
    pub status: HostStatus,
    /// The games it offers.
    pub games: Vec<GameOffer>,
    /// Its capacity.
    pub max_sessions: u32,
    /// Sessions placed on it and not over, reservations included.
    pub sessions: u32,
    /// CPU use from its last heartbeat, 0 to 100.
    pub cpu_percent: f32,
}

/// Why no host was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementError {
    /// No known host offers the game.
    UnknownGame,
    /// Hosts offer the game, but none in this mode; these are the modes they offer.
    UnknownMode(Vec<String>),
    /// Hosts offer it, but none is online with a free slot.
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

/// Picks a host for `game` in `mode` (`None`: the game's default mode).
///
/// Candidates are online (connected, not draining), offer the game in that mode, and have a
/// free slot. Among them the least loaded wins: lowest `sessions / max_sessions`, then lowest
/// CPU, then lowest host id, so the choice is deterministic.
pub fn place<'a>(
    hosts: impl IntoIterator<Item = &'a HostView>,
    game: &GameId,
    mode: Option<&str>,
) -> Result<Choice, PlacementError> {
    let mut offered = false;
    let mut mode_known = mode.is_none();
    let mut modes_offered: Vec<String> = Vec::new();
    let mut best: Option<(&HostView, &str)> = None;
    for h in hosts {
        let Some(offer) = h.games.iter().find(|g| &g.game_id == game) else {
            continue;
        };
        offered = true;
        let chosen = match mode {
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
        if h.status != HostStatus::Online || h.sessions >= h.max_sessions {
            continue;
        }
        if best.is_none_or(|(b, _)| less_loaded(h, b) == Ordering::Less) {
            best = Some((h, chosen.as_str()));
        }
    }
    match best {
        Some((h, m)) => Ok(Choice {
            host_id: h.host_id.clone(),
            mode: m.to_owned(),
        }),
        None if !offered => Err(PlacementError::UnknownGame),
        None if !mode_known => Err(PlacementError::UnknownMode(modes_offered)),
        None => Err(PlacementError::NoCapacity),
    }
}

fn less_loaded(a: &HostView, b: &HostView) -> Ordering {
    // a.sessions / a.max  vs  b.sessions / b.max, exactly, by cross-multiplying.
    let la = u64::from(a.sessions) * u64::from(b.max_sessions.max(1));
    let lb = u64::from(b.sessions) * u64::from(a.max_sessions.max(1));
    la.cmp(&lb)
        .then(a.cpu_percent.total_cmp(&b.cpu_percent))
        .then_with(|| a.host_id.cmp(&b.host_id))
}

/// Placement's index: the answer [`place`] gives over the same hosts, without a scan.
///
/// Kept up to date by the registry on every change of a host (its games, status, slots or
/// CPU). For each game it holds the hosts offering it (for the errors) and, ordered least
/// loaded first, those that can take a session now, per mode. Placing is then a map lookup and
/// the first element of a `BTreeSet` (of each mode's, without a mode): O(log n), a
/// few hundred nanoseconds at 10,000 hosts where the scan takes a millisecond. An update costs
/// O(games x modes x log n). [`place`] stays the reference: a test checks that both agree.
#[derive(Debug, Default)]
pub struct HostIndex {
    hosts: HashMap<HostId, Indexed>,
    games: HashMap<GameId, GameHosts>,
}

#[derive(Debug)]
struct Indexed {
    view: HostView,
    /// Its place in the eligible sets; `None` when it cannot take a session.
    key: Option<LoadKey>,
}

#[derive(Debug, Default)]
struct GameHosts {
    /// Hosts offering the game, whatever their status.
    offered_by: usize,
    /// The modes they offer, with how many offer each, in the order they were first offered
    /// (a catalog's order, for the error that lists them).
    modes: Vec<(String, usize)>,
    /// Per mode, the hosts that can take a session in it, best first. A request without a
    /// mode goes to the best of their first elements (the best host offering any mode, in
    /// its first mode): not a set of its own, which would double the cost of every
    /// heartbeat's re-ranking, the broker's hottest path at scale.
    by_mode: HashMap<String, BTreeSet<LoadKey>>,
}

/// A host's rank among candidates: [`less_loaded`]'s order.
#[derive(Debug, Clone)]
struct LoadKey {
    sessions: u32,
    max_sessions: u32,
    cpu_percent: f32,
    host_id: Arc<HostId>,
}

impl LoadKey {
    fn of(view: &HostView, host_id: Arc<HostId>) -> Option<Self> {
        (view.status == HostStatus::Online && view.sessions < view.max_sessions).then_some(Self {
            sessions: view.sessions,
            max_sessions: view.max_sessions,
            cpu_percent: view.cpu_percent,
            host_id,
        })
    }
}

impl Ord for LoadKey {
    fn cmp(&self, other: &Self) -> Ordering {
        let la = u64::from(self.sessions) * u64::from(other.max_sessions.max(1));
        let lb = u64::from(other.sessions) * u64::from(self.max_sessions.max(1));
        la.cmp(&lb)
            .then(self.cpu_percent.total_cmp(&other.cpu_percent))
            .then_with(|| self.host_id.cmp(&other.host_id))
    }
}

impl PartialOrd for LoadKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for LoadKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for LoadKey {}

/// Moves a host offering `offer` from rank `old` to rank `new` in `g`'s candidate sets.
fn rerank(g: &mut GameHosts, offer: &GameOffer, old: Option<&LoadKey>, new: Option<&LoadKey>) {
    if let Some(k) = old {
        for m in &offer.modes {
            if let Some(set) = g.by_mode.get_mut(m) {
                set.remove(k);
            }
        }
    }
    if let Some(k) = new {
        for m in &offer.modes {
            match g.by_mode.get_mut(m) {
                Some(set) => {
                    set.insert(k.clone());
                }
                None => {
                    g.by_mode.insert(m.clone(), BTreeSet::from([k.clone()]));
                }
            }
        }
    }
}

/// A host's offers, each game once (the first listing wins, as in [`place`]).
fn offers(view: &HostView) -> impl Iterator<Item = &GameOffer> {
    view.games
        .iter()
        .enumerate()
        .filter(|(i, g)| !view.games[..*i].iter().any(|x| x.game_id == g.game_id))
        .map(|(_, g)| g)
}

impl HostIndex {
    /// Adds a host or brings it up to date.
    pub fn upsert(&mut self, view: &HostView) {
        if let Some(old) = self.hosts.get_mut(&view.host_id) {
            // `==` takes -0.0 for 0.0, the ranking (`total_cmp`) does not.
            if old.view == *view && old.view.cpu_percent.to_bits() == view.cpu_percent.to_bits() {
                return;
            }
            if old.view.games == view.games {
                // The common change (a heartbeat's CPU, a slot taken or freed): only the
                // host's rank moves.
                let host_id = old.key.as_ref().map_or_else(
                    || Arc::new(view.host_id.clone()),
                    |k| Arc::clone(&k.host_id),
                );
                let key = LoadKey::of(view, host_id);
                if key != old.key {
                    for offer in offers(view) {
                        let Some(g) = self.games.get_mut(&offer.game_id) else {
                            continue;
                        };
                        rerank(g, offer, old.key.as_ref(), key.as_ref());
                    }
                }
                old.view.clone_from(view);
                old.key = key;
                return;
            }
        }
        let host_id = match self.remove(&view.host_id) {
            Some(id) => id,
            None => Arc::new(view.host_id.clone()),
        };
        let key = LoadKey::of(view, Arc::clone(&host_id));
        for offer in offers(view) {
            let g = self.games.entry(offer.game_id.clone()).or_default();
            g.offered_by += 1;
            for m in &offer.modes {
                match g.modes.iter_mut().find(|(x, _)| x == m) {
                    Some((_, n)) => *n += 1,
                    None => g.modes.push((m.clone(), 1)),
                }
            }
            if let Some(k) = &key {
                for m in &offer.modes {
                    g.by_mode.entry(m.clone()).or_default().insert(k.clone());
                }
            }
        }
        self.hosts.insert(
            view.host_id.clone(),
            Indexed {
                view: view.clone(),
                key,
            },
        );
    }

    /// A heartbeat's change: only the host's CPU figure, so only its rank can move. Same effect
    /// as [`HostIndex::upsert`] with the view's `cpu_percent` changed, without comparing or
    /// copying the rest of the view.
    pub fn set_cpu(&mut self, host_id: &HostId, cpu_percent: f32) {
        let Self { hosts, games } = self;
        let Some(old) = hosts.get_mut(host_id) else {
            return;
        };
        if old.view.cpu_percent.to_bits() == cpu_percent.to_bits() {
            return;
        }
        old.view.cpu_percent = cpu_percent;
        let Some(key) = &old.key else {
            return;
        };
        let new = LoadKey {
            cpu_percent,
            ..key.clone()
        };
        for offer in offers(&old.view) {
            if let Some(g) = games.get_mut(&offer.game_id) {
                rerank(g, offer, Some(key), Some(&new));
            }
        }
        old.key = Some(new);
    }

    /// Forgets a host; returns its shared id for reuse.
    pub fn remove(&mut self, host_id: &HostId) -> Option<Arc<HostId>> {
        let old = self.hosts.remove(host_id)?;
        for offer in offers(&old.view) {
            let Some(g) = self.games.get_mut(&offer.game_id) else {
                continue;
            };
            if let Some(k) = &old.key {
                for m in &offer.modes {
                    if let Some(set) = g.by_mode.get_mut(m) {
                        set.remove(k);
                        if set.is_empty() {
                            g.by_mode.remove(m);
                        }
                    }
                }
            }
            for m in &offer.modes {
                if let Some((_, n)) = g.modes.iter_mut().find(|(x, _)| x == m) {
                    *n -= 1;
                }
            }
            g.modes.retain(|(_, n)| *n > 0);
            g.offered_by -= 1;
            if g.offered_by == 0 {
                self.games.remove(&offer.game_id);
            }
        }
        Some(match old.key {
            Some(k) => k.host_id,
            None => Arc::new(old.view.host_id),
        })
    }

    /// What [`place`] would answer over the indexed hosts.
    pub fn place(&self, game: &GameId, mode: Option<&str>) -> Result<Choice, PlacementError> {
        let g = self.games.get(game).ok_or(PlacementError::UnknownGame)?;
        match mode {
            None => {
                let best = g
                    .by_mode
                    .values()
                    .filter_map(BTreeSet::first)
                    .min()
                    .ok_or(PlacementError::NoCapacity)?;
                let mode = self
                    .hosts
                    .get(&*best.host_id)
                    .and_then(|h| offers(&h.view).find(|o| &o.game_id == game))
                    .and_then(|o| o.modes.first())
                    .ok_or(PlacementError::NoCapacity)?;
                Ok(Choice {
                    host_id: (*best.host_id).clone(),
                    mode: mode.clone(),
                })
            }
            Some(m) => {
                if !g.modes.iter().any(|(x, _)| x == m) {
                    let modes = g.modes.iter().map(|(x, _)| x.clone()).collect();
                    return Err(PlacementError::UnknownMode(modes));
                }
                let best = g
                    .by_mode
                    .get(m)
                    .and_then(BTreeSet::first)
                    .ok_or(PlacementError::NoCapacity)?;
                Ok(Choice {
                    host_id: (*best.host_id).clone(),
                    mode: m.to_owned(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(
        id: &str,
        status: HostStatus,
        games: &[(&str, &[&str])],
        max: u32,
        sessions: u32,
        cpu: f32,
    ) -> HostView {
        HostView {
            host_id: HostId::new(id).unwrap(),
            status,
            games: games
                .iter()
                .map(|(g, modes)| GameOffer {
                    game_id: GameId::new(*g).unwrap(),
                    modes: modes.iter().map(|m| (*m).to_owned()).collect(),
                    ready_timeout_ms: None,
                    settings: Vec::new(),
                    max_duration_s: None,
                    idle_timeout_s: None,
                    build: None,
                })
                .collect(),
            max_sessions: max,
            sessions,
            cpu_percent: cpu,
        }
    }

    use HostStatus::{Draining, Offline, Online};
    const GA: &[&str] = &["event-driven", "periodic"];
    const DEF: &[&str] = &["default"];

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            hosts: Vec<HostView>,
            game: &'static str,
            mode: Option<&'static str>,
            want: Result<(&'static str, &'static str), PlacementError>,
        }
        let cases = vec![
            Case {
                name: "no hosts",
                hosts: vec![],
                game: "g",
                mode: None,
                want: Err(PlacementError::UnknownGame),
            },
            Case {
                name: "nobody offers it",
                hosts: vec![host("a", Online, &[("other", DEF)], 4, 0, 0.0)],
                game: "g",
                mode: None,
                want: Err(PlacementError::UnknownGame),
            },
            Case {
                name: "default mode is the first",
                hosts: vec![host("a", Online, &[("nb", GA)], 4, 0, 0.0)],
                game: "nb",
                mode: None,
                want: Ok(("a", "event-driven")),
            },
            Case {
                name: "asked mode",
                hosts: vec![host("a", Online, &[("nb", GA)], 4, 0, 0.0)],
                game: "nb",
                mode: Some("periodic"),
                want: Ok(("a", "periodic")),
            },
            Case {
                name: "unknown mode lists the modes",
                hosts: vec![host("a", Online, &[("nb", GA)], 4, 0, 0.0)],
                game: "nb",
                mode: Some("turbo"),
                want: Err(PlacementError::UnknownMode(vec![
                    "event-driven".into(),
                    "periodic".into(),
                ])),
            },
            Case {
                name: "mode only on a full host is no capacity, not unknown",
                hosts: vec![
                    host("a", Online, &[("nb", &["periodic"])], 1, 1, 0.0),
                    host("b", Online, &[("nb", &["event-driven"])], 4, 0, 0.0),
                ],
                game: "nb",
                mode: Some("periodic"),
                want: Err(PlacementError::NoCapacity),
            },
            Case {
                name: "mode only on one host picks it",
                hosts: vec![
                    host("a", Online, &[("nb", &["event-driven"])], 4, 0, 0.0),
                    host("b", Online, &[("nb", GA)], 4, 3, 90.0),
                ],
                game: "nb",
                mode: Some("periodic"),
                want: Ok(("b", "periodic")),
            },
            Case {
                name: "full host",
                hosts: vec![host("a", Online, &[("g", DEF)], 2, 2, 0.0)],
                game: "g",
                mode: None,
                want: Err(PlacementError::NoCapacity),
            },
            Case {
                name: "draining and offline hosts take nothing",
                hosts: vec![
                    host("a", Draining, &[("g", DEF)], 4, 0, 0.0),
                    host("b", Offline, &[("g", DEF)], 4, 0, 0.0),
                ],
                game: "g",
                mode: None,
                want: Err(PlacementError::NoCapacity),
            },
            Case {
                name: "least loaded by ratio, not count",
                hosts: vec![
                    host("a", Online, &[("g", DEF)], 2, 1, 0.0),
                    host("b", Online, &[("g", DEF)], 10, 3, 50.0),
                ],
                game: "g",
                mode: None,
                want: Ok(("b", "default")),
            },
            Case {
                name: "equal ratio: lower cpu",
                hosts: vec![
                    host("a", Online, &[("g", DEF)], 4, 2, 70.0),
                    host("b", Online, &[("g", DEF)], 2, 1, 20.0),
                ],
                game: "g",
                mode: None,
                want: Ok(("b", "default")),
            },
            Case {
                name: "full tie: lowest host id",
                hosts: vec![
                    host("c", Online, &[("g", DEF)], 4, 0, 0.0),
                    host("a", Online, &[("g", DEF)], 4, 0, 0.0),
                    host("b", Online, &[("g", DEF)], 4, 0, 0.0),
                ],
                game: "g",
                mode: None,
                want: Ok(("a", "default")),
            },
            Case {
                name: "skips full and draining for a free one",
                hosts: vec![
                    host("a", Online, &[("g", DEF)], 1, 1, 0.0),
                    host("b", Draining, &[("g", DEF)], 8, 0, 0.0),
                    host("c", Online, &[("g", DEF)], 8, 7, 99.0),
                ],
                game: "g",
                mode: None,
                want: Ok(("c", "default")),
            },
        ];
        for c in cases {
            let want = c.want.map(|(h, m)| (h.to_owned(), m.to_owned()));
            let game = GameId::new(c.game).unwrap();
            let got = place(&c.hosts, &game, c.mode);
            let got = got.map(|ch| (ch.host_id.to_string(), ch.mode));
            assert_eq!(got, want, "scan, case {:?}", c.name);
            let mut index = HostIndex::default();
            for h in &c.hosts {
                index.upsert(h);
            }
            let got = index.place(&game, c.mode);
            let got = got.map(|ch| (ch.host_id.to_string(), ch.mode));
            assert_eq!(got, want, "index, case {:?}", c.name);
        }
    }

    /// A small deterministic generator, so a failure repeats.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn random_host(rng: &mut Rng, id: u64) -> HostView {
        let statuses = [Online, Online, Online, Draining, Offline];
        let all_modes = ["m0", "m1", "m2"];
        let games = (0..rng.below(4))
            .map(|_| {
                let modes = (0..rng.below(3))
                    .map(|_| all_modes[rng.below(3) as usize])
                    .collect::<Vec<_>>();
                (format!("g{}", rng.below(4)), modes)
            })
            .collect::<Vec<_>>();
        let max = rng.below(4) as u32;
        HostView {
            host_id: HostId::new(format!("h{id}")).unwrap(),
            status: statuses[rng.below(5) as usize],
            games: games
                .iter()
                .map(|(g, modes)| GameOffer {
                    game_id: GameId::new(g).unwrap(),
                    modes: modes.iter().map(|m| (*m).to_owned()).collect(),
                    ready_timeout_ms: None,
                    settings: Vec::new(),
                    max_duration_s: None,
                    idle_timeout_s: None,
                    build: None,
                })
                .collect(),
            max_sessions: max,
            sessions: rng.below(u64::from(max) + 2) as u32,
            cpu_percent: [0.0, 10.0, 50.0][rng.below(3) as usize],
        }
    }

    /// The index answers as the scan does, through a long run of random changes.
    use std::collections::BTreeMap;

    #[test]
    fn index_agrees_with_the_scan() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut hosts: BTreeMap<u64, HostView> = BTreeMap::new();
        let mut index = HostIndex::default();
        for step in 0..20_000 {
            let id = rng.below(12);
            match rng.below(10) {
                0 => {
                    hosts.remove(&id);
                    index.remove(&HostId::new(format!("h{id}")).unwrap());
                }
                1..=4 => {
                    let h = random_host(&mut rng, id);
                    index.upsert(&h);
                    hosts.insert(id, h);
                }
                5..=7 => {
                    if let Some(h) = hosts.get_mut(&id) {
                        h.sessions = rng.below(u64::from(h.max_sessions) + 2) as u32;
                        h.cpu_percent = [0.0, 10.0, 50.0][rng.below(3) as usize];
                        index.upsert(h);
                    }
                }
                _ => {
                    // A heartbeat: only the CPU moves (or an unknown host's does nothing).
                    let cpu = [0.0, 10.0, 50.0, -0.0][rng.below(4) as usize];
                    index.set_cpu(&HostId::new(format!("h{id}")).unwrap(), cpu);
                    if let Some(h) = hosts.get_mut(&id) {
                        h.cpu_percent = cpu;
                    }
                }
            }
            for g in ["g0", "g1", "g2", "g3", "g9"] {
                let game = GameId::new(g).unwrap();
                for mode in [None, Some("m0"), Some("m1"), Some("m2"), Some("x")] {
                    let sorted = |r: Result<Choice, PlacementError>| match r {
                        Err(PlacementError::UnknownMode(mut v)) => {
                            v.sort();
                            Err(PlacementError::UnknownMode(v))
                        }
                        other => other,
                    };
                    let want = sorted(place(hosts.values(), &game, mode));
                    let got = sorted(index.place(&game, mode));
                    assert_eq!(got, want, "step {step}, {g} {mode:?}");
                }
            }
        }
    }
}
