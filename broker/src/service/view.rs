//! What a replica sees of the hosts every replica shares: read from the store, kept for
//! [`VIEW_TTL`], counting the starts this replica sends meanwhile. Placement reads it to pick
//! a host (and so its owner, where the start goes); API reads of hosts and games, offers and
//! settings of other replicas' hosts come from it too.
//!
//! It may be stale, never wrong: the host's owner decides from its own exact count, and a
//! stale view costs a retry on the next owner (see `start`). Reading it costs about as much as
//! a claim did (BENCHMARKS.md, issue 15), hence the second it is kept.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use protocol::api::HostStatus;
use protocol::wire::GameOffer;
use protocol::{GameId, HostId};

use super::Service;
use crate::error::Error;
use crate::placement::{self, HostView, Request, Strategy};
use crate::store::SharedHost;
use protocol::labels;
use std::sync::Arc;

/// How long placement uses a view of the shared hosts before it reads them again.
const VIEW_TTL: Duration = Duration::from_secs(1);

/// A shared host as placement sees it, with the replica holding its agent.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    /// What placement needs.
    pub view: HostView,
    /// The replica its agent is connected to, when a live one holds it.
    pub owner: Option<String>,
}

/// Where placement sent a start: the host, and the replica holding its agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Placed {
    /// The host.
    pub host: HostId,
    /// Its owner.
    pub owner: String,
}

/// The view of the shared hosts placement uses, and when it was read.
#[derive(Debug, Default)]
pub(super) struct SharedView(Mutex<Option<(Instant, Vec<Seen>)>>);

impl SharedView {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Vec<Seen>)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `f` of the kept view, if it is fresh (looked at in place, not copied).
    pub fn read<T>(&self, f: impl FnOnce(&[Seen]) -> T) -> Option<T> {
        self.lock()
            .as_ref()
            .filter(|(at, _)| at.elapsed() < VIEW_TTL)
            .map(|(_, v)| f(v))
    }

    /// Keeps `seen`, read from the store now, unless `keep_fresh` and another start kept a
    /// view read within [`VIEW_TTL`] meanwhile: that one holds the starts counted since, which
    /// concurrent starts must see to spread. Answers the view kept.
    fn set(&self, seen: Vec<Seen>, keep_fresh: bool) -> Vec<Seen> {
        let mut kept = self.lock();
        match kept.as_ref() {
            Some((at, v)) if keep_fresh && at.elapsed() < VIEW_TTL => v.clone(),
            _ => {
                *kept = Some((Instant::now(), seen.clone()));
                seen
            }
        }
    }

    /// Places a session on the kept view, if it is fresh, among the hosts of replicas not in
    /// `skip`, and counts it there at once, so concurrent starts through this replica spread
    /// over the hosts instead of all choosing the one least loaded when they began.
    pub fn place(
        &self,
        req: &Request<'_>,
        strategy: Strategy,
        skip: &[String],
        here: &str,
    ) -> Option<Result<Placed, placement::PlacementError>> {
        let mut kept = self.lock();
        let (at, seen) = kept.as_mut()?;
        if at.elapsed() >= VIEW_TTL {
            return None;
        }
        Some(place_on(seen, req, strategy, skip, here))
    }

    /// The replica holding `host`'s agent, as the kept view says, if it is fresh and names
    /// one.
    pub fn owner(&self, host: &HostId) -> Option<String> {
        let kept = self.lock();
        let (at, seen) = kept.as_ref()?;
        if at.elapsed() >= VIEW_TTL {
            return None;
        }
        seen.iter()
            .find(|s| &s.view.host_id == host)
            .and_then(|s| s.owner.clone())
    }

    /// Counts every host of replica `owner` as full in the kept view, until it is read
    /// again: the replica did not take a start (it stops, is gone, or is too busy), and the
    /// next starts go elsewhere without asking it first.
    pub fn away(&self, owner: &str) {
        if let Some((_, seen)) = self.lock().as_mut() {
            for s in seen
                .iter_mut()
                .filter(|s| s.owner.as_deref() == Some(owner))
            {
                s.view.used = s.view.used.max(s.view.max_sessions);
            }
        }
    }

    /// Counts `host` as full in the kept view: its owner said it has no room.
    pub fn full(&self, host: &HostId) {
        if let Some((_, seen)) = self.lock().as_mut() {
            if let Some(s) = seen.iter_mut().find(|s| &s.view.host_id == host) {
                s.view.used = s.view.used.max(s.view.max_sessions);
            }
        }
    }
}

/// [`placement::place`] over `seen`, the hosts of replicas in `skip` counting as offline (as
/// do hosts with no live owner), counting the choice. Under `spread`, a host of this replica
/// (`here`) is taken instead of the least loaded one when it is as preferred and within one
/// session of it: such a start needs no round trip to another replica, and hosts stay within
/// a session or two of each other.
pub(super) fn place_on(
    seen: &mut [Seen],
    req: &Request<'_>,
    strategy: Strategy,
    skip: &[String],
    here: &str,
) -> Result<Placed, placement::PlacementError> {
    let skipped = |s: &Seen| s.owner.as_ref().is_some_and(|o| skip.contains(o));
    // Copied only when some hosts must count as offline (a start's retry), not every start.
    let offlined: Option<Vec<HostView>> = seen.iter().any(skipped).then(|| {
        seen.iter()
            .map(|s| {
                let mut v = s.view.clone();
                if skipped(s) {
                    v.status = HostStatus::Offline;
                }
                v
            })
            .collect()
    });
    let views: Vec<&HostView> = match &offlined {
        Some(v) => v.iter().collect(),
        None => seen.iter().map(|s| &s.view).collect(),
    };
    let mut choice = placement::place(views.iter().copied(), req, strategy)?;
    let owner_of = |host: &HostId| {
        seen.iter()
            .find(|s| &s.view.host_id == host)
            .and_then(|s| s.owner.as_deref())
    };
    if strategy == Strategy::Spread && owner_of(&choice.host_id) != Some(here) {
        let mine = seen
            .iter()
            .zip(&views)
            .filter(|(s, _)| s.owner.as_deref() == Some(here))
            .map(|(_, v)| *v);
        if let Ok(local) = placement::place(mine, req, strategy) {
            let load = |h: &HostId| views.iter().find(|v| &v.host_id == h);
            if let (Some(l), Some(b)) = (load(&local.host_id), load(&choice.host_id)) {
                let step = b.offer(req.game).map_or(1, |o| o.slots.max(1));
                // l.used / l.max <= (b.used + step) / b.max, cross-multiplied.
                let within = u64::from(l.used) * u64::from(b.max_sessions.max(1))
                    <= u64::from(b.used + step) * u64::from(l.max_sessions.max(1));
                let as_preferred = labels::matches(&l.labels, req.prefer)
                    >= labels::matches(&b.labels, req.prefer);
                if within && as_preferred {
                    choice = local;
                }
            }
        }
    }
    let chosen = seen
        .iter_mut()
        .find(|s| s.view.host_id == choice.host_id)
        .ok_or(placement::PlacementError::NoCapacity)?;
    let (slots, gpus) = chosen
        .view
        .offer(req.game)
        .map_or((1, 0), |o| (o.slots.max(1), o.gpus));
    chosen.view.used = chosen.view.used.saturating_add(slots);
    chosen.view.gpus_free = chosen.view.gpus_free.saturating_sub(gpus);
    let owner = chosen
        .owner
        .clone()
        .ok_or(placement::PlacementError::NoCapacity)?;
    Ok(Placed {
        host: choice.host_id,
        owner,
    })
}

/// How long a replica may be silent before its hosts count as offline. Replicas say they are
/// alive a few times per heartbeat timeout.
pub(super) fn alive_within(heartbeat_timeout: Duration) -> Duration {
    heartbeat_timeout
}

/// What placement sees of a shared host: online when a live replica holds its agent, has
/// squared its games, and it is not drained.
pub(super) fn view(h: &SharedHost) -> HostView {
    let facts = h.record.facts.as_ref();
    let status = match (h.owner.is_some() && h.ready, h.record.drained) {
        (false, _) => HostStatus::Offline,
        (true, true) => HostStatus::Draining,
        (true, false) => HostStatus::Online,
    };
    let gpus = facts.map_or(0, |f| u32::try_from(f.gpus.len()).unwrap_or(u32::MAX));
    HostView {
        host_id: h.record.host_id.clone(),
        status,
        games: facts.map(|f| f.games.clone()).unwrap_or_default(),
        max_sessions: facts.map_or(0, |f| f.max_sessions),
        used: h.slots_used,
        cpu_percent: h.load.0,
        labels: Arc::new(facts.map(|f| f.labels.clone()).unwrap_or_default()),
        gpus_free: gpus.saturating_sub(h.gpus_used),
    }
}

impl Service {
    /// The replicas' view, read from the store when the kept one is stale; a view another
    /// start kept meanwhile wins when `keep_fresh` (it holds the starts it counted).
    pub(super) async fn read_view(&self, keep_fresh: bool) -> Result<Vec<Seen>, Error> {
        let replicas = self.replicas()?;
        let shared = self
            .store
            .shared_hosts(alive_within(self.settings.heartbeat_timeout))
            .await?;
        let seen = shared
            .iter()
            .map(|h| Seen {
                view: view(h),
                owner: h.owner.clone(),
            })
            .collect();
        Ok(replicas.view.set(seen, keep_fresh))
    }

    /// `f` of the kept view if it is fresh, else of a view read now.
    async fn in_view<T>(&self, f: impl Fn(&[Seen]) -> T) -> Result<T, Error> {
        match self.replicas()?.view.read(&f) {
            Some(t) => Ok(t),
            None => Ok(f(&self.read_view(true).await?)),
        }
    }

    /// The settings a game offers, as a shared host that offers it says.
    pub(super) async fn shared_game_settings(
        &self,
        game: &GameId,
    ) -> Result<Option<Vec<protocol::settings::SettingOffer>>, Error> {
        self.in_view(|seen| {
            seen.iter()
                .filter(|s| s.view.status != HostStatus::Offline)
                .flat_map(|s| s.view.games.iter())
                .find(|g| &g.game_id == game)
                .map(|g| g.settings.clone())
        })
        .await
    }

    /// How `host` offers `game`, as the shared view of the hosts says; `None` when the view
    /// does not know the host or it cannot be read.
    pub(super) async fn shared_offer(&self, host: &HostId, game: &GameId) -> Option<GameOffer> {
        self.in_view(|seen| {
            seen.iter()
                .find(|s| &s.view.host_id == host)?
                .view
                .games
                .iter()
                .find(|g| &g.game_id == game)
                .cloned()
        })
        .await
        .ok()
        .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::HostRecord;
    use time::OffsetDateTime;

    fn shared(owner: Option<&str>, ready: bool, drained: bool) -> SharedHost {
        SharedHost {
            record: HostRecord {
                host_id: HostId::new("h").unwrap(),
                drained,
                facts: None,
                last_seen: OffsetDateTime::UNIX_EPOCH,
            },
            owner: owner.map(str::to_owned),
            epoch: 3,
            ready,
            sessions: 2,
            slots_used: 3,
            gpus_used: 0,
            load: (12.5, 0),
        }
    }

    #[test]
    fn a_shared_host_is_online_only_when_held_reconciled_and_not_drained() {
        let cases = [
            (Some("b1"), true, false, HostStatus::Online),
            (Some("b1"), true, true, HostStatus::Draining),
            (Some("b1"), false, false, HostStatus::Offline),
            (None, true, false, HostStatus::Offline),
            (None, false, true, HostStatus::Offline),
        ];
        for (owner, ready, drained, status) in cases {
            let v = view(&shared(owner, ready, drained));
            assert_eq!(v.status, status, "{owner:?} {ready} {drained}");
            assert_eq!(v.used, 3);
        }
    }

    fn seen(host: &str, owner: &str, used: u32) -> Seen {
        Seen {
            view: HostView {
                host_id: HostId::new(host).unwrap(),
                status: HostStatus::Online,
                games: vec![GameOffer {
                    game_id: GameId::new("pong").unwrap(),
                    modes: vec!["classic".into()],
                    ready_timeout_ms: None,
                    settings: Vec::new(),
                    max_duration_s: None,
                    idle_timeout_s: None,
                    build: None,
                    slots: 1,
                    gpus: 0,
                }],
                max_sessions: 2,
                used,
                cpu_percent: 0.0,
                labels: Arc::default(),
                gpus_free: 0,
            },
            owner: Some(owner.to_owned()),
        }
    }

    #[test]
    fn placement_counts_its_choice_and_skips_the_owners_that_said_full() {
        let pong = GameId::new("pong").unwrap();
        let pong = &Request::new(&pong, None);
        let mut hosts = vec![seen("a", "b1", 0), seen("b", "b2", 1)];
        // From a third replica: the least loaded, counted at once.
        let first = place_on(&mut hosts, pong, Strategy::Spread, &[], "b3").unwrap();
        assert_eq!((first.host.as_str(), first.owner.as_str()), ("a", "b1"));
        // a: 1 of 2, b: 1 of 2; by id.
        let second = place_on(&mut hosts, pong, Strategy::Spread, &[], "b3").unwrap();
        assert_eq!(second.host.as_str(), "a");
        // b1 said it is full: its hosts are skipped.
        let third = place_on(&mut hosts, pong, Strategy::Spread, &["b1".into()], "b3").unwrap();
        assert_eq!(third.owner, "b2");
        assert_eq!(
            place_on(
                &mut hosts,
                pong,
                Strategy::Spread,
                &["b1".into(), "b2".into()],
                "b3"
            ),
            Err(placement::PlacementError::NoCapacity)
        );
    }

    #[test]
    fn a_replica_takes_its_own_host_within_one_session_of_the_least_loaded() {
        let pong = GameId::new("pong").unwrap();
        let pong = &Request::new(&pong, None);
        let mut hosts = vec![seen("a", "b1", 0), seen("b", "b2", 1)];
        hosts[0].view.max_sessions = 10;
        hosts[1].view.max_sessions = 10;
        // b2's own host has 1 session, the least loaded 0: within one, so b2 keeps it.
        let mine = place_on(&mut hosts, pong, Strategy::Spread, &[], "b2").unwrap();
        assert_eq!(mine.host.as_str(), "b");
        // Now 2 against 0: the start goes to b1's host.
        let theirs = place_on(&mut hosts, pong, Strategy::Spread, &[], "b2").unwrap();
        assert_eq!((theirs.host.as_str(), theirs.owner.as_str()), ("a", "b1"));
        // A full host of its own is never taken.
        hosts[1].view.used = 10;
        let full = place_on(&mut hosts, pong, Strategy::Spread, &[], "b2").unwrap();
        assert_eq!(full.owner, "b1");
    }
}
