//! Where a start goes. Alone, a broker places on its own hosts when it reserves the slot
//! (`Registry::place`, exact under its lock). Among replicas, placement runs over the shared
//! view of every replica's hosts (`service::view`), and its choice names the host and the
//! replica holding its agent: here, or there. The rule is one, `placement::place`, either way.

use protocol::api::{HostStatus, StartSession};
use protocol::HostId;

use super::NO_CAPACITY_RETRY_SECS;
use crate::error::Error;
use crate::placement::{PlacementError, Request};
use crate::service::view::{self, Placed};
use crate::service::Service;

/// Where a start goes.
#[derive(Debug)]
pub(in crate::service) enum Target {
    /// To a host whose agent is connected here: the one placement chose among the replicas'
    /// hosts, or (alone) whichever this broker's own placement picks.
    Here(Option<HostId>),
    /// To another replica, the owner of the host placement chose.
    There(Placed),
}

/// How many times a start reads the shared hosts, at most, when the view it finds is stale.
const MAX_READS: u32 = 2;

impl Service {
    /// Where a start of `req` goes, among the hosts of replicas not in `skip`. `fresh` says
    /// whether this start has read the store's hosts already: a start that finds no host in a
    /// view kept from before reads them again before it answers.
    pub(super) async fn choose(
        &self,
        req: &StartSession,
        skip: &[String],
        fresh: &mut bool,
    ) -> Result<Target, Error> {
        let Some(replicas) = &self.replicas else {
            return Ok(Target::Here(None));
        };
        let (want, strategy) = (placement_request(req), self.settings.placement);
        let mut reads = 0;
        loop {
            let here = self.settings.broker_id.as_str();
            let placed = match replicas.view.place(&want, strategy, skip, here) {
                Some(p) => p,
                None if reads < MAX_READS => {
                    self.read_view(true).await?;
                    (reads, *fresh) = (reads + 1, true);
                    continue;
                }
                // Kept views keep going stale (the store is slow): place on a read of its own.
                None => {
                    let mut seen = self.read_view(true).await?;
                    view::place_on(&mut seen, &want, strategy, skip, here)
                }
            };
            match placed {
                Ok(p) if p.owner == self.settings.broker_id => {
                    return Ok(Target::Here(Some(p.host)))
                }
                Ok(p) => return Ok(Target::There(p)),
                Err(_) if !*fresh => {
                    self.read_view(false).await?;
                    (reads, *fresh) = (reads + 1, true);
                }
                Err(e) => {
                    let any = replicas
                        .view
                        .read(|v| v.iter().any(|s| s.view.status != HostStatus::Offline))
                        .unwrap_or(false);
                    return Err(self.placement_failed(e, req, any).await);
                }
            }
        }
    }

    /// Why placement found no host, in the caller's terms. A game no connected host offers
    /// is unknown (404) only while some host is connected and none has ever offered it: a
    /// game whose hosts are all away, or any game while no host is there at all (a broker
    /// just started), may be playable shortly (503 with `Retry-After`).
    pub(super) async fn placement_failed(
        &self,
        e: PlacementError,
        req: &StartSession,
        any_connected: bool,
    ) -> Error {
        if e != PlacementError::UnknownGame {
            return placement_error(e, req);
        }
        let unavailable = placement_error(PlacementError::NoCapacity, req);
        if !any_connected {
            return unavailable;
        }
        match self.store.is_known_game(&req.game_id).await {
            Ok(true) => unavailable,
            Ok(false) => placement_error(e, req),
            Err(e) => e.into(),
        }
    }
}

/// A start as placement sees it: its game and mode, the labels a host must have and those
/// it had better have.
pub(in crate::service) fn placement_request(req: &StartSession) -> Request<'_> {
    Request::new(&req.game_id, req.mode.as_deref()).with_labels(&req.labels, &req.prefer)
}

/// Why placement found no host, in the caller's terms.
pub(in crate::service) fn placement_error(e: PlacementError, req: &StartSession) -> Error {
    match e {
        PlacementError::UnknownGame => Error::UnknownGame(req.game_id.clone()),
        PlacementError::UnknownMode(offered) => Error::UnknownMode {
            game: req.game_id.clone(),
            mode: req.mode.clone().unwrap_or_default(),
            offered,
        },
        PlacementError::NoCapacity => Error::NoCapacity {
            game: req.game_id.clone(),
            retry_after_secs: NO_CAPACITY_RETRY_SECS,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::GameId;

    #[test]
    fn placement_errors_say_what_the_caller_can_do() {
        let mut req = StartSession::new(GameId::new("pong").unwrap());
        req.mode = Some("hard".into());
        let e = placement_error(
            PlacementError::UnknownMode(vec!["classic".into(), "turbo".into()]),
            &req,
        );
        assert!(e.to_string().contains("classic, turbo"), "{e}");
        assert!(matches!(
            placement_error(PlacementError::NoCapacity, &req),
            Error::NoCapacity {
                retry_after_secs: NO_CAPACITY_RETRY_SECS,
                ..
            }
        ));
    }
}
