//! The fault-injection suite: a link cut, delayed and black-holed by a proxy, games that crash
//! at once, a disk that cannot be written, concurrent ends and starts against limited capacity.
//! Each case asserts the final states a portal would see, and that no game outlives its session.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::time::Duration;

use portal_client::Client;
use protocol::api::{EndReason, ErrorCode, HostStatus, SessionStatus};
use protocol::SessionId;
use tests::proxy::{FaultProxy, Mode};
use tests::{processes_of, wait_until, AgentOptions, BrokerOptions, TestAgent, TestBroker};

const WAIT: Duration = Duration::from_secs(15);

async fn online(client: &Client, n: usize) {
    tests::wait_hosts_online(client, n).await;
}

async fn status_is(client: &Client, id: &SessionId, want: SessionStatus) {
    wait_until(&format!("session {id} is {want}"), WAIT, || {
        let (client, id) = (client.clone(), id.clone());
        async move {
            client
                .get_session(&id)
                .await
                .is_ok_and(|s| s.status == want)
        }
    })
    .await;
}

async fn no_game_left(ids: &[SessionId]) {
    let ids = ids.to_vec();
    wait_until("no game of these sessions is left", WAIT, || {
        let ids = ids.clone();
        async move { processes_of(&ids).is_empty() }
    })
    .await;
}

/// A broker, and one agent connected through a fault proxy.
async fn proxied(opts: BrokerOptions) -> (TestBroker, FaultProxy, TestAgent, Client) {
    let broker = TestBroker::start_with(opts).await;
    let proxy = FaultProxy::start(broker.agent_addr).await;
    let agent = TestAgent::start(proxy.addr(), AgentOptions::host("host-a")).await;
    let client = Client::new(&broker.url, None).unwrap();
    online(&client, 1).await;
    (broker, proxy, agent, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cut_and_restored_within_the_timeout_changes_nothing() {
    let (_broker, proxy, _agent, client) = proxied(BrokerOptions {
        heartbeat_timeout: Duration::from_secs(3),
        ..Default::default()
    })
    .await;
    let s = client
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap();
    proxy.cut();
    // The agent reconnects by itself; the portal sees the session running throughout.
    wait_until("the link is back", WAIT, || {
        let (client, id) = (client.clone(), s.session_id.clone());
        async move {
            assert_eq!(
                client.get_session(&id).await.unwrap().status,
                SessionStatus::Running
            );
            client.hosts().await.unwrap().hosts[0].status == HostStatus::Online
        }
    })
    .await;
    let again = client.get_session(&s.session_id).await.unwrap();
    assert_eq!((again.status, again.pid), (SessionStatus::Running, s.pid));
    let ended = client.end_session(&s.session_id).await.unwrap();
    assert_eq!(ended.end_reason, Some(EndReason::EndedByRequest));
    no_game_left(&[s.session_id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_host_is_lost_and_its_games_stopped_when_it_returns() {
    let (_broker, proxy, _agent, client) = proxied(BrokerOptions {
        heartbeat_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let s = client
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap();
    proxy.set(Mode::BlackHole);
    status_is(&client, &s.session_id, SessionStatus::Lost).await;
    let lost = client.get_session(&s.session_id).await.unwrap();
    assert_eq!(lost.end_reason, Some(EndReason::HostLost));
    assert_eq!(
        client.hosts().await.unwrap().hosts[0].status,
        HostStatus::Offline
    );
    // While the host is unreachable, its game is not startable there.
    let e = client
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NoCapacity));
    // The network heals: the agent comes back with the lost session's game, which is stopped.
    proxy.set(Mode::Pass);
    proxy.cut();
    online(&client, 1).await;
    no_game_left(std::slice::from_ref(&s.session_id)).await;
    assert_eq!(
        client.get_session(&s.session_id).await.unwrap().status,
        SessionStatus::Lost
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_times_the_start_out_and_the_late_game_is_stopped() {
    let (_broker, proxy, _agent, client) = proxied(BrokerOptions {
        launch_timeout: Duration::from_millis(300),
        heartbeat_timeout: Duration::from_secs(5),
        ..Default::default()
    })
    .await;
    proxy.set(Mode::Delay(Duration::from_millis(600)));
    let e = client
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (Some(504), Some(ErrorCode::LaunchTimeout))
    );
    let failed = client
        .list_sessions(&protocol::api::SessionQuery::default())
        .await
        .unwrap()
        .sessions;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].end_reason, Some(EndReason::LaunchTimeout));
    // The game the agent launched late is stopped: no game without a session.
    no_game_left(&[failed[0].session_id.clone()]).await;
    // A fresh, fast link: starts work again (a portal retries a 503 after Retry-After).
    proxy.set(Mode::Pass);
    proxy.cut();
    let started = std::sync::Arc::new(std::sync::Mutex::new(None));
    wait_until("a start succeeds", WAIT, || {
        let (client, started) = (client.clone(), started.clone());
        async move {
            match client.start_session(&tests::start("sleeper")).await {
                Ok(s) => {
                    *started.lock().unwrap() = Some(s);
                    true
                }
                // While the agent reconnects: no host (503), or a start placed on the link
                // that was just cut and answered "disconnected during the launch; retry"
                // (502), the documented answer to that race.
                Err(e) => {
                    let racing_the_cut = e.code() == Some(ErrorCode::LaunchFailed)
                        && e.to_string().contains("disconnected during the launch");
                    assert!(
                        e.code() == Some(ErrorCode::NoCapacity) || racing_the_cut,
                        "{e}"
                    );
                    false
                }
            }
        }
    })
    .await;
    let s = started.lock().unwrap().take().unwrap();
    client.end_session(&s.session_id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_state_dir_fails_the_launch_and_leaves_nothing_running() {
    let broker = TestBroker::start().await;
    let state = tests::StateDir::new();
    let mut opts = AgentOptions::host("host-a");
    opts.state_dir = Some(state.path().to_owned());
    let _agent = TestAgent::start(broker.agent_addr, opts).await;
    let client = Client::new(&broker.url, None).unwrap();
    online(&client, 1).await;
    // The state can no longer be written (as root, permissions would not stop us).
    for copy in agent::state::paths(state.path()) {
        let _ = std::fs::remove_file(&copy);
        std::fs::create_dir(&copy).unwrap();
    }
    let e = client
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (Some(502), Some(ErrorCode::LaunchFailed))
    );
    assert!(e.to_string().contains("--state-dir"), "{e}");
    let all = client
        .list_sessions(&protocol::api::SessionQuery::default())
        .await
        .unwrap()
        .sessions;
    assert_eq!(
        (all[0].status, all[0].end_reason),
        (SessionStatus::Failed, Some(EndReason::LaunchFailed))
    );
    no_game_left(&[all[0].session_id.clone()]).await;
    assert_eq!(client.hosts().await.unwrap().hosts[0].sessions, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_starts_never_overfill_and_concurrent_ends_agree() {
    let broker = TestBroker::start().await;
    let mut agents = Vec::new();
    for h in ["host-a", "host-b"] {
        let mut o = AgentOptions::host(h);
        o.max_sessions = 3;
        agents.push(TestAgent::start(broker.agent_addr, o).await);
    }
    let client = Client::new(&broker.url, None).unwrap();
    online(&client, 2).await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.start_session(&tests::start("sleeper")).await })
        })
        .collect();
    let mut started = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(s) => started.push(s),
            Err(e) => assert_eq!(e.code(), Some(ErrorCode::NoCapacity), "{e}"),
        }
    }
    assert_eq!(started.len(), 6, "exactly the capacity");
    for h in client.hosts().await.unwrap().hosts {
        assert_eq!(
            h.sessions, 3,
            "{} holds its max_sessions, no more",
            h.host_id
        );
    }
    // Two ends of one session at once both answer its final state.
    let id = started[0].session_id.clone();
    let (a, b) = tokio::join!(client.end_session(&id), client.end_session(&id));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        (a.status, b.status),
        (SessionStatus::Ended, SessionStatus::Ended)
    );
    assert_eq!(a.ended_at, b.ended_at);
    for s in &started[1..] {
        client.end_session(&s.session_id).await.unwrap();
    }
    let ids: Vec<SessionId> = started.iter().map(|s| s.session_id.clone()).collect();
    no_game_left(&ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_during_a_start_ends_the_session_cleanly() {
    use protocol::wire::{AgentMessage, BrokerMessage};
    use tests::FakeAgent;
    let broker = TestBroker::start().await;
    let mut fake = FakeAgent::connect_as(broker.agent_addr, "fake").await;
    let client = Client::new(&broker.url, None).unwrap();
    let starting = tokio::spawn({
        let client = client.clone();
        async move { client.start_session(&tests::start("sleeper")).await }
    });
    let req = fake.expect_launch().await;
    // In flight, not yet recorded (it would be with its outcome), it is readable as starting.
    let s = client.get_session(&req.session_id).await.unwrap();
    assert_eq!(s.status, SessionStatus::Starting);
    let ending = tokio::spawn({
        let (client, id) = (client.clone(), req.session_id.clone());
        async move { client.end_session(&id).await }
    });
    // The end waits for the start; the start completes; then the end stops the game.
    fake.launched(&req.session_id).await;
    let started = starting.await.unwrap().unwrap();
    assert_eq!(started.status, SessionStatus::Running);
    let Some(BrokerMessage::Stop { session_id }) = fake.recv(WAIT).await else {
        panic!("no stop")
    };
    assert_eq!(session_id, req.session_id);
    fake.send(AgentMessage::Stopped { session_id }).await;
    let ended = ending.await.unwrap().unwrap();
    assert_eq!(
        (ended.status, ended.end_reason),
        (SessionStatus::Ended, Some(EndReason::EndedByRequest))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_right_after_launch_is_reported_with_its_code() {
    let broker = TestBroker::start().await;
    let _agent = TestAgent::start(broker.agent_addr, AgentOptions::host("host-a")).await;
    let client = Client::new(&broker.url, None).unwrap();
    online(&client, 1).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let s = client
            .start_session(&tests::start("instant-crash"))
            .await
            .unwrap();
        ids.push(s.session_id.clone());
    }
    for id in &ids {
        status_is(&client, id, SessionStatus::Ended).await;
        let s = client.get_session(id).await.unwrap();
        assert_eq!(
            (s.end_reason, s.exit_code),
            (Some(EndReason::GameExited), Some(7))
        );
    }
    assert_eq!(client.hosts().await.unwrap().hosts[0].sessions, 0);
    no_game_left(&ids).await;
}
