//! Join tokens through the real HTTP server and a real game (issue 26): a player's start
//! answers a one-time join token; the player's client hands it to the game over the game's
//! own TCP port; the game (the test catalog's `joiner`) redeems it with its
//! `ARCADE_GAME_KEY` at its `ARCADE_JOIN_URL`, once. Nothing else shows the token.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::time::Duration;

use portal_client::{Client, ClientError};
use protocol::api::{ErrorCode, EventType, PoolSpec, Session, SessionQuery, StartedSession};
use protocol::{PoolId, SessionId};
use tests::{keys, BrokerOptions, TestAgent, TestBroker};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn broker(ttl: Option<Duration>) -> (TestBroker, TestAgent) {
    let broker = TestBroker::start_with(BrokerOptions {
        api_keys: vec![
            format!("portal:{}", keys::PORTAL),
            format!("provider:{}", keys::PROVIDER),
            format!("admin:{}", keys::ADMIN),
        ],
        player_keys: vec![format!("hs256:{}", keys::PLAYER_SECRET)],
        join_token_ttl: ttl,
        ..Default::default()
    })
    .await;
    let agent = TestAgent::start(broker.agent_addr, tests::AgentOptions::host("gpu-1")).await;
    let admin = Client::new(&broker.url, Some(keys::ADMIN.into())).unwrap();
    tests::wait_until("the host is online", Duration::from_secs(10), || {
        let admin = admin.clone();
        async move {
            admin
                .games()
                .await
                .is_ok_and(|g| g.games.iter().any(|g| g.game_id.as_str() == "joiner"))
        }
    })
    .await;
    (broker, agent)
}

fn code(e: &ClientError) -> (u16, ErrorCode) {
    tests::api_error(e)
}

/// What the game answers a player who connects and hands it `token`.
async fn connect_with(s: &Session, token: &str) -> String {
    let addr = (s.ip.unwrap(), s.port.unwrap());
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let greeting = lines.next_line().await.unwrap().unwrap();
    assert_eq!(greeting, format!("session {}", s.session_id));
    write
        .write_all(format!("{token}\n").as_bytes())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the game answers")
        .unwrap()
        .unwrap()
}

/// A client holding session `id`'s game key, as its game would.
async fn game(broker: &TestBroker, id: &SessionId) -> Client {
    let (url, key) = tests::join_env(id).await;
    assert_eq!(url, format!("{}/v1/sessions/{id}/join", broker.url));
    Client::with_bearer(&broker.url, &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_joins_its_game_once_with_the_token_its_start_answered() {
    let (broker, _agent) = broker(None).await;
    let alice = Client::with_bearer(&broker.url, &keys::player("alice")).unwrap();
    let provider = Client::new(&broker.url, Some(keys::PROVIDER.into())).unwrap();

    let started = alice
        .start_joinable(&tests::start("joiner"), None)
        .await
        .unwrap();
    let token = started.join_token.clone().expect("a join token");
    assert_eq!(token.len(), 22, "128 bits, base64url");
    let until = started.join_expires_at.unwrap() - time::OffsetDateTime::now_utc();
    assert!(
        until > time::Duration::seconds(100) && until <= time::Duration::seconds(120),
        "{until}"
    );
    let s = started.session;

    // The player's client hands it to the game, which redeems it: once.
    assert_eq!(connect_with(&s, &token).await, "joined alice");
    assert_eq!(connect_with(&s, &token).await, "refused 409 token_used");
    assert_eq!(
        connect_with(&s, "AAAAAAAAAAAAAAAAAAAAAA").await,
        "refused 403 forbidden"
    );

    // session.joined carries the user, never the token.
    let mut events = provider
        .events(
            &[EventType::SessionJoined],
            Some(&s.session_id),
            None,
            Some(0),
        )
        .await
        .unwrap();
    let joined = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(joined.kind, EventType::SessionJoined);
    assert_eq!(joined.actor, "game");
    let body = serde_json::to_string(&joined).unwrap();
    assert!(body.contains("\"user_id\":\"alice\""), "{body}");
    assert!(!body.contains(&token), "{body}");

    // A reconnect: a fresh token voids the previous one.
    let fresh = alice.new_join_token(&s.session_id).await.unwrap();
    assert_ne!(fresh.join_token, token);
    assert_eq!(
        connect_with(&s, &token).await,
        "refused 403 forbidden",
        "the voided token"
    );
    assert_eq!(connect_with(&s, &fresh.join_token).await, "joined alice");

    // Reads never show a token.
    let raw = reqwest::Client::new()
        .get(format!("{}/v1/sessions/{}", broker.url, s.session_id))
        .bearer_auth(keys::PROVIDER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !raw.contains("join_token") && !raw.contains(&token),
        "{raw}"
    );
    let listed = provider
        .list_sessions(&SessionQuery::default())
        .await
        .unwrap();
    let listed = serde_json::to_string(&listed).unwrap();
    assert!(!listed.contains(&fresh.join_token), "{listed}");
    alice.end_session(&s.session_id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_key_redeems_only_its_own_sessions_tokens_and_only_while_it_runs() {
    let (broker, _agent) = broker(None).await;
    let portal = Client::new(&broker.url, Some(keys::PORTAL.into())).unwrap();
    let a = portal
        .start_joinable(&tests::start("joiner"), None)
        .await
        .unwrap();
    let b = portal
        .start_joinable(&tests::start("joiner"), None)
        .await
        .unwrap();
    let (a_id, b_id) = (&a.session.session_id, &b.session.session_id);
    let game_a = game(&broker, a_id).await;
    let game_b = game(&broker, b_id).await;

    // Another session's key: 403, and the token stays good.
    let other = game_a
        .join(b_id, b.join_token.as_deref().unwrap())
        .await
        .unwrap_err();
    assert_eq!(code(&other), (403, ErrorCode::Forbidden));
    // A game key does nothing else.
    let e = game_a
        .list_sessions(&SessionQuery::default())
        .await
        .unwrap_err();
    assert_eq!(code(&e), (403, ErrorCode::Forbidden));
    let e = game_a.end_session(a_id).await.unwrap_err();
    assert_eq!(code(&e), (403, ErrorCode::Forbidden));
    // An altered key does not verify.
    let (_, key) = tests::join_env(a_id).await;
    let altered = format!("{}x", &key[..key.len() - 1]);
    let forged = Client::with_bearer(&broker.url, &altered).unwrap();
    let e = forged
        .join(a_id, a.join_token.as_deref().unwrap())
        .await
        .unwrap_err();
    assert_eq!(code(&e), (401, ErrorCode::Unauthorized));
    // Nor does a portal key redeem.
    let e = portal
        .join(a_id, a.join_token.as_deref().unwrap())
        .await
        .unwrap_err();
    assert_eq!(code(&e), (403, ErrorCode::Forbidden));

    let joined = game_b
        .join(b_id, b.join_token.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(joined.session_id, *b_id);
    assert_eq!(joined.user_id, None);

    // The key dies with its session: a fresh token is of no use once it ended.
    let fresh = portal.new_join_token(a_id).await.unwrap();
    portal.end_session(a_id).await.unwrap();
    let dead = game_a.join(a_id, &fresh.join_token).await.unwrap_err();
    assert_eq!(code(&dead), (403, ErrorCode::Forbidden));
    let e = portal.new_join_token(a_id).await.unwrap_err();
    assert_eq!(code(&e), (409, ErrorCode::Conflict));
    portal.end_session(b_id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_key_answers_the_same_token_and_a_token_expires() {
    let (broker, _agent) = broker(Some(Duration::from_secs(2))).await;
    let portal = Client::new(&broker.url, Some(keys::PORTAL.into())).unwrap();
    let first = portal
        .start_joinable(&tests::start("joiner"), Some("order-7"))
        .await
        .unwrap();
    let again: StartedSession = portal
        .start_joinable(&tests::start("joiner"), Some("order-7"))
        .await
        .unwrap();
    assert_eq!(again.session.session_id, first.session.session_id);
    assert!(first.join_token.is_some());
    assert_eq!(again.join_token, first.join_token);
    assert_eq!(again.join_expires_at, first.join_expires_at);

    // Past --join-token-ttl: 410.
    let id = &first.session.session_id;
    let expires = first.join_expires_at.unwrap();
    tests::wait_until(
        "the token expired",
        Duration::from_secs(10),
        || async move { time::OffsetDateTime::now_utc() > expires },
    )
    .await;
    let game = game(&broker, id).await;
    let e = game
        .join(id, first.join_token.as_deref().unwrap())
        .await
        .unwrap_err();
    assert_eq!(code(&e), (410, ErrorCode::TokenExpired));
    // A player's reconnect gets a fresh one; a repeat of the key then answers no token (the
    // one it gave is void).
    let fresh = portal.new_join_token(id).await.unwrap();
    let repeat = portal
        .start_joinable(&tests::start("joiner"), Some("order-7"))
        .await
        .unwrap();
    assert_eq!(repeat.join_token, None);
    assert_eq!(
        game.join(id, &fresh.join_token).await.unwrap().session_id,
        *id
    );
    portal.end_session(id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_game_is_joined_only_once_a_player_claimed_it() {
    let (broker, _agent) = broker(None).await;
    let admin = Client::new(&broker.url, Some(keys::ADMIN.into())).unwrap();
    let bob = Client::with_bearer(&broker.url, &keys::player("bob")).unwrap();
    let pool = PoolId::new("joiners").unwrap();
    let spec: PoolSpec =
        serde_json::from_value(serde_json::json!({"game_id": "joiner", "size": 1})).unwrap();
    admin.put_pool(&pool, &spec, None).await.unwrap();
    let q = SessionQuery {
        status: Some(protocol::api::SessionStatus::Ready),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let ready = loop {
        if let Some(s) = admin.list_sessions(&q).await.unwrap().sessions.pop() {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "no pool game ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Waiting for a player, its key redeems nothing: there is no token yet.
    let waiting = game(&broker, &ready.session_id).await;
    let e = waiting
        .join(&ready.session_id, "AAAAAAAAAAAAAAAAAAAAAA")
        .await
        .unwrap_err();
    assert_eq!(code(&e), (403, ErrorCode::Forbidden));

    let claimed = bob
        .start_joinable(&tests::start("joiner"), None)
        .await
        .unwrap();
    assert_eq!(
        claimed.session.session_id, ready.session_id,
        "claimed from the pool"
    );
    let token = claimed.join_token.unwrap();
    assert_eq!(connect_with(&claimed.session, &token).await, "joined bob");
    bob.end_session(&claimed.session.session_id).await.unwrap();
    admin.delete_pool(&pool, None).await.unwrap();
}
