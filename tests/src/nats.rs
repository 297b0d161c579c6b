//! Throwaway NATS servers for tests: Debian's `nats-server`, listening on a free loopback port,
//! run as a child of the test process, no system service involved. A server can be killed
//! and started again on the same port (NATS lost and back under the brokers).
//!
//! Where `nats-server` is not installed, [`NatsServer::start`] returns `None` with a loud
//! message so the test can skip — except under CI (`CI` set), where it panics. `scripts/test`
//! installs `nats-server`. Servers run with JetStream (`-js`), its files in a directory of
//! their own that outlives a restart, as the builds' object store needs.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `nats-server`; dropping it kills it, and so does the end of the test process (it
/// runs under a small watchdog that kills it when our end of the watchdog's stdin closes).
#[derive(Debug)]
pub struct NatsServer {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    program: PathBuf,
    child: Option<Child>,
    /// JetStream's files (`-sd`), kept across restarts.
    store: tempfile::TempDir,
}

/// The installed server program, if any.
pub fn server_program() -> Option<PathBuf> {
    crate::mariadb::find(&["nats-server"])
}

impl NatsServer {
    /// Starts a server on a free loopback port; `None` (outside CI) when none is installed.
    pub fn start() -> Option<Self> {
        let Some(program) = server_program() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "nats-server is required in CI (scripts/test installs it)"
            );
            eprintln!(
                "!!! nats-server is not installed: skipping a NATS test (scripts/test installs it)"
            );
            return None;
        };
        let port = crate::mariadb::free_port();
        let mut me = Self {
            port,
            program,
            child: None,
            store: tempfile::tempdir().expect("a JetStream directory"),
        };
        me.restart();
        Some(me)
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Whether it accepts connections now.
    fn answers(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    /// Kills the server at once and waits until its port refuses.
    pub fn kill(&mut self) {
        if let Some(mut watchdog) = self.child.take() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.answers() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server (again) on its port and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(crate::KILL_WATCHDOG)
            .arg("nats-watchdog")
            .arg(&self.program)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not start within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut watchdog) = self.child.take() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}
