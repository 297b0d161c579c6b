//! A game's output, read back through the broker (`GET /v1/sessions/{id}/logs`): the agent
//! keeps each session's stdout and stderr; the broker fetches it over the agent link, page by
//! page, for running and ended sessions alike.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::time::Duration;

use portal_client::{Client, LogRange};
use protocol::api::ErrorCode;
use protocol::SessionId;
use tests::{greeting, wait_until, AgentOptions, TestAgent, TestBroker};

const WAIT: Duration = Duration::from_secs(10);

async fn tail(client: &Client, id: &SessionId, lines: u32) -> String {
    let log = client.session_log(id, LogRange::Tail(lines)).await.unwrap();
    String::from_utf8(log.text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_games_output_is_tailed_paged_followed_and_kept_after_its_end() {
    let broker = TestBroker::start().await;
    let agent = TestAgent::start(broker.agent_addr, AgentOptions::host("host-l")).await;
    let client = Client::new(&broker.url, None).unwrap();
    tests::wait_hosts_online(&client, 1).await;
    // `chatty` prints `line 1` to `line 20000` (every tenth on stderr), then `ready`: about
    // 210 KB, five pages of the agent link.
    let s = client.start_session(&tests::start("chatty")).await.unwrap();
    let id = s.session_id.clone();
    wait_until("the game has printed everything", WAIT, || {
        let (client, id) = (client.clone(), id.clone());
        async move { tail(&client, &id, 1).await == "ready\n" }
    })
    .await;

    // The last lines, stderr's among them.
    assert_eq!(
        tail(&client, &id, 3).await,
        "line 19999\nline 20000\nready\n"
    );
    // The default is 200 lines.
    let default = client.session_log(&id, LogRange::Tail(200)).await.unwrap();
    let text = String::from_utf8(default.text).unwrap();
    assert_eq!(text.lines().count(), 200);
    assert!(text.starts_with("line 19802\n"), "{}", &text[..40]);
    // All of it, read over several pages, in order, nothing twice.
    let all = client
        .session_log(&id, LogRange::Tail(1_000_000))
        .await
        .unwrap();
    assert_eq!(all.start, 0);
    assert_eq!(all.end, all.text.len() as u64);
    let lines: Vec<String> = String::from_utf8(all.text)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let want: Vec<String> = (1..=20_000)
        .map(|i| format!("line {i}"))
        .chain(["ready".to_owned()])
        .collect();
    assert_eq!(lines, want);

    // Following: nothing new, then what the game writes next.
    let next = client
        .session_log(&id, LogRange::From(all.end))
        .await
        .unwrap();
    assert_eq!(
        (next.start, next.end, next.text.len()),
        (all.end, all.end, 0)
    );
    let port = s.port.unwrap();
    assert!(greeting(port).await.unwrap().starts_with("session "));
    let end = all.end;
    wait_until("the greeting is in the log", WAIT, || {
        let (client, id) = (client.clone(), id.clone());
        async move {
            let new = client.session_log(&id, LogRange::From(end)).await.unwrap();
            new.start == end && new.text == b"greeted a player\n"
        }
    })
    .await;

    // Ended sessions' logs stay readable.
    client.end_session(&id).await.unwrap();
    assert_eq!(tail(&client, &id, 1).await, "greeted a player\n");

    // Errors say what is wrong.
    let unknown = SessionId::new("no-such-session").unwrap();
    let e = client
        .session_log(&unknown, LogRange::Tail(5))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (Some(404), Some(ErrorCode::NotFound))
    );
    let both = reqwest::get(format!(
        "{}/v1/sessions/{id}/logs?tail=1&from=0",
        broker.url
    ))
    .await
    .unwrap();
    assert_eq!(both.status().as_u16(), 400);
    // A log the agent no longer has (its retention removed it).
    std::fs::remove_file(agent.state_dir.path().join(format!("logs/{id}.log"))).unwrap();
    let e = client
        .session_log(&id, LogRange::Tail(5))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (Some(404), Some(ErrorCode::NotFound))
    );
    assert!(e.to_string().contains("--log-retention"), "{e}");
    // A host that is not connected.
    agent.stop().await;
    tests::wait_hosts_online(&client, 0).await;
    let e = client
        .session_log(&id, LogRange::Tail(5))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (Some(503), Some(ErrorCode::HostUnavailable))
    );
    assert!(e.to_string().contains("offline"), "{e}");
}
