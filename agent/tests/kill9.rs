//! The real `arcade-agent` binary killed with `kill -9` in the middle of a load of starts and
//! ends, then started again: its games keep running, their sessions unchanged, and no game is
//! left without a session.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use portal_client::Client;
use protocol::api::{SessionQuery, SessionStatus};
use protocol::SessionId;
use tests::{group_alive, processes_of, wait_until, TestBroker};

const WAIT: Duration = Duration::from_secs(20);

struct Agent(Child);

impl Agent {
    fn spawn(broker: SocketAddr, dir: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agent.log"))
            .unwrap();
        Self(
            Command::new(env!("CARGO_BIN_EXE_arcade-agent"))
                .args(["--broker", &broker.to_string()])
                .args(["--catalog", &dir.join("catalog.toml").display().to_string()])
                .args([
                    "--host-id",
                    "kill9",
                    "--max-sessions",
                    "6",
                    "--stop-grace",
                    "1",
                ])
                .args(["--port-range", "31500-31599"])
                .args(["--state-dir", &dir.join("state").display().to_string()])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn online(client: &Client) {
    tests::wait_hosts_online(client, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_restarts_and_readopts_its_games() {
    let dir = tempfile::tempdir().unwrap();
    // Killing the agent leaves its games running: they end with the test, pass or fail.
    let _games = tests::Reaper::for_state_dir(&dir.path().join("state"));
    std::fs::write(
        dir.path().join("catalog.toml"),
        "[games.sleeper]\ncommand = \"/bin/sleep\"\nargs = [\"3600\"]\n",
    )
    .unwrap();
    let broker = TestBroker::start().await;
    let client = Client::new(&broker.url, None).unwrap();
    let mut agent = Agent::spawn(broker.agent_addr, dir.path());
    online(&client).await;

    let mut running = Vec::new();
    for _ in 0..3 {
        running.push(
            client
                .start_session(&tests::start("sleeper"))
                .await
                .unwrap(),
        );
    }
    // Load in flight, then kill -9.
    let mut load = Vec::new();
    for i in 0..4 {
        let client = client.clone();
        let end = (i == 0).then(|| running[0].session_id.clone());
        load.push(tokio::spawn(async move {
            match end {
                Some(id) => client.end_session(&id).await,
                None => client.start_session(&tests::start("sleeper")).await,
            }
        }));
    }
    // Not a synchronisation: the fault's timing.
    tokio::time::sleep(Duration::from_millis(10)).await;
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    for t in load {
        if let Ok(s) = t.await.unwrap() {
            if s.status == SessionStatus::Running {
                running.push(s);
            }
        }
    }
    let _agent = Agent::spawn(broker.agent_addr, dir.path());
    online(&client).await;

    // Every session settles; acknowledged running sessions whose end was not asked still run,
    // with the same game.
    tests::wait_sessions_settled(&client).await;
    for s in &running[1..] {
        let now = client.get_session(&s.session_id).await.unwrap();
        assert_eq!(
            (now.status, now.pid),
            (SessionStatus::Running, s.pid),
            "{}",
            s.session_id
        );
        assert!(group_alive(s.pid.unwrap()));
    }
    // No game without a live session: the processes of every session are exactly those of the
    // running ones.
    let all = client
        .list_sessions(&SessionQuery::default())
        .await
        .unwrap()
        .sessions;
    let ids: Vec<SessionId> = all.iter().map(|s| s.session_id.clone()).collect();
    let live: HashSet<u32> = all
        .iter()
        .filter(|s| s.status == SessionStatus::Running)
        .map(|s| s.pid.unwrap())
        .collect();
    wait_until("stray games are stopped", WAIT, || {
        let (ids, live) = (ids.clone(), live.clone());
        async move { processes_of(&ids).into_iter().collect::<HashSet<_>>() == live }
    })
    .await;
    // And they end as usual.
    for s in all.iter().filter(|s| s.status == SessionStatus::Running) {
        client.end_session(&s.session_id).await.unwrap();
    }
    assert!(processes_of(&ids).is_empty());
}
