//! Throwaway MariaDB (or MySQL) servers for tests: initialised in a temporary directory,
//! listening on a free loopback port, run as the current user, no system service involved.
//!
//! [`database`] hands each test its own database on one server shared by the test process.
//! Where no server program is installed, [`database`] returns `None` with a loud message so the
//! test can skip — except under CI (`CI` set), where it panics: MySQL tests are never silently
//! skipped in CI. `scripts/test` installs `mariadb-server`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

/// A running server. Dropping it kills it; so does the end of the test process (the server runs
/// under a small watchdog that ends it, and removes its files, when our end of its stdin
/// closes).
pub struct MariaDb {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    watchdog: Child,
    _dir: tempfile::TempDir,
}

/// The first of `names` installed on `PATH` or in the usual system directories.
pub fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/usr/bin"].map(PathBuf::from));
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

/// The installed server program (`mariadbd`, or `mysqld`), if any.
pub fn server_program() -> Option<PathBuf> {
    find(&["mariadbd", "mysqld"])
}

/// A loopback port free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

impl MariaDb {
    /// Initialises and starts a new server; `None` when no server program is installed.
    pub fn start() -> Option<Self> {
        let server = server_program()?;
        let install = find(&["mariadb-install-db", "mysql_install_db"])?;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        install_db(&install, &data, &whoami());
        let port = free_port();
        let log = dir.path().join("server.log");
        let args = server_args(&server, &data, dir.path(), port);
        // The watchdog: starts the server, then waits for its stdin to close (the test process
        // exiting, or this value dropped), then stops the server.
        let script = r#"
            "$@" &
            pid=$!
            cat > /dev/null
            kill -TERM "$pid" 2>/dev/null
            sleep 2
            kill -KILL "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
            rm -rf "$ARCADE_MARIADB_DIR"
        "#;
        let watchdog = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .arg("mariadb-watchdog")
            .args(&args)
            // The shared server's directory is never dropped: the watchdog removes it.
            .env("ARCADE_MARIADB_DIR", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(&log)
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("start the MariaDB server");
        let me = Self {
            port,
            watchdog,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "MariaDB did not start within 60 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(me)
    }

    /// The server's URL for `db` (user root, no password: it listens on loopback only).
    pub fn url(&self, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a database and returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        let mut conn = mysql_async::Conn::from_url(self.url(""))
            .await
            .expect("connect to MariaDB");
        conn.query_drop(format!("CREATE DATABASE `{name}`"))
            .await
            .expect("create database");
        let _ = conn.disconnect().await;
        self.url(name)
    }

    /// Stops the server's process (`SIGSTOP`): every call to it stalls, as on a slow disk, a
    /// long fsync or a failover, until [`MariaDb::resume`].
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// Lets a paused server go on (`SIGCONT`).
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = std::fs::read_to_string(self._dir.path().join("mysqld.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .expect("the server's pid file");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).expect("signal the server");
    }

    /// Kills the server at once (a database lost under the broker's feet).
    pub fn kill(&mut self) {
        let _ = self.watchdog.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Makes a new server's data directory `data` with `install` (`mariadb-install-db`), for a
/// server run as `user`: root without a password (the servers listen on loopback only).
pub fn install_db(install: &Path, data: &Path, user: &str) {
    let init = Command::new(install)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .arg(format!("--user={user}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run mariadb-install-db");
    assert!(
        init.status.success(),
        "mariadb-install-db failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.watchdog.stdin.take();
        let _ = self.watchdog.wait();
    }
}

fn whoami() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map_or_else(|| "root".to_owned(), |u| u.name)
}

fn server_args(server: &Path, data: &Path, dir: &Path, port: u16) -> Vec<String> {
    vec![
        server.display().to_string(),
        "--no-defaults".into(),
        format!("--datadir={}", data.display()),
        format!("--socket={}", dir.join("mysqld.sock").display()),
        format!("--pid-file={}", dir.join("mysqld.pid").display()),
        format!("--port={port}"),
        "--bind-address=127.0.0.1".into(),
        format!("--user={}", whoami()),
        "--skip-name-resolve".into(),
        "--skip-log-bin".into(),
        "--innodb-buffer-pool-size=64M".into(),
        "--innodb-log-file-size=16M".into(),
        "--max-connections=500".into(),
    ]
}

/// The server paused (`SIGSTOP`) until this is dropped, however the test ends, so the tests
/// after it find it running.
pub struct Paused(&'static MariaDb);

impl Paused {
    /// Pauses `server`.
    pub fn new(server: &'static MariaDb) -> Self {
        server.pause();
        Self(server)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        self.0.resume();
    }
}

/// The test process's shared server, started on first use.
pub fn shared() -> Option<&'static MariaDb> {
    static SERVER: OnceLock<Option<MariaDb>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let s = MariaDb::start();
            if s.is_none() {
                let msg = "no MariaDB/MySQL server program (mariadbd) found: install mariadb-server (scripts/test does)";
                assert!(std::env::var_os("CI").is_none(), "{msg}; MySQL tests must run in CI");
                eprintln!("\n*** SKIPPING MySQL TESTS: {msg} ***\n");
            }
            s
        })
        .as_ref()
}

/// A fresh database on the shared server, or `None` (outside CI) when there is no server.
pub async fn database() -> Option<String> {
    static N: AtomicU32 = AtomicU32::new(0);
    // A panic (a server that would not start) fails the test: it is not a skip.
    let server = tokio::task::spawn_blocking(shared)
        .await
        .expect("the shared MariaDB server")?;
    let name = format!(
        "arcade_t{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    Some(server.create_database(&name).await)
}
