//! Session limits (issue 18): a session ends `expired` at its `max_duration_s` (the smaller
//! of its start's and its game's), after a `session.expiring` event; and `idle` once nobody
//! has been connected to its port for its game's `idle_timeout_s`, as a player's client that
//! connects, plays, and leaves sees it.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::time::Duration;

use portal_client::events::EventStream;
use portal_client::{Client, ClientError};
use protocol::api::{EndReason, ErrorCode, Event, EventType, Session, SessionStatus, StartSession};
use protocol::{GameId, SessionId};
use tests::{pid_alive, AgentOptions, TestAgent, TestBroker, IDLE_TIMEOUT_S};
use time::OffsetDateTime;

const WAIT: Duration = Duration::from_secs(30);
/// How often an agent says what it sees (the broker's heartbeat interval).
const HEARTBEAT: Duration = Duration::from_secs(1);

async fn next(events: &mut EventStream) -> Event {
    tokio::time::timeout(WAIT, events.next())
        .await
        .expect("an event in time")
        .expect("the stream is open")
        .expect("an event")
}

/// Waits until session `id` is over, and answers it.
async fn ended(client: &Client, id: &SessionId) -> Session {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(s) = client.get_session(id).await {
            if s.status.is_terminal() {
                return s;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "session {id} not over after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_expired_at_the_smaller_limit_after_a_warning() {
    let broker = TestBroker::start().await;
    let _agent = TestAgent::start(broker.agent_addr, AgentOptions::host("timed-host")).await;
    let client = Client::new(&broker.url, None).unwrap();
    tests::wait_hosts_online(&client, 1).await;

    // The smaller of the start's and the game's limit (3600 s) is the session's.
    let default = client.start_session(&tests::start("timed")).await.unwrap();
    let longer = client
        .start_session(&StartSession {
            max_duration_s: Some(7200),
            ..tests::start("timed")
        })
        .await
        .unwrap();
    for s in [&default, &longer] {
        assert_eq!(s.max_duration_s, Some(3600));
        assert_eq!(
            s.expires_at,
            Some(s.started_at.unwrap() + time::Duration::hours(1))
        );
    }
    let unlimited = client
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap();
    assert_eq!(
        (unlimited.max_duration_s, unlimited.expires_at),
        (None, None)
    );

    // A limit shorter than the warning's minute is warned of at once, then expires.
    let mut events = client
        .events(
            &[EventType::SessionExpiring, EventType::SessionEnded],
            None,
            None,
            None,
        )
        .await
        .unwrap();
    let short = client
        .start_session(&StartSession {
            max_duration_s: Some(2),
            ..tests::start("timed")
        })
        .await
        .unwrap();
    assert_eq!(short.max_duration_s, Some(2));
    let expires = short.expires_at.unwrap();
    assert_eq!(
        expires,
        short.started_at.unwrap() + time::Duration::seconds(2)
    );
    let warned = next(&mut events).await;
    assert_eq!(warned.kind, EventType::SessionExpiring);
    assert_eq!(warned.actor, "sweep");
    let shown = warned.session.unwrap();
    assert_eq!(
        (&shown.session_id, shown.status, shown.expires_at),
        (&short.session_id, SessionStatus::Running, Some(expires))
    );
    let over = next(&mut events).await;
    assert_eq!(
        over.kind,
        EventType::SessionEnded,
        "one warning, then the end"
    );
    let over = over.session.unwrap();
    assert_eq!(over.session_id, short.session_id);
    assert_eq!(
        (over.status, over.end_reason),
        (SessionStatus::Ended, Some(EndReason::Expired))
    );
    assert!(over.ended_at.unwrap() >= expires, "ended before its limit");
    assert!(!pid_alive(short.pid.unwrap()), "its game still runs");

    // The others run on.
    for s in [&default, &longer, &unlimited] {
        let now = client.get_session(&s.session_id).await.unwrap();
        assert_eq!(now.status, SessionStatus::Running, "{}", s.game_id);
    }

    // Out of range: 400, nothing started.
    for bad in [0, protocol::api::MAX_DURATION_S + 1] {
        match client
            .start_session(&StartSession {
                max_duration_s: Some(bad),
                ..tests::start("timed")
            })
            .await
        {
            Err(ClientError::Api {
                status: 400,
                code,
                message,
                ..
            }) => {
                assert_eq!(code, ErrorCode::BadRequest);
                assert!(message.contains("max_duration_s"), "{message}");
            }
            other => panic!("max_duration_s {bad}: {other:?}"),
        }
    }
    let running = client
        .list_sessions(&protocol::api::SessionQuery {
            status: Some(SessionStatus::Running),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(running.sessions.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_nobody_is_connected_to_ends_idle() {
    let broker = TestBroker::start().await;
    let _agent = TestAgent::start(broker.agent_addr, AgentOptions::host("idle-host")).await;
    let client = Client::new(&broker.url, None).unwrap();
    tests::wait_hosts_online(&client, 1).await;
    let timeout = Duration::from_secs(u64::from(IDLE_TIMEOUT_S));

    let played = client.start_session(&tests::start("idler")).await.unwrap();
    let never = client.start_session(&tests::start("idler")).await.unwrap();

    // A player connects and stays: the session runs on well past its idle timeout.
    let player = tokio::net::TcpStream::connect(("127.0.0.1", played.port.unwrap()))
        .await
        .unwrap();
    let connected = tokio::time::Instant::now();
    while connected.elapsed() < timeout * 3 {
        let now = client.get_session(&played.session_id).await.unwrap();
        assert_eq!(
            now.status,
            SessionStatus::Running,
            "ended while a player was connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nobody ever connected to the other: it is over already.
    let unplayed = ended(&client, &never.session_id).await;
    assert_eq!(unplayed.end_reason, Some(EndReason::Idle));
    assert!(!pid_alive(never.pid.unwrap()));

    // The player leaves: the session ends `idle`, its timeout later (as the agent's
    // heartbeats, a second apart, saw the connection last).
    drop(player);
    let left = OffsetDateTime::now_utc();
    let s = ended(&client, &played.session_id).await;
    assert_eq!(
        (s.status, s.end_reason),
        (SessionStatus::Ended, Some(EndReason::Idle))
    );
    let after = s.ended_at.unwrap() - left;
    assert!(
        after >= timeout - HEARTBEAT,
        "ended {after:?} after the player left"
    );
    assert!(!pid_alive(played.pid.unwrap()), "its game still runs");
}

/// A pool's ready game is idle until a player claims it, and is never ended for that; once
/// claimed, its idle timeout counts from the claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_game_idles_out_only_after_its_claim() {
    let broker = TestBroker::start().await;
    let _agent = TestAgent::start(broker.agent_addr, AgentOptions::host("idle-pool")).await;
    let client = Client::new(&broker.url, None).unwrap();
    tests::wait_hosts_online(&client, 1).await;
    let timeout = Duration::from_secs(u64::from(IDLE_TIMEOUT_S));
    let pool = protocol::PoolId::new("idlers").unwrap();
    let spec = protocol::api::PoolSpec {
        game_id: GameId::new("idler").unwrap(),
        mode: None,
        config: None,
        settings: Default::default(),
        size: 1,
        max_age_s: None,
    };
    client.put_pool(&pool, &spec, None).await.unwrap();
    let ready_query = protocol::api::SessionQuery {
        status: Some(SessionStatus::Ready),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let waiting = loop {
        let ready = client.list_sessions(&ready_query).await.unwrap().sessions;
        if let Some(s) = ready.into_iter().next() {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "no ready game");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Nobody connected, three timeouts long: still waiting for its player.
    let since = tokio::time::Instant::now();
    while since.elapsed() < timeout * 3 {
        let now = client.get_session(&waiting.session_id).await.unwrap();
        assert_eq!(now.status, SessionStatus::Ready, "a waiting game was ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let claimed = client.start_session(&tests::start("idler")).await.unwrap();
    assert_eq!(claimed.session_id, waiting.session_id);
    let s = ended(&client, &claimed.session_id).await;
    assert_eq!(s.end_reason, Some(EndReason::Idle));
    let after = s.ended_at.unwrap() - claimed.started_at.unwrap();
    assert!(after >= timeout, "ended {after:?} after its claim");
}
