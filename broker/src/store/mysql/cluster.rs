//! What replicas share through MySQL beyond the sessions: who owns each host and at which
//! epoch, slots claimed against a host's capacity, which replicas are alive, and leases for
//! the duties one replica does at a time.
//!
//! Every time here is the database's clock (`UTC_TIMESTAMP(6)`): the one clock all replicas
//! read, so a replica's skew never makes another look dead or a lease look free.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Params, Row, TxOpts};
use protocol::api::Session;
use protocol::wire::HostFacts;
use protocol::HostId;
use time::PrimitiveDateTime;

use super::rows::{parse, take, unavailable, utc, LIVE_STATUSES};
use super::MysqlStore;
use crate::session::Actor;
use crate::store::{
    BrokerRecord, Claimed, Fence, HostLoad, HostRecord, IdempotencyKey, Lease, SharedHost,
    StoreError, IDEMPOTENCY_TTL,
};

/// Hosts' loads written per statement, at most.
const LOAD_BATCH: usize = 500;

/// MySQL's error for a duplicate key.
const DUPLICATE_KEY: u16 = 1062;

/// Microseconds, as MySQL's `INTERVAL ? MICROSECOND` takes them.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl MysqlStore {
    /// Records that `broker` now holds `host`'s agent (with the facts of its handshake), not
    /// ready until its games are reconciled, and answers the new epoch: one more than any
    /// before, so every write of an older connection's owner is fenced off from now on.
    /// Tried until the store answers ([`MysqlStore::settled`]): a try that landed unanswered
    /// left an epoch of this same owner, which the answered one passes.
    pub async fn own_host(
        &self,
        host: &HostId,
        broker: &str,
        facts: &HostFacts,
    ) -> Result<u64, StoreError> {
        let json = serde_json::to_string(facts).map_err(|e| StoreError::Backend(e.to_string()))?;
        let games: Vec<String> = facts.games.iter().map(|g| g.game_id.to_string()).collect();
        let (json, games) = (&json, &games);
        self.settled(|_| async move {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let mut tx = conn
                .start_transaction(TxOpts::default())
                .await
                .map_err(unavailable)?;
            tx.exec_drop(
                "INSERT INTO hosts (host_id, drained, facts, last_seen, owner, epoch, ready, max_sessions) \
                 VALUES (?, FALSE, ?, UTC_TIMESTAMP(6), ?, 1, FALSE, ?) \
                 ON DUPLICATE KEY UPDATE facts = VALUES(facts), last_seen = VALUES(last_seen), \
                 owner = VALUES(owner), epoch = epoch + 1, ready = FALSE, \
                 max_sessions = VALUES(max_sessions)",
                (host.as_str(), json, broker, facts.max_sessions),
            )
            .await
            .map_err(unavailable)?;
            let epoch: Option<u64> = tx
                .exec_first("SELECT epoch FROM hosts WHERE host_id = ?", (host.as_str(),))
                .await
                .map_err(unavailable)?;
            // As a broker alone does in `save_host`.
            Self::remember_games(&mut tx, games, time::OffsetDateTime::now_utc()).await?;
            tx.commit().await.map_err(unavailable)?;
            epoch.ok_or_else(|| StoreError::Backend("a host vanished as it was owned".into()))
        })
        .await
        })
        .await
    }

    /// Records a held host's new facts (its offers changed), if `fence` is still its owner's.
    pub async fn update_facts(&self, fence: &Fence, facts: &HostFacts) -> Result<bool, StoreError> {
        let games: Vec<String> = facts.games.iter().map(|g| g.game_id.to_string()).collect();
        let json = serde_json::to_string(facts).map_err(|e| StoreError::Backend(e.to_string()))?;
        let (json, games) = (&json, &games);
        // Idempotent: tried until the store answers.
        self.settled(|_| async move {
            self.bounded(move || async move {
                let mut conn = self.conn().await?;
                conn.exec_drop(
                    "UPDATE hosts SET facts = ? WHERE host_id = ? AND epoch = ?",
                    (json, fence.host.as_str(), fence.epoch),
                )
                .await
                .map_err(unavailable)?;
                let owned = conn.affected_rows() == 1;
                Self::remember_games(&mut conn, games, time::OffsetDateTime::now_utc()).await?;
                Ok(owned)
            })
            .await
        })
        .await
    }

    /// The hosts drained now.
    pub async fn drained_hosts(&self) -> Result<Vec<HostId>, StoreError> {
        self.bounded(move || async move {
            let ids: Vec<String> = self
                .conn()
                .await?
                .query("SELECT host_id FROM hosts WHERE drained")
                .await
                .map_err(unavailable)?;
            ids.iter().map(|h| parse("host id", h)).collect()
        })
        .await
    }

    /// Marks a host ready (its games reconciled), if `fence` is still its owner's.
    pub async fn host_ready(&self, fence: &Fence) -> Result<bool, StoreError> {
        // Idempotent: tried until the store answers.
        self.settled(|_| self.host_ready_once(fence)).await
    }

    async fn host_ready_once(&self, fence: &Fence) -> Result<bool, StoreError> {
        self.fenced_update(
            "UPDATE hosts SET ready = TRUE, last_seen = UTC_TIMESTAMP(6) WHERE host_id = ? AND epoch = ?",
            fence,
        )
        .await
    }

    /// Records that the connection of `fence` is gone, unless a newer one owns the host: it
    /// has no owner from now, and was last seen now.
    pub async fn disown_host(&self, fence: &Fence) -> Result<bool, StoreError> {
        self.fenced_update(
            "UPDATE hosts SET owner = NULL, ready = FALSE, last_seen = UTC_TIMESTAMP(6) \
             WHERE host_id = ? AND epoch = ?",
            fence,
        )
        .await
    }

    async fn fenced_update(&self, sql: &str, fence: &Fence) -> Result<bool, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            conn.exec_drop(sql, (fence.host.as_str(), fence.epoch))
                .await
                .map_err(unavailable)?;
            Ok(conn.affected_rows() == 1)
        })
        .await
    }

    /// The replica that holds `host`'s agent, if any.
    pub async fn owner(&self, host: &HostId) -> Result<Option<String>, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let owner: Option<Option<String>> = conn
                .exec_first(
                    "SELECT owner FROM hosts WHERE host_id = ?",
                    (host.as_str(),),
                )
                .await
                .map_err(unavailable)?;
            Ok(owner.flatten())
        })
        .await
    }

    /// Every host, with its owner (only while that replica is alive: seen within `alive`) and
    /// its live sessions.
    pub async fn shared_hosts(&self, alive: Duration) -> Result<Vec<SharedHost>, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let rows: Vec<Row> = conn
                .exec(
                    format!(
                        "SELECT h.host_id, h.drained, h.facts, h.last_seen, b.broker_id, h.epoch, h.ready, \
                         h.cpu_percent, h.mem_used_bytes, s.n, s.slots, s.gpus \
                         FROM hosts h LEFT JOIN brokers b ON b.broker_id = h.owner \
                         AND b.last_seen >= UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND \
                         LEFT JOIN (SELECT host_id, COUNT(*) AS n, \
                           CAST(SUM(slots) AS UNSIGNED) AS slots, \
                           CAST(SUM(gpu_count) AS UNSIGNED) AS gpus FROM sessions WHERE status IN {LIVE_STATUSES} \
                           GROUP BY host_id) s ON s.host_id = h.host_id \
                         ORDER BY h.host_id"
                    ),
                    (micros(alive),),
                )
                .await
                .map_err(unavailable)?;
            rows.into_iter()
                .map(|mut r| {
                    let id: String = take(&mut r, 0)?;
                    let facts: Option<String> = take(&mut r, 2)?;
                    let last_seen: PrimitiveDateTime = take(&mut r, 3)?;
                    Ok(SharedHost {
                        record: HostRecord {
                            host_id: parse("host id", &id)?,
                            drained: take(&mut r, 1)?,
                            facts: facts.and_then(|f| serde_json::from_str(&f).ok()),
                            last_seen: last_seen.assume_utc(),
                        },
                        owner: take(&mut r, 4)?,
                        epoch: take(&mut r, 5)?,
                        ready: take(&mut r, 6)?,
                        load: (take(&mut r, 7)?, take(&mut r, 8)?),
                        sessions: take::<Option<u32>>(&mut r, 9)?.unwrap_or(0),
                        slots_used: take::<Option<u32>>(&mut r, 10)?.unwrap_or(0),
                        gpus_used: take::<Option<u32>>(&mut r, 11)?.unwrap_or(0),
                    })
                })
                .collect()
        })
        .await
    }

    /// Claims a slot on the session's host and records the session `starting` in it, bound
    /// to `key` when given, within its user's quota `user_max`, and only while the host's
    /// owner is at `epoch` when given (see `arcade_claim_session`).
    pub async fn claim(
        &self,
        s: &Session,
        key: Option<&IdempotencyKey>,
        actor: Actor,
        user_max: Option<u32>,
        epoch: Option<u64>,
    ) -> Result<Claimed, StoreError> {
        let mut params: Vec<mysql_async::Value> = vec![
            s.session_id.as_str().into(),
            s.game_id.as_str().into(),
            s.mode.as_str().into(),
            s.config.as_deref().into(),
            s.status.as_str().into(),
            s.host_id.as_str().into(),
            utc(s.created_at).into(),
            actor.as_str().into(),
            key.map(|k| k.key.as_str()).into(),
            key.map(|k| k.request.as_str()).into(),
            utc(s.created_at - IDEMPOTENCY_TTL).into(),
            serde_json::to_string(s)
                .map_err(|e| StoreError::Backend(e.to_string()))?
                .into(),
            s.pool_id.as_ref().map(|p| p.as_str()).into(),
            super::rows::settings_value(s),
            s.user_id.clone().into(),
            user_max.into(),
            s.max_duration_s.into(),
            s.build.as_ref().map(|b| b.as_str()).into(),
        ];
        params.extend(super::rows::placement_values(s));
        params.push(epoch.into());
        let params = &params;
        let claimed = self
            .settled(|again| async move {
                let claimed = self.claim_once(s, key, params.clone()).await;
                match claimed {
                    // An unanswered try of this very claim may have landed: the session
                    // exists then (its id is this start's alone).
                    Ok(Claimed::KeyTaken) | Err(StoreError::Duplicate(_)) if again => {
                        match self.get(&s.session_id).await {
                            Ok(_) => Ok(Claimed::New {
                                epoch: epoch.unwrap_or_default(),
                            }),
                            Err(StoreError::NotFound(_)) => claimed,
                            Err(e) => Err(e),
                        }
                    }
                    other => other,
                }
            })
            .await?;
        if matches!(claimed, Claimed::New { .. }) {
            self.remember(s);
        }
        Ok(claimed)
    }

    /// One try of [`Self::claim`].
    async fn claim_once(
        &self,
        s: &Session,
        key: Option<&IdempotencyKey>,
        params: Vec<mysql_async::Value>,
    ) -> Result<Claimed, StoreError> {
        let params = &params;
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let answer: Result<Option<(String, u64)>, _> = conn
                .exec_first(
                    super::procs::CALL.claim_session.as_str(),
                    Params::Positional(params.clone()),
                )
                .await;
            match answer {
                Ok(Some((what, epoch))) => match what.as_str() {
                    "new" => Ok(Claimed::New { epoch }),
                    "full" => Ok(Claimed::Full),
                    "gone" => Ok(Claimed::Gone),
                    "quota" => Ok(Claimed::Quota),
                    other => Err(StoreError::Backend(format!(
                        "arcade_claim_session answered {other:?}"
                    ))),
                },
                Ok(None) => Err(StoreError::Backend(
                    "arcade_claim_session answered no row".into(),
                )),
                Err(mysql_async::Error::Server(e)) if e.code == DUPLICATE_KEY => {
                    if key.is_some() {
                        Ok(Claimed::KeyTaken)
                    } else {
                        Err(StoreError::Duplicate(s.session_id.clone()))
                    }
                }
                Err(e) => Err(unavailable(e)),
            }
        })
        .await
    }

    /// Writes the load of the hosts held here, each only while its epoch is the one given, in
    /// batches of [`LOAD_BATCH`] rows per statement; each such host was seen now (its owner
    /// holds its agent), which is what the lost-host judgement reads.
    pub async fn write_loads(&self, loads: &[HostLoad]) -> Result<(), StoreError> {
        for batch in loads.chunks(LOAD_BATCH) {
            let sql = format!(
                "UPDATE hosts h JOIN (SELECT ? AS host_id, ? AS epoch, ? AS cpu, ? AS mem \
                 {}) l ON l.host_id = h.host_id AND l.epoch = h.epoch \
                 SET h.cpu_percent = l.cpu, h.mem_used_bytes = l.mem, \
                 h.last_seen = UTC_TIMESTAMP(6)",
                " UNION ALL SELECT ?, ?, ?, ?".repeat(batch.len() - 1)
            );
            let params: Vec<mysql_async::Value> = batch
                .iter()
                .flat_map(|l| {
                    [
                        l.fence.host.as_str().into(),
                        l.fence.epoch.into(),
                        l.cpu_percent.into(),
                        l.mem_used_bytes.into(),
                    ]
                })
                .collect();
            let (sql, params) = (sql.as_str(), &params);
            self.bounded(move || async move {
                let mut conn = self.conn().await?;
                conn.exec_drop(sql, Params::Positional(params.clone()))
                    .await
                    .map_err(unavailable)
            })
            .await?;
        }
        Ok(())
    }

    /// Says this replica is alive, and where its agents connect.
    pub async fn beat(&self, broker: &str, address: &str) -> Result<(), StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            conn.exec_drop(
                "INSERT INTO brokers (broker_id, address, last_seen) VALUES (?, ?, UTC_TIMESTAMP(6)) \
                 ON DUPLICATE KEY UPDATE address = VALUES(address), last_seen = VALUES(last_seen)",
                (broker, address),
            )
            .await
            .map_err(unavailable)
        })
        .await
    }

    /// Forgets a replica that stops.
    pub async fn leave(&self, broker: &str) -> Result<(), StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            // Its hosts were seen until now: they count as offline from here, and are lost
            // only if no replica takes them over within the heartbeat timeout.
            conn.exec_drop(
                "UPDATE hosts SET last_seen = UTC_TIMESTAMP(6) WHERE owner = ?",
                (broker,),
            )
            .await
            .map_err(unavailable)?;
            conn.exec_drop("DELETE FROM brokers WHERE broker_id = ?", (broker,))
                .await
                .map_err(unavailable)?;
            conn.exec_drop("DELETE FROM leases WHERE holder = ?", (broker,))
                .await
                .map_err(unavailable)
        })
        .await
    }

    /// Replicas seen within `within`, by id, with how many hosts each holds.
    pub async fn brokers(&self, within: Duration) -> Result<Vec<BrokerRecord>, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let rows: Vec<(String, String, PrimitiveDateTime, u32)> = conn
                .exec(
                    "SELECT b.broker_id, b.address, b.last_seen, \
                     (SELECT COUNT(*) FROM hosts h WHERE h.owner = b.broker_id) \
                     FROM brokers b WHERE b.last_seen >= UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND \
                     ORDER BY b.broker_id",
                    (micros(within),),
                )
                .await
                .map_err(unavailable)?;
            Ok(rows
                .into_iter()
                .map(|(broker_id, address, last_seen, hosts)| BrokerRecord {
                    broker_id,
                    address,
                    last_seen: last_seen.assume_utc(),
                    hosts,
                })
                .collect())
        })
        .await
    }

    /// Takes or renews the lease `name` for `holder` for `ttl`: the hold while `holder` has
    /// it. Another replica gets it only once it has expired, at the next epoch (read back in
    /// the same statement with `LAST_INSERT_ID(expr)`).
    pub async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            // `epoch` is set before `holder` (assignments apply left to right): it compares
            // the holder found.
            conn.exec_drop(
                "UPDATE leases SET epoch = LAST_INSERT_ID(IF(holder = ?, epoch, epoch + 1)), \
                 holder = ?, expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND \
                 WHERE name = ? AND (holder = ? OR expires_at < UTC_TIMESTAMP(6))",
                (holder, holder, micros(ttl), name, holder),
            )
            .await
            .map_err(unavailable)?;
            let held = |epoch| Lease {
                name: name.to_owned(),
                holder: holder.to_owned(),
                epoch,
            };
            if conn.affected_rows() == 1 {
                return Ok(Some(held(conn.last_insert_id().unwrap_or(0))));
            }
            conn.exec_drop(
                "INSERT IGNORE INTO leases (name, holder, expires_at, epoch) \
                 VALUES (?, ?, UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND, 1)",
                (name, holder, micros(ttl)),
            )
            .await
            .map_err(unavailable)?;
            Ok((conn.affected_rows() == 1).then(|| held(1)))
        })
        .await
    }

    /// Hosts with live sessions whose agent is connected to no live replica and was last seen
    /// longer than `timeout` ago, each with its epoch as found (the fence for losing them: a
    /// host whose agent connects meanwhile is not lost).
    pub async fn lost_hosts(&self, timeout: Duration) -> Result<Vec<Fence>, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let rows: Vec<(String, u64)> = conn
                .exec(
                    format!(
                        "SELECT h.host_id, h.epoch FROM hosts h \
                         LEFT JOIN brokers b ON b.broker_id = h.owner \
                         AND b.last_seen >= UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND \
                         WHERE b.broker_id IS NULL \
                         AND h.last_seen < UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND \
                         AND EXISTS (SELECT 1 FROM sessions s WHERE s.host_id = h.host_id \
                           AND s.status IN {LIVE_STATUSES})"
                    ),
                    (micros(timeout), micros(timeout)),
                )
                .await
                .map_err(unavailable)?;
            rows.into_iter()
                .map(|(host, epoch)| {
                    Ok(Fence {
                        host: parse("host id", &host)?,
                        epoch,
                    })
                })
                .collect()
        })
        .await
    }
}
