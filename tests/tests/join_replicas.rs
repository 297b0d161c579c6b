//! Join tokens among replicas on MariaDB and NATS (issue 26): a token is redeemed at most once
//! whichever replicas the redeems reach, also across a replica's `kill -9`; and a broker at
//! debug level, through a whole player and join flow, never writes a secret anywhere a
//! person or another program reads.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::time::Duration;

use portal_client::{Client, ClientError};
use protocol::api::{ErrorCode, EventType, SessionQuery};
use tests::cluster::{Cluster, More, Replica};
use tests::{keys, AgentOptions, TestAgent};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn code(r: &Result<protocol::api::Joined, ClientError>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(ClientError::Api { status, .. }) => *status,
        Err(other) => panic!("not an API answer: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_redeems_over_three_replicas_join_exactly_once() {
    let Some(c) = Cluster::start().await else {
        return;
    };
    for round in 0..3 {
        let started = c
            .client(round)
            .start_joinable(&tests::start("joiner"), None)
            .await
            .unwrap();
        let id = started.session.session_id.clone();
        let token = started.join_token.unwrap();
        let (_, key) = tests::join_env(&id).await;
        let redeems = (0..20).map(|i| {
            let game = Client::with_bearer(&c.replicas[i % 3].url(), &key).unwrap();
            let (id, token) = (id.clone(), token.clone());
            tokio::spawn(async move { code(&game.join(&id, &token).await) })
        });
        let mut answers: Vec<u16> = Vec::new();
        for r in redeems {
            answers.push(r.await.unwrap());
        }
        answers.sort_unstable();
        assert_eq!(
            answers.iter().filter(|a| **a == 200).count(),
            1,
            "{answers:?}"
        );
        assert!(answers[1..].iter().all(|a| *a == 409), "{answers:?}");
        // One session.joined, whichever replica wrote it.
        let mut events = c
            .client(round + 1)
            .events(&[EventType::SessionJoined], Some(&id), None, Some(0))
            .await
            .unwrap();
        let joined = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(joined.session.unwrap().session_id, id);
        c.client(round).end_session(&id).await.unwrap();
    }
    tests::cluster::no_orphan(&c, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_outlives_a_replicas_kill_9_and_a_used_one_stays_used() {
    let Some(mut c) = Cluster::start().await else {
        return;
    };
    let via = c.client(0);
    let used = via
        .start_joinable(&tests::start("joiner"), Some("join-kill-a"))
        .await
        .unwrap();
    let fresh = via
        .start_joinable(&tests::start("joiner"), Some("join-kill-b"))
        .await
        .unwrap();
    let (used_id, fresh_id) = (&used.session.session_id, &fresh.session.session_id);
    let (_, used_key) = tests::join_env(used_id).await;
    let (_, fresh_key) = tests::join_env(fresh_id).await;
    // Replicas keep their ports across a restart.
    let urls: Vec<String> = c.replicas.iter().map(Replica::url).collect();
    let game = |i: usize, key: &str| Client::with_bearer(&urls[i], key).unwrap();
    let used_token = used.join_token.unwrap();
    let fresh_token = fresh.join_token.unwrap();
    assert_eq!(
        code(&game(0, &used_key).join(used_id, &used_token).await),
        200
    );

    // The replica that answered both starts (and holds some of the hosts) dies.
    c.replicas[0].kill9();
    let (db, nats) = (c.db.clone(), c.nats.url());
    c.replicas[0].restart(&db, &nats).await;
    c.wait_online(4).await;

    // A repeat of the key answers the same token; it redeems once, on any replica.
    let repeat = c
        .client(1)
        .start_joinable(&tests::start("joiner"), Some("join-kill-b"))
        .await
        .unwrap();
    assert_eq!(repeat.join_token.as_deref(), Some(fresh_token.as_str()));
    assert_eq!(
        code(&game(0, &fresh_key).join(fresh_id, &fresh_token).await),
        200
    );
    assert_eq!(
        code(&game(1, &fresh_key).join(fresh_id, &fresh_token).await),
        409
    );
    assert_eq!(
        code(&game(2, &used_key).join(used_id, &used_token).await),
        409
    );
    for id in [used_id, fresh_id] {
        c.client(2).end_session(id).await.unwrap();
    }
    tests::cluster::no_orphan(&c, 1).await;
}

/// What a player's client hears from the game after handing it `token`.
async fn hand_over(s: &protocol::api::Session, token: &str) -> String {
    let stream = tokio::net::TcpStream::connect((s.ip.unwrap(), s.port.unwrap()))
        .await
        .unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    lines.next_line().await.unwrap().unwrap();
    write
        .write_all(format!("{token}\n").as_bytes())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_at_debug_level_writes_no_token_and_no_key_anywhere() {
    const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let _turn = tests::cluster::TURN.lock().await;
    let Some(db) = tests::mariadb::database().await else {
        return;
    };
    let Some(nats) = tests::nats::NatsServer::start() else {
        return;
    };
    let hooks = tests::webhook::Receiver::start(0).await;
    let more = More {
        args: [
            "--api-key",
            &format!("admin:{}", keys::ADMIN),
            "--player-key",
            &format!("hs256:{}", keys::PLAYER_SECRET),
            "--webhook",
            &hooks.url,
            "--webhook-secret",
            WEBHOOK_SECRET,
            "--webhook-types",
            "session.created,session.running,session.joined,session.ended",
        ]
        .map(str::to_owned)
        .to_vec(),
        rust_log: "debug".into(),
    };
    let broker = Replica::up_with("b-debug", &db, &nats.url(), "8", &more).await;
    let _agent = TestAgent::start(broker.agent_addr(), AgentOptions::host("gpu-debug")).await;
    let admin = Client::with_bearer(&broker.url(), keys::ADMIN).unwrap();
    tests::wait_until("the host is online", Duration::from_secs(20), || {
        let admin = admin.clone();
        async move { admin.games().await.is_ok_and(|g| !g.games.is_empty()) }
    })
    .await;

    // A whole flow: a player starts, its client joins through the game, reconnects with a
    // fresh token (redeemed by the game key directly), reads its session and ends it.
    let player_token = keys::player("alice");
    let alice = Client::with_bearer(&broker.url(), &player_token).unwrap();
    let started = alice
        .start_joinable(&tests::start("joiner"), Some("debug-flow"))
        .await
        .unwrap();
    let s = started.session.clone();
    let first = started.join_token.unwrap();
    assert_eq!(hand_over(&s, &first).await, "joined alice");
    let again = alice
        .start_joinable(&tests::start("joiner"), Some("debug-flow"))
        .await
        .unwrap();
    assert_eq!(again.join_token.as_deref(), Some(first.as_str()));
    let second = alice
        .new_join_token(&s.session_id)
        .await
        .unwrap()
        .join_token;
    let (_, game_key) = tests::join_env(&s.session_id).await;
    let game = Client::with_bearer(&broker.url(), &game_key).unwrap();
    game.join(&s.session_id, &second).await.unwrap();
    let e = game.join(&s.session_id, &second).await.unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Api {
                code: ErrorCode::TokenUsed,
                ..
            }
        ),
        "{e}"
    );
    alice.get_session(&s.session_id).await.unwrap();
    alice.end_session(&s.session_id).await.unwrap();
    tests::wait_until("the webhooks delivered", Duration::from_secs(20), || {
        let n = hooks
            .accepted()
            .iter()
            .filter(|d| d.body.contains("session.ended"))
            .count();
        async move { n >= 1 }
    })
    .await;

    // Everything a person or a program reads of the broker.
    let mut read = Vec::new();
    read.push((
        "the broker's log",
        std::fs::read_to_string(&broker.log).unwrap(),
    ));
    read.push((
        "webhooks",
        hooks
            .deliveries()
            .iter()
            .map(|d| format!("{:?} {}", d.headers, d.body))
            .collect::<String>(),
    ));
    let raw = |path: String| {
        let url = format!("{}{path}", broker.url());
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(keys::ADMIN)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    read.push(("/metrics", raw("/metrics".into()).await));
    read.push((
        "the session",
        raw(format!("/v1/sessions/{}", s.session_id)).await,
    ));
    read.push((
        "the history",
        raw(format!("/v1/sessions/{}/events", s.session_id)).await,
    ));
    read.push(("the list", raw("/v1/sessions".into()).await));
    read.push((
        "the game's log",
        raw(format!("/v1/sessions/{}/logs", s.session_id)).await,
    ));
    read.push(("the dashboard", raw("/ui/app.js".into()).await));
    let mut stream = admin.events(&[], None, None, Some(0)).await.unwrap();
    let mut events = String::new();
    while let Ok(Some(Ok(e))) = tokio::time::timeout(Duration::from_secs(2), stream.next()).await {
        events.push_str(&serde_json::to_string(&e).unwrap());
        if e.kind == EventType::SessionEnded {
            break;
        }
    }
    assert!(events.contains("session.joined"), "{events}");
    read.push(("the event stream", events));
    let listed = admin.list_sessions(&SessionQuery::default()).await.unwrap();
    assert_eq!(listed.sessions.len(), 1);

    let log_len = read[0].1.len();
    assert!(
        log_len > 10_000,
        "a debug log of {log_len} bytes: not at debug level?"
    );
    for (secret, what) in [
        (first.as_str(), "the first join token"),
        (second.as_str(), "the fresh join token"),
        (game_key.as_str(), "the game key"),
        (
            &game_key["arcade-game.".len()..][..43],
            "the game key's MAC",
        ),
        (player_token.as_str(), "the player token"),
        (keys::ADMIN, "the admin key"),
        (&WEBHOOK_SECRET[6..], "the webhook secret"),
    ] {
        for (place, text) in &read {
            assert!(!text.contains(secret), "{what} is in {place}");
        }
    }
}
