//! `arcade-broker --dev` as a new user runs it: the real binary, its in-process agent and its
//! demo games, then a graceful stop by SIGTERM that leaves no game behind.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 20 ms for at most `within`.
fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn group_alive(pgid: u32) -> bool {
    killpg(Pid::from_raw(pgid as i32), None).is_ok()
}

#[test]
fn dev_mode_runs_demo_games_and_stops_cleanly() {
    let (http, agents) = (free_port(), free_port());
    let mut broker = Broker(
        Command::new(env!("CARGO_BIN_EXE_arcade-broker"))
            .args(["--dev", "--http", &format!("127.0.0.1:{http}")])
            .args(["--agent-listen", &format!("127.0.0.1:{agents}")])
            .env("ARCADE_DEMO_BIND", "127.0.0.1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{http}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let get = |path: &str| -> Option<Value> {
        let url = format!("{base}{path}");
        rt.block_on(async { reqwest::get(url).await.ok()?.json().await.ok() })
    };
    let games = wait_for("the dev agent's games", Duration::from_secs(20), || {
        get("/v1/games").filter(|g| g["games"].as_array().is_some_and(|a| a.len() >= 2))
    });
    let names: Vec<&str> = games["games"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["game_id"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"pong") && names.contains(&"tetris"),
        "{names:?}"
    );

    let client = reqwest::Client::new();
    let session: Value = rt.block_on(async {
        client
            .post(format!("{base}/v1/sessions"))
            .json(&serde_json::json!({"game_id": "pong", "mode": "turbo"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(session["status"], "running", "{session}");
    let id = session["session_id"].as_str().unwrap().to_owned();
    let port = session["port"].as_u64().unwrap() as u16;
    let pid = session["pid"].as_u64().unwrap() as u32;
    // The demo game answers on its port with its session id.
    let line = wait_for("the demo game's greeting", Duration::from_secs(10), || {
        let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        Some(line)
    });
    assert!(
        line.contains("Pong (turbo)") && line.contains(&id),
        "{line}"
    );

    // A second game stays running until the broker stops: SIGTERM then takes it down.
    let other: Value = rt.block_on(async {
        client
            .post(format!("{base}/v1/sessions"))
            .json(&serde_json::json!({"game_id": "tetris"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let other_pid = other["pid"].as_u64().unwrap() as u32;

    let ended: Value = rt.block_on(async {
        client
            .delete(format!("{base}/v1/sessions/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(ended["status"], "ended");
    assert!(!group_alive(pid), "the demo game outlived its end");

    kill(Pid::from_raw(broker.0.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_for("the broker to exit", Duration::from_secs(30), || {
        broker.0.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
    assert!(!group_alive(other_pid), "the dev agent left a game running");
}
