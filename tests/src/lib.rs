//! The end-to-end test harness: a real broker and real agents, started through the same
//! `broker::run` and `agent::run` as the binaries, on loopback sockets bound to port 0, with
//! real game processes (`arcade-test-game`, `/bin/sleep`).
//!
//! Every wait is bounded ([`wait_until`]); nothing sleeps to synchronise.

pub mod builds;
pub mod cluster;
pub mod galera;
pub mod keyed_load;
pub mod mariadb;
pub mod nats;
pub mod proxy;
pub mod reaper;
pub mod webhook;

pub use reaper::{Reaper, StateDir};

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Once;
use std::time::Duration;

use agent::catalog::{Catalog, GameEntry, ReadyEntry};
use nix::errno::Errno;
use nix::sys::signal::{kill, killpg};
use nix::unistd::Pid;
use protocol::wire::PortRange;
use protocol::HostId;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A server's watchdog, for `sh -c WATCHDOG NAME PROGRAM ARGS...`: starts the server, waits
/// for its stdin to close (the test process exiting, or the server stopped by the test), then
/// kills it. How a test's servers end with it, pass or fail.
pub(crate) const KILL_WATCHDOG: &str = r#"
    "$@" &
    pid=$!
    cat > /dev/null
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
"#;

/// Logs to the test's output when `RUST_LOG` is set.
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}

/// A start of `game` with every other field left to its default (the game's default mode,
/// config and settings, no user, no limit of its own): the one start request of the tests and
/// benchmarks. Set the fields that differ with struct update syntax,
/// `StartSession { user_id: Some(..), ..tests::start("sleeper") }`.
pub fn start(game: &str) -> protocol::api::StartSession {
    protocol::api::StartSession::new(protocol::GameId::new(game).expect("a valid game id"))
}

/// The test game program, built with this crate.
pub fn test_game() -> PathBuf {
    // Test executables live in target/<profile>/deps; cargo builds this crate's binaries into
    // target/<profile> before running its integration tests. `arcade-bench` lives there too.
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().unwrap_or(Path::new("."));
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    dir.join("arcade-test-game")
}

/// A broker under test.
pub struct TestBroker {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The HTTP API's address (for clients that speak HTTP themselves).
    pub http_addr: SocketAddr,
    /// Where agents connect.
    pub agent_addr: SocketAddr,
    /// `--build-store`: the broker's own, removed with it.
    pub build_store: PathBuf,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), broker::BrokerError>>>,
    _build_dir: tempfile::TempDir,
}

/// Broker settings for a test.
#[derive(Debug)]
pub struct BrokerOptions {
    /// `--launch-timeout`.
    pub launch_timeout: Duration,
    /// `--heartbeat-timeout`.
    pub heartbeat_timeout: Duration,
    /// `--cors-origin`.
    pub cors_origins: Vec<String>,
    /// `--agent-token`.
    pub agent_token: Option<String>,
    /// Bind the agent listener here instead of port 0.
    pub agent_listener: Option<TcpListener>,
    /// `--database-url`.
    pub database_url: Option<String>,
    /// `--api-key ROLE:KEY`s.
    pub api_keys: Vec<String>,
    /// `--player-key`s: files, or `hs256:SECRET`.
    pub player_keys: Vec<String>,
    /// `--agent-tls-cert`, `--agent-tls-key`, `--agent-client-ca`.
    pub agent_tls: Option<broker::config::AgentTls>,
    /// `--http-tls-cert`, `--http-tls-key`: the broker's URL is then `https://localhost:PORT`.
    pub http_tls: Option<(PathBuf, PathBuf)>,
    /// How long HTTP requests in flight may hold HTTP's workers at shutdown.
    pub shutdown_grace: Duration,
    /// `--nats-url`s.
    pub nats_urls: Vec<String>,
    /// `--workers` (HTTP worker threads); 1 by default in tests.
    pub workers: usize,
    /// `--webhook`s, `--webhook-secret`, `--webhook-types`.
    pub webhooks: Option<broker::events::webhooks::WebhookConfig>,
    /// `--max-sessions-per-user`.
    pub max_sessions_per_user: Option<u32>,
    /// `--join-token-ttl`; 120 s by default.
    pub join_token_ttl: Option<Duration>,
    /// `--max-build-size`; 8 GiB by default.
    pub max_build_size: Option<u64>,
    /// `--public-url`: where games and agents reach the broker's API; by default its own
    /// address.
    pub public_url: Option<String>,
    /// `--placement`.
    pub placement: broker::placement::Strategy,
    /// `--host-idle-after`; 600 s by default.
    pub host_idle_after: Option<Duration>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            launch_timeout: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(5),
            cors_origins: Vec::new(),
            agent_token: None,
            agent_listener: None,
            database_url: None,
            api_keys: Vec::new(),
            player_keys: Vec::new(),
            agent_tls: None,
            http_tls: None,
            shutdown_grace: Duration::from_secs(30),
            nats_urls: Vec::new(),
            workers: 1,
            webhooks: None,
            max_sessions_per_user: None,
            join_token_ttl: None,
            max_build_size: None,
            public_url: None,
            placement: broker::placement::Strategy::Spread,
            host_idle_after: None,
        }
    }
}

fn loopback_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

impl TestBroker {
    /// Starts a broker with default settings.
    pub async fn start() -> Self {
        Self::start_with(BrokerOptions::default()).await
    }

    /// Starts a broker.
    pub async fn start_with(opts: BrokerOptions) -> Self {
        init_tracing();
        let http = loopback_listener();
        let agents = opts.agent_listener.unwrap_or_else(loopback_listener);
        let port = http.local_addr().expect("addr").port();
        let https = opts.http_tls.is_some();
        let url = if https {
            format!("https://localhost:{port}")
        } else {
            format!("http://127.0.0.1:{port}")
        };
        let agent_addr = agents.local_addr().expect("addr");
        let mut config = broker::Config::loopback();
        config.http = http.local_addr().expect("addr");
        let config_http = config.http;
        config.agent_listen = agent_addr;
        config.launch_timeout = opts.launch_timeout;
        config.heartbeat_timeout = opts.heartbeat_timeout;
        config.cors_origins = opts.cors_origins;
        config.agent_token = opts.agent_token;
        config.database_url = opts.database_url;
        config.agent_tls = opts.agent_tls;
        config.http_tls = opts.http_tls;
        config.shutdown_grace = opts.shutdown_grace;
        config.nats_urls = opts.nats_urls;
        config.api_keys = opts
            .api_keys
            .iter()
            .map(|k| k.parse().expect("API key"))
            .collect();
        config.player_keys = opts
            .player_keys
            .iter()
            .map(|k| k.parse().expect("player key"))
            .collect();
        config.workers = opts.workers;
        config.webhooks = opts.webhooks;
        config.max_sessions_per_user = opts.max_sessions_per_user;
        if let Some(ttl) = opts.join_token_ttl {
            config.join_token_ttl = ttl;
        }
        if let Some(max) = opts.max_build_size {
            config.max_build_size = max;
        }
        config.public_url = opts.public_url;
        config.placement = opts.placement;
        if let Some(idle) = opts.host_idle_after {
            config.host_idle_after = idle;
        }
        let build_dir = tempfile::tempdir().expect("a build store");
        config.build_store = build_dir.path().join("builds");
        let build_store = config.build_store.clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(broker::run(
            config,
            broker::Listeners { http, agents },
            shutdown.clone(),
        ));
        let b = Self {
            url,
            http_addr: config_http,
            agent_addr,
            build_store,
            shutdown,
            task: Some(task),
            _build_dir: build_dir,
        };
        if https {
            // The test itself waits for an HTTPS answer (this crate speaks only plain HTTP).
            return b;
        }
        let health = format!("{}/healthz", b.url);
        wait_until(
            "the broker answers /healthz",
            Duration::from_secs(10),
            || {
                let health = health.clone();
                async move { reqwest_get_ok(&health).await }
            },
        )
        .await;
        b
    }

    /// Stops the broker gracefully and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), broker::BrokerError> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(t) => tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("broker stops within 60 s")
                .expect("broker task"),
            None => Ok(()),
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn reqwest_get_ok(url: &str) -> bool {
    // A plain HTTP/1.1 GET over a socket keeps this crate free of an HTTP client dependency.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    buf.starts_with(b"HTTP/1.1 200")
}

/// The API keys of [`secured`], one per role.
pub mod keys {
    /// A `portal` key.
    pub const PORTAL: &str = "portal-key-0123456789";
    /// A `provider` key.
    pub const PROVIDER: &str = "provider-key-0123456789";
    /// An `admin` key.
    pub const ADMIN: &str = "admin-key-0123456789";
    /// The agents' token (`--agent-token`), which also downloads builds.
    pub const AGENT: &str = "agent-token-0123456789";
    /// The portal server's secret for player tokens (`--player-key hs256:…`).
    pub const PLAYER_SECRET: &str = "the-portal-servers-player-secret";

    /// A player token for `user`, valid for an hour, signed HS256 with [`PLAYER_SECRET`] as a
    /// portal's server would sign it.
    pub fn player(user: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"sub": user, "exp": now + 3600}),
            &jsonwebtoken::EncodingKey::from_secret(PLAYER_SECRET.as_bytes()),
        )
        .expect("a player token")
    }
}

/// A broker with a key for each role, a player key and an agent token ([`keys`]), and one
/// agent, `host-a` (labelled `region=eu-west`), online.
pub async fn secured() -> (TestBroker, TestAgent) {
    let broker = TestBroker::start_with(BrokerOptions {
        api_keys: vec![
            format!("portal:{}", keys::PORTAL),
            format!("provider:{}", keys::PROVIDER),
            format!("admin:{}", keys::ADMIN),
        ],
        player_keys: vec![format!("hs256:{}", keys::PLAYER_SECRET)],
        agent_token: Some(keys::AGENT.into()),
        ..Default::default()
    })
    .await;
    let mut opts = AgentOptions::host("host-a");
    opts.token = Some(keys::AGENT.into());
    opts.labels = [("region".to_owned(), "eu-west".to_owned())].into();
    let agent = TestAgent::start(broker.agent_addr, opts).await;
    let admin =
        portal_client::Client::new(&broker.url, Some(keys::ADMIN.into())).expect("a client");
    wait_hosts_online(&admin, 1).await;
    (broker, agent)
}

/// An agent under test, running in this process like the broker's `--dev` agent.
pub struct TestAgent {
    /// Its host id.
    pub host_id: HostId,
    /// Its `--state-dir` (game logs).
    pub state_dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), agent::AgentError>>>,
    /// Ends the games left in its own state directory once it has stopped (none when the
    /// test gave it a directory: the test's [`StateDir`] does that).
    reaper: Option<Reaper>,
}

/// Agent settings for a test.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `--host-id`.
    pub host_id: String,
    /// `--max-sessions`.
    pub max_sessions: u32,
    /// `--port-range`; by default [`fresh_port_range`]'s 10 ports.
    pub port_range: Option<PortRange>,
    /// `--stop-grace`.
    pub stop_grace: Duration,
    /// `--token`.
    pub token: Option<String>,
    /// The catalog; by default [`test_catalog`].
    pub catalog: Option<Catalog>,
    /// `--stop-games-on-exit`; on by default in tests, so no game outlives its test.
    pub stop_games_on_exit: bool,
    /// `--state-dir`; by default a new temporary directory.
    pub state_dir: Option<PathBuf>,
    /// `--run-as`.
    pub run_as: Option<String>,
    /// `--broker-ca` and friends.
    pub tls: Option<agent::tls::Tls>,
    /// More brokers after the first (`--broker A,B,...`), tried in turn.
    pub more_brokers: Vec<SocketAddr>,
    /// `--build-cache`.
    pub build_cache: u64,
    /// `--label`s.
    pub labels: protocol::labels::Labels,
    /// `--gpus`.
    pub gpus: Vec<u32>,
}

impl AgentOptions {
    /// Defaults with this host id.
    pub fn host(id: &str) -> Self {
        Self {
            host_id: id.to_owned(),
            max_sessions: 8,
            port_range: None,
            stop_grace: Duration::from_secs(5),
            token: None,
            catalog: None,
            stop_games_on_exit: true,
            state_dir: None,
            run_as: None,
            tls: None,
            more_brokers: Vec::new(),
            build_cache: agent::DEFAULT_BUILD_CACHE,
            labels: Default::default(),
            gpus: Vec::new(),
        }
    }
}

/// A port range no other agent of this test process uses.
pub fn fresh_port_range() -> PortRange {
    fresh_port_ranges(1)
}

/// `n` of [`fresh_port_range`]'s ranges side by side (10 × `n` ports, `n` at most 30).
pub fn fresh_port_ranges(n: u16) -> PortRange {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Below Linux's ephemeral range (32768 and up), so no port-0 listener or outgoing
    // connection takes a game's port: 40 blocks of 30 ranges of 10 ports in 20000-31999, a
    // block per test process, a range per agent.
    let n = n.clamp(1, 30);
    let block = (std::process::id() % 40) as u16;
    let slot = loop {
        let first = NEXT.fetch_add(n, Ordering::Relaxed) % 30;
        if first + n <= 30 {
            break first;
        }
    };
    let lo = 20000 + block * 300 + slot * 10;
    PortRange {
        lo,
        hi: lo + 10 * n - 1,
    }
}

/// A GamingAnywhere-style server config, as `ga-style` games start from it.
pub const GA_SERVER: &str = "\
# GamingAnywhere event-driven server
[core]
include = common/server-common.conf

[video]
video-fps = 60                  # Video frame-per-sec (FPS)
video-specific[b] = 18000000    # Video bitrate

[ga-server-event-driven]
server-port = 8554
display = :0
enable-audio = true
";

/// The file name of [`GA_SERVER`] in [`config_dir`].
pub const GA_SERVER_CONF: &str = "ga-server.conf";

/// The directory of config files the `configured` and `ga-style` games use (holds
/// `good.conf`, and [`GA_SERVER_CONF`] with its `common/` include).
pub fn config_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("good.conf"), "level = 1\n").expect("write config");
        std::fs::create_dir_all(d.path().join("common")).expect("common dir");
        std::fs::write(d.path().join("common/server-common.conf"), "# shared\n")
            .expect("write config");
        std::fs::write(d.path().join(GA_SERVER_CONF), GA_SERVER).expect("write config");
        d
    })
    .path()
}

/// Where `slow-toucher` games say they are ready (`{session_id}.ready`).
pub fn ready_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("arcade-ready-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("ready dir");
    dir
}

/// The status and code of an API error (a test fails on any other error).
pub fn api_error(e: &portal_client::ClientError) -> (u16, protocol::api::ErrorCode) {
    match e {
        portal_client::ClientError::Api { status, code, .. } => (*status, *code),
        other => panic!("not an API error: {other}"),
    }
}

/// Where the test catalog's `joiner` writes each session's `ARCADE_JOIN_URL` and
/// `ARCADE_GAME_KEY` (`<session>.env`), for tests that redeem as its game would.
pub fn join_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("arcade-join-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("join dir");
    dir
}

/// The `ARCADE_JOIN_URL` and `ARCADE_GAME_KEY` a `joiner` session's game was given, once its
/// game has written them.
pub async fn join_env(session: &protocol::SessionId) -> (String, String) {
    let path = join_dir().join(format!("{session}.env"));
    wait_until(
        "the game wrote its join env",
        Duration::from_secs(10),
        || {
            let path = path.clone();
            async move { std::fs::read_to_string(path).is_ok_and(|t| t.ends_with('\n')) }
        },
    )
    .await;
    let text = std::fs::read_to_string(path).expect("join env");
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_default()
            .to_owned()
    };
    (get("ARCADE_JOIN_URL"), get("ARCADE_GAME_KEY"))
}

/// The `idle_timeout_s` of the test catalog's `idler`.
pub const IDLE_TIMEOUT_S: u32 = 2;

/// The test catalog:
/// - `game` (modes `normal`, `hard`): listens on its port;
/// - `crasher`: exits with code 3 after 300 ms;
/// - `instant-crash`: exits with code 7 at once;
/// - `stubborn`: ignores SIGTERM;
/// - `forker`: a launcher that forks the listening game and exits;
/// - `fork-crasher`: a launcher whose forked game exits with code 5 after 300 ms;
/// - `configured`: takes `{config}` from [`config_dir`];
/// - `ga-style`: two ports, and its own copy of [`GA_SERVER`] with its ports and slot set,
///   and `video-fps` a setting (30, 45 or 60; 45 by default);
/// - `sleeper`: `/bin/sleep 3600`;
/// - `broken`: a program that does not exist;
/// - `limited`: `/bin/sleep 3600` with at most 16 processes and 64 MiB;
/// - `chatty`: prints 20,000 lines, then listens;
/// - `slow-listener`, `slow-logger`, `slow-toucher`: ready 700 ms after they start, by a TCP
///   connect, a `ready` line of output, or a file in [`ready_dir`];
/// - `never-ready`: never listens (ready by TCP within 1 s);
/// - `dies-before-ready`: exits with code 4 after 300 ms, before it listens;
/// - `timed`: listens, and ends `expired` at an hour (`max_duration_s = 3600`);
/// - `idler`: listens, and ends `idle` after 2 s without a connection (`idle_timeout_s`);
/// - `joiner`: listens, redeems each player's join token (`--join`), and writes its join env
///   to [`join_dir`].
pub fn test_catalog() -> Catalog {
    let game = test_game().display().to_string();
    let entry = |command: &str, args: &[&str], modes: &[&str]| GameEntry {
        command: command.to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        modes: modes.iter().map(|m| (*m).to_owned()).collect(),
        ..GameEntry::default()
    };
    let mut configured = entry(&game, &["--config", "{config}", "--listen"], &[]);
    configured.config_dir = Some(config_dir().to_owned());
    configured.default_config = Some("good.conf".into());
    Catalog::from_entries([
        (
            "game".to_owned(),
            entry(&game, &["--listen"], &["normal", "hard"]),
        ),
        (
            "crasher".to_owned(),
            entry(&game, &["--exit-after-ms", "300", "--exit-code", "3"], &[]),
        ),
        (
            "instant-crash".to_owned(),
            entry(&game, &["--exit-after-ms", "0", "--exit-code", "7"], &[]),
        ),
        ("stubborn".to_owned(), entry(&game, &["--ignore-term"], &[])),
        ("slow-listener".to_owned(), {
            let mut e = entry(&game, &["--listen", "--listen-after-ms", "700"], &[]);
            e.ready = Some(ReadyEntry {
                tcp: Some(true),
                ..ReadyEntry::default()
            });
            e.ready_timeout = Some(10.0);
            e
        }),
        ("slow-logger".to_owned(), {
            let mut e = entry(&game, &["--listen", "--listen-after-ms", "700"], &[]);
            e.ready = Some(ReadyEntry {
                log: Some("^ready$".into()),
                ..ReadyEntry::default()
            });
            e
        }),
        ("slow-toucher".to_owned(), {
            let touch = ready_dir().join("{session_id}.ready").display().to_string();
            let mut e = entry(&game, &["--listen-after-ms", "700", "--touch", &touch], &[]);
            e.ready = Some(ReadyEntry {
                file: Some(touch),
                ..ReadyEntry::default()
            });
            e
        }),
        ("never-ready".to_owned(), {
            let mut e = entry(&game, &[], &[]);
            e.ready = Some(ReadyEntry {
                tcp: Some(true),
                ..ReadyEntry::default()
            });
            e.ready_timeout = Some(1.0);
            e
        }),
        ("dies-before-ready".to_owned(), {
            let mut e = entry(&game, &["--exit-after-ms", "300", "--exit-code", "4"], &[]);
            e.ready = Some(ReadyEntry {
                tcp: Some(true),
                ..ReadyEntry::default()
            });
            e
        }),
        (
            "chatty".to_owned(),
            entry(&game, &["--print-lines", "20000", "--listen"], &[]),
        ),
        (
            "forker".to_owned(),
            entry(&game, &["--fork", "--listen"], &[]),
        ),
        (
            "fork-crasher".to_owned(),
            entry(
                &game,
                &["--fork", "--exit-after-ms", "300", "--exit-code", "5"],
                &[],
            ),
        ),
        ("configured".to_owned(), configured),
        ("ga-style".to_owned(), {
            let mut e = entry(&game, &["--config", "{config}", "--listen"], &[]);
            e.config_dir = Some(config_dir().to_owned());
            e.default_config = Some(GA_SERVER_CONF.into());
            e.ports = Some(2);
            e.config_set = std::collections::BTreeMap::from([
                ("server-port".to_owned(), "{port}".to_owned()),
                ("control-port".to_owned(), "{port1}".to_owned()),
                ("display".to_owned(), ":{slot}".to_owned()),
            ]);
            e.settings = std::collections::BTreeMap::from([(
                "video-fps".to_owned(),
                agent::catalog::SettingEntry {
                    values: vec!["30".into(), "45".into(), "60".into()],
                    default: Some("45".into()),
                    ..agent::catalog::SettingEntry::default()
                },
            )]);
            e
        }),
        ("timed".to_owned(), {
            let mut e = entry(&game, &["--listen"], &[]);
            e.max_duration_s = Some(3600);
            e
        }),
        ("idler".to_owned(), {
            let mut e = entry(&game, &["--listen"], &[]);
            e.idle_timeout_s = Some(IDLE_TIMEOUT_S);
            e
        }),
        ("joiner".to_owned(), {
            let dir = join_dir().display().to_string();
            let mut e = entry(&game, &["--listen", "--join", "--join-env-dir", &dir], &[]);
            // Its start answers once it listens: a player's client connects at once.
            e.ready = Some(ReadyEntry {
                tcp: Some(true),
                ..ReadyEntry::default()
            });
            e.ready_timeout = Some(10.0);
            e
        }),
        ("sleeper".to_owned(), entry("/bin/sleep", &["3600"], &[])),
        // Offered only by hosts with a GPU (`AgentOptions::gpus`).
        ("gpu-sleeper".to_owned(), {
            let mut e = entry("/bin/sleep", &["3600"], &[]);
            e.gpus = Some(1);
            e
        }),
        (
            "broken".to_owned(),
            entry("/nonexistent/arcade/game", &[], &[]),
        ),
        ("limited".to_owned(), {
            let mut e = entry("/bin/sleep", &["3600"], &[]);
            e.limits = Some(agent::limits::Limits {
                max_processes: Some(16),
                memory_mb: Some(64),
            });
            e
        }),
    ])
    .expect("test catalog")
}

impl TestAgent {
    /// Starts an agent connecting to `broker_addr`.
    pub async fn start(broker_addr: SocketAddr, opts: AgentOptions) -> Self {
        init_tracing();
        let state_dir = tempfile::tempdir().expect("tempdir");
        let host_id = HostId::new(opts.host_id).expect("host id");
        let config = agent::Config {
            brokers: std::iter::once(broker_addr)
                .chain(opts.more_brokers)
                .map(|a| a.to_string())
                .collect(),
            catalog: opts.catalog.unwrap_or_else(test_catalog),
            host_id: host_id.clone(),
            hostname: "test".into(),
            advertise_ip: None,
            token: opts.token,
            cpus: 2,
            max_sessions: opts.max_sessions,
            port_range: opts.port_range.unwrap_or_else(fresh_port_range),
            state_dir: opts
                .state_dir
                .clone()
                .unwrap_or_else(|| state_dir.path().to_owned()),
            stop_grace: opts.stop_grace,
            log_retention: Duration::from_secs(7 * 86_400),
            backoff: agent::Backoff {
                min: Duration::from_millis(20),
                max: Duration::from_millis(200),
            },
            stop_games_on_exit: opts.stop_games_on_exit,
            run_as: opts
                .run_as
                .as_deref()
                .map(|u| agent::games::RunAs::lookup(u).expect("--run-as user")),
            tls: opts.tls.clone(),
            metrics: None,
            build_cache: opts.build_cache,
            labels: opts.labels.clone(),
            gpus: opts.gpus.clone(),
        };
        let reaper = opts
            .state_dir
            .is_none()
            .then(|| Reaper::for_state_dir(state_dir.path()));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(agent::run(config, shutdown.clone()));
        Self {
            host_id,
            state_dir,
            shutdown,
            task: Some(task),
            reaper,
        }
    }

    /// Stops the agent (which stops its games) and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    }
}

impl Drop for TestAgent {
    /// Stops the agent and so its games, even when a test panics: games run in their own
    /// process groups and would otherwise outlive the test process. Games it left running
    /// (`stop_games_on_exit` off) in its own state directory are ended then.
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                tokio::task::block_in_place(|| {
                    let _ = rt.block_on(tokio::time::timeout(Duration::from_secs(30), t));
                });
            }
        }
        drop(self.reaper.take());
        // Builds are unpacked read-only: writable again, so the directory can be removed.
        let _ = archive::make_writable(&self.state_dir.path().join("builds"));
    }
}

/// Waits until `check` is true, polling every 20 ms, and panics naming `what` after `within`.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a process with this PID exists (a zombie counts).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(p) = i32::try_from(pid) else {
        return false;
    };
    !matches!(kill(Pid::from_raw(p), None), Err(Errno::ESRCH))
}

/// Whether any process of this process group exists.
pub fn group_alive(pgid: u32) -> bool {
    let Ok(p) = i32::try_from(pgid) else {
        return false;
    };
    !matches!(killpg(Pid::from_raw(p), None), Err(Errno::ESRCH))
}

/// Reads one line from `127.0.0.1:port`.
pub async fn greeting(port: u16) -> std::io::Result<String> {
    use tokio::io::AsyncBufReadExt;
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::BufReader::new(s).read_line(&mut line),
    )
    .await
    .map_err(|_| std::io::Error::other("no greeting within 5 s"))??;
    Ok(line.trim_end().to_owned())
}

/// A hand-driven agent speaking the real protocol over a real socket, for what a well-behaved
/// agent never does: answer late, go silent, send an old version.
pub struct FakeAgent {
    framed: tokio_util::codec::Framed<
        tokio::net::TcpStream,
        protocol::codec::MessageCodec<protocol::wire::BrokerMessage, protocol::wire::AgentMessage>,
    >,
}

/// A `Hello` for a fake host offering `sleeper`, with the given version and token.
pub fn fake_hello(host: &str, version: u32, token: Option<&str>) -> protocol::wire::Hello {
    use protocol::wire::{GameOffer, Hello, HostFacts};
    Hello {
        protocol_version: version,
        host_id: HostId::new(host).expect("host id"),
        token: token.map(str::to_owned),
        facts: HostFacts {
            hostname: "fake".into(),
            ip: "127.0.0.1".parse().expect("ip"),
            cpus: 1,
            mem_total_bytes: 1 << 30,
            games: vec![GameOffer {
                game_id: protocol::GameId::new("sleeper").expect("game id"),
                modes: vec![protocol::wire::DEFAULT_MODE.to_owned()],
                ready_timeout_ms: None,
                settings: Vec::new(),
                max_duration_s: None,
                idle_timeout_s: None,
                build: None,
                gpus: 0,
                slots: 1,
            }],
            max_sessions: 4,
            port_range: PortRange { lo: 1, hi: 100 },
            builds: Vec::new(),
            gpus: Vec::new(),
            labels: Default::default(),
        },
        running: Vec::new(),
        exited: Vec::new(),
    }
}

impl FakeAgent {
    /// Connects and sends `hello`; `Err` holds the broker's rejection.
    pub async fn connect(addr: SocketAddr, hello: protocol::wire::Hello) -> Result<Self, String> {
        use futures::{SinkExt, StreamExt};
        use protocol::codec::MessageCodec;
        use protocol::wire::{Hello, HelloReply};
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut framed =
            tokio_util::codec::Framed::new(stream, MessageCodec::<HelloReply, Hello>::new());
        framed.send(hello).await.map_err(|e| e.to_string())?;
        let reply = tokio::time::timeout(Duration::from_secs(10), framed.next())
            .await
            .map_err(|_| "no answer to the handshake".to_owned())?;
        match reply {
            Some(Ok(HelloReply::Welcome { .. })) => Ok(Self {
                framed: framed.map_codec(|_| MessageCodec::new()),
            }),
            Some(Ok(HelloReply::Rejected(reason))) => Err(reason),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("closed".into()),
        }
    }

    /// Connects as host `host` (no token, this build's version); panics if refused.
    pub async fn connect_as(addr: SocketAddr, host: &str) -> Self {
        let hello = fake_hello(host, protocol::wire::PROTOCOL_VERSION, None);
        Self::connect(addr, hello)
            .await
            .expect("the broker admits the fake agent")
    }

    /// Waits for the broker's next message and asserts it is a launch request.
    pub async fn expect_launch(&mut self) -> protocol::wire::LaunchRequest {
        match self.recv(Duration::from_secs(10)).await {
            Some(protocol::wire::BrokerMessage::Launch(req)) => req,
            other => panic!("expected a launch request, got {other:?}"),
        }
    }

    /// Reports `session` launched (pid 4242 at 127.0.0.1, port 1).
    pub async fn launched(&mut self, session: &protocol::SessionId) {
        let msg = protocol::wire::AgentMessage::Launched(protocol::wire::Launched {
            session_id: session.clone(),
            pid: 4242,
            ip: "127.0.0.1".parse().expect("ip"),
            port: 1,
            ports: vec![1],
        });
        self.send(msg).await;
    }

    /// The broker's next message, waiting at most `within`.
    pub async fn recv(&mut self, within: Duration) -> Option<protocol::wire::BrokerMessage> {
        use futures::StreamExt;
        loop {
            match tokio::time::timeout(within, self.framed.next()).await {
                Ok(Some(Ok(protocol::wire::BrokerMessage::HeartbeatAck))) => continue,
                Ok(Some(Ok(m))) => return Some(m),
                _ => return None,
            }
        }
    }

    /// Sends a message.
    pub async fn send(&mut self, msg: protocol::wire::AgentMessage) {
        use futures::SinkExt;
        self.framed.send(msg).await.expect("send to the broker");
    }
}

/// PIDs of live processes started for these sessions (found by the `ARCADE_SESSION_ID` in
/// their environment), wherever they are in the process tree: the orphan check.
pub fn processes_of(sessions: &[protocol::SessionId]) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let wanted: Vec<Vec<u8>> = sessions
        .iter()
        .map(|s| format!("ARCADE_SESSION_ID={s}").into_bytes())
        .collect();
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            {
                return false;
            }
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            env.split(|b| *b == 0)
                .any(|var| wanted.iter().any(|w| var == w.as_slice()))
        })
        .collect()
}

/// Certificates made for a test (rcgen): a CA, a server certificate for `localhost` and
/// `127.0.0.1`, and a client certificate, all signed by the CA, as PEM files.
pub struct TestPki {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server's certificate and key.
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// A client certificate (for mutual TLS) and its key.
    pub client_cert: PathBuf,
    /// The client certificate's key.
    pub client_key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestPki {
    /// Makes a fresh CA and certificates.
    pub fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, pem: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, pem).expect("write pem");
            p
        };
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "Arcade test CA");
        let ca = ca.self_signed(&ca_key).expect("CA");
        let server_key = KeyPair::generate().expect("key");
        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("params");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = server
            .signed_by(&server_key, &ca, &ca_key)
            .expect("server cert");
        let client_key = KeyPair::generate().expect("key");
        let mut client = CertificateParams::new(vec!["agent.test".to_owned()]).expect("params");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        client
            .distinguished_name
            .push(DnType::CommonName, "arcade agent");
        let client = client
            .signed_by(&client_key, &ca, &ca_key)
            .expect("client cert");
        Self {
            ca: write("ca.pem", ca.pem()),
            server_cert: write("server.pem", server.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            client_cert: write("client.pem", client.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
            _dir: dir,
        }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// Waits (at most 20 s) until exactly `n` hosts are online.
pub async fn wait_hosts_online(client: &portal_client::Client, n: usize) {
    wait_until(
        &format!("{n} hosts are online"),
        Duration::from_secs(20),
        || {
            let client = client.clone();
            async move {
                client.hosts().await.is_ok_and(|h| {
                    h.hosts
                        .iter()
                        .filter(|h| h.status == protocol::api::HostStatus::Online)
                        .count()
                        == n
                })
            }
        },
    )
    .await;
}

/// Waits (at most 20 s) until no session is `starting` or `stopping`.
pub async fn wait_sessions_settled(client: &portal_client::Client) {
    use protocol::api::{SessionQuery, SessionStatus};
    wait_until("every session settles", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            client
                .list_sessions(&SessionQuery::default())
                .await
                .is_ok_and(|l| {
                    l.sessions.iter().all(|s| {
                        s.status != SessionStatus::Starting && s.status != SessionStatus::Stopping
                    })
                })
        }
    })
    .await;
}
