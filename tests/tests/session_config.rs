//! Per-session config files (issue 18): two sessions of one GamingAnywhere-style game on one
//! host each run with their own copy of its config, with their own ports and slot set and
//! every other line as it was; the copy is gone once the session has ended.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::time::Duration;

use portal_client::Client;
use protocol::api::{Session, SessionStatus, StartSession};
use tests::{wait_until, AgentOptions, TestAgent, TestBroker, GA_SERVER};

/// What the game's log says its config is.
async fn config_of(agent: &TestAgent, s: &Session) -> std::path::PathBuf {
    let log = agent
        .state_dir
        .path()
        .join("logs")
        .join(format!("{}.log", s.session_id));
    let mut found = None;
    wait_until("the game says its config", Duration::from_secs(10), || {
        found = std::fs::read_to_string(&log).ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("config: ").map(std::path::PathBuf::from))
        });
        let done = found.is_some();
        async move { done }
    })
    .await;
    found.unwrap()
}

/// [`GA_SERVER`] as a session holding `ports` and `slot` with `fps` gets it: only the keys
/// set differ, and the relative include points at the original's directory.
fn expected(ports: [u16; 2], slot: u32, fps: &str) -> String {
    GA_SERVER
        .replace(
            "include = common/server-common.conf",
            &format!(
                "include = {}",
                tests::config_dir()
                    .canonicalize()
                    .unwrap()
                    .join("common/server-common.conf")
                    .display()
            ),
        )
        .replace("server-port = 8554", &format!("server-port = {}", ports[0]))
        .replace("display = :0", &format!("display = :{slot}"))
        .replace(
            "video-fps = 60                  #",
            &format!("video-fps = {fps}                  #"),
        )
        + &format!(
            "# set by arcade-agent for this session\ncontrol-port = {}\n",
            ports[1]
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_of_one_game_get_their_own_config_with_their_own_ports_and_slot() {
    let broker = TestBroker::start().await;
    let range = tests::fresh_port_range();
    let mut o = AgentOptions::host("ga-host");
    o.port_range = Some(range);
    let agent = TestAgent::start(broker.agent_addr, o).await;
    let client = Client::new(&broker.url, None).unwrap();
    tests::wait_hosts_online(&client, 1).await;
    let req = tests::start("ga-style");
    let a = client.start_session(&req).await.unwrap();
    let thirty = StartSession {
        settings: [("video-fps".to_owned(), "30".to_owned())].into(),
        ..req.clone()
    };
    let b = client.start_session(&thirty).await.unwrap();
    assert_eq!(
        (a.status, b.status),
        (SessionStatus::Running, SessionStatus::Running)
    );
    let (pa, pb) = (a.port.unwrap(), b.port.unwrap());
    // Two ports each, from the host's range: the first is the session's `port`.
    assert_eq!((pa, pb), (range.lo, range.lo + 2));
    assert_eq!(
        (a.ports.as_slice(), b.ports.as_slice()),
        (&[pa, pa + 1][..], &[pb, pb + 1][..])
    );
    // The settings each runs with: the default, or the one its start chose.
    assert_eq!(a.settings["video-fps"], "45");
    assert_eq!(b.settings["video-fps"], "30");
    let (ca, cb) = (config_of(&agent, &a).await, config_of(&agent, &b).await);
    let sessions = agent.state_dir.path().join("sessions");
    assert_eq!(
        ca,
        sessions.join(a.session_id.as_str()).join("ga-server.conf")
    );
    assert_eq!(
        cb,
        sessions.join(b.session_id.as_str()).join("ga-server.conf")
    );
    assert_eq!(
        std::fs::read_to_string(&ca).unwrap(),
        expected([pa, pa + 1], 0, "45")
    );
    assert_eq!(
        std::fs::read_to_string(&cb).unwrap(),
        expected([pb, pb + 1], 1, "30")
    );
    // The game listens on its session's port.
    assert!(tests::greeting(pa).await.is_ok());
    // Ended, its copy is gone and its ports and slot are free for the next session.
    client.end_session(&a.session_id).await.unwrap();
    assert!(!ca.parent().unwrap().exists(), "{}", ca.display());
    let c = client.start_session(&req).await.unwrap();
    assert_eq!(c.port, Some(range.lo));
    let cc = config_of(&agent, &c).await;
    assert_eq!(
        std::fs::read_to_string(&cc).unwrap(),
        expected([pa, pa + 1], 0, "45")
    );
    for s in [&b, &c] {
        client.end_session(&s.session_id).await.unwrap();
    }
}

/// Settings a game does not take, or values it does not allow, are refused with the key named,
/// before anything is placed or launched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_outside_what_the_game_allows_are_400_and_nothing_is_launched() {
    let broker = TestBroker::start().await;
    let agent = TestAgent::start(broker.agent_addr, AgentOptions::host("set-host")).await;
    let client = Client::new(&broker.url, None).unwrap();
    tests::wait_hosts_online(&client, 1).await;
    let with = |k: &str, v: &str| StartSession {
        settings: [(k.to_owned(), v.to_owned())].into(),
        ..tests::start("ga-style")
    };
    // What a portal may offer its players: the game's settings, as its hosts offer them.
    let games = client.games().await.unwrap().games;
    let ga = games
        .iter()
        .find(|g| g.game_id.as_str() == "ga-style")
        .unwrap();
    assert_eq!(ga.settings.len(), 1);
    assert_eq!(ga.settings[0].key, "video-fps");
    assert_eq!(ga.settings[0].values, ["30", "45", "60"]);
    assert_eq!(ga.settings[0].default.as_deref(), Some("45"));
    let cases = [
        (with("resolution", "4k"), "resolution"),
        (with("video-fps", "144"), "video-fps"),
        (with("video-fps", "30\ninclude = /etc/shadow"), "video-fps"),
        (with("video-fps", ""), "video-fps"),
    ];
    for (req, key) in cases {
        let e = client.start_session(&req).await.unwrap_err();
        assert!(
            matches!(&e, portal_client::ClientError::Api { status: 400, message, .. } if message.contains(key)),
            "{e}"
        );
    }
    assert!(client
        .list_sessions(&protocol::api::SessionQuery::default())
        .await
        .unwrap()
        .sessions
        .is_empty());
    let logs = agent.state_dir.path().join("logs");
    assert_eq!(
        std::fs::read_dir(&logs).map_or(0, Iterator::count),
        0,
        "a game was launched"
    );
}

/// `--max-sessions-per-user 3`: of 20 starts of one user at once, exactly 3 run and the others
/// are 429 naming them; other users are not counted; an end makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_holds_at_most_its_quota_even_under_concurrent_starts() {
    let broker = TestBroker::start_with(tests::BrokerOptions {
        max_sessions_per_user: Some(3),
        ..tests::BrokerOptions::default()
    })
    .await;
    let mut o = AgentOptions::host("quota-host");
    o.max_sessions = 30;
    o.port_range = Some(tests::fresh_port_ranges(3));
    let _agent = TestAgent::start(broker.agent_addr, o).await;
    let client = Client::new(&broker.url, None).unwrap();
    tests::wait_hosts_online(&client, 1).await;
    let of = |user: &str| StartSession {
        user_id: Some(user.to_owned()),
        ..tests::start("sleeper")
    };
    let starts: Vec<_> = (0..20)
        .map(|_| {
            let (client, req) = (client.clone(), of("player-1"));
            tokio::spawn(async move { client.start_session(&req).await })
        })
        .collect();
    let (mut running, mut refused) = (Vec::new(), Vec::new());
    for s in starts {
        match s.await.unwrap() {
            Ok(s) => running.push(s),
            Err(portal_client::ClientError::Api {
                status: 429,
                code: protocol::api::ErrorCode::QuotaExceeded,
                message,
                ..
            }) => refused.push(message),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((running.len(), refused.len()), (3, 17));
    assert!(running
        .iter()
        .all(|s| s.user_id.as_deref() == Some("player-1")));
    // Each refusal names the sessions the user holds.
    for m in &refused {
        for s in &running {
            assert!(m.contains(s.session_id.as_str()), "{m}");
        }
    }
    let q = protocol::api::SessionQuery {
        user_id: Some("player-1".into()),
        ..protocol::api::SessionQuery::default()
    };
    assert_eq!(client.list_sessions(&q).await.unwrap().sessions.len(), 3);
    // Another user is not counted; an end makes room.
    client.start_session(&of("player-2")).await.unwrap();
    client.end_session(&running[0].session_id).await.unwrap();
    let again = client.start_session(&of("player-1")).await.unwrap();
    assert_eq!(again.status, SessionStatus::Running);
    let e = client.start_session(&of("player-1")).await.unwrap_err();
    assert_eq!(e.status(), Some(429), "{e}");
}
