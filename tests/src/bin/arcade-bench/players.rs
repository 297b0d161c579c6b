//! `arcade-bench players`: what players and join tokens cost (issue 26), as a portal and a
//! game see it.
//!
//! A broker (memory store, or a throwaway MariaDB with `--mariadb`) and an agent in this
//! process, with an API key and player keys (HS256 and Ed25519) configured.
//!
//! 1. Whole calls, `GET /v1/sessions/{id}` over one keep-alive connection, taken in turn
//!    round by round so noise falls on every kind alike: with the API key (the floor); with
//!    one player token used again and again (verified once, then remembered); with a fresh
//!    HS256 token each call; with a fresh EdDSA token each call.
//! 2. Redeems, `POST /v1/sessions/{id}/join` with the game's key, of a token minted
//!    (untimed) just before each, against the same connection's `GET` as the floor.
//! 3. The store's redeem alone (no HTTP), against one plain committed change of a session
//!    (a `transition`) in the same run.

use std::time::{Duration, Instant};

use broker::session::{new_session, Actor, SessionEvent};
use broker::store::{JoinRecord, Redeemed, Store};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use portal_client::Client;
use protocol::{GameId, HostId, SessionId};
use tests::{keys, AgentOptions, BrokerOptions, TestAgent, TestBroker};
use time::OffsetDateTime;

use crate::stats::{row, Summary};

#[derive(Debug, clap::Parser)]
pub struct Args {
    /// Calls timed per kind.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// Redeems timed (through HTTP, and in the store).
    #[arg(long, default_value_t = 500)]
    redeems: usize,
    /// Start a throwaway MariaDB (as the tests do) and use it.
    #[arg(long)]
    mariadb: bool,
    /// Tiny counts; fail unless it completes with sane numbers.
    #[arg(long)]
    smoke: bool,
}

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../broker/tests/fixtures/players"
);

/// `n` distinct player tokens for `user`, signed as `alg` (HS256 with the tests' secret, or
/// EdDSA with the fixture key `ed-1`).
fn tokens(user: &str, alg: Algorithm, n: usize) -> Vec<String> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let (header, key) = match alg {
        Algorithm::EdDSA => {
            let mut h = Header::new(alg);
            h.kid = Some("ed-1".into());
            let pem = std::fs::read(format!("{FIXTURES}/ed-1.key")).expect("the Ed25519 key");
            (h, EncodingKey::from_ed_pem(&pem).expect("an Ed25519 key"))
        }
        _ => (
            Header::new(Algorithm::HS256),
            EncodingKey::from_secret(keys::PLAYER_SECRET.as_bytes()),
        ),
    };
    (0..n)
        .map(|i| {
            // Distinct by their expiry: each is a token never seen before.
            let claims = serde_json::json!({"sub": user, "exp": now + 3600 + i as i64});
            encode(&header, &claims, &key).expect("a token")
        })
        .collect()
}

/// One timed call: its duration, or `None` when it did not answer `want`.
async fn call(req: reqwest::RequestBuilder, want: u16) -> Option<Duration> {
    let t0 = Instant::now();
    let r = req.send().await.ok()?;
    let ok = r.status().as_u16() == want;
    let _ = r.bytes().await.ok()?;
    ok.then(|| t0.elapsed())
}

/// Times the store's redeem against a plain change, `n` of each: (redeems, floor, errors).
async fn store_redeems(store: &Store, n: usize) -> (Summary, Summary, usize) {
    let mut errors = 0;
    let (mut redeems, mut floor) = (Vec::new(), Vec::new());
    let launched = SessionEvent::Launched {
        pid: 4242,
        ip: [127, 0, 0, 1].into(),
        port: 20000,
        ports: vec![20000],
    };
    for i in 0..n {
        let mk = |k: usize| {
            new_session(
                SessionId::new(format!("bench-join-{k}")).expect("id"),
                GameId::new("joiner").expect("id"),
                "default".into(),
                None,
                HostId::new("bench-host").expect("id"),
                OffsetDateTime::now_utc(),
            )
        };
        let (s, other) = (mk(2 * i), mk(2 * i + 1));
        let now = OffsetDateTime::now_utc();
        let token = broker::join::mint();
        let record = JoinRecord {
            token_hash: broker::join::token_hash(&token),
            sealed: None,
            expires_at: now + time::Duration::minutes(2),
            used_at: None,
        };
        let ready = async {
            for x in [&s, &other] {
                store.insert(x, None, Actor::Portal, None).await.ok()?;
                store
                    .transition(&x.session_id, &launched, Actor::Agent, now)
                    .await
                    .ok()?;
            }
            store.put_join(&s.session_id, &record, false).await.ok()
        };
        if ready.await != Some(true) {
            errors += 1;
            continue;
        }
        let t0 = Instant::now();
        match store
            .redeem(
                &s.session_id,
                &record.token_hash,
                OffsetDateTime::now_utc(),
                Actor::Game,
            )
            .await
        {
            Ok(Redeemed::Joined(_)) => redeems.push(t0.elapsed()),
            _ => errors += 1,
        }
        let t0 = Instant::now();
        match store
            .transition(
                &other.session_id,
                &SessionEvent::StopRequested,
                Actor::Portal,
                OffsetDateTime::now_utc(),
            )
            .await
        {
            Ok(_) => floor.push(t0.elapsed()),
            Err(_) => errors += 1,
        }
    }
    (Summary::of(&mut redeems), Summary::of(&mut floor), errors)
}

pub async fn run(mut a: Args) -> bool {
    if a.smoke {
        (a.calls, a.redeems) = (20, 10);
    }
    let Some(database_url) = crate::stats::bench_database(a.mariadb).await else {
        return false;
    };
    println!(
        "arcade-bench players: {} calls per kind, {} redeems, store: {}",
        a.calls,
        a.redeems,
        if a.mariadb { "mysql" } else { "memory" }
    );
    let broker = TestBroker::start_with(BrokerOptions {
        database_url: database_url.clone(),
        api_keys: vec![
            format!("portal:{}", keys::PORTAL),
            format!("admin:{}", keys::ADMIN),
        ],
        player_keys: vec![
            format!("hs256:{}", keys::PLAYER_SECRET),
            format!("{FIXTURES}/ed-1.pem"),
        ],
        workers: 2,
        ..Default::default()
    })
    .await;
    let agent = TestAgent::start(broker.agent_addr, AgentOptions::host("players-0")).await;
    let admin = Client::new(&broker.url, Some(keys::ADMIN.into())).expect("client");
    tests::wait_hosts_online(&admin, 1).await;
    let mut errors = 0;

    // 1. Whole calls by caller kind.
    let alice = keys::player("alice");
    let player = Client::with_bearer(&broker.url, &alice).expect("client");
    let started = player
        .start_joinable(&tests::start("joiner"), None)
        .await
        .expect("a joiner game");
    let id = started.session.session_id.clone();
    let url = format!("{}/v1/sessions/{id}", broker.url);
    let http = reqwest::Client::new();
    let hs = tokens("alice", Algorithm::HS256, a.calls);
    let ed = tokens("alice", Algorithm::EdDSA, a.calls);
    let mut kinds: [Vec<Duration>; 4] = Default::default();
    for i in 0..a.calls {
        let bearers = [keys::PORTAL, alice.as_str(), hs[i].as_str(), ed[i].as_str()];
        for (k, bearer) in bearers.into_iter().enumerate() {
            match call(http.get(&url).bearer_auth(bearer), 200).await {
                Some(d) => kinds[k].push(d),
                None => errors += 1,
            }
        }
    }
    let [key, cached, fresh_hs, fresh_ed] = kinds.map(|mut v| Summary::of(&mut v));

    // 2. Redeems through HTTP, against the same GET.
    let (_, game_key) = tests::join_env(&id).await;
    let join_url = format!("{url}/join");
    let (mut redeems, mut gets) = (Vec::new(), Vec::new());
    for _ in 0..a.redeems {
        let Ok(fresh) = player.new_join_token(&id).await else {
            errors += 1;
            continue;
        };
        let body = serde_json::json!({ "token": fresh.join_token });
        match call(http.post(&join_url).bearer_auth(&game_key).json(&body), 200).await {
            Some(d) => redeems.push(d),
            None => errors += 1,
        }
        match call(http.get(&url).bearer_auth(keys::PORTAL), 200).await {
            Some(d) => gets.push(d),
            None => errors += 1,
        }
    }
    let (redeem, get) = (Summary::of(&mut redeems), Summary::of(&mut gets));
    if player.end_session(&id).await.is_err() {
        errors += 1;
    }
    agent.stop().await;
    let _ = broker.stop().await;

    // 3. The store's redeem alone.
    let Some(store) = crate::stats::open_store(database_url.as_deref()).await else {
        return false;
    };
    let (store_redeem, change, e) = store_redeems(&store, a.redeems).await;
    errors += e;

    println!();
    crate::stats::header();
    row("GET a session: API key (floor)", &key, None);
    row(
        "GET a session: player token, seen before",
        &cached,
        Some(key.p50),
    );
    row("GET a session: fresh HS256 token", &fresh_hs, Some(key.p50));
    row("GET a session: fresh EdDSA token", &fresh_ed, Some(key.p50));
    println!();
    row("GET a session: API key (floor)", &get, None);
    row("redeem a join token (HTTP)", &redeem, Some(get.p50));
    println!();
    row("store: a plain change (floor)", &change, None);
    row(
        "store: redeem a join token",
        &store_redeem,
        Some(change.p50),
    );
    println!();
    let above = cached.p50 - key.p50;
    crate::stats::verdict(
        "a remembered player token's call above a key's, p50",
        format!("{above:+.1} µs"),
        "at most +5 µs".into(),
        above <= 5.0,
    );
    println!(
        "  fresh tokens above a key's, p50: HS256 {:+.1} µs, EdDSA {:+.1} µs",
        fresh_hs.p50 - key.p50,
        fresh_ed.p50 - key.p50
    );
    if a.mariadb {
        crate::stats::verdict(
            "the store's redeem p50 against one committed change",
            format!("{:.2}x", store_redeem.p50 / change.p50),
            "at most 2x".into(),
            store_redeem.p50 <= 2.0 * change.p50,
        );
    } else {
        crate::stats::verdict(
            "redeem p50 through HTTP, memory store",
            format!("{:.0} µs", redeem.p50),
            "at most 1 ms".into(),
            redeem.p50 <= 1000.0,
        );
    }
    println!("errors: {errors}");
    errors == 0
        && [
            key,
            cached,
            fresh_hs,
            fresh_ed,
            get,
            redeem,
            change,
            store_redeem,
        ]
        .iter()
        .all(Summary::sane)
}
