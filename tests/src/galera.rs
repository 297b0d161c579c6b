//! A throwaway three-node MariaDB Galera cluster on loopback, for the tests of the store on
//! Galera: each node a `mariadbd` with the `galera-4` provider, its own directory, its own
//! free ports (SQL, group communication, IST, SST), under a watchdog as [`crate::mariadb`]'s
//! server is, so a test that ends (pass or fail) ends its nodes.
//!
//! The recipe, measured on MariaDB 10.11 with galera-4 26.4:
//! - the first node bootstraps the cluster (`--wsrep-new-cluster`); the others join it and
//!   take a full copy by rsync (SST) into an empty data directory;
//! - run as root, the nodes run as the `mysql` user (rsync SST fails as root);
//! - a node killed with `-9` ([`Galera::kill`]) comes back by IST, not SST, when started with
//!   the position `--wsrep-recover` finds ([`Galera::restart`]).
//!
//! Where `galera-4` is not installed, [`Galera::start`] answers `None` with a loud message,
//! except under CI, where it panics. `scripts/test` installs `galera-4` and `rsync`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::mariadb::{find, free_port, install_db, server_program};

/// Where Debian's `galera-4` puts the provider.
const PROVIDERS: [&str; 2] = [
    "/usr/lib/galera/libgalera_smm.so",
    "/usr/lib/libgalera_smm.so",
];

/// How long a node may take to be `Synced` (a first start, an SST, an IST).
const SYNC_WAIT: Duration = Duration::from_secs(90);

/// How many times a cluster is made before its start fails the test.
const START_ATTEMPTS: u32 = 3;

/// The end of a node's log: what a failure shows.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// A running three-node cluster. Dropping it ends every node and removes their files.
pub struct Galera {
    nodes: Vec<Node>,
    provider: PathBuf,
    server: PathBuf,
    /// Removes the cluster's directory once its stdin closes (this value dropped, or the test
    /// process gone, as for the shared cluster, never dropped): the nodes' data and caches
    /// are about 0.9 GB.
    janitor: Child,
}

/// One node: its ports, its directory, and its watchdog while it runs.
struct Node {
    port: u16,
    gcomm: u16,
    ist: u16,
    sst: u16,
    dir: PathBuf,
    watchdog: Option<Child>,
}

/// The janitor: waits for its stdin to close, gives the nodes' watchdogs a moment to end
/// them, and removes the cluster's directory.
const JANITOR: &str = r#"
    cat > /dev/null
    sleep 2
    rm -rf "$1"
"#;

/// Whether `galera-4` and a MariaDB server are installed.
pub fn installed() -> bool {
    PROVIDERS.iter().any(|p| Path::new(p).is_file()) && server_program().is_some()
}

impl Galera {
    /// Starts three nodes and waits until each is `Synced` in a cluster of three; `None`
    /// (outside CI) when MariaDB or `galera-4` is not installed.
    pub fn start() -> Option<Self> {
        let provider = PROVIDERS.iter().map(PathBuf::from).find(|p| p.is_file());
        let (Some(server), Some(provider), Some(install)) = (
            server_program(),
            provider,
            find(&["mariadb-install-db", "mysql_install_db"]),
        ) else {
            let msg = "no galera-4 or MariaDB server found: install galera-4, rsync and mariadb-server (scripts/test does)";
            assert!(
                std::env::var_os("CI").is_none(),
                "{msg}; the Galera tests must run in CI"
            );
            eprintln!("\n*** SKIPPING GALERA TESTS: {msg} ***\n");
            return None;
        };
        // Its ports are picked free, then bound by the nodes: another process may take one
        // in between (an outgoing connection's port, under a busy test run). A node that
        // cannot start fails the attempt, and the cluster is made again on other ports.
        for attempt in 1.. {
            let made = std::panic::catch_unwind(|| {
                Self::start_once(server.clone(), provider.clone(), &install)
            });
            match made {
                Ok(me) => return Some(me),
                Err(e) if attempt < START_ATTEMPTS => {
                    let why = e
                        .downcast_ref::<String>()
                        .map_or("a panic", |s| s.as_str())
                        .chars()
                        .take(2000)
                        .collect::<String>();
                    eprintln!("a Galera cluster did not start (attempt {attempt}): {why}");
                }
                Err(e) => std::panic::resume_unwind(e),
            }
        }
        unreachable!("the attempts end with a cluster or a panic")
    }

    fn start_once(server: PathBuf, provider: PathBuf, install: &Path) -> Self {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let janitor = Command::new("/bin/sh")
            .arg("-c")
            .arg(JANITOR)
            .arg("galera-janitor")
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the Galera janitor");
        // The nodes may run as `mysql`: they must reach their directories.
        chmod(&dir, 0o755);
        let nodes: Vec<Node> = (1..=3)
            .map(|i| {
                let dir = dir.join(format!("node{i}"));
                std::fs::create_dir_all(dir.join("data")).expect("a node's directory");
                Node {
                    port: free_port(),
                    gcomm: free_port(),
                    ist: free_port(),
                    sst: free_port(),
                    dir,
                    watchdog: None,
                }
            })
            .collect();
        install_db(install, &nodes[0].dir.join("data"), &user());
        let mut me = Self {
            nodes,
            provider,
            server,
            janitor,
        };
        for n in &me.nodes {
            chown(&n.dir);
        }
        me.run(0, &["--wsrep-new-cluster".to_owned()]);
        me.wait_synced(0, 1);
        me.run(1, &[]);
        me.wait_synced(1, 2);
        me.run(2, &[]);
        me.wait_synced(2, 3);
        me
    }

    /// Node `i`'s SQL port on 127.0.0.1.
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// Node `i`'s URL for `db` (user root, no password: loopback only).
    pub fn url(&self, i: usize, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{db}", self.port(i))
    }

    /// One URL naming every node, node `first` first and the others in order after it:
    /// what a broker is given to use node `first` and move to the next when it dies.
    pub fn url_from(&self, first: usize, db: &str) -> String {
        let n = self.nodes.len();
        let hosts: Vec<String> = (0..n)
            .map(|k| format!("127.0.0.1:{}", self.port((first + k) % n)))
            .collect();
        format!("mysql://root@{}/{db}", hosts.join(","))
    }

    /// Creates database `name` (through node 0; Galera copies it to the others).
    pub fn create_database(&self, name: &str) {
        self.sql(0, &format!("CREATE DATABASE `{name}`"));
    }

    /// Kills node `i` with `SIGKILL`, as a machine's crash would.
    pub fn kill(&mut self, i: usize) {
        let pid = self.pid(i);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the node");
        if let Some(mut w) = self.nodes[i].watchdog.take() {
            let _ = w.stdin.take();
            let _ = w.wait();
        }
    }

    /// Stops node `i`'s process (`SIGSTOP`): a node that hangs (a stuck disk, a machine
    /// frozen), its connections open and silent, until [`Galera::resume`].
    pub fn pause(&self, i: usize) {
        self.signal(i, nix::sys::signal::Signal::SIGSTOP);
    }

    /// Lets a paused node `i` go on (`SIGCONT`).
    pub fn resume(&self, i: usize) {
        self.signal(i, nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, i: usize, s: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid(i)), s)
            .expect("signal the node");
    }

    /// Waits until node `i` is `Synced` in a cluster of three again, as another node sees the
    /// cluster too: a node resumed from `SIGSTOP` still says "Synced, three" for a moment,
    /// before it learns it was evicted.
    pub fn wait_rejoined(&self, i: usize) {
        self.wait_seen(i, 3);
        self.wait_synced(i, 3);
    }

    /// Waits until the other nodes have evicted node `i` (killed or hung): the node after it
    /// sees a cluster of two.
    pub fn wait_evicted(&self, i: usize) {
        self.wait_seen(i, 2);
    }

    /// Waits until the node after node `i` sees a cluster of `size`.
    fn wait_seen(&self, i: usize, size: usize) {
        let other = (i + 1) % self.nodes.len();
        let deadline = Instant::now() + SYNC_WAIT;
        while self.status(other, "wsrep_cluster_size") != size.to_string() {
            assert!(
                Instant::now() < deadline,
                "node {other} never saw a cluster of {size} (node {i} killed, hung or back)"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a killed node `i` again at the position its data ends (`--wsrep-recover`), so it
    /// catches up by IST, and waits until it is `Synced` in a cluster of three. Answers
    /// whether the node logged an IST (not a full SST).
    pub fn restart(&mut self, i: usize) -> bool {
        let log = self.nodes[i].dir.join("recover.log");
        let mut recover = Command::new(&self.server);
        recover
            .args(self.args(i))
            .arg("--wsrep-recover")
            .arg(format!("--log-error={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let status = recover.status().expect("run mariadbd --wsrep-recover");
        assert!(status.success(), "mariadbd --wsrep-recover failed");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let position = text
            .lines()
            .filter_map(|l| l.split("WSREP: Recovered position: ").nth(1))
            .next_back()
            .map(|p| p.trim().to_owned())
            .unwrap_or_else(|| panic!("no recovered position in: {text}"));
        let from = self.log_len(i);
        self.run(i, &[format!("--wsrep_start_position={position}")]);
        self.wait_synced(i, 3);
        let log = std::fs::read_to_string(self.nodes[i].dir.join("server.log")).unwrap_or_default();
        let tail = log.get(from..).unwrap_or_default();
        tail.contains("IST received") || tail.contains("Receiving IST")
    }

    /// A `SHOW STATUS` value of node `i`.
    pub fn status(&self, i: usize, name: &str) -> String {
        let out = self.sql(i, &format!("SHOW STATUS LIKE '{name}'"));
        out.split('\t').nth(1).unwrap_or_default().trim().to_owned()
    }

    /// Runs `sql` on node `i` with the `mariadb` client and answers its output (tab-separated,
    /// no headers); panics on failure.
    pub fn sql(&self, i: usize, sql: &str) -> String {
        let out = self
            .try_sql(i, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        out
    }

    fn try_sql(&self, i: usize, sql: &str) -> Result<String, String> {
        let client = find(&["mariadb", "mysql"]).ok_or("no mariadb client")?;
        let out = Command::new(client)
            .args(["--no-defaults", "-h127.0.0.1", "-uroot", "-N", "-B"])
            .arg(format!("-P{}", self.port(i)))
            .args(["-e", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn wait_synced(&self, i: usize, size: usize) {
        let deadline = Instant::now() + SYNC_WAIT;
        loop {
            let state = self
                .try_sql(
                    i,
                    "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
                     WHERE VARIABLE_NAME IN ('wsrep_local_state_comment', 'wsrep_cluster_size') \
                     ORDER BY VARIABLE_NAME",
                )
                .unwrap_or_default();
            let mut v = state.lines();
            let (cluster, local) = (v.next().unwrap_or_default(), v.next().unwrap_or_default());
            if local == "Synced" && cluster == size.to_string() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Galera node {i} not Synced in a cluster of {size} within {SYNC_WAIT:?} \
                 (state {local:?}, size {cluster:?}): {}",
                tail(
                    &std::fs::read_to_string(self.nodes[i].dir.join("server.log"))
                        .unwrap_or_default()
                )
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_len(&self, i: usize) -> usize {
        std::fs::metadata(self.nodes[i].dir.join("server.log"))
            .map_or(0, |m| usize::try_from(m.len()).unwrap_or(usize::MAX))
    }

    fn pid(&self, i: usize) -> i32 {
        std::fs::read_to_string(self.nodes[i].dir.join("mysqld.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .expect("the node's pid file")
    }

    /// Starts node `i` under a watchdog, with `extra` arguments.
    fn run(&mut self, i: usize, extra: &[String]) {
        let log = self.nodes[i].dir.join("server.log");
        let mut args = self.args(i);
        args.extend(extra.iter().cloned());
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let watchdog = Command::new("/bin/sh")
            .arg("-c")
            .arg(crate::KILL_WATCHDOG)
            .arg("galera-watchdog")
            .arg(&self.server)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start a Galera node");
        self.nodes[i].watchdog = Some(watchdog);
        let deadline = Instant::now() + SYNC_WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.nodes[i].port)).is_err() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                Instant::now() < deadline && !text.contains("[ERROR] Aborting"),
                "Galera node {i} did not listen: {}",
                tail(&text)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Node `i`'s server arguments (without the program).
    fn args(&self, i: usize) -> Vec<String> {
        let n = &self.nodes[i];
        let peers: Vec<String> = self
            .nodes
            .iter()
            .map(|p| format!("127.0.0.1:{}", p.gcomm))
            .collect();
        let data = n.dir.join("data");
        vec![
            "--no-defaults".into(),
            format!("--datadir={}", data.display()),
            format!("--socket={}", n.dir.join("mysqld.sock").display()),
            format!("--pid-file={}", n.dir.join("mysqld.pid").display()),
            format!("--port={}", n.port),
            "--bind-address=127.0.0.1".into(),
            format!("--user={}", user()),
            "--skip-name-resolve".into(),
            "--innodb-buffer-pool-size=64M".into(),
            "--innodb-log-file-size=16M".into(),
            "--innodb-autoinc-lock-mode=2".into(),
            "--binlog-format=ROW".into(),
            "--max-connections=500".into(),
            "--wsrep-on=ON".into(),
            format!("--wsrep-provider={}", self.provider.display()),
            "--wsrep-cluster-name=arcade-test".into(),
            format!("--wsrep-cluster-address=gcomm://{}", peers.join(",")),
            format!("--wsrep-node-name=node{i}"),
            format!("--wsrep-node-address=127.0.0.1:{}", n.gcomm),
            format!("--wsrep-node-incoming-address=127.0.0.1:{}", n.port),
            format!(
                "--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{};ist.recv_addr=127.0.0.1:{};gcache.size=128M",
                n.gcomm, n.ist
            ),
            "--wsrep-sst-method=rsync".into(),
            format!("--wsrep-sst-receive-address=127.0.0.1:{}", n.sst),
        ]
    }
}

impl Drop for Galera {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut w) = n.watchdog.take() {
                let _ = w.stdin.take();
                let _ = w.wait();
            }
        }
        let _ = self.janitor.stdin.take();
        let _ = self.janitor.wait();
    }
}

/// The user the nodes run as: `mysql` when the tests run as root (rsync SST refuses root),
/// else the current user.
fn user() -> String {
    if nix::unistd::geteuid().is_root() {
        "mysql".into()
    } else {
        nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map_or_else(|| "root".to_owned(), |u| u.name)
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// Gives `dir` and everything in it to the nodes' user.
fn chown(dir: &Path) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let status = Command::new("chown")
        .args(["-R", "mysql:mysql"])
        .arg(dir)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown -R mysql:mysql {}", dir.display());
}

/// The test process's shared cluster, started on first use. Tests that kill a node start a
/// cluster of their own.
pub fn shared() -> Option<&'static Galera> {
    static CLUSTER: std::sync::OnceLock<Option<Galera>> = std::sync::OnceLock::new();
    CLUSTER.get_or_init(Galera::start).as_ref()
}

/// A test's database on the shared cluster, and its turn on it.
pub struct Database {
    /// For each node, a URL naming that node first and the others after it
    /// ([`Galera::url_from`]).
    pub urls: [String; 3],
    /// One test at a time on the shared cluster: three nodes on two cores under twenty tests
    /// at once fell behind, and calls (even reads, which wait for their node to catch up)
    /// went past the store's 5 s bound.
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// A fresh database on the shared cluster, with the broker's schema, held until the value is
/// dropped; `None` (outside CI) when Galera is not installed.
///
/// The schema is made here: a migration's DDL runs on Galera in total order, pausing every
/// node's writes while it runs.
pub async fn database() -> Option<Database> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let name = format!(
        "arcade_g{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let turn = ONE_AT_A_TIME.lock().await;
    // A panic (a cluster that would not start) fails the test: it is not a skip.
    let urls = tokio::task::spawn_blocking(move || {
        let cluster = shared()?;
        cluster.create_database(&name);
        Some([0, 1, 2].map(|i| cluster.url_from(i, &name)))
    })
    .await
    .expect("the shared Galera cluster")?;
    let store = broker::store::mysql::MysqlStore::connect(&urls[0])
        .await
        .expect("the broker's schema on Galera");
    store.close().await;
    Some(Database { urls, _turn: turn })
}
