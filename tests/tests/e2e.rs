//! End to end: a real broker, real agents, real game processes, all on loopback.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::time::{Duration, Instant};

use portal_client::{Client, ClientError};
use protocol::api::{EndReason, ErrorCode, HostStatus, SessionQuery, SessionStatus};
use protocol::HostId;
use serde_json::Value;
use tests::{
    greeting, group_alive, pid_alive, wait_until, AgentOptions, BrokerOptions, TestAgent,
    TestBroker,
};

const WAIT: Duration = Duration::from_secs(10);

/// A broker and `hosts` agents, all registered.
async fn system(hosts: &[AgentOptions]) -> (TestBroker, Vec<TestAgent>, Client) {
    system_with(BrokerOptions::default(), hosts).await
}

async fn system_with(
    opts: BrokerOptions,
    hosts: &[AgentOptions],
) -> (TestBroker, Vec<TestAgent>, Client) {
    let broker = TestBroker::start_with(opts).await;
    let mut agents = Vec::new();
    for h in hosts {
        agents.push(TestAgent::start(broker.agent_addr, h.clone()).await);
    }
    let client = Client::new(&broker.url, None).unwrap();
    let want = hosts.len();
    wait_until("every agent is online", WAIT, || {
        let client = client.clone();
        async move {
            client.hosts().await.is_ok_and(|h| {
                h.hosts
                    .iter()
                    .filter(|h| h.status == HostStatus::Online)
                    .count()
                    == want
            })
        }
    })
    .await;
    (broker, agents, client)
}

async fn raw(
    method: reqwest::Method,
    url: String,
    body: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_owned());
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, headers, json)
}

fn api_code(e: &ClientError) -> Option<ErrorCode> {
    e.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_gives_a_live_game_and_end_leaves_no_process() {
    let (broker, _agents, client) = system(&[AgentOptions::host("host-a")]).await;
    let s = client.start_session(&tests::start("game")).await.unwrap();
    assert_eq!(s.status, SessionStatus::Running);
    assert_eq!(s.mode, "normal");
    assert_eq!(s.ip, Some("127.0.0.1".parse().unwrap()));
    let (pid, port) = (s.pid.unwrap(), s.port.unwrap());
    assert!(pid_alive(pid));
    wait_until("the game listens", WAIT, || async move {
        greeting(port).await.is_ok()
    })
    .await;
    let hello = greeting(port).await.unwrap();
    assert_eq!(hello, format!("session {}", s.session_id));
    assert_eq!(
        client.get_session(&s.session_id).await.unwrap().status,
        SessionStatus::Running
    );

    let ended = client.end_session(&s.session_id).await.unwrap();
    assert_eq!(ended.status, SessionStatus::Ended);
    assert_eq!(ended.end_reason, Some(EndReason::EndedByRequest));
    assert!(ended.ended_at.is_some());
    assert!(!group_alive(pid), "a process of the game's group is left");
    // Ending again answers the same final state.
    let again = client.end_session(&s.session_id).await.unwrap();
    assert_eq!(again, ended);
    // The port came back to the pool: the next game gets it.
    let next = client
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap();
    assert_eq!(next.port, Some(port));
    client.end_session(&next.session_id).await.unwrap();
    broker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_that_exits_ends_its_session_with_its_code() {
    let (_broker, _agents, client) = system(&[AgentOptions::host("host-a")]).await;
    let s = client
        .start_session(&tests::start("crasher"))
        .await
        .unwrap();
    assert_eq!(s.status, SessionStatus::Running);
    let id = s.session_id.clone();
    wait_until("the crasher's session ends", WAIT, || {
        let (client, id) = (client.clone(), id.clone());
        async move { client.get_session(&id).await.unwrap().status == SessionStatus::Ended }
    })
    .await;
    let s = client.get_session(&id).await.unwrap();
    assert_eq!(s.end_reason, Some(EndReason::GameExited));
    assert_eq!(s.exit_code, Some(3));
    // Its slot is free again.
    let hosts = client.hosts().await.unwrap();
    assert_eq!(hosts.hosts[0].sessions, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_that_dies_at_once_is_reported_not_lost() {
    let (_broker, _agents, client) = system(&[AgentOptions::host("host-a")]).await;
    let s = client
        .start_session(&tests::start("instant-crash"))
        .await
        .unwrap();
    let id = s.session_id.clone();
    wait_until("the session ends", WAIT, || {
        let (client, id) = (client.clone(), id.clone());
        async move { client.get_session(&id).await.unwrap().status == SessionStatus::Ended }
    })
    .await;
    let s = client.get_session(&id).await.unwrap();
    assert_eq!(
        (s.end_reason, s.exit_code),
        (Some(EndReason::GameExited), Some(7))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_ignoring_sigterm_is_killed_after_the_grace() {
    let mut opts = AgentOptions::host("host-a");
    opts.stop_grace = Duration::from_millis(500);
    let (_broker, agents, client) = system(&[opts]).await;
    let s = client
        .start_session(&tests::start("stubborn"))
        .await
        .unwrap();
    let pid = s.pid.unwrap();
    let log = agents[0]
        .state_dir
        .path()
        .join("logs")
        .join(format!("{}.log", s.session_id));
    let read_log = |log: std::path::PathBuf| std::fs::read_to_string(log).unwrap_or_default();
    wait_until("the game ignores SIGTERM", WAIT, || {
        let log = log.clone();
        async move { read_log(log).contains("ready") }
    })
    .await;
    let t0 = Instant::now();
    let ended = client.end_session(&s.session_id).await.unwrap();
    let took = t0.elapsed();
    assert_eq!(ended.status, SessionStatus::Ended);
    assert!(!group_alive(pid));
    assert!(
        took >= Duration::from_millis(500),
        "ended after {took:?}, before the grace"
    );
    let text = read_log(log);
    assert!(text.contains("ignoring SIGTERM"), "log: {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forking_launcher_keeps_its_session_until_the_game_is_gone() {
    let (_broker, _agents, client) = system(&[AgentOptions::host("host-a")]).await;
    let s = client.start_session(&tests::start("forker")).await.unwrap();
    let (launcher, port) = (s.pid.unwrap(), s.port.unwrap());
    wait_until("the launcher has exited", WAIT, || async move {
        !pid_alive(launcher)
    })
    .await;
    // The forked game still serves, and the session still runs.
    wait_until("the forked game listens", WAIT, || async move {
        greeting(port).await.is_ok()
    })
    .await;
    assert!(greeting(port).await.unwrap().starts_with("session "));
    assert!(group_alive(launcher));
    assert_eq!(
        client.get_session(&s.session_id).await.unwrap().status,
        SessionStatus::Running
    );
    let ended = client.end_session(&s.session_id).await.unwrap();
    assert_eq!(ended.end_reason, Some(EndReason::EndedByRequest));
    assert!(!group_alive(launcher), "the forked game outlived the end");
    assert!(greeting(port).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors() {
    let (broker, _agents, client) = system(&[AgentOptions::host("host-a")]).await;
    let url = format!("{}/v1/sessions", broker.url);
    let post = reqwest::Method::POST;

    let e = client
        .start_session(&tests::start("no-such-game"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), api_code(&e)),
        (Some(404), Some(ErrorCode::UnknownGame))
    );
    assert!(e.to_string().contains("no-such-game"), "{e}");

    for body in [
        "{not json",
        r#"{"game_id": 5}"#,
        r#"{"mode": "x"}"#,
        r#"{"game_id": "../etc"}"#,
        r#"{"game_id": "game", "extra": 1}"#,
    ] {
        let (status, _, json) = raw(post.clone(), url.clone(), Some(body)).await;
        assert_eq!(status, 400, "{body}: {json}");
        assert_eq!(json["error"]["code"], "bad_request", "{body}");
        assert!(!json["error"]["message"].as_str().unwrap().is_empty());
    }

    let big = format!(
        r#"{{"game_id": "game", "config": "{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let (status, _, json) = raw(post.clone(), url.clone(), Some(&big)).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    let mut bad_mode = tests::start("game");
    bad_mode.mode = Some("nightmare".into());
    let e = client.start_session(&bad_mode).await.unwrap_err();
    assert_eq!(
        (e.status(), api_code(&e)),
        (Some(400), Some(ErrorCode::BadRequest))
    );
    assert!(e.to_string().contains("normal, hard"), "{e}");

    for config in ["../../etc/passwd", "/etc/passwd", "missing.conf"] {
        let mut req = tests::start("configured");
        req.config = Some(config.into());
        let e = client.start_session(&req).await.unwrap_err();
        assert_eq!(
            (e.status(), api_code(&e)),
            (Some(400), Some(ErrorCode::BadRequest)),
            "{config}"
        );
    }
    let mut req = tests::start("configured");
    req.config = Some("good.conf".into());
    let s = client.start_session(&req).await.unwrap();
    assert_eq!(s.config.as_deref(), Some("good.conf"));
    client.end_session(&s.session_id).await.unwrap();

    let (status, _, json) = raw(
        reqwest::Method::GET,
        format!("{}/v1/sessions/nope", broker.url),
        None,
    )
    .await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _, json) = raw(
        reqwest::Method::GET,
        format!("{}/v1/nowhere", broker.url),
        None,
    )
    .await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _, json) = raw(
        reqwest::Method::GET,
        format!("{}/v1/sessions?status=dancing", broker.url),
        None,
    )
    .await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    // Nothing was left running by the refused starts.
    assert_eq!(client.hosts().await.unwrap().hosts[0].sessions, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_cannot_start_is_a_502_that_names_why() {
    let (_broker, _agents, client) = system(&[AgentOptions::host("host-a")]).await;
    let e = client
        .start_session(&tests::start("broken"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), api_code(&e)),
        (Some(502), Some(ErrorCode::LaunchFailed))
    );
    assert!(e.to_string().contains("/nonexistent/arcade/game"), "{e}");
    let failed = client
        .list_sessions(&SessionQuery {
            status: Some(SessionStatus::Failed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.sessions.len(), 1);
    assert_eq!(failed.sessions[0].end_reason, Some(EndReason::LaunchFailed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_free_slot_is_503_with_retry_after() {
    let mut opts = AgentOptions::host("host-a");
    opts.max_sessions = 1;
    let (broker, _agents, client) = system(&[opts]).await;
    let first = client
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap();
    let (status, headers, json) = raw(
        reqwest::Method::POST,
        format!("{}/v1/sessions", broker.url),
        Some(r#"{"game_id": "sleeper"}"#),
    )
    .await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (503, Some("no_capacity"))
    );
    assert!(headers.get("retry-after").is_some());
    client.end_session(&first.session_id).await.unwrap();
    let second = client
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap();
    client.end_session(&second.session_id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_never_overfill_a_host() {
    let mut opts = AgentOptions::host("host-a");
    opts.max_sessions = 3;
    let (_broker, _agents, client) = system(&[opts]).await;
    let starts = (0..10).map(|_| {
        let client = client.clone();
        async move { client.start_session(&tests::start("sleeper")).await }
    });
    let results = futures_join_all(starts).await;
    let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(ok.len(), 3);
    for r in &results {
        if let Err(e) = r {
            assert_eq!(api_code(e), Some(ErrorCode::NoCapacity), "{e}");
        }
    }
    for s in ok {
        client.end_session(&s.session_id).await.unwrap();
    }
}

async fn futures_join_all<F>(fs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_spread_over_hosts_and_drain_and_resume() {
    let (_broker, _agents, client) =
        system(&[AgentOptions::host("host-a"), AgentOptions::host("host-b")]).await;
    let a = client
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap();
    let b = client
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap();
    assert_ne!(
        a.host_id, b.host_id,
        "the least loaded host gets the next session"
    );
    let (a, _) = if a.host_id.as_str() == "host-a" {
        (a, b)
    } else {
        (b, a)
    };

    let host_a = HostId::new("host-a").unwrap();
    let drained = client.drain_host(&host_a).await.unwrap();
    assert_eq!(drained.status, HostStatus::Draining);
    for _ in 0..2 {
        let s = client
            .start_session(&tests::start("sleeper"))
            .await
            .unwrap();
        assert_eq!(
            s.host_id.as_str(),
            "host-b",
            "a draining host gets no new session"
        );
    }
    // Its running session goes on.
    assert_eq!(
        client.get_session(&a.session_id).await.unwrap().status,
        SessionStatus::Running
    );
    let resumed = client.resume_host(&host_a).await.unwrap();
    assert_eq!(resumed.status, HostStatus::Online);
    let s = client
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap();
    assert_eq!(s.host_id.as_str(), "host-a");

    let e = client
        .drain_host(&HostId::new("host-z").unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404));

    let hosts = client.hosts().await.unwrap().hosts;
    assert_eq!(hosts.iter().map(|h| h.sessions).sum::<u32>(), 5);
    let games = client.games().await.unwrap().games;
    let game = games.iter().find(|g| g.game_id.as_str() == "game").unwrap();
    assert_eq!(
        (game.hosts, game.modes.clone()),
        (2, vec!["normal".to_owned(), "hard".to_owned()])
    );

    let running = client
        .list_sessions(&SessionQuery {
            host_id: Some(HostId::new("host-b").unwrap()),
            ..Default::default()
        })
        .await
        .unwrap()
        .sessions;
    assert_eq!(running.len(), 3);
    assert!(
        running
            .windows(2)
            .all(|w| w[0].created_at >= w[1].created_at),
        "newest first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_portal_calls_still_work() {
    let (broker, _agents, _client) = system(&[AgentOptions::host("host-a")]).await;
    let get = reqwest::Method::GET;
    let (status, _, json) = raw(
        get.clone(),
        format!("{}/IP?gameId=game&excuteMode=hard", broker.url),
        None,
    )
    .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["gamestatus"], "TRUE");
    assert_eq!(json["gameIP"], "127.0.0.1");
    let pid = json["PID"].as_str().expect("PID is a string").to_owned();
    let port = json["port"].as_u64().unwrap() as u16;
    wait_until("the game listens", WAIT, || async move {
        greeting(port).await.is_ok()
    })
    .await;
    let (status, _, json) = raw(
        get.clone(),
        format!(
            "{}/End?excuteMode=hard&serverIp=127.0.0.1&pid={pid}",
            broker.url
        ),
        None,
    )
    .await;
    assert_eq!(
        (status, json["gamestatus"].as_str()),
        (200, Some("end game sucessful"))
    );
    assert!(!group_alive(pid.parse().unwrap()));
    let (status, _, json) = raw(
        get.clone(),
        format!("{}/End?serverIp=127.0.0.1&pid={pid}", broker.url),
        None,
    )
    .await;
    assert_eq!((status, json["gamestatus"].as_str()), (404, Some("failed")));
    assert_eq!(json["error"]["code"], "not_found");
    let (status, _, json) = raw(
        get.clone(),
        format!("{}/IP?gameId=nothing", broker.url),
        None,
    )
    .await;
    assert_eq!((status, json["gamestatus"].as_str()), (404, Some("FALSE")));
    assert_eq!(json["error"]["code"], "unknown_game");
    let (status, _, json) = raw(get, format!("{}/IP", broker.url), None).await;
    assert_eq!((status, json["gamestatus"].as_str()), (400, Some("FALSE")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_answers_allowed_origins_only() {
    let opts = BrokerOptions {
        cors_origins: vec!["https://portal.example".into()],
        ..Default::default()
    };
    let (broker, _agents, _client) = system_with(opts, &[AgentOptions::host("host-a")]).await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/sessions", broker.url),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
    };
    let ok = preflight("https://portal.example").await.unwrap();
    assert!(ok.status().is_success(), "{}", ok.status());
    assert_eq!(
        ok.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some("https://portal.example")
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // The refused preflight has the usual JSON error body.
    assert_eq!(other.status().as_u16(), 400);
    let body: Value = other.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    let get = http
        .get(format!("{}/IP?gameId=sleeper", broker.url))
        .header("origin", "https://portal.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        get.headers().get("access-control-allow-origin").unwrap(),
        "https://portal.example"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_started_before_its_broker_connects_by_itself() {
    // Hold the broker's future agent port, so the agent finds nothing there at first.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let agent = TestAgent::start(addr, AgentOptions::host("early")).await;
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let broker = TestBroker::start_with(BrokerOptions {
        agent_listener: Some(listener),
        ..Default::default()
    })
    .await;
    let client = Client::new(&broker.url, None).unwrap();
    wait_until("the early agent registers", WAIT, || {
        let client = client.clone();
        async move {
            client
                .hosts()
                .await
                .is_ok_and(|h| h.hosts.len() == 1 && h.hosts[0].status == HostStatus::Online)
        }
    })
    .await;
    let s = client
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap();
    client.end_session(&s.session_id).await.unwrap();
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_agent_takes_its_games_down_and_goes_offline() {
    let (_broker, mut agents, client) = system(&[AgentOptions::host("host-a")]).await;
    let s = client
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap();
    let pid = s.pid.unwrap();
    agents.pop().unwrap().stop().await;
    assert!(!group_alive(pid));
    wait_until("the host is offline", WAIT, || {
        let client = client.clone();
        async move { client.hosts().await.unwrap().hosts[0].status == HostStatus::Offline }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_start_starts_one_game() {
    let (_broker, _agents, client) = system(&[AgentOptions::host("host-a")]).await;
    let first = client
        .start_session_idempotent(&tests::start("sleeper"), "key-1")
        .await
        .unwrap();
    let again = client
        .start_session_idempotent(&tests::start("sleeper"), "key-1")
        .await
        .unwrap();
    assert_eq!(first.session_id, again.session_id);
    assert_eq!(client.hosts().await.unwrap().hosts[0].sessions, 1);
    let e = client
        .start_session_idempotent(&tests::start("game"), "key-1")
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), api_code(&e)),
        (Some(409), Some(ErrorCode::Conflict))
    );
    client.end_session(&first.session_id).await.unwrap();
}

mod agent_link {
    use super::*;
    use protocol::wire::{BrokerMessage, RunningGame, PROTOCOL_VERSION};
    use tests::{fake_hello, FakeAgent};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mismatched_version_is_refused_with_a_reason() {
        let broker = TestBroker::start().await;
        // An agent older than the previous version, and one of a newer version.
        for version in [PROTOCOL_VERSION - 2, PROTOCOL_VERSION + 1] {
            let err = FakeAgent::connect(broker.agent_addr, fake_hello("old", version, None))
                .await
                .err()
                .expect("refused");
            assert!(err.contains("protocol version mismatch"), "{err}");
            assert!(
                err.contains(&format!("the agent speaks {version}"))
                    && err.contains(&format!("this broker speaks {PROTOCOL_VERSION}")),
                "{err}"
            );
        }
        let client = Client::new(&broker.url, None).unwrap();
        assert!(client.hosts().await.unwrap().hosts.is_empty());
    }

    /// An agent of the previous version registers, runs a game and stops it through a broker
    /// of this version, every message in its own version's layout: brokers are upgraded
    /// first, then agents host by host.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_agent_of_the_previous_version_runs_games() {
        use futures::{SinkExt, StreamExt};
        use protocol::codec::MessageCodec;
        use protocol::wire::{v7, HelloReply, Launched};
        assert_eq!(v7::VERSION, PROTOCOL_VERSION - 1);
        let broker = TestBroker::start().await;
        let client = Client::new(&broker.url, None).unwrap();
        let stream = tokio::net::TcpStream::connect(broker.agent_addr)
            .await
            .unwrap();
        let mut framed =
            tokio_util::codec::Framed::new(stream, MessageCodec::<HelloReply, v7::Hello>::new());
        let hello = v7::Hello {
            protocol_version: v7::VERSION,
            host_id: HostId::new("old-1").unwrap(),
            token: None,
            facts: v7::HostFacts {
                hostname: "old".into(),
                ip: "127.0.0.1".parse().unwrap(),
                cpus: 2,
                mem_total_bytes: 1 << 30,
                games: vec![v7::GameOffer {
                    game_id: protocol::GameId::new("sleeper").unwrap(),
                    modes: vec!["default".into()],
                    ready_timeout_ms: None,
                    settings: Vec::new(),
                    max_duration_s: None,
                    idle_timeout_s: None,
                    build: None,
                }],
                max_sessions: 2,
                port_range: protocol::wire::PortRange { lo: 1, hi: 9 },
                builds: Vec::new(),
            },
            running: Vec::new(),
            exited: Vec::new(),
        };
        framed.send(hello).await.unwrap();
        match framed.next().await {
            Some(Ok(HelloReply::Welcome { .. })) => {}
            other => panic!("a version {} agent: {other:?}", v7::VERSION),
        }
        let mut framed =
            framed.map_codec(|_| MessageCodec::<v7::BrokerMessage, v7::AgentMessage>::new());
        tests::wait_hosts_online(&client, 1).await;
        let starting = tokio::spawn({
            let client = client.clone();
            async move { client.start_session(&tests::start("sleeper")).await }
        });
        let launch = loop {
            match tokio::time::timeout(WAIT, framed.next()).await {
                Ok(Some(Ok(v7::BrokerMessage::Launch(r)))) => break r,
                Ok(Some(Ok(_))) => continue,
                other => panic!("no launch: {other:?}"),
            }
        };
        let launched = Launched {
            session_id: launch.session_id.clone(),
            pid: 4242,
            ip: "127.0.0.1".parse().unwrap(),
            port: 3,
            ports: vec![3],
        };
        framed
            .send(v7::AgentMessage::Launched(launched))
            .await
            .unwrap();
        let s = starting.await.unwrap().unwrap();
        assert_eq!(
            (s.status, s.pid, s.slots),
            (SessionStatus::Running, Some(4242), 1)
        );
        assert!(s.gpus.is_empty() && s.labels.is_empty());
        // Its heartbeat, in its layout, is read.
        let beat = v7::AgentMessage::Heartbeat(v7::Load {
            cpu_percent: 33.0,
            mem_used_bytes: 1,
            mem_total_bytes: 1 << 30,
            sessions: vec![v7::RunningGame {
                session_id: s.session_id.clone(),
                pid: 4242,
                pgid: 4242,
                port: 3,
                idle_ms: None,
            }],
        });
        framed.send(beat).await.unwrap();
        wait_until("its heartbeat's CPU shows", WAIT, || {
            let client = client.clone();
            async move {
                client
                    .hosts()
                    .await
                    .is_ok_and(|h| h.hosts.iter().any(|h| h.cpu_percent == 33.0))
            }
        })
        .await;
        let ending = tokio::spawn({
            let (client, id) = (client.clone(), s.session_id.clone());
            async move { client.end_session(&id).await }
        });
        loop {
            match tokio::time::timeout(WAIT, framed.next()).await {
                Ok(Some(Ok(v7::BrokerMessage::Stop { session_id }))) => {
                    assert_eq!(session_id, s.session_id);
                    break;
                }
                Ok(Some(Ok(_))) => continue,
                other => panic!("no stop: {other:?}"),
            }
        }
        framed
            .send(v7::AgentMessage::Stopped {
                session_id: s.session_id.clone(),
            })
            .await
            .unwrap();
        let ended = ending.await.unwrap().unwrap();
        assert_eq!(ended.status, SessionStatus::Ended);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_token_is_refused_and_the_right_one_admitted() {
        let broker = TestBroker::start_with(BrokerOptions {
            agent_token: Some("s3cret".into()),
            ..Default::default()
        })
        .await;
        for token in [None, Some("wrong")] {
            let err =
                FakeAgent::connect(broker.agent_addr, fake_hello("h", PROTOCOL_VERSION, token))
                    .await
                    .err()
                    .expect("refused");
            assert!(err.contains("agent token"), "{err}");
        }
        let _ok = FakeAgent::connect(
            broker.agent_addr,
            fake_hello("h", PROTOCOL_VERSION, Some("s3cret")),
        )
        .await
        .unwrap();
        // A second agent claiming a connected host id is refused.
        let err = FakeAgent::connect(
            broker.agent_addr,
            fake_hello("h", PROTOCOL_VERSION, Some("s3cret")),
        )
        .await
        .err()
        .expect("refused");
        assert!(err.contains("already connected"), "{err}");
        // A real agent with the right token registers.
        let mut opts = AgentOptions::host("real");
        opts.token = Some("s3cret".into());
        let _agent = TestAgent::start(broker.agent_addr, opts).await;
        let client = Client::new(&broker.url, None).unwrap();
        wait_until("the real agent registers", WAIT, || {
            let client = client.clone();
            async move { client.hosts().await.unwrap().hosts.len() == 2 }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_launch_never_confirmed_is_504_and_a_late_one_is_stopped() {
        let broker = TestBroker::start_with(BrokerOptions {
            launch_timeout: Duration::from_millis(300),
            ..Default::default()
        })
        .await;
        let mut fake = FakeAgent::connect_as(broker.agent_addr, "slow").await;
        let client = Client::new(&broker.url, None).unwrap();
        let starting = tokio::spawn({
            let client = client.clone();
            async move { client.start_session(&tests::start("sleeper")).await }
        });
        let req = fake.expect_launch().await;
        let e = starting.await.unwrap().unwrap_err();
        assert_eq!(
            (e.status(), api_code(&e)),
            (Some(504), Some(ErrorCode::LaunchTimeout))
        );
        let s = client.get_session(&req.session_id).await.unwrap();
        assert_eq!(
            (s.status, s.end_reason),
            (SessionStatus::Failed, Some(EndReason::LaunchTimeout))
        );
        // The broker already asked to stop whatever might run; a late "launched" is stopped too.
        let Some(BrokerMessage::Stop { session_id }) = fake.recv(WAIT).await else {
            panic!("no stop after the timeout")
        };
        assert_eq!(session_id, req.session_id);
        fake.launched(&req.session_id).await;
        let Some(BrokerMessage::Stop { session_id }) = fake.recv(WAIT).await else {
            panic!("the late launch was not stopped")
        };
        assert_eq!(session_id, req.session_id);
        // The record stays failed, and the slot is free.
        let s = client.get_session(&req.session_id).await.unwrap();
        assert_eq!(s.status, SessionStatus::Failed);
        assert_eq!(client.hosts().await.unwrap().hosts[0].sessions, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_host_loses_its_sessions_and_its_games_are_stopped_when_it_returns() {
        let broker = TestBroker::start_with(BrokerOptions {
            heartbeat_timeout: Duration::from_millis(500),
            ..Default::default()
        })
        .await;
        let mut fake = FakeAgent::connect_as(broker.agent_addr, "quiet").await;
        let client = Client::new(&broker.url, None).unwrap();
        let starting = tokio::spawn({
            let client = client.clone();
            async move { client.start_session(&tests::start("sleeper")).await }
        });
        let req = fake.expect_launch().await;
        fake.launched(&req.session_id).await;
        let s = starting.await.unwrap().unwrap();
        assert_eq!(s.status, SessionStatus::Running);
        // The fake agent now says nothing: no heartbeat.
        let id = s.session_id.clone();
        wait_until("the session is lost", WAIT, || {
            let (client, id) = (client.clone(), id.clone());
            async move { client.get_session(&id).await.unwrap().status == SessionStatus::Lost }
        })
        .await;
        let s = client.get_session(&id).await.unwrap();
        assert_eq!(s.end_reason, Some(EndReason::HostLost));
        assert_eq!(
            client.hosts().await.unwrap().hosts[0].status,
            HostStatus::Offline
        );
        // It comes back still running the game: the broker stops it.
        let mut hello = fake_hello("quiet", PROTOCOL_VERSION, None);
        hello.running = vec![RunningGame {
            session_id: id.clone(),
            pid: 4242,
            pgid: 4242,
            port: 1,
            idle_ms: None,
            gpus: Vec::new(),
            slots: 1,
        }];
        let mut back = FakeAgent::connect(broker.agent_addr, hello).await.unwrap();
        let Some(BrokerMessage::Stop { session_id }) = back.recv(WAIT).await else {
            panic!("the lost session's game was not stopped")
        };
        assert_eq!(session_id, id);
        assert_eq!(
            client.get_session(&id).await.unwrap().status,
            SessionStatus::Lost
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_game_exit_code_and_a_signal_are_reported() {
    let (_broker, _agents, client) = system(&[AgentOptions::host("host-a")]).await;
    let forked = client
        .start_session(&tests::start("fork-crasher"))
        .await
        .unwrap();
    let killed = client
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(killed.pid.unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for id in [&forked.session_id, &killed.session_id] {
        wait_until("the session ends", WAIT, || {
            let (client, id) = (client.clone(), id.clone());
            async move { client.get_session(&id).await.unwrap().status == SessionStatus::Ended }
        })
        .await;
    }
    let forked = client.get_session(&forked.session_id).await.unwrap();
    assert_eq!(
        forked.exit_code,
        Some(5),
        "the forked game's own code, not the launcher's 0"
    );
    let killed = client.get_session(&killed.session_id).await.unwrap();
    assert_eq!(
        (killed.end_reason, killed.exit_code),
        (Some(EndReason::GameExited), Some(137))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_hold_even_when_the_host_is_full() {
    let mut opts = AgentOptions::host("host-a");
    opts.max_sessions = 1;
    let (_broker, _agents, client) = system(&[opts]).await;
    let first = client
        .start_session_idempotent(&tests::start("sleeper"), "order-7")
        .await
        .unwrap();
    // The host is full now; a retry still answers the first session, and starts nothing.
    let retry = client
        .start_session_idempotent(&tests::start("sleeper"), "order-7")
        .await
        .unwrap();
    assert_eq!(retry.session_id, first.session_id);
    // Reusing the key for something else is refused, and does not unbind it.
    let e = client
        .start_session_idempotent(&tests::start("game"), "order-7")
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), Some(ErrorCode::Conflict));
    let again = client
        .start_session_idempotent(&tests::start("sleeper"), "order-7")
        .await
        .unwrap();
    assert_eq!(again.session_id, first.session_id);
    assert_eq!(client.hosts().await.unwrap().hosts[0].sessions, 1);
    // A failed start forgets its key: the retry may start.
    let e = client
        .start_session_idempotent(&tests::start("broken"), "order-8")
        .await;
    assert!(e.is_err());
    client.end_session(&first.session_id).await.unwrap();
    let e = client
        .start_session_idempotent(&tests::start("broken"), "order-8")
        .await
        .unwrap_err();
    assert_eq!(
        api_code(&e),
        Some(ErrorCode::LaunchFailed),
        "retried, not answered from the key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_is_a_json_405() {
    let broker = TestBroker::start().await;
    let (status, _, json) = raw(
        reqwest::Method::PUT,
        format!("{}/v1/sessions", broker.url),
        Some("{}"),
    )
    .await;
    assert_eq!(status, 405);
    assert!(
        json["error"]["message"].as_str().unwrap().contains("PUT"),
        "{json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_history_says_who_did_what() {
    history_says_who_did_what(BrokerOptions::default()).await;
}

/// A start and an end through the API, then the session's history: a start answered at once
/// is recorded in one change with both its events.
async fn history_says_who_did_what(opts: BrokerOptions) {
    let (broker, _agents, client) = system_with(opts, &[AgentOptions::host("host-a")]).await;
    let s = client
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap();
    client.end_session(&s.session_id).await.unwrap();
    let (status, _, json) = raw(
        reqwest::Method::GET,
        format!("{}/v1/sessions/{}/events", broker.url, s.session_id),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let got: Vec<(String, String)> = json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want = [
        ("created", "api"),
        ("launched", "agent"),
        ("stop requested", "api"),
        ("stopped", "agent"),
    ]
    .map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(got, want);
}

mod agent_restart {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_agent_finds_its_games_again() {
        let broker = TestBroker::start().await;
        let client = Client::new(&broker.url, None).unwrap();
        let state = tests::StateDir::new();
        let opts = || {
            let mut o = AgentOptions::host("host-a");
            o.stop_games_on_exit = false;
            o.state_dir = Some(state.path().to_owned());
            o
        };
        let agent = TestAgent::start(broker.agent_addr, opts()).await;
        tests::wait_hosts_online(&client, 1).await;
        let kept = client
            .start_session(&tests::start("sleeper"))
            .await
            .unwrap();
        let gone = client
            .start_session(&tests::start("sleeper"))
            .await
            .unwrap();
        agent.stop().await;
        assert!(
            group_alive(kept.pid.unwrap()),
            "the agent left its game running"
        );
        // One game ends while no agent watches it.
        nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(gone.pid.unwrap() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let gone_pid = gone.pid.unwrap();
        wait_until("the killed game is gone", WAIT, || async move {
            !pid_alive(gone_pid)
        })
        .await;

        let agent = TestAgent::start(broker.agent_addr, opts()).await;
        let (kept_id, gone_id) = (kept.session_id.clone(), gone.session_id.clone());
        wait_until("the gone game's session ends", WAIT, || {
            let (client, id) = (client.clone(), gone_id.clone());
            async move { client.get_session(&id).await.unwrap().status == SessionStatus::Ended }
        })
        .await;
        let g = client.get_session(&gone_id).await.unwrap();
        assert_eq!(
            (g.end_reason, g.exit_code),
            (Some(EndReason::GameExited), None),
            "how it ended is unknown"
        );
        let k = client.get_session(&kept_id).await.unwrap();
        assert_eq!((k.status, k.pid), (SessionStatus::Running, kept.pid));
        // The adopted game is ended as usual.
        let ended = client.end_session(&kept_id).await.unwrap();
        assert_eq!(ended.status, SessionStatus::Ended);
        assert!(!group_alive(kept.pid.unwrap()));
        agent.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reused_pid_is_never_touched() {
        // A stranger in its own process group, whose PID the saved state claims for a game with
        // another start time.
        use std::os::unix::process::CommandExt;
        let mut stranger = std::process::Command::new("/bin/sleep")
            .arg("300")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = stranger.id();
        let state = tests::StateDir::new();
        let saved = agent::state::Saved {
            games: vec![agent::state::SavedGame {
                session_id: protocol::SessionId::new("old-session").unwrap(),
                pid,
                port: 20001,
                more_ports: Vec::new(),
                slot: None,
                start_time: Some(1),
                pending: false,
                idle_timeout_s: None,
                build: None,
                gpus: Vec::new(),
                weight: None,
            }],
            exited: vec![],
        };
        agent::state::save(state.path(), &saved).unwrap();
        let broker = TestBroker::start().await;
        let mut opts = AgentOptions::host("host-a");
        opts.state_dir = Some(state.path().to_owned());
        opts.stop_games_on_exit = true;
        let agent = TestAgent::start(broker.agent_addr, opts).await;
        let client = Client::new(&broker.url, None).unwrap();
        tests::wait_hosts_online(&client, 1).await;
        // Stopping the agent stops every game it adopted: the stranger must not be one.
        agent.stop().await;
        assert!(
            pid_alive(pid),
            "the agent killed a process that merely reused a game's PID"
        );
        let _ = stranger.kill();
        let _ = stranger.wait();
    }
}

mod database {
    use super::*;

    async fn readyz(broker: &TestBroker) -> (u16, Value) {
        let (status, _, json) =
            raw(reqwest::Method::GET, format!("{}/readyz", broker.url), None).await;
        (status, json)
    }

    /// With `--nats-url`, the broker is ready only while NATS is connected; it follows NATS
    /// going away and coming back, and stays alive throughout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readiness_follows_nats() {
        let Some(url) = tests::mariadb::database().await else {
            return;
        };
        let Some(mut nats) = tokio::task::spawn_blocking(tests::nats::NatsServer::start)
            .await
            .unwrap()
        else {
            return;
        };
        let broker = TestBroker::start_with(BrokerOptions {
            database_url: Some(url),
            nats_urls: vec![nats.url()],
            ..Default::default()
        })
        .await;
        assert_eq!(readyz(&broker).await.0, 200);
        let mut nats = tokio::task::spawn_blocking(move || {
            nats.kill();
            nats
        })
        .await
        .unwrap();
        wait_until("not ready without NATS", WAIT, || async {
            let (status, json) = readyz(&broker).await;
            status == 503 && json["error"]["code"] == "nats_unavailable"
        })
        .await;
        let (status, _, _) = raw(
            reqwest::Method::GET,
            format!("{}/healthz", broker.url),
            None,
        )
        .await;
        assert_eq!(status, 200, "alive all the same");
        let _nats = tokio::task::spawn_blocking(move || {
            nats.restart();
            nats
        })
        .await
        .unwrap();
        wait_until(
            "ready again once NATS is back",
            Duration::from_secs(30),
            || async { readyz(&broker).await.0 == 200 },
        )
        .await;
    }

    /// A broker whose NATS cannot be reached at start refuses to start, and says why.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broker_without_its_nats_refuses_to_start() {
        let Some(url) = tests::mariadb::database().await else {
            return;
        };
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_url = format!("nats://{}", dead.local_addr().unwrap());
        drop(dead);
        let mut config = broker::Config::loopback();
        config.http = "127.0.0.1:0".parse().unwrap();
        config.agent_listen = "127.0.0.1:0".parse().unwrap();
        config.database_url = Some(url);
        config.nats_urls = vec![dead_url.clone()];
        let listeners = broker::Listeners::bind(&config).unwrap();
        let run = broker::run(
            config,
            listeners,
            tokio_util::sync::CancellationToken::new(),
        );
        let err = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("the broker gives up on NATS within its connect timeout")
            .unwrap_err()
            .to_string();
        assert!(err.contains("NATS") && err.contains(&dead_url), "{err}");
    }

    /// A fault of the broker's own (here: its schema broken under it) answers 500 with a
    /// request id, and the database's words stay in the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fault_of_ours_is_a_500_with_a_request_id_and_no_internals() {
        use mysql_async::prelude::Queryable;
        let Some(url) = tests::mariadb::database().await else {
            return;
        };
        let (broker, _agents, _client) = system_with(
            BrokerOptions {
                database_url: Some(url.clone()),
                ..Default::default()
            },
            &[AgentOptions::host("host-a")],
        )
        .await;
        let mut conn = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
        // Every version of the insert procedure (each is named by its text's hash).
        let procs: Vec<String> = conn
            .query(
                "SELECT ROUTINE_NAME FROM information_schema.ROUTINES \
                 WHERE ROUTINE_SCHEMA = DATABASE() AND ROUTINE_NAME LIKE 'arcade\\_insert\\_session%'",
            )
            .await
            .unwrap();
        assert!(!procs.is_empty());
        for p in procs {
            conn.query_drop(format!("DROP PROCEDURE {p}"))
                .await
                .unwrap();
        }
        let (status, headers, json) = raw(
            reqwest::Method::POST,
            format!("{}/v1/sessions", broker.url),
            Some(r#"{"game_id":"sleeper"}"#),
        )
        .await;
        assert_eq!(status, 500, "{json}");
        assert_eq!(json["error"]["code"], "internal");
        let message = json["error"]["message"].as_str().unwrap();
        let id = headers["x-request-id"].to_str().unwrap();
        assert!(
            message.contains(&format!("request id {id}")),
            "{message} / {id}"
        );
        for internal in ["PROCEDURE", "arcade_insert_session", "1305", "exist"] {
            assert!(!message.contains(internal), "{message}");
        }
        conn.disconnect().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_history_says_who_did_what_in_mysql() {
        let Some(url) = tests::mariadb::database().await else {
            return;
        };
        history_says_who_did_what(BrokerOptions {
            database_url: Some(url),
            ..Default::default()
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_host_that_does_not_come_back_after_a_restart_loses_its_sessions() {
        let Some(url) = tests::mariadb::database().await else {
            return;
        };
        let opts = || BrokerOptions {
            database_url: Some(url.clone()),
            heartbeat_timeout: Duration::from_millis(800),
            ..Default::default()
        };
        let state = tests::StateDir::new();
        let agent_opts = || {
            let mut o = AgentOptions::host("host-a");
            o.stop_games_on_exit = false;
            o.state_dir = Some(state.path().to_owned());
            o
        };
        let broker = TestBroker::start_with(opts()).await;
        let agent = TestAgent::start(broker.agent_addr, agent_opts()).await;
        let client = Client::new(&broker.url, None).unwrap();
        tests::wait_hosts_online(&client, 1).await;
        let s = client
            .start_session(&tests::start("sleeper"))
            .await
            .unwrap();
        let pid = s.pid.unwrap();
        // The agent goes away (its game runs on), and so does the broker.
        agent.stop().await;
        broker.stop().await.unwrap();

        let broker = TestBroker::start_with(opts()).await;
        let client = Client::new(&broker.url, None).unwrap();
        let restored = client.get_session(&s.session_id).await.unwrap();
        assert_eq!(restored.status, SessionStatus::Running, "served as it was");
        wait_until("the session is lost", WAIT, || {
            let (client, id) = (client.clone(), s.session_id.clone());
            async move { client.get_session(&id).await.unwrap().status == SessionStatus::Lost }
        })
        .await;
        assert!(group_alive(pid));
        // The host comes back still running the lost session's game: it is stopped.
        let agent = TestAgent::start(broker.agent_addr, agent_opts()).await;
        wait_until("the lost session's game is stopped", WAIT, || async move {
            !group_alive(pid)
        })
        .await;
        assert_eq!(
            client.get_session(&s.session_id).await.unwrap().status,
            SessionStatus::Lost
        );
        agent.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_database_makes_writes_503_and_reads_of_hosts_go_on() {
        let Some(mut db) = tokio::task::spawn_blocking(tests::mariadb::MariaDb::start)
            .await
            .unwrap()
        else {
            assert!(
                std::env::var_os("CI").is_none(),
                "MariaDB is required in CI"
            );
            return;
        };
        let url = db.create_database("lost").await;
        let broker = TestBroker::start_with(BrokerOptions {
            database_url: Some(url),
            ..Default::default()
        })
        .await;
        let agent = TestAgent::start(broker.agent_addr, AgentOptions::host("host-a")).await;
        let client = Client::new(&broker.url, None).unwrap();
        tests::wait_hosts_online(&client, 1).await;
        let s = client
            .start_session(&tests::start("sleeper"))
            .await
            .unwrap();
        let (status, _, json) =
            raw(reqwest::Method::GET, format!("{}/readyz", broker.url), None).await;
        assert_eq!((status, &json["status"]), (200, &Value::from("ready")));
        tokio::task::spawn_blocking(move || db.kill())
            .await
            .unwrap();
        // Not ready, and says why (without the database's address); alive all the same.
        let (status, headers, json) =
            raw(reqwest::Method::GET, format!("{}/readyz", broker.url), None).await;
        assert_eq!(status, 503, "{json}");
        assert_eq!(json["error"]["code"], "store_unavailable");
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("session store"),
            "{json}"
        );
        assert!(headers.contains_key("retry-after"));
        let (status, _, _) = raw(
            reqwest::Method::GET,
            format!("{}/healthz", broker.url),
            None,
        )
        .await;
        assert_eq!(status, 200);
        let e = client
            .start_session(&tests::start("sleeper"))
            .await
            .unwrap_err();
        assert_eq!(
            (e.status(), api_code(&e)),
            (Some(503), Some(ErrorCode::StoreUnavailable)),
            "{e}"
        );
        assert!(
            client.hosts().await.is_ok(),
            "host reads do not need the database"
        );
        // The slot is free again, and the game launched beside the failed record is stopped:
        // each game the agent started has a log named after its session.
        assert_eq!(client.hosts().await.unwrap().hosts[0].sessions, 1);
        let launched: Vec<protocol::SessionId> =
            std::fs::read_dir(agent.state_dir.path().join("logs"))
                .unwrap()
                .filter_map(|e| {
                    let name = e.ok()?.file_name().into_string().ok()?;
                    protocol::SessionId::new(name.strip_suffix(".log")?).ok()
                })
                .filter(|id| *id != s.session_id)
                .collect();
        assert_eq!(
            launched.len(),
            1,
            "the refused start was launched: {launched:?}"
        );
        tests::wait_until("the refused start's game is gone", WAIT, || {
            let left = tests::processes_of(&launched);
            async move { left.is_empty() }
        })
        .await;
        assert_eq!(
            tests::processes_of(std::slice::from_ref(&s.session_id)).len(),
            1,
            "the first session's game runs on"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_finishes_requests_in_flight_then_tells_agents() {
    use protocol::wire::BrokerMessage;
    use tests::FakeAgent;
    let broker = TestBroker::start().await;
    let mut fake = FakeAgent::connect_as(broker.agent_addr, "fake").await;
    let client = Client::new(&broker.url, None).unwrap();
    let starting = tokio::spawn({
        let client = client.clone();
        async move { client.start_session(&tests::start("sleeper")).await }
    });
    let req = fake.expect_launch().await;
    // SIGTERM arrives while the start waits for its agent.
    let stopping = tokio::spawn(broker.stop());
    fake.launched(&req.session_id).await;
    let s = starting
        .await
        .unwrap()
        .expect("the start in flight completes");
    assert_eq!(s.status, SessionStatus::Running);
    assert_eq!(
        fake.recv(WAIT).await,
        Some(BrokerMessage::GoingAway),
        "agents are told"
    );
    stopping.await.unwrap().unwrap();
}

/// `--broker A,B,C`: the agent holds one link at a time, skips an address that refuses, and
/// moves to the next broker when its broker goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_moves_to_the_next_broker_when_its_broker_goes_away() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let b1 = TestBroker::start().await;
    let b2 = TestBroker::start().await;
    let c1 = Client::new(&b1.url, None).unwrap();
    let c2 = Client::new(&b2.url, None).unwrap();
    let mut opts = AgentOptions::host("host-a");
    opts.more_brokers = vec![b1.agent_addr, b2.agent_addr];
    opts.stop_games_on_exit = false;
    let _agent = TestAgent::start(dead_addr, opts).await;
    tests::wait_hosts_online(&c1, 1).await;
    assert!(
        c2.hosts().await.unwrap().hosts.is_empty(),
        "one link at a time"
    );
    let s = c1.start_session(&tests::start("sleeper")).await.unwrap();
    let pid = s.pid.unwrap();
    // The first broker stops: the agent moves on. This second broker keeps its own records
    // (no shared database here), so to it the game has no session, and it is stopped.
    b1.stop().await.unwrap();
    tests::wait_hosts_online(&c2, 1).await;
    wait_until(
        "the game unknown to the new broker is stopped",
        WAIT,
        || async move { !group_alive(pid) },
    )
    .await;
    let again = c2.start_session(&tests::start("sleeper")).await.unwrap();
    assert_eq!(again.status, SessionStatus::Running);
    assert_eq!(again.host_id.as_str(), "host-a");
}

/// Each connected host names its broker; `GET /v1/brokers` lists this one; `--broker-id`
/// defaults to the hostname and the agent port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_name_their_broker_and_brokers_are_listed() {
    let (broker, _agents, client) = system(&[AgentOptions::host("host-a")]).await;
    let hosts = client.hosts().await.unwrap().hosts;
    let id = hosts[0]
        .broker_id
        .clone()
        .expect("a connected host names its broker");
    assert!(
        id.ends_with(&format!(":{}", broker.agent_addr.port())),
        "{id}"
    );
    let (status, _, json) = raw(
        reqwest::Method::GET,
        format!("{}/v1/brokers", broker.url),
        None,
    )
    .await;
    assert_eq!(status, 200, "{json}");
    let brokers = json["brokers"].as_array().unwrap();
    assert_eq!(brokers.len(), 1);
    assert_eq!(brokers[0]["broker_id"], Value::from(id));
    assert_eq!(brokers[0]["hosts"], 1);
    assert_eq!(
        brokers[0]["address"],
        Value::from(broker.agent_addr.to_string())
    );
    let (status, _, json) = raw(reqwest::Method::GET, format!("{}/readyz", broker.url), None).await;
    assert_eq!((status, &json["status"]), (200, &Value::from("ready")));
}

/// A start whose client hung up is a task of the broker's own: a graceful stop waits for it
/// (it used to run on an HTTP worker's runtime, which stops with HTTP, and its game was then
/// stopped as a late launch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_whose_client_hung_up_finishes_through_a_graceful_stop() {
    use protocol::wire::BrokerMessage;
    use tests::FakeAgent;
    // HTTP's workers get no grace: the start is not kept alive by its request.
    let broker = TestBroker::start_with(BrokerOptions {
        shutdown_grace: Duration::ZERO,
        // The fake agent sends no heartbeats; its link must outlive the test's waits.
        heartbeat_timeout: Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    let mut fake = FakeAgent::connect_as(broker.agent_addr, "fake").await;
    let client = Client::new(&broker.url, None).unwrap();
    tests::wait_hosts_online(&client, 1).await;
    let http = broker.http_addr;
    let mut conn = tokio::net::TcpStream::connect(http).await.unwrap();
    let body = r#"{"game_id":"sleeper"}"#;
    let request = format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut conn, request.as_bytes())
        .await
        .unwrap();
    let req = fake.expect_launch().await;
    // The client hangs up, then SIGTERM arrives while the start waits for its agent.
    drop(conn);
    let mut stopping = tokio::spawn(broker.stop());
    wait_until("HTTP stops accepting", WAIT, || async move {
        tokio::net::TcpStream::connect(http).await.is_err()
    })
    .await;
    // HTTP has stopped, and the start still waits for its agent: the broker waits for it,
    // past the moment HTTP's workers are stopped (they check their grace once a second).
    assert!(
        tokio::time::timeout(Duration::from_secs(2), &mut stopping)
            .await
            .is_err(),
        "the broker stopped without waiting for the start"
    );
    fake.launched(&req.session_id).await;
    // The start finishes and keeps its game: the next word to the agent is the goodbye, not a
    // stop of a launch nobody waited for.
    assert_eq!(
        fake.recv(WAIT).await,
        Some(BrokerMessage::GoingAway),
        "the start was cut short and its game stopped"
    );
    stopping.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn games_get_a_clean_environment_and_can_run_unprivileged() {
    let mut opts = AgentOptions::host("host-a");
    let root = nix::unistd::getuid().is_root();
    if root {
        opts.run_as = Some("nobody".into());
    }
    let (_broker, _agents, client) = system(&[opts]).await;
    let s = client
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap();
    let pid = s.pid.unwrap();
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let keys: Vec<String> = env
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| {
            String::from_utf8_lossy(v)
                .split('=')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        keys.iter().all(|k| k.starts_with("ARCADE_")),
        "the agent's environment leaked: {keys:?}"
    );
    assert!(
        keys.contains(&"ARCADE_SESSION_ID".to_owned()) && keys.contains(&"ARCADE_PORT".to_owned())
    );
    if root {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .map(|l| {
                    l[name.len()..]
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .unwrap()
        };
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        assert!(
            field("Uid:").iter().all(|u| *u == nobody.uid.to_string()),
            "{status}"
        );
        assert!(
            field("Gid:").iter().all(|g| *g == nobody.gid.to_string()),
            "{status}"
        );
        assert!(
            field("Groups:").is_empty(),
            "a supplementary group of the agent's leaked: {status}"
        );
    }
    let ended = client.end_session(&s.session_id).await.unwrap();
    assert_eq!(ended.status, SessionStatus::Ended);
    assert!(!group_alive(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_limits_are_applied_or_the_launch_fails_saying_why() {
    let (_broker, _agents, client) = system(&[AgentOptions::host("host-a")]).await;
    let cgroups_writable = nix::unistd::getuid().is_root()
        && std::fs::create_dir_all("/sys/fs/cgroup/pids/arcade")
            .or_else(|_| std::fs::create_dir_all("/sys/fs/cgroup/arcade"))
            .is_ok();
    match client.start_session(&tests::start("limited")).await {
        Ok(s) => {
            assert!(cgroups_writable, "limits cannot have been applied here");
            let pid = s.pid.unwrap();
            let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
            let mine = format!("/arcade/{}", s.session_id);
            assert!(groups.contains(&mine), "{groups}");
            let dir = agent::limits::group_dir(&s.session_id, "pids");
            assert_eq!(
                std::fs::read_to_string(dir.join("pids.max"))
                    .unwrap()
                    .trim(),
                "16"
            );
            client.end_session(&s.session_id).await.unwrap();
            assert!(!group_alive(pid));
            assert!(!dir.exists(), "the game's cgroup is removed with it");
        }
        Err(e) => {
            assert!(!cgroups_writable, "cgroups are writable, yet: {e}");
            assert_eq!(e.code(), Some(ErrorCode::LaunchFailed));
            assert!(e.to_string().contains("resource limits"), "{e}");
        }
    }
}

mod events {
    use super::*;
    use portal_client::events::EventStream;
    use protocol::api::{Event, EventType as T};

    async fn next(s: &mut EventStream) -> Event {
        tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream is open")
            .expect("an event")
    }

    /// The stream as a portal reads it: every change of sessions and hosts, in order, with the
    /// session or host as it is after it; filters; and a reconnect with `Last-Event-ID` that
    /// gets exactly what it missed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_stream_tells_every_change_once_in_order_and_resumes() {
        let broker = TestBroker::start().await;
        let client = Client::new(&broker.url, None).unwrap();
        let mut all = client.events(&[], None, None, Some(0)).await.unwrap();
        let agent = TestAgent::start(broker.agent_addr, AgentOptions::host("ev-1")).await;
        let host = HostId::new("ev-1").unwrap();
        let online = next(&mut all).await;
        assert_eq!((online.id, online.kind), (1, T::HostOnline));
        assert_eq!(online.actor, "agent");
        assert_eq!(online.host.as_ref().unwrap().status, HostStatus::Online);

        let s = client
            .start_session(&tests::start("sleeper"))
            .await
            .unwrap();
        let created = next(&mut all).await;
        let running = next(&mut all).await;
        assert_eq!(
            (created.kind, running.kind),
            (T::SessionCreated, T::SessionRunning)
        );
        assert_eq!(
            created.session.as_ref().unwrap().status,
            SessionStatus::Starting
        );
        assert_eq!(running.session.as_ref().unwrap().pid, s.pid);
        assert_eq!((created.id, running.id), (2, 3));

        client.drain_host(&host).await.unwrap();
        client.resume_host(&host).await.unwrap();
        let drained = next(&mut all).await;
        let resumed = next(&mut all).await;
        assert_eq!(
            (drained.kind, resumed.kind),
            (T::HostDraining, T::HostResumed)
        );
        assert_eq!(drained.host.as_ref().unwrap().status, HostStatus::Draining);

        // Only session ends, opened from now on.
        let mut ends = client
            .events(&[T::SessionEnded], None, None, None)
            .await
            .unwrap();
        let mut this_session = client
            .events(&[], Some(&s.session_id), None, Some(0))
            .await
            .unwrap();
        client.end_session(&s.session_id).await.unwrap();
        let (stopping, ended) = (next(&mut all).await, next(&mut all).await);
        assert_eq!(
            (stopping.kind, ended.kind),
            (T::SessionStopping, T::SessionEnded)
        );
        assert_eq!(ended.session.as_ref().unwrap().status, SessionStatus::Ended);
        assert_eq!(next(&mut ends).await.id, ended.id);
        let mine: Vec<T> = [
            next(&mut this_session).await,
            next(&mut this_session).await,
            next(&mut this_session).await,
            next(&mut this_session).await,
        ]
        .iter()
        .map(|e| e.kind)
        .collect();
        assert_eq!(
            mine,
            [
                T::SessionCreated,
                T::SessionRunning,
                T::SessionStopping,
                T::SessionEnded
            ]
        );

        // A reconnect after event 3 gets 4, 5, ... exactly once, then live ones.
        let mut again = client.events(&[], None, None, Some(3)).await.unwrap();
        for want in 4..=ended.id {
            assert_eq!(next(&mut again).await.id, want);
        }
        assert_eq!(again.last_event_id(), Some(ended.id));
        agent.stop().await;
        let offline = next(&mut again).await;
        assert_eq!((offline.id, offline.kind), (ended.id + 1, T::HostOffline));
        assert_eq!(next(&mut all).await.id, offline.id);

        // What a bad request looks like.
        match client.events(&[T::Unknown], None, None, None).await {
            Err(ClientError::Api { status: 400, .. }) => {}
            other => panic!("an unknown type: {other:?}"),
        }
        // Hostile or malformed inputs are refused before any stream opens: 400, or 404 for
        // an id no session can have (as everywhere ids are taken).
        let http = reqwest::Client::new();
        for (header, query, want) in [
            (Some("abc"), "", 400),
            (Some("-1"), "", 400),
            (None, "?after=x", 400),
            (None, "?session_id=a%0Ab", 404),
            (None, "?types=session.ended,session.teleported", 400),
            (None, "?unknown=1", 400),
        ] {
            let mut r = http.get(format!("{}/v1/events{query}", broker.url));
            if let Some(h) = header {
                r = r.header("Last-Event-ID", h);
            }
            let status = r.send().await.unwrap().status().as_u16();
            assert_eq!(status, want, "{header:?} {query:?}");
        }
    }
}

mod webhooks {
    use super::*;
    use broker::events::webhooks::WebhookConfig;
    use protocol::api::{Event, EventType as T};
    use tests::webhook::{verify, Receiver};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn config(url: &str) -> WebhookConfig {
        let mut c = WebhookConfig::from_flags(vec![url.to_owned()], Some(SECRET.into()), vec![])
            .unwrap()
            .unwrap();
        c.backoff = (Duration::from_millis(20), Duration::from_millis(200));
        c
    }

    /// Waits until the receiver has accepted `n` deliveries, and returns them as events.
    async fn accepted(r: &Receiver, n: usize) -> Vec<Event> {
        wait_until("the deliveries", Duration::from_secs(20), || async {
            r.accepted().len() >= n
        })
        .await;
        r.accepted()
            .iter()
            .map(|d| serde_json::from_str(&d.body).unwrap())
            .collect()
    }

    /// A receiver that refuses the first deliveries gets every session event once accepted,
    /// in order, each signed so that the Standard Webhooks check passes, each the stream's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_session_event_is_delivered_signed_in_order_after_refusals() {
        let receiver = Receiver::start(5).await;
        let (broker, _agents, client) = system_with(
            BrokerOptions {
                webhooks: Some(config(&receiver.url)),
                ..Default::default()
            },
            &[AgentOptions::host("hook-1")],
        )
        .await;
        for _ in 0..3 {
            let s = client
                .start_session(&tests::start("sleeper"))
                .await
                .unwrap();
            client.end_session(&s.session_id).await.unwrap();
        }
        let events = accepted(&receiver, 12).await;
        let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "in order, once: {ids:?}"
        );
        assert_eq!(events.len(), 12, "host events are not sent by default");
        assert!(events
            .iter()
            .all(|e| e.kind.as_str().starts_with("session.")));
        let all = receiver.deliveries();
        assert!(all.len() >= 17, "the first five were refused and retried");
        for d in receiver.accepted() {
            assert!(
                verify(&d, SECRET),
                "a signature does not verify: {:?}",
                d.headers
            );
            assert_eq!(
                d.headers.get("content-type").map(String::as_str),
                Some("application/json")
            );
            let mut forged = d.clone();
            forged.body.push(' ');
            assert!(!verify(&forged, SECRET), "a changed body still verifies");
        }
        // Each delivery is the stream's event.
        let mut stream = client.events(&[], None, None, Some(0)).await.unwrap();
        let mut by_id = std::collections::HashMap::new();
        while by_id.len() < events.last().unwrap().id as usize {
            let e = tokio::time::timeout(WAIT, stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            by_id.insert(e.id, e);
        }
        for e in &events {
            assert_eq!(Some(e), by_id.get(&e.id));
        }
        assert_eq!(events[0].kind, T::SessionCreated);
        drop(broker);
    }

    /// With MySQL the stream is the outbox: events made while the receiver is down are
    /// delivered by the next broker on the same database once it is back, each once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliveries_survive_a_broker_restart_on_mysql() {
        let Some(db) = tests::mariadb::database().await else {
            return;
        };
        let receiver = Receiver::start(0).await;
        receiver.set_down(true);
        let options = || BrokerOptions {
            database_url: Some(db.clone()),
            webhooks: Some(config(&receiver.url)),
            ..Default::default()
        };
        let (broker, agents, client) =
            system_with(options(), &[AgentOptions::host("hook-2")]).await;
        for _ in 0..2 {
            let s = client
                .start_session(&tests::start("sleeper"))
                .await
                .unwrap();
            client.end_session(&s.session_id).await.unwrap();
        }
        wait_until("a delivery was tried", WAIT, || async {
            !receiver.deliveries().is_empty()
        })
        .await;
        broker.stop().await.unwrap();
        drop(agents);
        receiver.set_down(false);
        let again = TestBroker::start_with(options()).await;
        let events = accepted(&receiver, 8).await;
        let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "in order, once: {ids:?}"
        );
        let kinds: Vec<T> = events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                T::SessionCreated,
                T::SessionRunning,
                T::SessionStopping,
                T::SessionEnded,
                T::SessionCreated,
                T::SessionRunning,
                T::SessionStopping,
                T::SessionEnded
            ]
        );
        drop(again);
    }
}

mod metrics {
    use super::*;

    /// `/metrics` as Prometheus reads it: parsed by a Prometheus text parser, with the
    /// counters, histograms and gauges of what just happened.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_parse_and_count_what_happened() {
        let (broker, _agents, client) = system(&[AgentOptions::host("metrics-1")]).await;
        let s = client
            .start_session(&tests::start("sleeper"))
            .await
            .unwrap();
        let _running = client
            .start_session(&tests::start("sleeper"))
            .await
            .unwrap();
        let ended = client.end_session(&s.session_id).await.unwrap();
        let _ = client.start_session(&tests::start("no-such-game")).await;
        let text = reqwest::get(format!("{}/metrics", broker.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus parses it");
        let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
            scrape
                .samples
                .iter()
                .find(|s| {
                    s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
                })
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => f64::NAN,
                })
                .unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
        };
        assert_eq!(
            value("arcade_session_starts_total", &[("outcome", "started")]),
            2.0
        );
        assert_eq!(
            value(
                "arcade_session_starts_total",
                &[("outcome", "unknown_game")]
            ),
            1.0
        );
        assert_eq!(
            value("arcade_session_ends_total", &[("outcome", "ended")]),
            1.0
        );
        assert_eq!(
            value(
                "arcade_sessions",
                &[("status", "running"), ("game_id", "sleeper")]
            ),
            1.0
        );
        assert_eq!(value("arcade_hosts", &[("status", "online")]), 1.0);
        assert_eq!(
            value("arcade_host_sessions", &[("host_id", "metrics-1")]),
            1.0
        );
        assert_eq!(
            value("arcade_host_capacity_sessions", &[("host_id", "metrics-1")]),
            8.0
        );
        assert_eq!(value("arcade_agent_links", &[]), 1.0);
        // The ended session's time, from its own record; no GPU.
        let ran = (ended.ended_at.unwrap() - ended.started_at.unwrap()).as_seconds_f64();
        let counted = value(
            "arcade_session_run_seconds_total",
            &[("game_id", "sleeper")],
        );
        assert!((counted - ran).abs() < 1e-3, "{counted} against {ran}");
        assert_eq!(
            value(
                "arcade_session_gpu_seconds_total",
                &[("game_id", "sleeper")]
            ),
            0.0
        );
        assert_eq!(
            value(
                "arcade_http_requests_total",
                &[
                    ("route", "/v1/sessions"),
                    ("method", "POST"),
                    ("status", "201")
                ]
            ),
            2.0
        );
        assert!(
            scrape
                .samples
                .iter()
                .any(|s| s.metric == "arcade_session_start_duration_seconds"),
            "the start latency histogram: {text}"
        );
    }
}
