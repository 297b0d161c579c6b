//! Several brokers, one system, as operators run it: three real `arcade-broker` processes on
//! one throwaway MariaDB and one throwaway `nats-server`, four agents that know all three.
//! Replicas can be stopped (SIGTERM), killed (`kill -9`), paused (`SIGSTOP`) and started
//! again on the same ports. Used by the replica tests and by `arcade-bench faults`.

#![allow(clippy::unwrap_used)] // a test harness: a failed step is a failed test

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use portal_client::Client;
use protocol::api::{HostStatus, Session, SessionStatus};
use protocol::HostId;

use crate::nats::NatsServer;
use crate::{fresh_port_ranges, mariadb, processes_of, wait_until, AgentOptions, TestAgent};

/// The `arcade-broker` program, built beside the running test or benchmark.
pub fn broker_binary() -> PathBuf {
    crate::test_game().with_file_name("arcade-broker")
}

/// How long a replica may take to answer, and the cluster to settle.
pub const WAIT: Duration = Duration::from_secs(30);
/// `--heartbeat-timeout`: agents notice a silent broker after five 1 s heartbeats, well
/// within it (with 6 s, a loaded CI machine once had a paused replica's hosts swept as lost
/// before its agents had moved on).
pub const HEARTBEAT_TIMEOUT: &str = "8";

/// What a replica runs with beyond the cluster's flags.
#[derive(Debug, Clone)]
pub struct More {
    /// More flags.
    pub args: Vec<String>,
    /// `RUST_LOG`.
    pub rust_log: String,
}

impl Default for More {
    fn default() -> Self {
        Self {
            args: Vec::new(),
            rust_log: "info".into(),
        }
    }
}

/// One replica: a real `arcade-broker` process.
pub struct Replica {
    /// `--broker-id`.
    pub id: String,
    http: u16,
    agents: u16,
    heartbeat_timeout: String,
    /// More flags, and `RUST_LOG`.
    extra: Vec<String>,
    rust_log: String,
    /// The process, while it runs.
    running: Option<Running>,
    /// Its log (stderr), kept in the temp dir.
    pub log: PathBuf,
}

impl Replica {
    fn spawn(id: &str, db: &str, nats: &str, heartbeat_timeout: &str, more: &More) -> Self {
        let (http, agents) = (mariadb::free_port(), mariadb::free_port());
        let log = std::env::temp_dir().join(format!(
            "arcade-replica-{}-{id}-{http}.log",
            std::process::id()
        ));
        let mut me = Self {
            id: id.to_owned(),
            http,
            agents,
            heartbeat_timeout: heartbeat_timeout.to_owned(),
            extra: more.args.clone(),
            rust_log: more.rust_log.clone(),
            running: None,
            log,
        };
        me.start(db, nats);
        me
    }

    /// Starts its process (again), on its ports.
    pub fn start(&mut self, db: &str, nats: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let mut watchdog = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("replica-watchdog")
            .arg(broker_binary())
            .args(["--broker-id", &self.id])
            .args(["--http", &format!("127.0.0.1:{}", self.http)])
            .args(["--agent-listen", &format!("127.0.0.1:{}", self.agents)])
            .args(["--database-url", db, "--nats-url", nats])
            .args(["--heartbeat-timeout", &self.heartbeat_timeout])
            .args(["--launch-timeout", "5"])
            // Only starts that name a user are counted: the per-user test's.
            .args(["--max-sessions-per-user", "3"])
            .arg("--build-store")
            .arg(self.build_store())
            .args(&self.extra)
            .env("RUST_LOG", &self.rust_log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(watchdog.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let pid = Pid::from_raw(line.trim().parse().unwrap());
        self.running = Some(Running { watchdog, pid });
    }

    /// Its `--build-store`: beside its log, removed with it.
    pub fn build_store(&self) -> PathBuf {
        self.log.with_extension("builds")
    }

    /// Whether its process runs.
    pub fn runs(&self) -> bool {
        self.running.is_some()
    }

    /// A replica started and answering. Its ports are picked free just before it binds them,
    /// and another process of the test run can take one meanwhile: the replica then exits at
    /// once ("address already in use", in its log) and is started again on new ports.
    pub async fn up(id: &str, db: &str, nats: &str, heartbeat_timeout: &str) -> Self {
        Self::up_with(id, db, nats, heartbeat_timeout, &More::default()).await
    }

    /// [`Self::up`] with more flags and another log level.
    pub async fn up_with(
        id: &str,
        db: &str,
        nats: &str,
        heartbeat_timeout: &str,
        more: &More,
    ) -> Self {
        for _ in 0..3 {
            let mut r = Self::spawn(id, db, nats, heartbeat_timeout, more);
            let client = r.client();
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                if client.health().await.is_ok() {
                    return r;
                }
                let exited = r
                    .running
                    .as_mut()
                    .and_then(|c| c.watchdog.try_wait().ok().flatten());
                if exited.is_some() {
                    r.running = None;
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "replica {id} does not answer; log: {}",
                    r.log.display()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("replica {id} exited at start three times (see its logs in the temp dir)");
    }

    /// A client of its HTTP API.
    pub fn client(&self) -> Client {
        Client::new(&self.url(), None).unwrap()
    }

    /// Its HTTP API's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    /// The value of the unlabelled metric `name` on its `/metrics`, if it shows it.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(format!("{}/metrics", self.url()))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Where agents connect to it.
    pub fn agent_addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.agents).parse().unwrap()
    }

    /// Its process id (it must be running).
    pub fn pid(&self) -> Pid {
        self.running.as_ref().unwrap().pid
    }

    /// Sends it a signal.
    pub fn signal(&self, s: Signal) {
        kill(self.pid(), s).unwrap();
    }

    /// Whether it answers `GET /readyz` with 200 (the store and NATS answer it, its agents'
    /// listener is up).
    pub async fn ready(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let probe = async {
            let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", self.http)).await?;
            conn.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await?;
            let mut head = [0u8; 12];
            conn.read_exact(&mut head).await?;
            std::io::Result::Ok(head.ends_with(b" 200"))
        };
        tokio::time::timeout(Duration::from_secs(5), probe)
            .await
            .is_ok_and(|r| r.unwrap_or(false))
    }

    /// Starts it again after it stopped, on the same ports, and waits until it is ready.
    pub async fn restart(&mut self, db: &str, nats: &str) {
        assert!(self.running.is_none(), "replica {} still runs", self.id);
        self.start(db, nats);
        let what = format!(
            "replica {} ready again (log: {})",
            self.id,
            self.log.display()
        );
        wait_until(&what, WAIT, || self.ready()).await;
    }

    /// `kill -9`, and waits for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut r) = self.running.take() {
            let _ = kill(r.pid, Signal::SIGKILL);
            r.watchdog.wait().unwrap();
        }
    }

    /// SIGTERM, and waits until the process has exited: its graceful stop is bounded by
    /// `--shutdown-grace` (30 s), which requests in flight may use up.
    pub fn terminate(&mut self) {
        self.signal(Signal::SIGTERM);
        let mut r = self.running.take().unwrap();
        let deadline = std::time::Instant::now() + WAIT * 2;
        while r.watchdog.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "replica {} did not stop on SIGTERM; log: {}",
                self.id,
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs the broker (`"$@"`) and prints its pid; exits when it does. A watcher beside it kills
/// it when the watchdog's stdin closes: when the test or benchmark ends, however it ends
/// (a panic, a signal, `kill -9`: the pipe closes with the process). The watcher goes with
/// the broker, so it never signals a pid reused since.
/// (A command run in the background reads /dev/null, so the watcher reads a copy of stdin.)
const WATCHDOG: &str = r#"
    exec 3<&0
    "$@" 3<&- > /dev/null &
    pid=$!
    echo "$pid"
    ( cat <&3 > /dev/null; kill -KILL "$pid" 2> /dev/null ) &
    watcher=$!
    wait "$pid"
    kill "$watcher" 2> /dev/null
"#;

/// A replica's running process, under its watchdog.
struct Running {
    /// The watchdog shell: it exits when the broker does.
    watchdog: Child,
    /// The broker.
    pid: Pid,
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut r) = self.running.take() {
            let _ = kill(r.pid, Signal::SIGCONT);
            let _ = kill(r.pid, Signal::SIGKILL);
            let _ = r.watchdog.wait();
        }
        let _ = std::fs::remove_dir_all(self.build_store());
    }
}

/// Three replicas, four agents, one database and one NATS server, all throwaway.
pub struct Cluster {
    /// The shared database's URL (replica `b1`'s).
    pub db: String,
    /// Each replica's `--database-url`: the same, or (on Galera) each its own node first.
    pub dbs: [String; 3],
    /// The NATS server.
    pub nats: NatsServer,
    /// The replicas, `b1` to `b3`.
    pub replicas: Vec<Replica>,
    /// The agents.
    pub agents: Vec<TestAgent>,
    /// The capacity of each agent's host.
    pub capacity: HashMap<HostId, u32>,
    /// `--heartbeat-timeout` of every replica, in seconds.
    pub heartbeat_timeout: String,
    /// This test's turn: dropped last, once its processes are gone.
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// One cluster at a time: seven at once (three brokers, a NATS server and four agents each)
/// overloaded two cores, and their free ports, picked before the processes bind them, could
/// be taken meanwhile by another cluster's.
pub static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Cluster {
    /// `None` outside CI when MariaDB or nats-server is not installed.
    pub async fn start() -> Option<Self> {
        Self::start_with(HEARTBEAT_TIMEOUT).await
    }

    /// [`Self::start`] with replicas at `--heartbeat-timeout heartbeat_timeout` (seconds).
    pub async fn start_with(heartbeat_timeout: &str) -> Option<Self> {
        Self::start_gpus(heartbeat_timeout, [0; 4]).await
    }

    /// [`Self::start_with`], agent `i` with `gpus[i]` GPUs (`--gpus 0,1,...`).
    pub async fn start_gpus(heartbeat_timeout: &str, gpus: [u32; 4]) -> Option<Self> {
        let turn = TURN.lock().await;
        let db = mariadb::database().await?;
        Self::assemble(turn, [db.clone(), db.clone(), db], heartbeat_timeout, gpus).await
    }

    /// [`Self::start_with`], replica `i` on `--database-url dbs[i]`: the nodes of a Galera
    /// cluster, each replica's own node first.
    pub async fn start_on(dbs: [String; 3], heartbeat_timeout: &str) -> Option<Self> {
        let turn = TURN.lock().await;
        Self::assemble(turn, dbs, heartbeat_timeout, [0; 4]).await
    }

    async fn assemble(
        turn: tokio::sync::MutexGuard<'static, ()>,
        dbs: [String; 3],
        heartbeat_timeout: &str,
        gpus: [u32; 4],
    ) -> Option<Self> {
        let nats = NatsServer::start()?;
        let mut replicas = Vec::new();
        for (id, db) in ["b1", "b2", "b3"].into_iter().zip(&dbs) {
            replicas.push(Replica::up(id, db, &nats.url(), heartbeat_timeout).await);
        }
        // Agent i prefers replica i mod 3, then the next ones: b1 holds two hosts.
        let capacities = [12, 12, 13, 13];
        let mut agents = Vec::new();
        let mut capacity = HashMap::new();
        for (i, max) in capacities.into_iter().enumerate() {
            let order: Vec<SocketAddr> =
                (0..3).map(|k| replicas[(i + k) % 3].agent_addr()).collect();
            let mut opts = AgentOptions::host(&format!("gpu-{i}"));
            opts.max_sessions = max;
            opts.port_range = Some(fresh_port_ranges(2));
            opts.more_brokers = order[1..].to_vec();
            opts.gpus = (0..gpus[i]).collect();
            let agent = TestAgent::start(order[0], opts).await;
            capacity.insert(agent.host_id.clone(), max);
            agents.push(agent);
        }
        let me = Self {
            db: dbs[0].clone(),
            dbs,
            nats,
            replicas,
            agents,
            capacity,
            heartbeat_timeout: heartbeat_timeout.to_owned(),
            _turn: turn,
        };
        me.wait_online(4).await;
        Some(me)
    }

    /// A client of replica `i` (modulo their number).
    pub fn client(&self, i: usize) -> Client {
        self.replicas[i % self.replicas.len()].client()
    }

    /// Waits until `n` hosts are online as every live replica sees them.
    pub async fn wait_online(&self, n: usize) {
        for r in self.replicas.iter().filter(|r| r.runs()) {
            let client = r.client();
            wait_until(&format!("{n} hosts online through {}", r.id), WAIT, || {
                let client = client.clone();
                async move {
                    client.hosts().await.is_ok_and(|h| {
                        h.hosts
                            .iter()
                            .filter(|h| h.status == HostStatus::Online && h.broker_id.is_some())
                            .count()
                            == n
                    })
                }
            })
            .await;
        }
    }

    /// Which replica holds each host's agent, as replica `via` says.
    pub async fn owners(&self, via: usize) -> HashMap<HostId, String> {
        self.client(via)
            .hosts()
            .await
            .unwrap()
            .hosts
            .into_iter()
            .filter_map(|h| Some((h.host_id, h.broker_id?)))
            .collect()
    }
}

/// Every session the store has (through replica `via`), any status.
pub async fn all_sessions(c: &Cluster, via: usize) -> Vec<Session> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = c
            .client(via)
            .list_sessions(&protocol::api::SessionQuery {
                limit: Some(500),
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        all.extend(page.sessions);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
}

impl Cluster {
    /// A rolling restart, as an operator does one: each replica in turn is stopped with
    /// SIGTERM, started again on its ports and waited for until `/readyz` answers 200; then one
    /// is killed with `kill -9` and started again. Answers each fault's start and end.
    pub async fn rolling_restart(&mut self) -> Vec<(Instant, Instant)> {
        let mut faults = Vec::new();
        let (dbs, nats) = (self.dbs.clone(), self.nats.url());
        for (r, db) in self.replicas.iter_mut().zip(&dbs) {
            let t0 = Instant::now();
            r.terminate();
            r.restart(db, &nats).await;
            faults.push((t0, Instant::now()));
        }
        let t0 = Instant::now();
        self.replicas[1].kill9();
        self.replicas[1].restart(&dbs[1], &nats).await;
        faults.push((t0, Instant::now()));
        faults
    }

    /// The database server stalls (`SIGSTOP`) for `stall`, then goes on (`SIGCONT`); with
    /// `kill`, replica 0 is killed with `kill -9` in the middle of the stall and started again
    /// after it. Answers when the stall began and ended.
    pub async fn database_stall(&mut self, stall: Duration, kill: bool) -> (Instant, Instant) {
        let db = mariadb::shared().expect("the server the cluster uses");
        let t0 = Instant::now();
        let paused = mariadb::Paused::new(db);
        // Not a synchronisation: the stall's length is what is measured.
        tokio::time::sleep(stall / 2).await;
        if kill {
            self.replicas[0].kill9();
        }
        tokio::time::sleep(stall - stall / 2).await;
        drop(paused);
        let t1 = Instant::now();
        if kill {
            let (url, nats) = (self.db.clone(), self.nats.url());
            self.replicas[0].restart(&url, &nats).await;
        }
        (t0, t1)
    }
}

/// What a run under faults must never show, as the store and the clients have it (through
/// replica `via`), once every start has settled: a failed start, an end that did not end, a
/// session `lost`, a session `failed` after its game ran, a game run for a session its client
/// was not given (a second game for a key), or a game without a live session.
pub async fn violations(c: &Cluster, via: usize, tally: &crate::keyed_load::Tally) -> Vec<String> {
    let mut v: Vec<String> = tally
        .failed_starts
        .iter()
        .map(|w| format!("failed start: {w}"))
        .collect();
    v.extend(tally.bad_ends.iter().map(|w| format!("bad end: {w}")));
    starts_settled(c, via).await;
    let given: std::collections::HashSet<_> = tally.started.iter().map(|s| &s.session_id).collect();
    for s in all_sessions(c, via).await {
        let id = &s.session_id;
        match s.status {
            SessionStatus::Lost => v.push(format!("lost: {id}")),
            SessionStatus::Failed if s.pid.is_some() => {
                v.push(format!("failed after its game ran: {id}"))
            }
            _ => {}
        }
        if s.pid.is_some() && s.pool_id.is_none() && !given.contains(id) {
            v.push(format!("a game no client was given: {id} ({})", s.status));
        }
    }
    v.extend(orphans(c, via).await);
    v
}

/// Games without a live session, and running sessions without their game.
pub async fn orphans(c: &Cluster, via: usize) -> Vec<String> {
    let mut v = Vec::new();
    for s in all_sessions(c, via).await {
        let procs = processes_of(std::slice::from_ref(&s.session_id));
        match s.status {
            SessionStatus::Running if !s.pid.is_some_and(|p| procs.contains(&p)) => {
                v.push(format!("running session {} has no game", s.session_id));
            }
            SessionStatus::Running | SessionStatus::Stopping => {}
            _ if !procs.is_empty() => v.push(format!(
                "a game runs without a live session: {} is {}",
                s.session_id, s.status
            )),
            _ => {}
        }
    }
    v
}

/// Waits until no session is `starting` (through replica `via`).
async fn starts_settled(c: &Cluster, via: usize) {
    wait_until("every start has settled", WAIT, || async {
        all_sessions(c, via)
            .await
            .iter()
            .all(|s| s.status != SessionStatus::Starting)
    })
    .await;
}

/// Waits until no session is `starting`, and then checks that no game runs without a live
/// session and every running session's game runs.
pub async fn no_orphan(c: &Cluster, via: usize) {
    starts_settled(c, via).await;
    let found = orphans(c, via).await;
    assert!(found.is_empty(), "{found:?}");
}
