//! Bringing a database to this broker's schema at start: the migrations ([`MIGRATIONS`]) not
//! yet applied, in order, then every stored procedure ([`super::procs`]) not yet created, all
//! under one lock, so brokers starting at once do not race.
//!
//! The lock is a row (`schema_lock`), not `GET_LOCK`: a named lock is held by one server only,
//! so on a Galera cluster two brokers on two nodes would both hold it. Taking the row is one
//! `UPDATE` that succeeds only while nobody holds it (or the holder's time ran out: a broker
//! killed while migrating); two nodes taking it at once both write the row, and Galera lets
//! only one of those writes commit. A broker that waits reads the row on its own node: it sees
//! the lock free only once its node has applied the release, so also every migration made
//! before it.

use mysql_async::prelude::Queryable;
use std::time::{Duration, Instant};

use mysql_async::Conn;
use time::OffsetDateTime;

use super::migrations::MIGRATIONS;
use super::procs;
use super::rows::{unavailable, utc};
use crate::store::StoreError;

/// How long a broker waits for another to finish migrating.
const LOCK_WAIT: Duration = Duration::from_secs(60);
/// How long the lock is held at most: a holder that died is passed over after it.
const LOCK_HOLD_S: u32 = 120;

/// Creates or migrates the schema, and creates the procedures this broker calls.
pub(super) async fn migrate(conn: &mut Conn) -> Result<(), StoreError> {
    let holder = format!("{:032x}", rand::random::<u128>());
    lock(conn, &holder).await?;
    let result = async {
        apply_migrations(conn).await?;
        create_procedures(conn).await
    }
    .await;
    let _ = conn
        .exec_drop(
            "UPDATE schema_lock SET holder = NULL WHERE id = 1 AND holder = ?",
            (&holder,),
        )
        .await;
    result.map_err(unavailable)
}

/// Takes the schema lock for `holder`, waiting up to [`LOCK_WAIT`] for another holder.
async fn lock(conn: &mut Conn, holder: &str) -> Result<(), StoreError> {
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS schema_lock (
            id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
            holder CHAR(32) NULL,
            until DATETIME(6) NULL
        ) ENGINE=InnoDB",
    )
    .await
    .map_err(unavailable)?;
    // Made by two nodes at once, one of the two inserts loses: the row is there either way.
    match conn
        .query_drop("INSERT IGNORE INTO schema_lock (id) VALUES (1)")
        .await
        .map_err(unavailable)
    {
        Ok(()) | Err(StoreError::Conflict(_)) => {}
        Err(e) => return Err(e),
    }
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let taken = conn
            .exec_drop(
                "UPDATE schema_lock SET holder = ?, \
                 until = UTC_TIMESTAMP(6) + INTERVAL ? SECOND \
                 WHERE id = 1 AND (holder IS NULL OR until < UTC_TIMESTAMP(6))",
                (holder, LOCK_HOLD_S),
            )
            .await;
        match taken.map_err(unavailable) {
            Ok(()) if conn.affected_rows() == 1 => return Ok(()),
            // Held by another, or taken by another node in the same moment.
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Err(StoreError::Unavailable(format!(
                "could not take the schema lock within {LOCK_WAIT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn apply_migrations(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INT UNSIGNED NOT NULL PRIMARY KEY,
            name VARCHAR(255) NOT NULL,
            applied_at DATETIME(6) NOT NULL
        ) ENGINE=InnoDB",
    )
    .await?;
    let applied: Vec<u32> = conn.query("SELECT version FROM schema_migrations").await?;
    for (version, name, statements) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tracing::info!(version, name, "applying schema migration");
        for sql in *statements {
            conn.query_drop(*sql).await?;
        }
        conn.exec_drop(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (version, name, utc(OffsetDateTime::now_utc())),
        )
        .await?;
    }
    Ok(())
}

/// Creates each procedure whose name (its text's hash) the database does not have yet. One
/// that exists is the same text: it is left as it is, so a procedure is never missing while
/// other brokers run.
async fn create_procedures(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    let existing: Vec<String> = conn
        .query(
            "SELECT ROUTINE_NAME FROM information_schema.ROUTINES \
             WHERE ROUTINE_SCHEMA = DATABASE() AND ROUTINE_TYPE = 'PROCEDURE'",
        )
        .await?;
    for p in procs::all() {
        if existing.contains(&p.name) {
            continue;
        }
        tracing::info!(procedure = %p.name, "creating a stored procedure");
        conn.query_drop(p.create.as_str()).await?;
    }
    Ok(())
}
