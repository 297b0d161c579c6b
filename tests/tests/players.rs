//! Player tokens through the real HTTP server (issue 26): a portal's server signs a JWT for
//! one player; the player's browser calls the broker with it and can start, read, list and end
//! only that player's sessions, and nothing else. Tokens are minted here as a portal would,
//! with `jsonwebtoken`: HS256 with a shared secret, and EdDSA with the test Ed25519 key.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use portal_client::{Client, ClientError};
use protocol::api::{ErrorCode, SessionQuery, SessionStatus, StartSession};
use serde_json::json;
use tests::{AgentOptions, BrokerOptions, TestAgent, TestBroker};

const PORTAL_KEY: &str = "portal-key-0123456789";
const SECRET: &str = "the-portal-servers-hs256-secret";
const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../broker/tests/fixtures/players"
);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token for `user`, valid `for_s` seconds from now (negative: expired), signed as `alg`.
fn token(user: &str, alg: Algorithm, for_s: i64) -> String {
    let exp = i64::try_from(now()).unwrap() + for_s;
    let claims = json!({"sub": user, "exp": exp, "aud": "arcade"});
    match alg {
        Algorithm::EdDSA => {
            let mut header = Header::new(alg);
            header.kid = Some("ed-1".into());
            let pem = std::fs::read(format!("{FIXTURES}/ed-1.key")).unwrap();
            encode(&header, &claims, &EncodingKey::from_ed_pem(&pem).unwrap()).unwrap()
        }
        _ => encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap(),
    }
}

async fn broker(max_per_user: Option<u32>) -> (TestBroker, TestAgent) {
    let broker = TestBroker::start_with(BrokerOptions {
        api_keys: vec![format!("portal:{PORTAL_KEY}")],
        player_keys: vec![format!("hs256:{SECRET}"), format!("{FIXTURES}/ed-1.pem")],
        max_sessions_per_user: max_per_user,
        ..Default::default()
    })
    .await;
    let mut opts = AgentOptions::host("gpu-1");
    opts.max_sessions = 8;
    let agent = TestAgent::start(broker.agent_addr, opts).await;
    let portal = Client::new(&broker.url, Some(PORTAL_KEY.into())).unwrap();
    tests::wait_until(
        "the host is online",
        std::time::Duration::from_secs(10),
        || {
            let portal = portal.clone();
            async move {
                portal.games().await.is_ok_and(|g| {
                    g.games
                        .iter()
                        .any(|g| g.game_id.as_str() == "sleeper" && g.hosts > 0)
                })
            }
        },
    )
    .await;
    (broker, agent)
}

fn code(e: &ClientError) -> (u16, ErrorCode) {
    tests::api_error(e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_starts_reads_lists_and_ends_only_its_own_sessions() {
    let (broker, _agent) = broker(None).await;
    let portal = Client::new(&broker.url, Some(PORTAL_KEY.into())).unwrap();
    let alice = Client::new(&broker.url, Some(token("alice", Algorithm::HS256, 600))).unwrap();
    let bob = Client::new(&broker.url, Some(token("bob", Algorithm::EdDSA, 600))).unwrap();

    // A player's start is its own user's, whatever the body leaves out.
    let mine = alice.start_session(&tests::start("sleeper")).await.unwrap();
    assert_eq!(mine.user_id.as_deref(), Some("alice"));
    let for_bob = StartSession {
        user_id: Some("bob".into()),
        ..tests::start("sleeper")
    };
    let refused = alice.start_session(&for_bob).await.unwrap_err();
    assert_eq!(code(&refused), (403, ErrorCode::Forbidden));
    let his = bob.start_session(&tests::start("sleeper")).await.unwrap();
    assert_eq!(his.user_id.as_deref(), Some("bob"));

    // Another user's session is as if it did not exist.
    let gone = alice.get_session(&his.session_id).await.unwrap_err();
    assert_eq!(code(&gone), (404, ErrorCode::NotFound));
    let gone = alice.end_session(&his.session_id).await.unwrap_err();
    assert_eq!(code(&gone), (404, ErrorCode::NotFound));
    let gone = alice.session_history(&his.session_id).await.unwrap_err();
    assert_eq!(code(&gone), (404, ErrorCode::NotFound));
    // Listing is its own, whatever user it asks for.
    let asks_for_bob = SessionQuery {
        user_id: Some("bob".into()),
        ..Default::default()
    };
    let listed = alice.list_sessions(&asks_for_bob).await.unwrap();
    assert_eq!(
        listed
            .sessions
            .iter()
            .map(|s| s.session_id.clone())
            .collect::<Vec<_>>(),
        vec![mine.session_id.clone()]
    );
    assert_eq!(
        portal
            .list_sessions(&SessionQuery::default())
            .await
            .unwrap()
            .sessions
            .len(),
        2,
        "the portal's key sees both"
    );
    // Only the player's routes: hosts, brokers, metrics and pools are not.
    let refused = alice.hosts().await.unwrap_err();
    assert_eq!(code(&refused), (403, ErrorCode::Forbidden));
    assert!(alice.games().await.is_ok());

    // Its own ends; the other player's session runs on.
    let ended = alice.end_session(&mine.session_id).await.unwrap();
    assert_eq!(ended.status, SessionStatus::Ended);
    let still = portal.get_session(&his.session_id).await.unwrap();
    assert_eq!(still.status, SessionStatus::Running);
    bob.end_session(&his.session_id).await.unwrap();
}

/// The original portal's `/IP` with a player token starts the player's own session, so
/// per-user quotas hold for the old portal's calls too; its `/End` ends only the player's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_portal_calls_act_for_the_player_and_count_against_its_quota() {
    let (broker, _agent) = broker(Some(1)).await;
    let http = reqwest::Client::new();
    let call = |path: String, token: String| {
        let http = http.clone();
        let url = format!("{}{path}", broker.url);
        async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let alice = token("alice", Algorithm::HS256, 600);
    let bob = token("bob", Algorithm::HS256, 600);
    let (status, started) = call("/IP?gameId=sleeper".into(), alice.clone()).await;
    assert_eq!(status, 200, "{started}");
    let (status, _) = call("/IP?gameId=sleeper".into(), alice.clone()).await;
    assert_eq!(status, 429, "alice holds her one session");
    let portal = Client::new(&broker.url, Some(PORTAL_KEY.into())).unwrap();
    let id = started["session_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        portal.get_session(&id).await.unwrap().user_id.as_deref(),
        Some("alice")
    );
    let end = format!(
        "/End?serverIp={}&pid={}",
        started["gameIP"].as_str().unwrap(),
        started["PID"].as_str().unwrap()
    );
    let (status, _) = call(end.clone(), bob).await;
    assert_eq!(status, 404, "bob cannot end alice's game");
    let (status, _) = call(end, alice).await;
    assert_eq!(status, 200);
    assert_eq!(
        portal.get_session(&id).await.unwrap().status,
        SessionStatus::Ended
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_player_token_is_401_with_its_reason_and_never_echoed() {
    use base64::Engine as _;
    let (broker, _agent) = broker(None).await;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let claims = json!({"sub": "alice", "exp": now() + 600});
    let none = format!("{}.{}.", b64(json!({"alg": "none"})), b64(claims.clone()));
    let wrong_secret = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"not-the-portals-secret"),
    )
    .unwrap();
    let mut unknown_kid = Header::new(Algorithm::HS256);
    unknown_kid.kid = Some("retired-2025".into());
    let unknown_kid = encode(
        &unknown_kid,
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let cases = [
        ("alg none", none, "alg"),
        ("expired", token("alice", Algorithm::HS256, -5), "expired"),
        ("bad signature", wrong_secret, "signature"),
        ("unknown kid", unknown_kid, "kid"),
        (
            "too long",
            token("alice", Algorithm::EdDSA, 48 * 3600),
            "24 hours",
        ),
        ("garbage", "garbage".to_owned(), "not a JWT"),
    ];
    for (what, t, says) in cases {
        let client = Client::new(&broker.url, Some(t.clone())).unwrap();
        match client.start_session(&tests::start("sleeper")).await {
            Err(ClientError::Api {
                status: 401,
                code: ErrorCode::Unauthorized,
                message,
                ..
            }) => {
                assert!(message.contains(says), "{what}: {message}");
                assert!(!message.contains(&t), "{what}: the token is echoed");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

/// `arcade token` mints what a portal's server would: the broker takes it as the player's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_minted_by_arcade_token_is_the_players() {
    use clap::Parser as _;
    let (broker, _agent) = broker(None).await;
    let key = format!("hs256:{SECRET}");
    let cli = portal_client::cli::Cli::try_parse_from([
        "arcade", "token", "--user", "carol", "--ttl", "600", "--key", &key,
    ])
    .unwrap();
    let mut out = Vec::new();
    portal_client::cli::run(cli, &mut out).await.unwrap();
    let token = String::from_utf8(out).unwrap();
    let carol = Client::with_bearer(&broker.url, token.trim()).unwrap();
    let s = carol.start_session(&tests::start("sleeper")).await.unwrap();
    assert_eq!(s.user_id.as_deref(), Some("carol"));
    carol.end_session(&s.session_id).await.unwrap();
}

/// Rotation through the running broker: a key added to the `--player-key` JWKS file verifies
/// its tokens without a restart (the file is watched), and one removed stops its tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_added_to_the_jwks_file_works_without_a_restart() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("players.jwks");
    // The Ed25519 public key's 32 bytes are the end of its SPKI DER.
    let pem = std::fs::read_to_string(format!("{FIXTURES}/ed-1.pem")).unwrap();
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&der[der.len() - 32..]);
    let jwk = |kid: &str| json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid});
    let write = |keys: Vec<serde_json::Value>| {
        std::fs::write(&path, json!({ "keys": keys }).to_string()).unwrap();
    };
    write(vec![jwk("2026-11")]);
    let broker = TestBroker::start_with(BrokerOptions {
        api_keys: vec![format!("portal:{PORTAL_KEY}")],
        player_keys: vec![path.display().to_string()],
        ..Default::default()
    })
    .await;
    let signed = |kid: &str| {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.into());
        let claims = json!({"sub": "alice", "exp": now() + 600, "aud": "arcade"});
        let pem = std::fs::read(format!("{FIXTURES}/ed-1.key")).unwrap();
        encode(&header, &claims, &EncodingKey::from_ed_pem(&pem).unwrap()).unwrap()
    };
    let lists = |kid: &str| {
        let client = Client::new(&broker.url, Some(signed(kid))).unwrap();
        async move { client.list_sessions(&SessionQuery::default()).await }
    };
    assert!(lists("2026-11").await.is_ok());
    let unknown = lists("2026-12").await.unwrap_err();
    assert_eq!(code(&unknown), (401, ErrorCode::Unauthorized));

    // The portal's operator adds next month's key: it works, with no restart.
    write(vec![jwk("2026-11"), jwk("2026-12")]);
    tests::wait_until(
        "the added key verifies",
        std::time::Duration::from_secs(10),
        || async { lists("2026-12").await.is_ok() },
    )
    .await;
    assert!(lists("2026-11").await.is_ok(), "the old key still works");
    // And retires the old one: its tokens stop, even one verified before.
    write(vec![jwk("2026-12"), jwk("2026-12-b")]);
    tests::wait_until(
        "the removed key stops verifying",
        std::time::Duration::from_secs(10),
        || async { lists("2026-11").await.is_err() },
    )
    .await;
    assert_eq!(code(&lists("2026-11").await.unwrap_err()).0, 401);
    assert!(lists("2026-12").await.is_ok());
}
