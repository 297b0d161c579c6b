//! Central games to agents (API.md, "Builds and central games"): every replica tells the
//! agents connected to it which central games exist and which builds each host is to hold,
//! and records what hosts then offer.
//!
//! One loop per broker reads the central games from the store (every [`CENTRAL_POLL`], or at
//! once when a game is written here or a host registers), works out each connected host's
//! messages, and sends them to a host only when they differ from what that connection was
//! last told. Reading the store, not listening to another replica, is what makes a change
//! through any replica reach every agent, also after a NATS outage or a replica's death.
//! Agents answer with their offers (`AgentMessage::Offers`): a game is placed on a host only
//! once its build is ready there.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::Duration;

use protocol::api::BuildKind;
use protocol::wire::{BrokerMessage, CentralGame, CentralGames, GameBuild, HostFacts};
use protocol::{BuildId, HostId};
use tokio_util::sync::CancellationToken;

use super::{rollout, Service};
use crate::agents::registry::ConnId;
use crate::store::games::GameRecord;
use crate::store::Fence;

/// How often each broker reads the central games, at most this long after a change through
/// another replica.
pub const CENTRAL_POLL: Duration = Duration::from_millis(500);

/// What a connection was last told: its id and a digest of the messages.
type Told = HashMap<HostId, (ConnId, u64)>;

/// The digest of a connection told nothing.
const NOTHING: u64 = 0;

impl Service {
    /// Tells every agent connected here of the central games, until `shutdown` fires.
    pub async fn run_central(self: Arc<Self>, shutdown: CancellationToken) {
        let mut told = Told::new();
        let mut kinds: HashMap<BuildId, (BuildKind, u64)> = HashMap::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.central_wake.notified() => {}
                () = tokio::time::sleep(CENTRAL_POLL) => {}
            }
            let links = self.registry.links();
            told.retain(|h, (c, _)| links.iter().any(|l| l.host == *h && l.conn == *c));
            if links.is_empty() {
                continue;
            }
            let games = match self.store.games().await {
                Ok(g) => g,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the central games; agents are told later");
                    continue;
                }
            };
            let needs: Vec<_> = games.iter().map(GameRecord::needs).collect();
            let mut builds = Vec::new();
            for g in &games {
                // Not told this round when the store cannot say: its agents keep what they had.
                if let Some(b) = self.game_builds(g, &mut kinds).await {
                    builds.push((g, b));
                }
            }
            for l in links {
                // Without central games, an agent holding none is told nothing: a fleet that
                // uses none sees no message.
                let told_some = told
                    .get(&l.host)
                    .is_some_and(|(c, d)| *c == l.conn && *d != NOTHING);
                if games.is_empty() && !l.holds_builds && !told_some {
                    told.insert(l.host, (l.conn, NOTHING));
                    continue;
                }
                // A host is told only of the games it can run: its labels, its GPUs.
                let fitting: Vec<GameRecord> = games
                    .iter()
                    .zip(&needs)
                    .filter(|(_, (labels, gpus))| {
                        protocol::labels::fits(&l.labels, labels) && *gpus <= l.gpus
                    })
                    .map(|(g, _)| g.clone())
                    .collect();
                let builds: Vec<_> = builds
                    .iter()
                    .filter(|(g, _)| fitting.iter().any(|f| f.game_id == g.game_id))
                    .cloned()
                    .collect();
                let messages = self.messages_for(&l.host, &fitting, &builds);
                let digest = digest(&messages);
                if told.get(&l.host) == Some(&(l.conn, digest)) {
                    continue;
                }
                if l.link.send_central(messages) {
                    told.insert(l.host, (l.conn, digest));
                }
            }
        }
    }

    /// What `host` is told: the set of central games, then each game's builds for it.
    fn messages_for(
        &self,
        host: &HostId,
        games: &[GameRecord],
        builds: &[(&GameRecord, Vec<GameBuild>)],
    ) -> Vec<BrokerMessage> {
        let mut messages = vec![BrokerMessage::CentralGames(CentralGames {
            builds_url: self.settings.public_url.clone(),
            games: games.iter().map(|g| g.game_id.clone()).collect(),
        })];
        for (g, all) in builds {
            let wanted = rollout::builds_for(g, host);
            let builds: Vec<GameBuild> = wanted
                .iter()
                .filter_map(|w| all.iter().find(|b| b.build == *w).cloned())
                .collect();
            let msg = BrokerMessage::CentralGame(CentralGame {
                game_id: g.game_id.clone(),
                builds,
            });
            // Entries are bounded so two fit a frame; one stored before the bound is not.
            if let Err(e) = protocol::codec::encode(&msg) {
                tracing::warn!(game = %g.game_id, error = %e, "a central game is too large to send; set it again");
                continue;
            }
            messages.push(msg);
        }
        messages
    }

    /// A game's two builds, each with its kind, size and entry (kinds read once per build:
    /// builds never change); `None` when the store cannot say now.
    async fn game_builds(
        &self,
        g: &GameRecord,
        kinds: &mut HashMap<BuildId, (BuildKind, u64)>,
    ) -> Option<Vec<GameBuild>> {
        let mut builds = Vec::new();
        for b in std::iter::once(&g.build).chain(g.previous_build.as_ref()) {
            let (kind, size) = match kinds.get(b) {
                Some(k) => *k,
                None => match self.store.build(b).await {
                    Ok(Some(r)) => {
                        kinds.insert(b.clone(), (r.kind, r.size));
                        (r.kind, r.size)
                    }
                    // Removed: never offered again.
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, build = %b, "cannot read a build");
                        return None;
                    }
                },
            };
            builds.push(GameBuild {
                build: b.clone(),
                kind,
                size,
                entry: g.entry_of(b).unwrap_or(&g.entry).to_owned(),
            });
        }
        Some(builds)
    }

    /// Central games changed here, or a host registered: agents are told now.
    pub(super) fn central_changed(&self) {
        self.central_wake.notify_one();
    }

    /// A host's offers changed: recorded (among replicas, while this broker holds it).
    pub(super) async fn offers_changed(&self, host: &HostId, facts: &HostFacts) {
        let saved = if self.replicas.is_none() {
            self.store
                .save_host(host, facts, time::OffsetDateTime::now_utc())
                .await
                .map(|()| true)
        } else {
            let Some(epoch) = self.registry.epoch(host) else {
                return;
            };
            let fence = Fence {
                host: host.clone(),
                epoch,
            };
            self.store.update_facts(&fence, facts).await
        };
        match saved {
            Ok(true) => {
                tracing::info!(%host, games = facts.games.len(), "the host's offers changed")
            }
            Ok(false) => {
                tracing::debug!(%host, "the host moved on; its offers are its new owner's")
            }
            Err(e) => tracing::warn!(%host, error = %e, "cannot record the host's offers"),
        }
    }
}

/// A digest of messages, to tell whether a connection was told them already.
fn digest(messages: &[BrokerMessage]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for m in messages {
        match protocol::codec::encode(m) {
            Ok(bytes) => bytes.hash(&mut h),
            Err(_) => 0u8.hash(&mut h),
        }
    }
    h.finish()
}
