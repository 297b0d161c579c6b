//! Warm pools: a pool keeps its games launched and ready; a start that matches it takes one
//! at once (a live, connectable game) and the pool refills; ready games are replaced when they
//! age, exit, or their host drains; a failing pool backs off; writes are guarded by `ETag`s; and
//! concurrent starts never get the same game.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::collections::HashSet;
use std::time::Duration;

use portal_client::{Client, ClientError};
use protocol::api::{
    EndReason, ErrorCode, Pool, PoolSpec, Session, SessionQuery, SessionStatus, StartSession,
};
use protocol::{GameId, HostId, PoolId, SessionId};
use tests::{greeting, wait_until, AgentOptions, BrokerOptions, TestAgent, TestBroker};

const WAIT: Duration = Duration::from_secs(30);

fn spec(game: &str, size: u32, max_age_s: Option<u64>) -> PoolSpec {
    PoolSpec {
        game_id: GameId::new(game).unwrap(),
        mode: None,
        config: None,
        settings: Default::default(),
        size,
        max_age_s,
    }
}

fn pool_id(id: &str) -> PoolId {
    PoolId::new(id).unwrap()
}

/// A broker with `hosts` agents of `max_sessions` each, all online.
async fn system_with(
    opts: BrokerOptions,
    hosts: &[&str],
    max_sessions: u32,
) -> (TestBroker, Vec<TestAgent>, Client) {
    let broker = TestBroker::start_with(opts).await;
    let mut agents = Vec::new();
    for h in hosts {
        let mut o = AgentOptions::host(h);
        o.max_sessions = max_sessions;
        // A port per session: ten per range.
        o.port_range = Some(tests::fresh_port_ranges(
            u16::try_from(max_sessions.div_ceil(10)).unwrap(),
        ));
        o.stop_grace = Duration::from_millis(500);
        agents.push(TestAgent::start(broker.agent_addr, o).await);
    }
    let client = Client::new(&broker.url, None).unwrap();
    tests::wait_hosts_online(&client, hosts.len()).await;
    (broker, agents, client)
}

async fn system(hosts: &[&str], max_sessions: u32) -> (TestBroker, Vec<TestAgent>, Client) {
    system_with(BrokerOptions::default(), hosts, max_sessions).await
}

/// The pool's ready games.
async fn ready(client: &Client, game: &str) -> Vec<Session> {
    let q = SessionQuery {
        status: Some(SessionStatus::Ready),
        game_id: Some(GameId::new(game).unwrap()),
        ..SessionQuery::default()
    };
    client.list_sessions(&q).await.unwrap().sessions
}

/// Waits until `check` holds of the pool (polling, within [`WAIT`]).
async fn wait_pool(client: &Client, id: &str, what: &str, check: impl Fn(&Pool) -> bool) -> Pool {
    let id = pool_id(id);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let got = client.pool(&id).await;
        if let Ok(p) = &got {
            if check(p) {
                return p.clone();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}; last {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the pool has `n` games ready and none starting.
async fn wait_full(client: &Client, id: &str, n: u32) -> Pool {
    wait_pool(client, id, &format!("pool {id} has {n} ready"), |p| {
        p.ready == n && p.starting == 0
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_fills_and_a_claim_answers_at_once_with_a_live_connectable_game() {
    let (_broker, _agents, client) = system(&["pool-a", "pool-b"], 10).await;
    let created = client
        .put_pool(&pool_id("lobby"), &spec("slow-listener", 5, None), None)
        .await
        .unwrap();
    assert_eq!((created.size, created.version), (5, 1));
    wait_full(&client, "lobby", 5).await;
    let waiting = ready(&client, "slow-listener").await;
    assert_eq!(waiting.len(), 5);
    let hosts: HashSet<&HostId> = waiting.iter().map(|s| &s.host_id).collect();
    assert_eq!(hosts.len(), 2, "ready games spread over both hosts");
    assert!(waiting.iter().all(|s| s.pool_id == Some(pool_id("lobby"))));
    // Existing portals see nothing new.
    assert!(client
        .list_sessions(&SessionQuery::default())
        .await
        .unwrap()
        .sessions
        .is_empty());
    // Two players start the game: each gets a ready one, running, connectable at once.
    let mut claimed = Vec::new();
    for _ in 0..2 {
        let s = client
            .start_session(&tests::start("slow-listener"))
            .await
            .unwrap();
        assert_eq!(s.status, SessionStatus::Running);
        assert_eq!(s.pool_id, Some(pool_id("lobby")));
        assert!(waiting.iter().any(|w| w.session_id == s.session_id));
        let hello = greeting(s.port.unwrap()).await.unwrap();
        assert_eq!(hello.trim(), format!("session {}", s.session_id));
        let history: Vec<(String, String)> = client
            .session_history(&s.session_id)
            .await
            .unwrap()
            .events
            .into_iter()
            .map(|e| (e.event, e.actor))
            .collect();
        assert_eq!(
            history,
            [
                ("created".into(), "pool".into()),
                ("ready".into(), "agent".into()),
                ("claimed".into(), "api".into()),
            ]
        );
        claimed.push(s);
    }
    // The pool refills; the claimed games run on as players' sessions.
    let p = wait_full(&client, "lobby", 5).await;
    assert_eq!((p.claims, p.misses, p.failures), (2, 0, 0));
    for s in &claimed {
        let now = client.get_session(&s.session_id).await.unwrap();
        assert_eq!(now.status, SessionStatus::Running);
    }
    // A start the pool does not match (another game) is cold, and not a miss.
    let cold = client.start_session(&tests::start("game")).await.unwrap();
    assert_eq!(cold.pool_id, None);
    let pools = client.pools().await.unwrap().pools;
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0].misses, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_games_are_replaced_when_they_age_exit_or_their_host_drains() {
    let (_broker, _agents, client) = system(&["age-a", "age-b"], 6).await;
    client
        .put_pool(&pool_id("p"), &spec("sleeper", 2, Some(2)), None)
        .await
        .unwrap();
    wait_full(&client, "p", 2).await;
    let first: Vec<SessionId> = ready(&client, "sleeper")
        .await
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    // Past max_age_s each is replaced, one at a time, the replacement ready first.
    wait_until("both first games are replaced", WAIT, || {
        let (client, first) = (client.clone(), first.clone());
        async move {
            let now = ready(&client, "sleeper").await;
            now.len() == 2 && now.iter().all(|s| !first.contains(&s.session_id))
        }
    })
    .await;
    for id in &first {
        let s = client.get_session(id).await.unwrap();
        assert_eq!(
            (s.status, s.end_reason),
            (SessionStatus::Ended, Some(EndReason::EndedByRequest))
        );
        let events = client.session_history(id).await.unwrap().events;
        let retired = events.iter().find(|e| e.event == "retired").unwrap();
        assert_eq!(retired.actor, "pool");
    }
    // A ready game killed from outside is replaced.
    let p = client
        .put_pool(&pool_id("p"), &spec("sleeper", 2, None), None)
        .await
        .unwrap();
    assert_eq!(p.version, 2);
    let victim = ready(&client, "sleeper").await.remove(0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(victim.pid.unwrap()).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("the killed game is replaced", WAIT, || {
        let client = client.clone();
        let victim = victim.session_id.clone();
        async move {
            let now = ready(&client, "sleeper").await;
            now.len() == 2 && now.iter().all(|s| s.session_id != victim)
        }
    })
    .await;
    let gone = client.get_session(&victim.session_id).await.unwrap();
    assert_eq!(gone.end_reason, Some(EndReason::GameExited));
    // Draining a host moves its ready games to the other.
    let on_a = ready(&client, "sleeper")
        .await
        .iter()
        .filter(|s| s.host_id.as_str() == "age-a")
        .count();
    assert!(on_a > 0, "placement spreads the pool over both hosts");
    client
        .drain_host(&HostId::new("age-a").unwrap())
        .await
        .unwrap();
    wait_until("the ready games left the draining host", WAIT, || {
        let client = client.clone();
        async move {
            let now = ready(&client, "sleeper").await;
            now.len() == 2 && now.iter().all(|s| s.host_id.as_str() == "age-b")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_whose_launches_fail_backs_off_and_says_why() {
    let (_broker, _agents, client) = system(&["fail-a"], 4).await;
    client
        .put_pool(&pool_id("broken"), &spec("broken", 2, None), None)
        .await
        .unwrap();
    let p = wait_pool(&client, "broken", "a failure is reported", |p| {
        p.failures > 0 && p.last_error.is_some()
    })
    .await;
    assert!(
        p.last_error.as_deref().unwrap().contains("nonexistent"),
        "{p:?}"
    );
    // Backing off: over the next 3 s, a few more attempts (1 s, then 2 s apart), not a loop.
    let before = p.failures;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = client.pool(&pool_id("broken")).await.unwrap().failures;
    assert!(after - before <= 6, "{before} then {after} failures in 3 s");
    assert_eq!(client.pool(&pool_id("broken")).await.unwrap().ready, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etags_keep_two_operators_from_overwriting_each_other() {
    let (broker, _agents, client) = system(&["etag-a"], 4).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/pools/lobby", broker.url);
    let put = |body: serde_json::Value, if_match: Option<&str>| {
        let mut r = http.put(&url).json(&body);
        if let Some(tag) = if_match {
            r = r.header("If-Match", tag);
        }
        r.send()
    };
    let body = serde_json::json!({"game_id": "sleeper", "size": 0});
    let r = put(body.clone(), None).await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["etag"], "\"1\"");
    // Operator one changes it, knowing version 1.
    let r = put(body.clone(), Some("\"1\"")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "\"2\"");
    // Operator two, who also read version 1, is refused, and so is a delete on version 1.
    let r = put(body.clone(), Some("\"1\"")).await.unwrap();
    assert_eq!(r.status(), 412);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "precondition_failed");
    let r = http
        .delete(&url)
        .header("If-Match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.headers()["etag"], "\"2\"");
    // `If-Match: *` creates nothing.
    let r = http
        .put(format!("{}/v1/pools/other", broker.url))
        .header("If-Match", "*")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    // With the client: a stale version is the same error.
    let e = client
        .put_pool(&pool_id("lobby"), &spec("sleeper", 1, None), Some(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            ClientError::Api {
                status: 412,
                code: ErrorCode::PreconditionFailed,
                ..
            }
        ),
        "{e}"
    );
    // A game no host has offered is refused; a bad size too.
    let e = client
        .put_pool(&pool_id("x"), &spec("no-such-game", 1, None), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            ClientError::Api {
                status: 404,
                code: ErrorCode::UnknownGame,
                ..
            }
        ),
        "{e}"
    );
    let r = put(
        serde_json::json!({"game_id": "sleeper", "size": 1001}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .delete(&url)
        .header("If-Match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pool_stops_its_ready_games() {
    let (_broker, _agents, client) = system(&["del-a"], 4).await;
    client
        .put_pool(&pool_id("p"), &spec("sleeper", 3, None), None)
        .await
        .unwrap();
    wait_full(&client, "p", 3).await;
    let waiting = ready(&client, "sleeper").await;
    let removed = client.delete_pool(&pool_id("p"), None).await.unwrap();
    assert_eq!(removed.ready, 3);
    for s in &waiting {
        let s = client.get_session(&s.session_id).await.unwrap();
        assert_eq!(s.status, SessionStatus::Ended);
    }
    let ids: Vec<SessionId> = waiting.iter().map(|s| s.session_id.clone()).collect();
    assert!(tests::processes_of(&ids).is_empty());
    assert!(client.pools().await.unwrap().pools.is_empty());
}

/// 100 starts at once against a pool of 20: each ready game goes to one start, the rest start
/// cold, and no session is answered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_never_get_the_same_ready_game() {
    let (_broker, _agents, client) = system(&["burst-a", "burst-b"], 70).await;
    client
        .put_pool(&pool_id("burst"), &spec("sleeper", 20, None), None)
        .await
        .unwrap();
    wait_full(&client, "burst", 20).await;
    let pooled: HashSet<SessionId> = ready(&client, "sleeper")
        .await
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    let starts: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.start_session(&tests::start("sleeper")).await })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut hits = 0u64;
    for s in starts {
        let s = s.await.unwrap().unwrap();
        assert_eq!(s.status, SessionStatus::Running);
        assert!(ids.insert(s.session_id.clone()), "answered twice");
        if s.pool_id.is_some() {
            hits += 1;
        }
    }
    // Every game ready before the burst went to a start; refills made meanwhile may serve
    // more.
    assert!(pooled.iter().all(|id| ids.contains(id)));
    assert!(hits >= 20, "{hits} hits");
    let p = client.pool(&pool_id("burst")).await.unwrap();
    assert_eq!((p.claims, p.misses), (hits, 100 - hits));
}

/// On MariaDB the pool and its ready games survive a broker restart: the next broker serves
/// claims from the same games.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_on_mariadb_keeps_the_pool_and_its_ready_games() {
    let Some(url) = tests::mariadb::database().await else {
        return;
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let agent_addr = listener.local_addr().unwrap();
    let options = |listener| BrokerOptions {
        database_url: Some(url.clone()),
        agent_listener: Some(listener),
        ..BrokerOptions::default()
    };
    let broker = TestBroker::start_with(options(listener)).await;
    let mut o = AgentOptions::host("keep-a");
    o.stop_games_on_exit = false;
    let _agent = TestAgent::start(agent_addr, o).await;
    let client = Client::new(&broker.url, None).unwrap();
    tests::wait_hosts_online(&client, 1).await;
    client
        .put_pool(&pool_id("kept"), &spec("sleeper", 2, None), None)
        .await
        .unwrap();
    wait_full(&client, "kept", 2).await;
    let before: HashSet<SessionId> = ready(&client, "sleeper")
        .await
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    broker.stop().await.unwrap();
    let again =
        TestBroker::start_with(options(std::net::TcpListener::bind(agent_addr).unwrap())).await;
    let client = Client::new(&again.url, None).unwrap();
    tests::wait_hosts_online(&client, 1).await;
    let p = wait_full(&client, "kept", 2).await;
    assert_eq!((p.size, p.version), (2, 1));
    let s = client
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap();
    assert!(
        before.contains(&s.session_id),
        "a game from before the restart"
    );
    assert_eq!(s.pool_id, Some(pool_id("kept")));
    assert!(tests::pid_alive(s.pid.unwrap()));
    drop(again);
}

/// A pool's games run with its settings; a start is served from it only when its own settings
/// come to the same, the game's defaults filled in on both sides; a pool's setting the game
/// does not allow is refused as a start's is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_serves_only_starts_whose_settings_equal_its_own() {
    // Two ports a game: twenty sessions' worth, for the ten ga-style games at most alive.
    let (_broker, _agents, client) = system(&["set-pool"], 20).await;
    let with = |fps: Option<&str>| StartSession {
        settings: fps
            .map(|f| [("video-fps".to_owned(), f.to_owned())].into())
            .unwrap_or_default(),
        ..tests::start("ga-style")
    };
    let thirty = PoolSpec {
        settings: [("video-fps".to_owned(), "30".to_owned())].into(),
        ..spec("ga-style", 2, None)
    };
    let put = client
        .put_pool(&pool_id("thirty"), &thirty, None)
        .await
        .unwrap();
    assert_eq!(put.settings, thirty.settings);
    wait_full(&client, "thirty", 2).await;
    for r in ready(&client, "ga-style").await {
        assert_eq!(r.settings["video-fps"], "30");
    }

    // The game's default (45) is not the pool's: cold.
    let cold = client.start_session(&with(None)).await.unwrap();
    assert_eq!(
        (cold.pool_id, cold.settings["video-fps"].as_str()),
        (None, "45")
    );
    let served = client.start_session(&with(Some("30"))).await.unwrap();
    assert_eq!(served.pool_id, Some(pool_id("thirty")));
    assert_eq!(served.settings["video-fps"], "30");

    // A pool that names no settings runs the defaults, and serves a start that names them.
    client
        .put_pool(&pool_id("plain"), &spec("ga-style", 1, None), None)
        .await
        .unwrap();
    wait_full(&client, "plain", 1).await;
    let defaulted = client.start_session(&with(Some("45"))).await.unwrap();
    assert_eq!(defaulted.pool_id, Some(pool_id("plain")));

    // Its settings changed: the games made for the old ones are retired, new ones made, and
    // a start with the old settings goes cold.
    wait_full(&client, "thirty", 2).await;
    let of_thirty = |all: Vec<Session>| -> Vec<Session> {
        all.into_iter()
            .filter(|s| s.pool_id == Some(pool_id("thirty")))
            .collect()
    };
    let old: Vec<Session> = of_thirty(ready(&client, "ga-style").await);
    assert_eq!(old.len(), 2);
    let sixty = PoolSpec {
        settings: [("video-fps".to_owned(), "60".to_owned())].into(),
        ..thirty.clone()
    };
    client
        .put_pool(&pool_id("thirty"), &sixty, None)
        .await
        .unwrap();
    wait_until("only games with the new settings ready", WAIT, || async {
        let now = of_thirty(ready(&client, "ga-style").await);
        now.len() == 2 && now.iter().all(|s| s.settings["video-fps"] == "60")
    })
    .await;
    for s in &old {
        let retired = client.get_session(&s.session_id).await.unwrap();
        assert!(retired.status.is_terminal() || retired.status == SessionStatus::Stopping);
    }
    let cold30 = client.start_session(&with(Some("30"))).await.unwrap();
    assert_eq!(cold30.pool_id, None);

    let bad = PoolSpec {
        settings: [("video-fps".to_owned(), "29".to_owned())].into(),
        ..spec("ga-style", 1, None)
    };
    match client.put_pool(&pool_id("bad"), &bad, None).await {
        Err(ClientError::Api {
            status: 400,
            code: ErrorCode::BadRequest,
            message,
            ..
        }) => assert!(message.contains("video-fps"), "{message}"),
        other => panic!("a pool with a setting the game refuses: {other:?}"),
    }
    assert!(matches!(
        client.pool(&pool_id("bad")).await,
        Err(ClientError::Api { status: 404, .. })
    ));
}
