//! Builds' records in MySQL: the `builds` table.

use mysql_async::prelude::Queryable;
use protocol::api::BuildKind;
use protocol::BuildId;
use time::PrimitiveDateTime;

use super::rows::{unavailable, utc};
use super::MysqlStore;
use crate::store::builds::{BuildRecord, MAX_BUILDS_LISTED};
use crate::store::StoreError;

fn record(
    (build, size, kind, at): (String, u64, String, PrimitiveDateTime),
) -> Result<BuildRecord, StoreError> {
    let bad = |what: String| StoreError::Backend(format!("a builds row has {what}"));
    Ok(BuildRecord {
        build: BuildId::new(build).map_err(|e| bad(e.to_string()))?,
        size,
        kind: match kind.as_str() {
            "archive" => BuildKind::Archive,
            "file" => BuildKind::File,
            other => return Err(bad(format!("kind {other:?}"))),
        },
        created_at: at.assume_utc(),
    })
}

const COLUMNS: &str = "build, size, kind, created_at";

impl MysqlStore {
    pub(in crate::store) async fn put_build(&self, b: &BuildRecord) -> Result<bool, StoreError> {
        let params = (
            b.build.as_str().to_owned(),
            b.size,
            b.kind.as_str(),
            utc(b.created_at),
        );
        // Idempotent: a retry whose first try landed finds it recorded.
        self.settled(|_| {
            let params = &params;
            async move {
                self.bounded(move || async move {
                    let mut conn = self.conn().await?;
                    conn.exec_drop(
                        "INSERT IGNORE INTO builds (build, size, kind, created_at) \
                         VALUES (?, ?, ?, ?)",
                        params.clone(),
                    )
                    .await
                    .map_err(unavailable)?;
                    Ok(conn.affected_rows() == 1)
                })
                .await
            }
        })
        .await
    }

    pub(in crate::store) async fn build(
        &self,
        id: &BuildId,
    ) -> Result<Option<BuildRecord>, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let row = conn
                .exec_first(
                    format!("SELECT {COLUMNS} FROM builds WHERE build = ?"),
                    (id.as_str(),),
                )
                .await
                .map_err(unavailable)?;
            row.map(record).transpose()
        })
        .await
    }

    pub(in crate::store) async fn builds(&self) -> Result<Vec<BuildRecord>, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            let rows = conn
                .exec(
                    format!("SELECT {COLUMNS} FROM builds ORDER BY created_at DESC, build LIMIT ?"),
                    (MAX_BUILDS_LISTED,),
                )
                .await
                .map_err(unavailable)?;
            rows.into_iter().map(record).collect()
        })
        .await
    }

    pub(in crate::store) async fn delete_build(&self, id: &BuildId) -> Result<bool, StoreError> {
        self.bounded(move || async move {
            let mut conn = self.conn().await?;
            conn.exec_drop("DELETE FROM builds WHERE build = ?", (id.as_str(),))
                .await
                .map_err(unavailable)?;
            Ok(conn.affected_rows() == 1)
        })
        .await
    }
}
