//! Rollouts (API.md, "Builds and central games"): which builds each host holds for a central
//! game while its build changes, what `GET /v1/games` shows of a rollout, and the driver that
//! moves one on.
//!
//! A rollout's state is the store's (`store::games`, whose `apply` is the one place it
//! changes). Its driver (`rollout_driver`) runs on the replica holding the sweep lease, each
//! sweep round, taking the step [`next_step`] says: it
//! chooses the canaries, starts their hold once each has the new build, counts the failed
//! launches of the new build (sessions that recorded it and ended `launch_failed` or
//! `launch_timeout`), halts on `max_failures`, promotes after `hold_s`, and says `done` once
//! every host told of the game runs the new build. Each step is written under the game's
//! version, so an operator's change in between wins and the driver looks again next round;
//! a replica's death hands the lease, and so the rollout, to another.

use protocol::api::{self, EventType, RolloutState};
use protocol::wire::{BuildState, BuildStatus};
use protocol::{BuildId, GameId, HostId};
use time::OffsetDateTime;

use super::Service;
use crate::error::Error;
use crate::store::games::{GameRecord, RolloutStep};

/// The builds `host` is to hold for `g`, the one to offer first.
pub(super) fn builds_for(g: &GameRecord, host: &HostId) -> Vec<BuildId> {
    let new = g.build.clone();
    let Some(old) = g.previous_build.clone() else {
        return vec![new];
    };
    match g
        .rollout
        .as_ref()
        .map(|r| (r.state, r.canaries.contains(host)))
    {
        // No rollout (a first build, a rollback): every host runs `build`, keeping the other
        // for a rollback.
        None
        | Some((RolloutState::Rolling | RolloutState::Done, _) | (RolloutState::Canary, true)) => {
            vec![new, old]
        }
        Some((RolloutState::Canary, false) | (RolloutState::Halted, _)) => vec![old],
    }
}

/// A host as rollouts see it: whether it takes sessions, and where it is with each central
/// game's builds.
#[derive(Debug, Clone)]
pub(super) struct HostBuilds {
    /// The host.
    pub host: HostId,
    /// Online (connected, ready, not drained).
    pub online: bool,
    /// Its builds.
    pub builds: Vec<BuildState>,
}

impl HostBuilds {
    fn status(&self, game: &GameId, build: &BuildId) -> Option<&BuildStatus> {
        self.builds
            .iter()
            .find(|b| b.game_id == *game && b.build == *build)
            .map(|b| &b.status)
    }

    /// The build it offers `game` with: the first of the game's builds it has ready (its
    /// agent lists them in the order it prefers).
    pub(super) fn offered(&self, game: &GameId) -> Option<&BuildId> {
        self.builds
            .iter()
            .find(|b| b.game_id == *game && b.status == BuildStatus::Ready)
            .map(|b| &b.build)
    }

    fn told(&self, game: &GameId) -> bool {
        self.builds.iter().any(|b| b.game_id == *game)
    }
}

/// What the API shows of `g`'s rollout, as `hosts` are.
pub(super) fn view(g: &GameRecord, hosts: &[HostBuilds]) -> Option<api::Rollout> {
    let r = g.rollout.as_ref()?;
    let previous = g.previous_build.clone()?;
    let told: Vec<&HostBuilds> = hosts.iter().filter(|h| h.told(&g.game_id)).collect();
    let ready = told
        .iter()
        .filter(|h| h.status(&g.game_id, &g.build) == Some(&BuildStatus::Ready))
        .count();
    // Why a host cannot fetch or unpack the new build, when the rollout did not halt.
    let host_error = told
        .iter()
        .find_map(|h| match h.status(&g.game_id, &g.build) {
            Some(BuildStatus::Failed(e)) => Some(format!("host {}: {e}", h.host)),
            _ => None,
        });
    Some(api::Rollout {
        build: g.build.clone(),
        previous_build: previous,
        state: r.state,
        spec: r.spec,
        canaries: r.canaries.clone(),
        hosts_ready: u32::try_from(ready).unwrap_or(u32::MAX),
        hosts_total: u32::try_from(told.len()).unwrap_or(u32::MAX),
        failures: r.failures,
        last_error: r.last_error.clone().or(host_error),
        started_at: r.started_at,
    })
}

/// The step `g`'s rollout takes now, if any, and the event it makes.
pub(super) fn next_step(
    g: &GameRecord,
    hosts: &[HostBuilds],
    failures: u32,
    now: OffsetDateTime,
) -> Option<(RolloutStep, Option<EventType>)> {
    let r = g.rollout.as_ref()?;
    let ready = |h: &HostBuilds| h.status(&g.game_id, &g.build) == Some(&BuildStatus::Ready);
    if failures != r.failures && matches!(r.state, RolloutState::Canary | RolloutState::Rolling) {
        return Some((RolloutStep::Failures(failures), None));
    }
    match r.state {
        RolloutState::Canary if failures >= r.spec.max_failures => Some((
            RolloutStep::Halt(format!(
                "{failures} failed launches of build {} on the canary (max_failures {})",
                g.build, r.spec.max_failures
            )),
            Some(EventType::RolloutHalted),
        )),
        RolloutState::Canary if r.canaries.is_empty() => {
            // The hosts told of the game (those that offered its previous build), online,
            // by id: the same choice whichever replica drives.
            let mut eligible: Vec<&HostBuilds> = hosts
                .iter()
                .filter(|h| h.online && h.told(&g.game_id))
                .collect();
            eligible.sort_by(|a, b| a.host.cmp(&b.host));
            let n = usize::try_from(r.spec.canary_hosts).unwrap_or(usize::MAX);
            let chosen: Vec<HostId> = eligible.iter().take(n).map(|h| h.host.clone()).collect();
            (!chosen.is_empty()).then_some((
                RolloutStep::Canaries(chosen),
                Some(EventType::RolloutProgressed),
            ))
        }
        RolloutState::Canary => match r.hold_from {
            None => {
                let all = r
                    .canaries
                    .iter()
                    .all(|c| hosts.iter().any(|h| h.host == *c && ready(h)));
                all.then_some((RolloutStep::Hold, Some(EventType::RolloutProgressed)))
            }
            Some(from) => (now - from >= time::Duration::seconds(i64::from(r.spec.hold_s)))
                .then_some((RolloutStep::Promote, Some(EventType::RolloutProgressed))),
        },
        RolloutState::Rolling => {
            let told: Vec<&HostBuilds> = hosts
                .iter()
                .filter(|h| h.online && h.told(&g.game_id))
                .collect();
            (!told.is_empty() && told.iter().all(|h| ready(h)))
                .then_some((RolloutStep::Done, Some(EventType::RolloutDone)))
        }
        RolloutState::Done | RolloutState::Halted => None,
    }
}

impl Service {
    /// Where every host is with the central games' builds: this broker's hosts alone, the
    /// shared hosts among replicas.
    pub(super) async fn host_builds(&self) -> Result<Vec<HostBuilds>, Error> {
        if self.replicas.is_none() {
            return Ok(self
                .registry
                .builds()
                .into_iter()
                .map(|(host, online, builds)| HostBuilds {
                    host,
                    online,
                    builds,
                })
                .collect());
        }
        let shared = self
            .store
            .shared_hosts(super::view::alive_within(self.settings.heartbeat_timeout))
            .await?;
        Ok(shared
            .iter()
            .map(|h| HostBuilds {
                host: h.record.host_id.clone(),
                online: super::view::view(h).status == api::HostStatus::Online,
                builds: h
                    .record
                    .facts
                    .as_ref()
                    .map(|f| f.builds.clone())
                    .unwrap_or_default(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::games::RolloutRecord;
    use protocol::api::RolloutSpec;

    fn build(n: u8) -> BuildId {
        BuildId::of_digest(&[n; 32])
    }

    fn host(h: &str) -> HostId {
        HostId::new(h).unwrap()
    }

    fn game(
        state: RolloutState,
        canaries: &[&str],
        hold_from: Option<OffsetDateTime>,
    ) -> GameRecord {
        GameRecord {
            game_id: GameId::new("g").unwrap(),
            entry: "{}".into(),
            build: build(2),
            previous_build: Some(build(1)),
            previous_entry: None,
            rollout: Some(RolloutRecord {
                spec: RolloutSpec {
                    canary_hosts: 1,
                    hold_s: 10,
                    max_failures: 2,
                },
                state,
                canaries: canaries.iter().map(|c| host(c)).collect(),
                hold_from,
                failures: 0,
                last_error: None,
                started_at: OffsetDateTime::UNIX_EPOCH,
            }),
            version: 3,
            updated_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn at(h: &str, online: bool, statuses: &[(u8, BuildStatus)]) -> HostBuilds {
        HostBuilds {
            host: host(h),
            online,
            builds: statuses
                .iter()
                .map(|(b, s)| BuildState {
                    game_id: GameId::new("g").unwrap(),
                    build: build(*b),
                    status: s.clone(),
                })
                .collect(),
        }
    }

    #[test]
    fn hosts_hold_the_builds_their_part_of_the_rollout_needs() {
        let (new, old) = (build(2), build(1));
        let both = vec![new.clone(), old.clone()];
        let table = [
            (RolloutState::Canary, "c", both.clone()),
            (RolloutState::Canary, "other", vec![old.clone()]),
            (RolloutState::Rolling, "other", both.clone()),
            (RolloutState::Done, "other", both.clone()),
            (RolloutState::Halted, "c", vec![old.clone()]),
        ];
        for (state, h, want) in table {
            assert_eq!(
                builds_for(&game(state, &["c"], None), &host(h)),
                want,
                "{state:?} {h}"
            );
        }
        let mut first = game(RolloutState::Canary, &[], None);
        first.previous_build = None;
        first.rollout = None;
        assert_eq!(builds_for(&first, &host("x")), vec![new.clone()]);
        let mut rolled_back = game(RolloutState::Canary, &[], None);
        rolled_back.rollout = None;
        assert_eq!(builds_for(&rolled_back, &host("x")), both);
    }

    #[test]
    fn a_rollout_moves_on_by_its_canaries_failures_and_hold() {
        use BuildStatus::{Failed, Fetching, Ready};
        let t0 = OffsetDateTime::UNIX_EPOCH + time::Duration::hours(1);
        let hosts = vec![
            at("b", true, &[(1, Ready)]),
            at("a", true, &[(1, Ready)]),
            at("z", false, &[(1, Ready)]),
            at("n", true, &[]),
        ];
        let step = |g: &GameRecord, hosts: &[HostBuilds], failures: u32, now| {
            next_step(g, hosts, failures, now)
        };
        // Canaries: online hosts told of the game, by id.
        assert_eq!(
            step(&game(RolloutState::Canary, &[], None), &hosts, 0, t0),
            Some((
                RolloutStep::Canaries(vec![host("a")]),
                Some(EventType::RolloutProgressed)
            ))
        );
        // The hold begins once every canary has the new build.
        let canary = game(RolloutState::Canary, &["a"], None);
        assert_eq!(step(&canary, &hosts, 0, t0), None);
        let mut fetched = hosts.clone();
        fetched[1] = at("a", true, &[(1, Ready), (2, Ready)]);
        assert_eq!(
            step(&canary, &fetched, 0, t0).map(|s| s.0),
            Some(RolloutStep::Hold)
        );
        // Held long enough: promoted; failures first change the count, then halt.
        let held = game(RolloutState::Canary, &["a"], Some(t0));
        assert_eq!(
            step(&held, &fetched, 0, t0 + time::Duration::seconds(9)),
            None
        );
        assert_eq!(
            step(&held, &fetched, 0, t0 + time::Duration::seconds(10)).map(|s| s.0),
            Some(RolloutStep::Promote)
        );
        assert_eq!(
            step(&held, &fetched, 1, t0).map(|s| s.0),
            Some(RolloutStep::Failures(1))
        );
        let mut failing = held.clone();
        failing.rollout.as_mut().unwrap().failures = 2;
        let (s, e) = step(&failing, &fetched, 2, t0).unwrap();
        assert!(matches!(s, RolloutStep::Halt(why) if why.contains("2 failed launches")));
        assert_eq!(e, Some(EventType::RolloutHalted));
        // Rolling: done once every online host told of the game has the new build.
        let rolling = game(RolloutState::Rolling, &["a"], Some(t0));
        assert_eq!(step(&rolling, &fetched, 0, t0), None);
        let all = vec![
            at("a", true, &[(2, Ready)]),
            at("b", true, &[(2, Ready), (1, Ready)]),
            at("z", false, &[(2, Fetching)]),
        ];
        assert_eq!(
            step(&rolling, &all, 0, t0),
            Some((RolloutStep::Done, Some(EventType::RolloutDone)))
        );
        // What the API shows: counts, and a host's reason when one cannot fetch.
        let mut sick = all.clone();
        sick[2] = at("z", false, &[(2, Failed("disk full".into()))]);
        let v = view(&rolling, &sick).unwrap();
        assert_eq!((v.hosts_ready, v.hosts_total), (2, 3));
        assert_eq!(v.last_error.as_deref(), Some("host z: disk full"));
    }
}
