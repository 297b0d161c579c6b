//! Bringing a database to this broker's schema at start: the migrations ([`MIGRATIONS`]) not
//! yet applied, in order, then every stored procedure ([`super::procs`]) not yet created, all
//! under one named lock, so brokers starting at once do not race.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use time::OffsetDateTime;

use super::migrations::MIGRATIONS;
use super::procs;
use super::rows::{unavailable, utc};
use crate::store::StoreError;

/// Creates or migrates the schema, and creates the procedures this broker calls.
pub(super) async fn migrate(conn: &mut Conn) -> Result<(), StoreError> {
    let locked: Option<i64> = conn
        .query_first("SELECT GET_LOCK('arcade_schema', 60)")
        .await
        .map_err(unavailable)?;
    if locked != Some(1) {
        return Err(StoreError::Unavailable(
            "could not take the schema lock within 60 s".into(),
        ));
    }
    let result = async {
        apply_migrations(conn).await?;
        create_procedures(conn).await
    }
    .await;
    let _ = conn.query_drop("DO RELEASE_LOCK('arcade_schema')").await;
    result.map_err(unavailable)
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
