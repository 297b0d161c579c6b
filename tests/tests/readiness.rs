//! Readiness (a catalog entry's `ready`): a start answers once the game is really ready — a
//! TCP connect, a line of its output, or a file — and fails 504 when it is not in time (the
//! game stopped) or 502 when the game ends first.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::time::{Duration, Instant};

use portal_client::{Client, ClientError};
use protocol::api::{EndReason, ErrorCode, SessionQuery, SessionStatus};
use tests::{greeting, processes_of, AgentOptions, TestAgent, TestBroker};

/// The test games' readiness delay.
const LATE: Duration = Duration::from_millis(700);

async fn system() -> (TestBroker, TestAgent, Client) {
    let broker = TestBroker::start().await;
    let mut opts = AgentOptions::host("host-r");
    opts.stop_grace = Duration::from_millis(500);
    let agent = TestAgent::start(broker.agent_addr, opts).await;
    let client = Client::new(&broker.url, None).unwrap();
    tests::wait_hosts_online(&client, 1).await;
    (broker, agent, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_answers_once_its_game_is_ready_by_each_kind_of_check() {
    let (_broker, _agent, client) = system().await;
    for game in ["slow-listener", "slow-logger", "slow-toucher"] {
        let asked = Instant::now();
        let s = client.start_session(&tests::start(game)).await.unwrap();
        let took = asked.elapsed();
        assert_eq!(s.status, SessionStatus::Running, "{game}");
        assert!(
            took >= LATE,
            "{game} answered after {took:?}, before it was ready"
        );
        match game {
            // Connectable at once: one attempt, no retry.
            "slow-listener" | "slow-logger" => {
                let hello = greeting(s.port.unwrap()).await.unwrap();
                assert_eq!(hello.trim(), format!("session {}", s.session_id));
            }
            _ => {
                let file = tests::ready_dir().join(format!("{}.ready", s.session_id));
                assert!(file.is_file(), "{}", file.display());
            }
        }
        client.end_session(&s.session_id).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_never_ready_is_a_504_and_leaves_no_process() {
    let (_broker, _agent, client) = system().await;
    let e = client
        .start_session(&tests::start("never-ready"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            ClientError::Api {
                status: 504,
                code: ErrorCode::LaunchTimeout,
                message,
                ..
            } if message.contains("not ready within") && message.contains("was stopped")
        ),
        "{e}"
    );
    let failed = client
        .list_sessions(&SessionQuery::default())
        .await
        .unwrap()
        .sessions;
    assert_eq!(failed.len(), 1);
    let s = &failed[0];
    assert_eq!(s.status, SessionStatus::Failed);
    assert_eq!(s.end_reason, Some(EndReason::LaunchTimeout));
    // The agent stopped the game before it answered.
    assert_eq!(
        processes_of(std::slice::from_ref(&s.session_id)),
        Vec::<u32>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_that_ends_before_it_is_ready_is_a_502_saying_how() {
    let (_broker, _agent, client) = system().await;
    let e = client
        .start_session(&tests::start("dies-before-ready"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            ClientError::Api {
                status: 502,
                code: ErrorCode::LaunchFailed,
                message,
                ..
            } if message.contains("exit code 4") && message.contains("before it was ready")
        ),
        "{e}"
    );
    let s = &client
        .list_sessions(&SessionQuery::default())
        .await
        .unwrap()
        .sessions[0];
    assert_eq!(s.status, SessionStatus::Failed);
    assert_eq!(s.end_reason, Some(EndReason::LaunchFailed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_during_the_check_ends_the_session_once_it_runs() {
    let (_broker, _agent, client) = system().await;
    let starting = tokio::spawn({
        let client = client.clone();
        async move { client.start_session(&tests::start("slow-listener")).await }
    });
    // The session exists, starting, while its game is not ready yet.
    tests::wait_until("the session is starting", Duration::from_secs(5), || {
        let client = client.clone();
        async move {
            client
                .list_sessions(&SessionQuery::default())
                .await
                .is_ok_and(|l| {
                    l.sessions
                        .iter()
                        .any(|s| s.status == SessionStatus::Starting)
                })
        }
    })
    .await;
    let list = client
        .list_sessions(&SessionQuery::default())
        .await
        .unwrap();
    let id = list.sessions[0].session_id.clone();
    // As for any start (README: "Ends agree"), the end waits for it, then ends the session.
    let ended = client.end_session(&id).await.unwrap();
    assert_eq!(ended.status, SessionStatus::Ended);
    let started = starting.await.unwrap().unwrap();
    assert_eq!(started.session_id, id);
    assert_eq!(processes_of(std::slice::from_ref(&id)), Vec::<u32>::new());
}
