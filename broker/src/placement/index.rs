//! Placement's index: the answer [`super::place`] gives over the same hosts, without a scan.
//!
//! Kept up to date by the registry on every change of a host (its games, status, slots, GPUs
//! or CPU). For each game it holds the hosts offering it (for the errors) and, per mode and
//! per set of host labels, those that can take a session of it now, best first. Hosts of a
//! fleet carry few distinct label sets (a region, a GPU class), so placing is a map lookup
//! and, for each label set that fits the start, the first element of a `BTreeSet`: a few
//! hundred nanoseconds at 10,000 hosts, where the scan takes a millisecond. A fleet in which
//! every host's labels differ makes it a scan of the groups; labels are for classes of hosts,
//! their ids are not labels. An update costs O(games x modes x log n).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use protocol::labels::{self, Labels};
use protocol::wire::GameOffer;
use protocol::{GameId, HostId};

use super::{takes, Choice, HostView, Load, PlacementError, Request, Strategy};

/// The index. See the module docs.
#[derive(Debug, Default)]
pub struct HostIndex {
    strategy: Strategy,
    hosts: HashMap<HostId, Indexed>,
    games: HashMap<GameId, GameHosts>,
    groups: LabelGroups,
}

/// The distinct label sets of the indexed hosts, each with a small id and how many hosts
/// carry it.
#[derive(Debug, Default)]
struct LabelGroups {
    ids: HashMap<Arc<Labels>, GroupId>,
    sets: HashMap<GroupId, (Arc<Labels>, usize)>,
    next: GroupId,
}

type GroupId = u32;

impl LabelGroups {
    fn enter(&mut self, labels: &Arc<Labels>) -> GroupId {
        if let Some(id) = self.ids.get(labels) {
            if let Some((_, n)) = self.sets.get_mut(id) {
                *n += 1;
            }
            return *id;
        }
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        self.ids.insert(Arc::clone(labels), id);
        self.sets.insert(id, (Arc::clone(labels), 1));
        id
    }

    fn leave(&mut self, id: GroupId) {
        if let Some((labels, n)) = self.sets.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                let labels = Arc::clone(labels);
                self.sets.remove(&id);
                self.ids.remove(&labels);
            }
        }
    }

    fn labels(&self, id: GroupId) -> &Labels {
        self.sets.get(&id).map_or(&super::NO_LABELS, |(l, _)| l)
    }
}

#[derive(Debug)]
struct Indexed {
    view: HostView,
    key: LoadKey,
    group: GroupId,
}

#[derive(Debug, Default)]
struct GameHosts {
    /// Hosts offering the game, whatever their status.
    offered_by: usize,
    /// The modes they offer, with how many offer each, in the order they were first offered
    /// (a catalog's order, for the error that lists them).
    modes: Vec<(String, usize)>,
    /// Per mode and label set, the hosts that can take a session in it, best first. A
    /// request without a mode goes to the best of their first elements (the best host
    /// offering any mode, in its first mode): not a set of its own, which would double the
    /// cost of every heartbeat's re-ranking, the broker's hottest path at scale.
    by_mode: HashMap<String, BTreeMap<GroupId, BTreeSet<LoadKey>>>,
}

/// A host's rank among candidates: [`Strategy::cmp`]'s order.
#[derive(Debug, Clone)]
struct LoadKey {
    strategy: Strategy,
    used: u32,
    max_sessions: u32,
    cpu_percent: f32,
    host_id: Arc<HostId>,
}

impl LoadKey {
    fn of(view: &HostView, host_id: Arc<HostId>, strategy: Strategy) -> Self {
        Self {
            strategy,
            used: view.used,
            max_sessions: view.max_sessions,
            cpu_percent: view.cpu_percent,
            host_id,
        }
    }

    fn load(&self) -> Load<'_> {
        Load {
            used: self.used,
            max: self.max_sessions,
            cpu: self.cpu_percent,
            host: &self.host_id,
        }
    }
}

impl Ord for LoadKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.strategy.cmp(self.load(), other.load())
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

/// A host's offers, each game once (the first listing wins, as in [`super::place`]).
fn offers(view: &HostView) -> impl Iterator<Item = &GameOffer> {
    view.games
        .iter()
        .enumerate()
        .filter(|(i, g)| !view.games[..*i].iter().any(|x| x.game_id == g.game_id))
        .map(|(_, g)| g)
}

/// Takes `key` out of `g`'s candidates for `offer`'s modes in `group`.
fn take_out(g: &mut GameHosts, offer: &GameOffer, group: GroupId, key: &LoadKey) {
    for m in &offer.modes {
        if let Some(groups) = g.by_mode.get_mut(m) {
            if let Some(set) = groups.get_mut(&group) {
                set.remove(key);
                if set.is_empty() {
                    groups.remove(&group);
                }
            }
            if groups.is_empty() {
                g.by_mode.remove(m);
            }
        }
    }
}

/// Puts `key` among `g`'s candidates for `offer`'s modes in `group`.
fn put_in(g: &mut GameHosts, offer: &GameOffer, group: GroupId, key: &LoadKey) {
    for m in &offer.modes {
        match g.by_mode.get_mut(m) {
            Some(groups) => {
                groups.entry(group).or_default().insert(key.clone());
            }
            None => {
                let set = BTreeSet::from([key.clone()]);
                g.by_mode.insert(m.clone(), BTreeMap::from([(group, set)]));
            }
        }
    }
}

impl HostIndex {
    /// An empty index that ranks by `strategy`.
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            ..Self::default()
        }
    }

    /// Adds a host or brings it up to date.
    pub fn upsert(&mut self, view: &HostView) {
        let strategy = self.strategy;
        if let Some(old) = self.hosts.get_mut(&view.host_id) {
            // `==` takes -0.0 for 0.0, the ranking (`total_cmp`) does not.
            if old.view == *view && old.view.cpu_percent.to_bits() == view.cpu_percent.to_bits() {
                return;
            }
            if old.view.games == view.games && old.view.labels == view.labels {
                // The common change (a heartbeat's CPU, a slot taken or freed): only the
                // host's rank and what it can take move.
                let key = LoadKey::of(view, Arc::clone(&old.key.host_id), strategy);
                let moved =
                    key != old.key || key.cpu_percent.to_bits() != old.key.cpu_percent.to_bits();
                for offer in offers(view) {
                    let (was, is) = (takes(&old.view, offer), takes(view, offer));
                    if (was, is) == (false, false) || (was == is && !moved) {
                        continue;
                    }
                    let Some(g) = self.games.get_mut(&offer.game_id) else {
                        continue;
                    };
                    if was {
                        take_out(g, offer, old.group, &old.key);
                    }
                    if is {
                        put_in(g, offer, old.group, &key);
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
        let key = LoadKey::of(view, host_id, strategy);
        let group = self.groups.enter(&view.labels);
        for offer in offers(view) {
            let g = self.games.entry(offer.game_id.clone()).or_default();
            g.offered_by += 1;
            for m in &offer.modes {
                match g.modes.iter_mut().find(|(x, _)| x == m) {
                    Some((_, n)) => *n += 1,
                    None => g.modes.push((m.clone(), 1)),
                }
            }
            if takes(view, offer) {
                put_in(g, offer, group, &key);
            }
        }
        self.hosts.insert(
            view.host_id.clone(),
            Indexed {
                view: view.clone(),
                key,
                group,
            },
        );
    }

    /// A heartbeat's change: only the host's CPU figure, so only its rank can move (under
    /// `spread`; `pack` does not rank by CPU). Same effect as [`HostIndex::upsert`] with the
    /// view's `cpu_percent` changed, without comparing or copying the rest of the view.
    pub fn set_cpu(&mut self, host_id: &HostId, cpu_percent: f32) {
        let Self {
            hosts,
            games,
            strategy,
            ..
        } = self;
        let Some(old) = hosts.get_mut(host_id) else {
            return;
        };
        if old.view.cpu_percent.to_bits() == cpu_percent.to_bits() {
            return;
        }
        old.view.cpu_percent = cpu_percent;
        let new = LoadKey {
            cpu_percent,
            ..old.key.clone()
        };
        if *strategy == Strategy::Spread {
            for offer in offers(&old.view) {
                if !takes(&old.view, offer) {
                    continue;
                }
                if let Some(g) = games.get_mut(&offer.game_id) {
                    take_out(g, offer, old.group, &old.key);
                    put_in(g, offer, old.group, &new);
                }
            }
        }
        old.key = new;
    }

    /// Forgets a host; returns its shared id for reuse.
    pub fn remove(&mut self, host_id: &HostId) -> Option<Arc<HostId>> {
        let old = self.hosts.remove(host_id)?;
        for offer in offers(&old.view) {
            let Some(g) = self.games.get_mut(&offer.game_id) else {
                continue;
            };
            if takes(&old.view, offer) {
                take_out(g, offer, old.group, &old.key);
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
        self.groups.leave(old.group);
        Some(old.key.host_id)
    }

    /// The best candidate among `groups`: the first of each group whose labels fit, the
    /// one with the most preferred labels, then the strategy's first.
    fn best<'s>(
        &'s self,
        groups: &'s BTreeMap<GroupId, BTreeSet<LoadKey>>,
        req: &Request<'_>,
        best: &mut Option<(usize, &'s LoadKey)>,
    ) {
        for (group, set) in groups {
            let labels = self.groups.labels(*group);
            if !labels::fits(labels, req.labels) {
                continue;
            }
            let Some(first) = set.first() else { continue };
            let score = labels::matches(labels, req.prefer);
            let better = best.is_none_or(|(s, k)| {
                score.cmp(&s).reverse().then_with(|| first.cmp(k)) == Ordering::Less
            });
            if better {
                *best = Some((score, first));
            }
        }
    }

    /// What [`super::place`] would answer over the indexed hosts, by the index's strategy.
    pub fn place(&self, req: &Request<'_>) -> Result<Choice, PlacementError> {
        let g = self
            .games
            .get(req.game)
            .ok_or(PlacementError::UnknownGame)?;
        let mut best = None;
        match req.mode {
            None => {
                for groups in g.by_mode.values() {
                    self.best(groups, req, &mut best);
                }
                let (_, key) = best.ok_or(PlacementError::NoCapacity)?;
                let mode = self
                    .hosts
                    .get(&*key.host_id)
                    .and_then(|h| offers(&h.view).find(|o| &o.game_id == req.game))
                    .and_then(|o| o.modes.first())
                    .ok_or(PlacementError::NoCapacity)?;
                Ok(Choice {
                    host_id: (*key.host_id).clone(),
                    mode: mode.clone(),
                })
            }
            Some(m) => {
                if !g.modes.iter().any(|(x, _)| x == m) {
                    let modes = g.modes.iter().map(|(x, _)| x.clone()).collect();
                    return Err(PlacementError::UnknownMode(modes));
                }
                if let Some(groups) = g.by_mode.get(m) {
                    self.best(groups, req, &mut best);
                }
                let (_, key) = best.ok_or(PlacementError::NoCapacity)?;
                Ok(Choice {
                    host_id: (*key.host_id).clone(),
                    mode: m.to_owned(),
                })
            }
        }
    }
}
