//! What replicas share beyond sessions, as part of the one store face: hosts' owners and
//! epochs, claims of slots, the replicas' heartbeats, leases. Only a shared store (MySQL)
//! answers them; the memory store belongs to one broker and refuses
//! ([`StoreError::NotShared`]), which configuration rules out (replicas need a database).

use std::time::Duration;

use protocol::wire::HostFacts;
use protocol::HostId;
use time::OffsetDateTime;

use super::{HostRecord, IdempotencyKey, Store, StoreError};
use crate::session::Actor;
use protocol::api::Session;

/// A host's owner as of one of its connections: writes about the host made because of what
/// that connection said apply only while `epoch` is still the host's (no newer connection,
/// through any replica, has claimed it since).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The host.
    pub host: HostId,
    /// The epoch of the owner's connection.
    pub epoch: u64,
}

/// A replica's hold on a lease (a duty only one replica does at a time) as of one renewal:
/// writes made for that duty apply only while `holder` still holds `name`, unexpired, at
/// `epoch` (one more at each new holder), so a holder that stalled past its lease changes
/// nothing once the store answers it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The duty.
    pub name: String,
    /// The replica holding it.
    pub holder: String,
    /// The lease's epoch at this holder.
    pub epoch: u64,
}

/// The answer to claiming a slot on a host for a new session (replicas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The session is recorded `starting` in the slot; the host's owner is at this epoch.
    New {
        /// The host's epoch at the claim.
        epoch: u64,
    },
    /// The host has no free slot.
    Full,
    /// The host has no owner, is not ready, or is drained.
    Gone,
    /// The `Idempotency-Key` is taken (by a concurrent start): nothing was written.
    KeyTaken,
    /// The session's user holds its quota of sessions: nothing was written.
    Quota,
}

/// A host as the replicas share it: its record, its owner and that owner's epoch, and its
/// live sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedHost {
    /// What is recorded of it.
    pub record: HostRecord,
    /// The replica its agent is connected to, if any, while that replica is alive.
    pub owner: Option<String>,
    /// Grows at every connection of its agent.
    pub epoch: u64,
    /// Its owner has squared its games with the records: it takes sessions.
    pub ready: bool,
    /// Its sessions not yet over.
    pub sessions: u32,
    /// The slots they take of its `max_sessions`.
    pub slots_used: u32,
    /// The GPUs they hold.
    pub gpus_used: u32,
    /// CPU use, 0 to 100, and memory in use, as its owner last wrote them.
    pub load: (f32, u64),
}

/// A held host's load, for the others to see: written by its owner, fenced by its epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct HostLoad {
    /// The host, at its owner's epoch.
    pub fence: Fence,
    /// CPU use, 0 to 100.
    pub cpu_percent: f32,
    /// Memory in use.
    pub mem_used_bytes: u64,
}

/// A replica, as it last said it was alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRecord {
    /// Its `--broker-id`.
    pub broker_id: String,
    /// Where its agents connect.
    pub address: String,
    /// When it last said so (the database's clock).
    pub last_seen: OffsetDateTime,
    /// Hosts whose agents are connected to it.
    pub hosts: u32,
}

impl Store {
    fn shared(&self) -> Result<&super::mysql::MysqlStore, StoreError> {
        match self {
            Self::Mysql(m) => Ok(m),
            Self::Memory(_) => Err(StoreError::NotShared),
        }
    }

    /// Records that `broker` now holds `host`'s agent, not ready until its games are
    /// reconciled, and answers the new epoch (every older connection's writes are fenced off).
    pub async fn own_host(
        &self,
        host: &HostId,
        broker: &str,
        facts: &HostFacts,
    ) -> Result<u64, StoreError> {
        self.shared()?.own_host(host, broker, facts).await
    }

    /// Records a held host's new facts, if `fence` is still its owner's.
    pub async fn update_facts(&self, fence: &Fence, facts: &HostFacts) -> Result<bool, StoreError> {
        self.shared()?.update_facts(fence, facts).await
    }

    /// Lets a held host take sessions, while `fence` holds; `false` when it does not.
    pub async fn host_ready(&self, fence: &Fence) -> Result<bool, StoreError> {
        self.shared()?.host_ready(fence).await
    }

    /// Gives a host up (its agent left this connection), while `fence` holds.
    pub async fn disown_host(&self, fence: &Fence) -> Result<bool, StoreError> {
        self.shared()?.disown_host(fence).await
    }

    /// The replica holding `host`'s agent, if a live one does.
    pub async fn owner(&self, host: &HostId) -> Result<Option<String>, StoreError> {
        self.shared()?.owner(host).await
    }

    /// Every host as the replicas share it; owners count only if they beat within `alive`.
    pub async fn shared_hosts(&self, alive: Duration) -> Result<Vec<SharedHost>, StoreError> {
        self.shared()?.shared_hosts(alive).await
    }

    /// Records `s` `starting` in a slot of its host, bound to `key`, within its user's quota
    /// `user_max`, while the host's owner is at `epoch` when given.
    pub async fn claim(
        &self,
        s: &Session,
        key: Option<&IdempotencyKey>,
        actor: Actor,
        user_max: Option<u32>,
        epoch: Option<u64>,
    ) -> Result<Claimed, StoreError> {
        self.shared()?.claim(s, key, actor, user_max, epoch).await
    }

    /// Writes the load of hosts held here, each while its fence holds, and that they were
    /// seen now.
    pub async fn write_loads(&self, loads: &[HostLoad]) -> Result<(), StoreError> {
        self.shared()?.write_loads(loads).await
    }

    /// Says replica `broker` (whose agents connect at `address`) is alive.
    pub async fn beat(&self, broker: &str, address: &str) -> Result<(), StoreError> {
        self.shared()?.beat(broker, address).await
    }

    /// Replica `broker` leaves: its hosts count as offline at once, seen until now (lost only
    /// if nobody takes them over within the heartbeat timeout).
    pub async fn leave(&self, broker: &str) -> Result<(), StoreError> {
        self.shared()?.leave(broker).await
    }

    /// The replicas that beat within `within`.
    pub async fn brokers(&self, within: Duration) -> Result<Vec<BrokerRecord>, StoreError> {
        self.shared()?.brokers(within).await
    }

    /// Takes or renews lease `name` for `holder` for `ttl`: the hold, or `None` while another
    /// holds it.
    pub async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        self.shared()?.lease(name, holder, ttl).await
    }

    /// The hosts drained now, whichever replica drained them.
    pub async fn drained_hosts(&self) -> Result<Vec<HostId>, StoreError> {
        self.shared()?.drained_hosts().await
    }

    /// Hosts whose owner is gone (or none) for longer than `timeout` and that still have
    /// live sessions, each at its epoch.
    pub async fn lost_hosts(&self, timeout: Duration) -> Result<Vec<Fence>, StoreError> {
        self.shared()?.lost_hosts(timeout).await
    }
}
