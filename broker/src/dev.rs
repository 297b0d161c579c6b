//! `--dev`: a local agent inside the broker, with a built-in catalog of demo games, so that one
//! command gives a working system; and the demo game itself.
//!
//! The demo game is this same executable started as `arcade-broker demo-game ...` (so
//! `cargo run --bin arcade-broker -- --dev` needs nothing else built): it listens on its port,
//! greets every connection with its title and session id, and exits with status 0 on SIGTERM.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agent::catalog::{Catalog, CatalogError, GameEntry, ReadyEntry};
use protocol::wire::PortRange;
use protocol::HostId;

/// The first argument that makes the broker executable run as the demo game.
pub const DEMO_GAME_ARG: &str = "demo-game";

/// Settings of the in-process dev agent.
#[derive(Debug, Clone)]
pub struct DevConfig {
    /// The program that runs a demo game (`<it> demo-game ...`).
    pub program: PathBuf,
    /// Ports for the demo games.
    pub port_range: PortRange,
    /// Concurrent demo games.
    pub max_sessions: u32,
}

impl DevConfig {
    /// Demo games run by this very executable.
    pub fn from_current_exe() -> Self {
        Self {
            program: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("arcade-broker")),
            port_range: PortRange {
                lo: 20000,
                hi: 20999,
            },
            max_sessions: 8,
        }
    }

    /// The built-in catalog: two demo games of our own and a plain sleeper.
    pub fn catalog(&self) -> Result<Catalog, CatalogError> {
        let program = self.program.display().to_string();
        let demo = |title: &str, modes: &[&str]| GameEntry {
            command: program.clone(),
            args: [
                DEMO_GAME_ARG,
                "--title",
                title,
                "--mode",
                "{mode}",
                "--port",
                "{port}",
                "--session",
                "{session_id}",
            ]
            .map(String::from)
            .to_vec(),
            modes: modes.iter().map(|m| (*m).to_owned()).collect(),
            // Games get no environment of the agent's: pass the bind address on explicitly.
            env: BTreeMap::from([(
                "DEMO_BIND".to_owned(),
                std::env::var("ARCADE_DEMO_BIND").unwrap_or_else(|_| "0.0.0.0".into()),
            )]),
            limits: None,
            // Answered once the demo game listens, as a streamed game's server should be.
            ready: Some(ReadyEntry {
                tcp: Some(true),
                ..ReadyEntry::default()
            }),
            ready_timeout: Some(10.0),
            ..GameEntry::default()
        };
        Catalog::from_entries([
            ("pong".to_owned(), demo("Pong", &["classic", "turbo"])),
            ("tetris".to_owned(), demo("Tetris", &["marathon", "sprint"])),
            (
                "sleeper".to_owned(),
                GameEntry {
                    command: "/bin/sleep".into(),
                    args: vec!["3600".into()],
                    ..GameEntry::default()
                },
            ),
        ])
    }

    /// The dev agent's configuration, connecting to `broker`.
    pub fn agent_config(
        &self,
        broker: SocketAddr,
        token: Option<String>,
        state_dir: PathBuf,
    ) -> Result<agent::Config, CatalogError> {
        Ok(agent::Config {
            brokers: vec![broker.to_string()],
            catalog: self.catalog()?,
            host_id: HostId::new("dev-local").map_err(|e| CatalogError::Entry {
                game: String::new(),
                message: e.to_string(),
            })?,
            hostname: "localhost".into(),
            advertise_ip: Some(broker.ip()),
            token,
            cpus: 1,
            max_sessions: self.max_sessions,
            port_range: self.port_range,
            state_dir,
            stop_grace: Duration::from_secs(5),
            log_retention: Duration::from_secs(7 * 86_400),
            backoff: agent::Backoff::default(),
            // Its state directory is per broker process, so its games could not be found again.
            stop_games_on_exit: true,
            build_cache: agent::DEFAULT_BUILD_CACHE,
            labels: Default::default(),
            gpus: Vec::new(),
            run_as: None,
            tls: None,
            metrics: None,
        })
    }
}

/// Runs the demo game: `demo-game --title T --mode M --port P --session S`. Returns the exit
/// code.
pub fn demo_game_main(args: &[String]) -> i32 {
    let mut title = "Demo".to_owned();
    let mut mode = "default".to_owned();
    let mut port: u16 = 0;
    let mut session = String::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().cloned().unwrap_or_default();
        match flag.as_str() {
            "--title" => title = value,
            "--mode" => mode = value,
            "--port" => port = value.parse().unwrap_or(0),
            "--session" => session = value,
            other => {
                eprintln!("demo-game: unknown flag {other}");
                return 2;
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo-game: {e}");
            return 1;
        }
    };
    runtime.block_on(async move {
        use tokio::io::AsyncWriteExt;
        use tokio::signal::unix::{signal, SignalKind};
        let bind = std::env::var("DEMO_BIND").unwrap_or_else(|_| "0.0.0.0".into());
        let listener = match tokio::net::TcpListener::bind((bind.as_str(), port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("demo-game: cannot listen on {bind}:{port}: {e}");
                return 1;
            }
        };
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return 1;
        };
        println!("{title} ({mode}) for session {session} listening on {bind}:{port}");
        let greeting = format!("arcade demo game {title} ({mode}): session {session}\n");
        loop {
            tokio::select! {
                _ = term.recv() => {
                    println!("{title}: SIGTERM, bye");
                    return 0;
                }
                conn = listener.accept() => {
                    if let Ok((mut stream, _)) = conn {
                        let _ = stream.write_all(greeting.as_bytes()).await;
                    }
                }
            }
        }
    })
}
