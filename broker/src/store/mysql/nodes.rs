//! The database nodes a broker may use, and moving to the next when the one in use fails.
//!
//! `--database-url` names one server, or several separated by commas
//! (`mysql://arcade:pw@db-1:3306,db-2:3306,db-3:3306/arcade`): the nodes of a MariaDB Galera
//! cluster, every one writable. A broker uses one node at a time, the first to begin with,
//! through a pool of its own; when a call finds that node unreachable, silent or not serving
//! (a Galera node outside the primary component answers 1047), the broker moves to the next,
//! says so in its log, and `/readyz` names the node in use. It never moves back on its own: any
//! node of the cluster is as good as another. Giving each replica the nodes in a different
//! order spreads the replicas over the nodes.
//!
//! On Galera, every connection runs with `wsrep_sync_wait = 7`: a statement (a read, an
//! update or delete, an insert) waits until its node has applied every write the cluster
//! committed before it, so what one replica does through one node sees what another replica
//! just wrote through another (a start answered by one replica, read through another; a
//! session made by its host's replica, given its join token by the replica that answered the
//! start: an `INSERT ... SELECT` that found no session before this). A single server is used
//! as it is.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};

use super::rows::unavailable;
use crate::store::StoreError;

/// How long getting a connection from a node may take when there are others to move to: a
/// pooled connection comes at once and a new one in milliseconds, so a node that takes longer
/// is down or cut off.
const NODE_CONNECT_WAIT: Duration = Duration::from_secs(2);

/// One database server.
#[derive(Debug)]
struct Node {
    /// `host:port`, as named in the URL: what logs and `/readyz` say.
    addr: String,
    pool: Pool,
}

/// The nodes of `--database-url`, and which one is in use.
#[derive(Debug)]
pub(super) struct Nodes {
    nodes: Vec<Node>,
    current: AtomicUsize,
}

/// A URL per server named in `url`: each with the same user, password, database and options.
pub(super) fn split_url(url: &str) -> Result<Vec<(String, String)>, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("not a URL: expected mysql://user:password@host:port/database")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let urls: Vec<(String, String)> = hosts
        .split(',')
        .map(|host| {
            let host = host.trim();
            let url = match userinfo {
                Some(u) => format!("{scheme}://{u}@{host}{path}"),
                None => format!("{scheme}://{host}{path}"),
            };
            (host.to_owned(), url)
        })
        .collect();
    if urls.iter().any(|(h, _)| h.is_empty()) {
        return Err("an empty host between commas".into());
    }
    Ok(urls)
}

/// The pool options of every node. Measured with arcade-bench pairs --mariadb:
/// - an idle TTL: without one, mysql_async keeps only `min` idle connections and closes
///   every other one as it comes back, so concurrent calls each paid a new connection
///   (TCP, authentication, statements prepared again);
/// - no reset on return: the store keeps no session state (an unfinished transaction is
///   rolled back on return anyway), and a reset drops the prepared statements, so every
///   statement cost a prepare round trip, and the reset one more.
fn pool(url: &str, galera: bool) -> Result<Pool, mysql_async::UrlError> {
    let opts = Opts::from_url(url)?;
    let constraints = PoolConstraints::new(1, 16).unwrap_or_default();
    let mut opts = OptsBuilder::from_opts(opts)
        .pool_opts(
            PoolOpts::default()
                .with_constraints(constraints)
                .with_inactive_connection_ttl(Duration::from_secs(60))
                .with_reset_connection(false),
        )
        .stmt_cache_size(64)
        .conn_ttl(Duration::from_secs(300));
    if galera {
        opts = opts.init(vec!["SET SESSION wsrep_sync_wait = 7"]);
    }
    Ok(Pool::new(opts))
}

impl Nodes {
    /// Pools for the servers of `url` (not connected yet); `galera` sets every connection to
    /// read what the cluster committed before it.
    pub(super) fn new(url: &str, galera: bool) -> Result<Self, String> {
        let nodes = split_url(url)?
            .into_iter()
            .map(|(addr, url)| {
                pool(&url, galera)
                    .map(|pool| Node { addr, pool })
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            nodes,
            current: AtomicUsize::new(0),
        })
    }

    /// The node in use now, as `host:port`.
    pub(super) fn current(&self) -> &str {
        &self.nodes[self.index()].addr
    }

    /// Which node is in use now: what [`Nodes::failed`] is told when a call through it fails.
    pub(super) fn index(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.nodes.len()
    }

    /// A connection to the node in use, moving on to the next nodes while one cannot be had.
    pub(super) async fn conn(&self) -> Result<Conn, StoreError> {
        let single = self.nodes.len() == 1;
        let mut last = None;
        for _ in 0..self.nodes.len() {
            let i = self.index();
            let got = if single {
                self.nodes[i].pool.get_conn().await.map_err(unavailable)
            } else {
                match tokio::time::timeout(NODE_CONNECT_WAIT, self.nodes[i].pool.get_conn()).await {
                    Ok(got) => got.map_err(unavailable),
                    Err(_) => Err(StoreError::Unavailable(format!(
                        "no connection within {NODE_CONNECT_WAIT:?}"
                    ))),
                }
            };
            match got {
                Ok(conn) => return Ok(conn),
                Err(e) => {
                    self.failed(i, &e);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| StoreError::Unavailable("no database node".into())))
    }

    /// A call through node `i` failed with `e`: if it is still the node in use and `e` says the
    /// node cannot serve, move to the next one (once, however many calls saw it fail).
    pub(super) fn failed(&self, i: usize, e: &StoreError) {
        if self.nodes.len() == 1 || !matches!(e, StoreError::Unavailable(_)) {
            return;
        }
        let next = (i + 1) % self.nodes.len();
        let moved = self
            .current
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                (c % self.nodes.len() == i).then_some(next)
            })
            .is_ok();
        if moved {
            tracing::warn!(
                from = %self.nodes[i].addr,
                to = %self.nodes[next].addr,
                error = %e,
                "database node failed: moving to the next"
            );
        }
    }

    /// Uses node `i` from now on.
    pub(super) fn start_at(&self, i: usize) {
        self.current.store(i % self.nodes.len(), Ordering::Relaxed);
    }

    /// For the steps at start, each tried on the node in use and then on the next while a
    /// node cannot serve: a step through node `i` found it so (`e`); moves on and answers
    /// whether a node not yet tried is left (`tries` counts the moves).
    pub(super) fn move_on(&self, i: usize, e: &StoreError, tries: &mut usize) -> bool {
        if *tries + 1 >= self.nodes.len() {
            return false;
        }
        self.failed(i, e);
        *tries += 1;
        true
    }

    /// Closes every node's connections.
    pub(super) async fn close(&self) {
        for n in &self.nodes {
            let _ = n.pool.clone().disconnect().await;
        }
    }
}

/// Whether the server on `conn` is a Galera node (`wsrep_on`): MySQL has no such variable.
pub(super) async fn is_galera(conn: &mut Conn) -> Result<bool, StoreError> {
    let row: Option<(String, String)> = conn
        .query_first("SHOW VARIABLES LIKE 'wsrep_on'")
        .await
        .map_err(unavailable)?;
    Ok(row.is_some_and(|(_, v)| v.eq_ignore_ascii_case("ON")))
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn splits_a_url_per_host() {
        assert_eq!(
            split_url("mysql://u:p@a:3306,b:3307 , c/db?x=1").unwrap(),
            vec![
                ("a:3306".into(), "mysql://u:p@a:3306/db?x=1".into()),
                ("b:3307".into(), "mysql://u:p@b:3307/db?x=1".into()),
                ("c".into(), "mysql://u:p@c/db?x=1".into()),
            ]
        );
        assert_eq!(
            split_url("mysql://h:1/x").unwrap(),
            vec![("h:1".into(), "mysql://h:1/x".into())]
        );
        // A password may hold '@' and ','.
        assert_eq!(
            split_url("mysql://u:p@,s@h/db").unwrap(),
            vec![("h".into(), "mysql://u:p@,s@h/db".into())]
        );
        assert!(split_url("mysql://u@a,,b/db").is_err());
        assert!(split_url("nonsense").is_err());
    }
}
