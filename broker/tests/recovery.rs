//! Durable sessions as an operator meets them: the real `arcade-broker` binary on a real
//! MariaDB, agents that outlive it, `kill -9` of the broker in the middle of starts and ends,
//! a restart on the same database, and every session compared with what was acknowledged.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use portal_client::Client;
use protocol::api::{EndReason, HostStatus, SessionQuery, SessionStatus};
use protocol::{HostId, SessionId};
use tests::{group_alive, mariadb, wait_until, AgentOptions, TestAgent};

const WAIT: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Broker(Child);

impl Broker {
    fn spawn(db: &str, http: u16, agents: u16) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!("arcade-recovery-broker-{http}-{n}.log"));
        Self(
            Command::new(env!("CARGO_BIN_EXE_arcade-broker"))
                .args(["--http", &format!("127.0.0.1:{http}")])
                .args(["--agent-listen", &format!("127.0.0.1:{agents}")])
                .args(["--database-url", db, "--heartbeat-timeout", "5"])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(
                    std::fs::File::create(log)
                        .map(Stdio::from)
                        .unwrap_or_else(|_| Stdio::null()),
                )
                .spawn()
                .unwrap(),
        )
    }

    fn kill9(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn hosts_online(client: &Client, n: usize) {
    wait_until("the hosts are connected", WAIT, || {
        let client = client.clone();
        async move {
            client.hosts().await.is_ok_and(|h| {
                h.hosts
                    .iter()
                    .filter(|h| h.status != HostStatus::Offline)
                    .count()
                    == n
            })
        }
    })
    .await;
}

/// Game leaders started by this process's agents (they are our children): `/bin/sleep 3600`.
fn our_sleepers() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            cmd == b"/bin/sleep\x003600\x00" && ppid == Some(me) && !stat.contains(") Z ")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_restarts_on_its_database_and_loses_nothing() {
    let Some(db) = mariadb::database().await else {
        return;
    };
    let (http, agent_port) = (free_port(), free_port());
    let mut broker = Broker::spawn(&db, http, agent_port);
    let client = Client::new(&format!("http://127.0.0.1:{http}"), None).unwrap();
    wait_until("the broker answers", WAIT, || {
        let client = client.clone();
        async move { client.health().await.is_ok() }
    })
    .await;
    let broker_addr = format!("127.0.0.1:{agent_port}").parse().unwrap();
    let _a = TestAgent::start(broker_addr, AgentOptions::host("host-a")).await;
    let _b = TestAgent::start(broker_addr, AgentOptions::host("host-b")).await;
    hosts_online(&client, 2).await;

    // Acknowledged work: six starts, two ends, a drained host.
    let mut acked: HashMap<SessionId, (SessionStatus, Option<u32>)> = HashMap::new();
    let mut running = Vec::new();
    for _ in 0..6 {
        let s = client
            .start_session(&tests::start("sleeper"))
            .await
            .unwrap();
        acked.insert(s.session_id.clone(), (s.status, s.pid));
        running.push(s);
    }
    for s in running.drain(..2) {
        let e = client.end_session(&s.session_id).await.unwrap();
        acked.insert(e.session_id.clone(), (e.status, e.pid));
    }
    client
        .drain_host(&HostId::new("host-b").unwrap())
        .await
        .unwrap();

    // A burst of starts and ends, and kill -9 in the middle of it. An end in flight may or may
    // not have taken effect; if it did, it completes after the restart.
    let ending: Vec<SessionId> = running[..2].iter().map(|s| s.session_id.clone()).collect();
    let mut burst = Vec::new();
    let ends = ending.iter().cloned().map(Some);
    for end in ends.chain(std::iter::repeat_n(None, 6)) {
        let client = client.clone();
        burst.push(tokio::spawn(async move {
            match end {
                Some(id) => client.end_session(&id).await,
                None => client.start_session(&tests::start("sleeper")).await,
            }
        }));
    }
    // Not a synchronisation: the fault's timing. Some requests are answered, some cut short.
    tokio::time::sleep(Duration::from_millis(15)).await;
    broker.kill9();
    for t in burst {
        if let Ok(s) = t.await.unwrap() {
            acked.insert(s.session_id.clone(), (s.status, s.pid));
        }
    }
    // A game ends while no broker runs: SIGTERM to its group (sleep dies of it: 128 + 15).
    let victim = running.last().unwrap().clone();
    let victim_pid = victim.pid.unwrap();
    killpg(Pid::from_raw(victim_pid as i32), Signal::SIGTERM).unwrap();
    wait_until("the victim is gone", WAIT, || async move {
        !group_alive(victim_pid)
    })
    .await;

    let _broker = Broker::spawn(&db, http, agent_port);
    wait_until("the new broker answers", WAIT, || {
        let client = client.clone();
        async move { client.health().await.is_ok() }
    })
    .await;
    hosts_online(&client, 2).await;
    let hosts = client.hosts().await.unwrap().hosts;
    let b = hosts
        .iter()
        .find(|h| h.host_id.as_str() == "host-b")
        .unwrap();
    assert_eq!(
        b.status,
        HostStatus::Draining,
        "the drained flag survived the restart"
    );

    // Every session settles: none stays starting or stopping.
    tests::wait_sessions_settled(&client).await;
    let victim_now = client.get_session(&victim.session_id).await.unwrap();
    if acked.get(&victim.session_id).map(|a| a.0) == Some(SessionStatus::Running) {
        assert_eq!(victim_now.status, SessionStatus::Ended);
        assert_eq!(victim_now.end_reason, Some(EndReason::GameExited));
        assert_eq!(victim_now.exit_code, Some(143));
    }
    for (id, (status, pid)) in &acked {
        let now = client.get_session(id).await.unwrap();
        if ending.contains(id) && now.status == SessionStatus::Ended {
            assert_eq!(now.end_reason, Some(EndReason::EndedByRequest), "{id}");
            assert!(!group_alive(pid.unwrap()), "{id} ended but its game runs");
            continue;
        }
        match status {
            SessionStatus::Running if id != &victim.session_id => {
                assert_eq!(
                    now.status,
                    SessionStatus::Running,
                    "{id} was acknowledged running"
                );
                assert_eq!(now.pid, *pid, "{id} kept its game");
                assert!(group_alive(pid.unwrap()));
            }
            SessionStatus::Ended => assert_eq!(now.status, SessionStatus::Ended, "{id}"),
            _ => {}
        }
    }
    // No game runs without a live session, and every running session has its game.
    let all = client
        .list_sessions(&SessionQuery::default())
        .await
        .unwrap()
        .sessions;
    let live: Vec<u32> = all
        .iter()
        .filter(|s| s.status == SessionStatus::Running)
        .map(|s| s.pid.unwrap())
        .collect();
    wait_until("stray games are stopped", WAIT, || {
        let live = live.clone();
        async move {
            let mut games = our_sleepers();
            games.sort_unstable();
            let mut want = live;
            want.sort_unstable();
            games == want
        }
    })
    .await;
    for pid in &live {
        assert!(group_alive(*pid));
    }
    // And they can be ended as usual.
    for s in all.iter().filter(|s| s.status == SessionStatus::Running) {
        let e = client.end_session(&s.session_id).await.unwrap();
        assert_eq!(e.status, SessionStatus::Ended);
        assert!(!group_alive(s.pid.unwrap()));
    }
}

/// A portal following `GET /v1/events` through a `kill -9` of the broker and its restart on
/// the same database: reconnecting with its `Last-Event-ID`, it gets every event exactly once,
/// numbered without a gap, the same as a stream read afterwards from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_loses_and_repeats_nothing_across_a_kill_9() {
    use protocol::api::{Event, EventType};
    use std::sync::{Arc, Mutex};
    use tokio_util::sync::CancellationToken;
    let Some(db) = mariadb::database().await else {
        return;
    };
    let (http, agent_port) = (free_port(), free_port());
    let mut broker = Broker::spawn(&db, http, agent_port);
    let client = Client::new(&format!("http://127.0.0.1:{http}"), None).unwrap();
    wait_until("the broker answers", WAIT, || {
        let client = client.clone();
        async move { client.health().await.is_ok() }
    })
    .await;
    let seen: Arc<Mutex<Vec<Event>>> = Arc::default();
    let stop = CancellationToken::new();
    let collector = {
        let (client, seen, stop) = (client.clone(), Arc::clone(&seen), stop.clone());
        tokio::spawn(async move {
            let mut last = Some(0);
            while !stop.is_cancelled() {
                if let Ok(mut s) = client.events(&[], None, None, last).await {
                    loop {
                        let next = tokio::select! {
                            () = stop.cancelled() => return,
                            n = s.next() => n,
                        };
                        match next {
                            Some(Ok(e)) => {
                                last = Some(e.id);
                                seen.lock().unwrap().push(e);
                            }
                            _ => break,
                        }
                    }
                }
                // Reconnecting, as an EventSource does after its `retry:`.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let broker_addr = format!("127.0.0.1:{agent_port}").parse().unwrap();
    let _agent = TestAgent::start(broker_addr, AgentOptions::host("ev-host")).await;
    hosts_online(&client, 1).await;
    let game = || tests::start("game");
    let mut acked = Vec::new();
    for _ in 0..3 {
        acked.push(client.start_session(&game()).await.unwrap());
    }
    client.end_session(&acked[0].session_id).await.unwrap();
    let burst: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.start_session(&game()).await })
        })
        .collect();
    // Not a synchronisation: the fault's timing. Some starts are answered, some cut short.
    tokio::time::sleep(Duration::from_millis(15)).await;
    broker.kill9();
    for t in burst {
        if let Ok(s) = t.await.unwrap() {
            acked.push(s);
        }
    }
    let _broker = Broker::spawn(&db, http, agent_port);
    hosts_online(&client, 1).await;
    tests::wait_sessions_settled(&client).await;
    for _ in 0..2 {
        let s = client.start_session(&game()).await.unwrap();
        client.end_session(&s.session_id).await.unwrap();
        acked.push(s);
    }
    let host = HostId::new("ev-host").unwrap();
    client.drain_host(&host).await.unwrap();
    wait_until("the collector has seen the drain", WAIT, || async {
        seen.lock()
            .unwrap()
            .iter()
            .any(|e| e.kind == EventType::HostDraining)
    })
    .await;
    stop.cancel();
    collector.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let ids: Vec<u64> = seen.iter().map(|e| e.id).collect();
    let want: Vec<u64> = (1..=ids.len() as u64).collect();
    assert_eq!(ids, want, "events lost, repeated or out of order");
    // The same as a stream read from the start now.
    let mut fresh = client.events(&[], None, None, Some(0)).await.unwrap();
    for e in &seen {
        let again = tokio::time::timeout(WAIT, fresh.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&again, e);
    }
    // Every acknowledged start has its events.
    for s in &acked {
        for kind in [EventType::SessionCreated, EventType::SessionRunning] {
            assert!(
                seen.iter().any(|e| e.kind == kind
                    && e.session
                        .as_ref()
                        .is_some_and(|x| x.session_id == s.session_id)),
                "no {kind} for {}",
                s.session_id
            );
        }
    }
    let onlines = seen
        .iter()
        .filter(|e| e.kind == EventType::HostOnline)
        .count();
    assert_eq!(onlines, 2, "online at first, and again after the restart");
}

#[test]
fn an_unreachable_database_stops_the_broker_with_a_masked_url() {
    let port = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_arcade-broker"))
        .args(["--http", &format!("127.0.0.1:{}", free_port())])
        .args(["--agent-listen", &format!("127.0.0.1:{}", free_port())])
        .args([
            "--database-url",
            &format!("mysql://arcade:hunter2@127.0.0.1:{port}/arcade"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("mysql://arcade:***@127.0.0.1:{port}/arcade")),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
