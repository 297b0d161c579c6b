//! The session store's contract, run against every kind of store: the in-memory one and MySQL
//! (a real MariaDB server, one database per test).

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::sync::Arc;

use broker::session::{new_session, Actor, SessionEvent};
use broker::store::mysql::MysqlStore;
use broker::store::{IdempotencyKey, Inserted, KeyMatch, Store, StoreError};
use protocol::api::{EndReason, EventType, Session, SessionQuery, SessionStatus, StartSession};
use protocol::wire::{ExitStatus, GameOffer, HostFacts, PortRange};
use protocol::{GameId, HostId, PoolId, SessionId};
use time::OffsetDateTime;

fn session(n: u32, game: &str, host: &str) -> Session {
    new_session(
        SessionId::new(format!("s-{n:04}")).unwrap(),
        GameId::new(game).unwrap(),
        "default".into(),
        None,
        HostId::new(host).unwrap(),
        // Whole microseconds: what DATETIME(6) keeps.
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + i64::from(n)).unwrap(),
    )
}

fn launched(pid: u32) -> SessionEvent {
    SessionEvent::Launched {
        pid,
        ip: "10.0.0.5".parse().unwrap(),
        port: 20000,
        ports: vec![20000, 20007],
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap()
}

/// What host `gpu-01` says of itself, with room for `max_sessions`.
fn facts(max_sessions: u32) -> HostFacts {
    HostFacts {
        hostname: "gpu-01".into(),
        ip: "10.0.0.7".parse().unwrap(),
        cpus: 8,
        mem_total_bytes: 1 << 34,
        games: vec![GameOffer {
            game_id: GameId::new("g").unwrap(),
            modes: vec!["default".into()],
            ready_timeout_ms: None,
            settings: Vec::new(),
            max_duration_s: None,
            idle_timeout_s: None,
            build: None,
            gpus: 0,
            slots: 1,
        }],
        max_sessions,
        port_range: PortRange {
            lo: 20000,
            hi: 20099,
        },
        builds: Vec::new(),
        gpus: Vec::new(),
        labels: Default::default(),
    }
}

async fn insert(store: &Store, s: &Session) {
    assert_eq!(
        store.insert(s, None, Actor::Portal, None).await.unwrap(),
        Inserted::New
    );
}

async fn round_trips_every_field(store: Store) {
    let mut s = session(1, "neverball", "host-a");
    // Not only ASCII: a database whose default character set is latin1 must not mangle it.
    s.config = Some("конфиг/server.conf".into());
    s.mode = "périodique-模式".into();
    s.settings = [("video-fps", "30"), ("video-specific[b]", "8000000")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    insert(&store, &s).await;
    assert_eq!(store.get(&s.session_id).await.unwrap(), s);
    let running = store
        .transition(&s.session_id, &launched(4242), Actor::Agent, now())
        .await
        .unwrap();
    assert_eq!(running.status, SessionStatus::Running);
    assert_eq!(running.ports, [20000, 20007]);
    assert_eq!(store.get(&s.session_id).await.unwrap(), running);
    let ended = store
        .transition(
            &s.session_id,
            &SessionEvent::Exited(ExitStatus::Signal(9)),
            Actor::GameExit,
            now(),
        )
        .await
        .unwrap();
    assert_eq!(
        (ended.exit_code, ended.end_reason),
        (Some(137), Some(EndReason::GameExited))
    );
    assert_eq!(store.get(&s.session_id).await.unwrap(), ended);
    let missing = SessionId::new("nope").unwrap();
    assert_eq!(
        store.get(&missing).await.unwrap_err(),
        StoreError::NotFound(missing)
    );
    assert!(matches!(
        store.insert(&s, None, Actor::Portal, None).await,
        Err(StoreError::Duplicate(_))
    ));
}

async fn enforces_the_lifecycle_and_keeps_history(store: Store) {
    let s = session(1, "g", "h");
    insert(&store, &s).await;
    let id = &s.session_id;
    let err = store
        .transition(id, &SessionEvent::Stopped, Actor::Agent, now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Transition(_)), "{err:?}");
    store
        .transition(id, &launched(7), Actor::Agent, now())
        .await
        .unwrap();
    store
        .transition(id, &SessionEvent::StopRequested, Actor::Api, now())
        .await
        .unwrap();
    store
        .transition(id, &SessionEvent::Stopped, Actor::Agent, now())
        .await
        .unwrap();
    let err = store
        .transition(id, &SessionEvent::HostLost, Actor::HostLost, now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Transition(_)), "{err:?}");
    assert_eq!(store.get(id).await.unwrap().status, SessionStatus::Ended);
    assert_history(
        &store,
        id,
        &[
            ("created", "starting", "portal"),
            ("launched", "running", "agent"),
            ("stop requested", "stopping", "api"),
            ("stopped", "ended", "agent"),
        ],
    )
    .await;
}

/// Asserts a session's history as (event, status, actor), oldest first.
async fn assert_history(store: &Store, id: &SessionId, want: &[(&str, &str, &str)]) {
    let history: Vec<(String, String, String)> = store
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event, e.status, e.actor))
        .collect();
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
        .collect();
    assert_eq!(history, want);
}

/// A start whose launch answered at once is recorded with its outcome, as one change.
async fn records_a_session_with_its_first_change(store: Store) {
    let s = session(1, "g", "h");
    let id = &s.session_id;
    let running = store
        .insert_after(&s, Actor::Portal, &launched(7), Actor::Agent, now(), None)
        .await
        .unwrap();
    assert_eq!(
        (running.status, running.pid, running.started_at),
        (SessionStatus::Running, Some(7), Some(now()))
    );
    assert_eq!(store.get(id).await.unwrap(), running);
    assert_history(
        &store,
        id,
        &[
            ("created", "starting", "portal"),
            ("launched", "running", "agent"),
        ],
    )
    .await;
    // It goes on as any session.
    store
        .transition(id, &SessionEvent::StopRequested, Actor::Api, now())
        .await
        .unwrap();
    assert!(matches!(
        store
            .insert_after(&s, Actor::Portal, &launched(8), Actor::Agent, now(), None)
            .await,
        Err(StoreError::Duplicate(_))
    ));
    // A failed launch is recorded over at once; a change the lifecycle refuses records nothing.
    let failed = session(2, "g", "h");
    let failed = store
        .insert_after(
            &failed,
            Actor::Portal,
            &SessionEvent::LaunchFailed,
            Actor::Agent,
            now(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(failed.end_reason, Some(EndReason::LaunchFailed));
    assert_eq!(store.get(&failed.session_id).await.unwrap(), failed);
    let refused = session(3, "g", "h");
    assert!(matches!(
        store
            .insert_after(
                &refused,
                Actor::Portal,
                &SessionEvent::Stopped,
                Actor::Agent,
                now(),
                None
            )
            .await,
        Err(StoreError::Transition(_))
    ));
    assert!(matches!(
        store.get(&refused.session_id).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn lists_newest_first_with_filters_and_pages(store: Store) {
    for n in 0..25 {
        let game = if n % 2 == 0 { "even" } else { "odd" };
        let host = if n < 10 { "host-a" } else { "host-b" };
        let mut s = session(n, game, host);
        // Every fifth session is player-5's.
        s.user_id = (n % 5 == 0).then(|| "player-5".to_owned());
        insert(&store, &s).await;
    }
    store
        .transition(
            &SessionId::new("s-0003").unwrap(),
            &launched(3),
            Actor::Agent,
            now(),
        )
        .await
        .unwrap();
    let ids = |p: &broker::store::Page| {
        p.sessions
            .iter()
            .map(|s| s.session_id.to_string())
            .collect::<Vec<_>>()
    };
    let all = store.list(&SessionQuery::default()).await.unwrap();
    assert_eq!(all.sessions.len(), 25);
    assert_eq!(all.sessions[0].session_id.as_str(), "s-0024");
    assert_eq!(all.next_cursor, None);
    let q = |status, game: Option<&str>, host: Option<&str>, limit, cursor| SessionQuery {
        status,
        game_id: game.map(|g| GameId::new(g).unwrap()),
        host_id: host.map(|h| HostId::new(h).unwrap()),
        user_id: None,
        limit,
        cursor,
    };
    let player = SessionQuery {
        user_id: Some("player-5".into()),
        ..SessionQuery::default()
    };
    assert_eq!(
        ids(&store.list(&player).await.unwrap()),
        ["s-0020", "s-0015", "s-0010", "s-0005", "s-0000"]
    );
    let mut live = store.live_of_user("player-5").await.unwrap();
    live.sort();
    assert_eq!(live.len(), 5);
    assert!(store.live_of_user("nobody").await.unwrap().is_empty());
    let running = store
        .list(&q(Some(SessionStatus::Running), None, None, None, None))
        .await
        .unwrap();
    assert_eq!(ids(&running), ["s-0003"]);
    let odd_a = store
        .list(&q(None, Some("odd"), Some("host-a"), None, None))
        .await
        .unwrap();
    assert_eq!(
        ids(&odd_a),
        ["s-0009", "s-0007", "s-0005", "s-0003", "s-0001"]
    );
    // Pages of 10 over the 13 even sessions.
    let first = store
        .list(&q(None, Some("even"), None, Some(10), None))
        .await
        .unwrap();
    assert_eq!(first.sessions.len(), 10);
    assert_eq!(first.sessions[0].session_id.as_str(), "s-0024");
    let cursor = first.next_cursor.clone().expect("a next page");
    let second = store
        .list(&q(None, Some("even"), None, Some(10), Some(cursor)))
        .await
        .unwrap();
    assert_eq!(ids(&second), ["s-0004", "s-0002", "s-0000"]);
    assert_eq!(second.next_cursor, None);
    let bad = store
        .list(&q(
            None,
            None,
            None,
            None,
            Some("x'; DROP TABLE sessions".into()),
        ))
        .await;
    assert!(matches!(bad, Err(StoreError::BadCursor(_))));
    // Limits are clamped to 1..=1000.
    let one = store
        .list(&q(None, None, None, Some(0), None))
        .await
        .unwrap();
    assert_eq!(one.sessions.len(), 1);
}

async fn finds_active_sessions(store: Store) {
    for n in 0..4 {
        insert(
            &store,
            &session(n, "g", if n < 3 { "host-a" } else { "host-b" }),
        )
        .await;
    }
    let id = |n: u32| SessionId::new(format!("s-{n:04}")).unwrap();
    store
        .transition(&id(0), &launched(100), Actor::Agent, now())
        .await
        .unwrap();
    store
        .transition(&id(1), &launched(101), Actor::Agent, now())
        .await
        .unwrap();
    store
        .transition(&id(1), &SessionEvent::HostLost, Actor::HostLost, now())
        .await
        .unwrap();
    let ip = "10.0.0.5".parse().unwrap();
    assert_eq!(
        store
            .find_active_by_addr(ip, 100)
            .await
            .unwrap()
            .unwrap()
            .session_id,
        id(0)
    );
    assert!(
        store.find_active_by_addr(ip, 101).await.unwrap().is_none(),
        "lost is not active"
    );
    let on_a: Vec<SessionId> = store
        .active(Some(&HostId::new("host-a").unwrap()))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(on_a, [id(0), id(2)]);
    assert_eq!(store.active(None).await.unwrap().len(), 3);
}

async fn binds_idempotency_keys(store: Store) {
    let req = tests::start("g");
    let key = IdempotencyKey::new("order-1".into(), &req);
    let first = session(1, "g", "h");
    assert_eq!(
        store
            .insert(&first, Some(&key), Actor::Portal, None)
            .await
            .unwrap(),
        Inserted::New
    );
    let again = session(2, "g", "h");
    assert_eq!(
        store
            .insert(&again, Some(&key), Actor::Portal, None)
            .await
            .unwrap(),
        Inserted::Existing(first.session_id.clone())
    );
    let other = IdempotencyKey::new(
        "order-1".into(),
        &StartSession {
            mode: Some("x".into()),
            ..req.clone()
        },
    );
    assert_eq!(
        store
            .insert(&again, Some(&other), Actor::Portal, None)
            .await
            .unwrap(),
        Inserted::KeyConflict
    );
    assert!(
        matches!(
            store.get(&again.session_id).await,
            Err(StoreError::NotFound(_))
        ),
        "nothing written"
    );
    store.forget_key("order-1").await.unwrap();
    assert_eq!(
        store
            .insert(&again, Some(&key), Actor::Portal, None)
            .await
            .unwrap(),
        Inserted::New
    );
    // A start that fails, whoever records it (here as a sweep after a crash would), forgets
    // its key: the next start with it starts anew.
    assert_eq!(
        store.find_key(&key).await.unwrap(),
        Some(KeyMatch::Same(again.session_id.clone()))
    );
    store
        .transition(
            &again.session_id,
            &SessionEvent::LaunchTimedOut,
            Actor::Sweep,
            now(),
        )
        .await
        .unwrap();
    assert_eq!(store.find_key(&key).await.unwrap(), None);
    let third = session(3, "g", "h");
    assert_eq!(
        store
            .insert(&third, Some(&key), Actor::Portal, None)
            .await
            .unwrap(),
        Inserted::New
    );
}

async fn remembers_hosts(store: Store) {
    let facts = facts(4);
    let a = HostId::new("host-a").unwrap();
    store.save_host(&a, &facts, now()).await.unwrap();
    store.set_drained(&a, true, now()).await.unwrap();
    store.save_host(&a, &facts, now()).await.unwrap();
    let hosts = store.hosts().await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert!(hosts[0].drained, "a new handshake keeps the drained flag");
    assert_eq!(hosts[0].facts.as_ref(), Some(&facts));
    store.set_drained(&a, false, now()).await.unwrap();
    assert!(!store.hosts().await.unwrap()[0].drained);
}

async fn serialises_concurrent_changes_of_one_session(store: Store) {
    let store = Arc::new(store);
    let s = session(1, "g", "h");
    insert(&store, &s).await;
    store
        .transition(&s.session_id, &launched(1), Actor::Agent, now())
        .await
        .unwrap();
    // Many ends and exits race: exactly one final state wins, and history agrees with it.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (store, id) = (Arc::clone(&store), s.session_id.clone());
            tokio::spawn(async move {
                let event = if i % 2 == 0 {
                    SessionEvent::StopRequested
                } else {
                    SessionEvent::Exited(ExitStatus::Code(i))
                };
                store.transition(&id, &event, Actor::Api, now()).await
            })
        })
        .collect();
    let mut finals = 0;
    for t in tasks {
        if let Ok(s) = t.await.unwrap() {
            if s.status.is_terminal() {
                finals += 1;
            }
        }
    }
    assert_eq!(finals, 1, "exactly one change ended the session");
    let events = store.events(&s.session_id).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.status == "ended").count(), 1);
    assert_eq!(
        store.get(&s.session_id).await.unwrap().status,
        SessionStatus::Ended
    );
}

async fn streams_each_status_change_once_in_order(store: Store) {
    use protocol::api::{EventType as T, Host, HostStatus};
    assert_eq!(store.stream_head().await.unwrap(), 0);
    let s1 = session(1, "g", "host-a");
    insert(&store, &s1).await;
    store
        .transition(&s1.session_id, &launched(7), Actor::Agent, now())
        .await
        .unwrap();
    for _ in 0..2 {
        // The second request changes no status: history, but no stream event.
        store
            .transition(
                &s1.session_id,
                &SessionEvent::StopRequested,
                Actor::Api,
                now(),
            )
            .await
            .unwrap();
    }
    let s2 = session(2, "g", "host-a");
    store
        .insert_after(
            &s2,
            Actor::Portal,
            &SessionEvent::LaunchFailed,
            Actor::Agent,
            now(),
            None,
        )
        .await
        .unwrap();
    let host = Host {
        host_id: HostId::new("host-a").unwrap(),
        ip: "10.0.0.7".parse().unwrap(),
        status: HostStatus::Draining,
        max_sessions: 4,
        sessions: 1,
        cpu_percent: 3.5,
        mem_used_bytes: 1,
        mem_total_bytes: 2,
        games: vec![GameId::new("g").unwrap()],
        last_seen: now(),
        broker_id: Some("b1".into()),
        labels: Default::default(),
        gpus: Vec::new(),
        gpus_used: 0,
        slots_used: 0,
    };
    store
        .append_host_event(T::HostDraining, &host, Actor::Provider, now())
        .await
        .unwrap();
    let all = store.stream_after(0, 100).await.unwrap();
    let got: Vec<(u64, T, &str)> = all
        .iter()
        .map(|e| (e.id, e.kind, e.actor.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (1, T::SessionCreated, "portal"),
            (2, T::SessionRunning, "agent"),
            (3, T::SessionStopping, "api"),
            (4, T::SessionCreated, "portal"),
            (5, T::SessionFailed, "agent"),
            (6, T::HostDraining, "provider"),
        ]
    );
    let running = all[1].session.as_ref().unwrap();
    assert_eq!(
        (running.status, running.pid),
        (SessionStatus::Running, Some(7))
    );
    assert_eq!(
        all[3].session.as_ref().unwrap().status,
        SessionStatus::Starting
    );
    assert_eq!(all[5].host.as_ref(), Some(&host));
    assert!(all[5].session.is_none() && all[0].host.is_none());
    assert_eq!(store.stream_head().await.unwrap(), 6);
    let page: Vec<u64> = store
        .stream_after(2, 2)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(page, [3, 4]);
    assert!(store.stream_after(6, 10).await.unwrap().is_empty());
    // Retention: MySQL forgets what is older than the cutoff; numbers never move.
    if store.is_durable() {
        let forgot = store
            .trim_stream(now() + time::Duration::seconds(1), 4)
            .await
            .unwrap();
        assert_eq!(forgot, 4);
        let left: Vec<u64> = store
            .stream_after(0, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(left, [5, 6]);
        assert_eq!(store.stream_head().await.unwrap(), 6);
    }
}

/// A pool's game waiting for a player (`ready`) is listed only when asked for; claimed, it
/// is an ordinary running session, with `ready` and `claimed` in its history.
async fn lists_ready_games_only_when_asked_for(store: Store) {
    let plain = session(1, "g", "h");
    let pooled = session(2, "g", "h");
    insert(&store, &plain).await;
    insert(&store, &pooled).await;
    let readied = SessionEvent::Readied {
        pid: 42,
        ip: "10.0.0.5".parse().unwrap(),
        port: 20001,
        ports: vec![20001],
    };
    let ready = store
        .transition(&pooled.session_id, &readied, Actor::Agent, now())
        .await
        .unwrap();
    assert_eq!((ready.status, ready.pid), (SessionStatus::Ready, Some(42)));
    let ids = |p: broker::store::Page| {
        p.sessions
            .into_iter()
            .map(|s| s.session_id.to_string())
            .collect::<Vec<_>>()
    };
    let all = store.list(&SessionQuery::default()).await.unwrap();
    assert_eq!(ids(all), ["s-0001"]);
    let waiting = SessionQuery {
        status: Some(SessionStatus::Ready),
        ..SessionQuery::default()
    };
    assert_eq!(ids(store.list(&waiting).await.unwrap()), ["s-0002"]);
    // It is live: its host's reconcile keeps it.
    let host = HostId::new("h").unwrap();
    let mut live: Vec<String> = store
        .active(Some(&host))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.session_id.to_string())
        .collect();
    live.sort();
    assert_eq!(live, ["s-0001", "s-0002"]);
    let claimed = store
        .transition(
            &pooled.session_id,
            &SessionEvent::Claimed,
            Actor::Portal,
            now(),
        )
        .await
        .unwrap();
    assert_eq!(claimed.status, SessionStatus::Running);
    assert_eq!(
        ids(store.list(&SessionQuery::default()).await.unwrap()),
        ["s-0002", "s-0001"]
    );
    let history: Vec<String> = store
        .events(&pooled.session_id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(history, ["created", "ready", "claimed"]);
}

/// Session `n` of `pool` on `host`, recorded `ready` (pid `100 + n`).
async fn ready_in_pool(store: &Store, n: u32, host: &str, pool: &PoolId) -> Session {
    let mut s = session(n, "g", host);
    s.pool_id = Some(pool.clone());
    ready_as(store, &s, 100 + n).await
}

/// `s` (of a pool), recorded and then `ready` with `pid`.
async fn ready_as(store: &Store, s: &Session, pid: u32) -> Session {
    insert(store, s).await;
    let readied = SessionEvent::Readied {
        pid,
        ip: "10.0.0.5".parse().unwrap(),
        port: 20000,
        ports: vec![20000],
    };
    store
        .transition(&s.session_id, &readied, Actor::Agent, now())
        .await
        .unwrap()
}

fn pool_spec(size: u32) -> protocol::api::PoolSpec {
    protocol::api::PoolSpec {
        game_id: GameId::new("g").unwrap(),
        mode: None,
        config: None,
        settings: [("video-fps".to_owned(), "30".to_owned())].into(),
        size,
        max_age_s: Some(60),
    }
}

/// A pool's spec is written only while `If-Match` holds, each write a new version; its
/// launches' outcomes are counted.
async fn keeps_pools_under_if_match(store: Store) {
    use broker::store::pools::{LaunchResult, PoolRemoved, PoolWrite, Precondition};
    let id = PoolId::new("lobby").unwrap();
    let other = PoolId::new("other").unwrap();
    let v = |w: PoolWrite| match w {
        PoolWrite::Created(p) | PoolWrite::Updated(p) => p.version,
        PoolWrite::PreconditionFailed => 0,
    };
    assert!(matches!(
        store.put_pool(&id, &pool_spec(2), None).await.unwrap(),
        PoolWrite::Created(ref p) if p.version == 1 && p.spec == pool_spec(2)
    ));
    let at1 = Precondition::Version(vec![1]);
    let w = store
        .put_pool(&id, &pool_spec(5), Some(&at1))
        .await
        .unwrap();
    assert!(matches!(w, PoolWrite::Updated(_)));
    assert_eq!(v(w), 2);
    // A second writer that read version 1 loses.
    assert_eq!(
        store
            .put_pool(&id, &pool_spec(9), Some(&at1))
            .await
            .unwrap(),
        PoolWrite::PreconditionFailed
    );
    // `If-Match: *` on a pool that does not exist.
    assert_eq!(
        store
            .put_pool(&other, &pool_spec(1), Some(&Precondition::Exists))
            .await
            .unwrap(),
        PoolWrite::PreconditionFailed
    );
    store
        .pool_launched(&id, &LaunchResult::Failed("no capacity".into()))
        .await
        .unwrap();
    let pools = store.pools().await.unwrap();
    assert_eq!(pools.len(), 1);
    assert_eq!(
        (pools[0].spec.size, pools[0].version, pools[0].failures),
        (5, 2, 1)
    );
    assert_eq!(pools[0].last_error.as_deref(), Some("no capacity"));
    store
        .pool_launched(&id, &LaunchResult::Ready)
        .await
        .unwrap();
    assert_eq!(store.pools().await.unwrap()[0].last_error, None);
    assert_eq!(
        store.remove_pool(&id, Some(&at1)).await.unwrap(),
        PoolRemoved::PreconditionFailed
    );
    assert!(matches!(
        store
            .remove_pool(&id, Some(&Precondition::Version(vec![2])))
            .await
            .unwrap(),
        PoolRemoved::Removed(ref p) if p.version == 2
    ));
    assert_eq!(
        store.remove_pool(&id, None).await.unwrap(),
        PoolRemoved::NotFound
    );
    assert!(store.pools().await.unwrap().is_empty());
}

/// Concurrent claims take each ready game once, oldest first, and count claims and misses;
/// a claim binds the start's `Idempotency-Key`.
async fn claims_each_ready_game_once(store: Store) {
    use broker::store::pools::{Claimant, ReadyClaim};
    let store = Arc::new(store);
    let pool = PoolId::new("lobby").unwrap();
    store.put_pool(&pool, &pool_spec(3), None).await.unwrap();
    for n in 1..=3 {
        let ready = ready_in_pool(&store, n, "h", &pool).await;
        assert_eq!(ready.pool_id.as_ref(), Some(&pool));
    }
    // A plain session of the same game is never claimed.
    insert(&store, &session(9, "g", "h")).await;
    let claims: Vec<_> = (0..5)
        .map(|_| {
            let (store, pool) = (Arc::clone(&store), pool.clone());
            tokio::spawn(async move {
                store
                    .claim_ready(&pool, Actor::Portal, None, Claimant::default(), now())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut got = Vec::new();
    let mut empty = 0;
    for c in claims {
        match c.await.unwrap() {
            ReadyClaim::Claimed(s) => {
                assert_eq!(s.status, SessionStatus::Running);
                assert_eq!(s.started_at, Some(now()));
                got.push(s.session_id.to_string());
            }
            ReadyClaim::Empty => empty += 1,
            ReadyClaim::KeyTaken | ReadyClaim::Quota => panic!("no key and no quota"),
        }
    }
    got.sort();
    assert_eq!(got, ["s-0001", "s-0002", "s-0003"]);
    assert_eq!(empty, 2);
    let p = &store.pools().await.unwrap()[0];
    assert_eq!((p.claims, p.misses), (3, 2));
    let first = SessionId::new("s-0001").unwrap();
    let history: Vec<(String, String)> = store
        .events(&first)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event, e.actor))
        .collect();
    assert_eq!(
        history,
        [
            ("created".into(), "portal".into()),
            ("ready".into(), "agent".into()),
            ("claimed".into(), "portal".into())
        ]
    );
    let stream = store.stream_after(0, 100).await.unwrap();
    let running = stream
        .iter()
        .filter(|e| e.kind == protocol::api::EventType::SessionRunning)
        .count();
    assert_eq!(running, 3, "{stream:?}");
    // With a key: bound to the claimed game; the same key again finds it taken.
    let s = ready_in_pool(&store, 4, "h", &pool).await;
    let req = tests::start("g");
    let key = IdempotencyKey::new("order-7".into(), &req);
    assert!(matches!(
        store.claim_ready(&pool, Actor::Portal, Some(&key), Claimant::default(), OffsetDateTime::now_utc()).await.unwrap(),
        ReadyClaim::Claimed(ref c) if c.session_id == s.session_id
    ));
    assert_eq!(
        store.find_key(&key).await.unwrap(),
        Some(broker::store::KeyMatch::Same(s.session_id.clone()))
    );
    let s = ready_in_pool(&store, 5, "h", &pool).await;
    assert_eq!(
        store
            .claim_ready(
                &pool,
                Actor::Portal,
                Some(&key),
                Claimant::default(),
                OffsetDateTime::now_utc()
            )
            .await
            .unwrap(),
        ReadyClaim::KeyTaken
    );
    assert_eq!(
        store.get(&s.session_id).await.unwrap().status,
        SessionStatus::Ready
    );
    // A removed pool's games are not claimed.
    store.remove_pool(&pool, None).await.unwrap();
    assert_eq!(
        store
            .claim_ready(&pool, Actor::Portal, None, Claimant::default(), now())
            .await
            .unwrap(),
        ReadyClaim::Empty
    );
}

/// A session's limit is kept with it, and its expiry follows from it while it runs; a claim
/// keeps the smaller of the pool game's and the claimer's; a notice is appended once.
async fn keeps_limits_and_sends_each_notice_once(store: Store) {
    use broker::store::pools::{Claimant, ReadyClaim};
    let mut cold = session(1, "g", "h");
    cold.max_duration_s = Some(60);
    insert(&store, &cold).await;
    let running = store
        .transition(&cold.session_id, &launched(7), Actor::Agent, now())
        .await
        .unwrap();
    let expires = Some(now() + time::Duration::seconds(60));
    assert_eq!(running.expires_at, expires);
    let read = store.get(&cold.session_id).await.unwrap();
    assert_eq!((read.max_duration_s, read.expires_at), (Some(60), expires));

    // A pool's game carries its game's limit; its claimer's is shorter, and wins.
    let pool = PoolId::new("timed").unwrap();
    store.put_pool(&pool, &pool_spec(1), None).await.unwrap();
    let mut ready = session(2, "g", "h");
    ready.pool_id = Some(pool.clone());
    ready.max_duration_s = Some(3600);
    let waiting = ready_as(&store, &ready, 8).await;
    assert_eq!(waiting.expires_at, None, "no clock runs while it waits");
    let claimed_at = now() + time::Duration::seconds(500);
    // A claim for other settings than the ready game's takes nothing.
    let other = [("video-fps".to_owned(), "60".to_owned())].into();
    let mismatch = Claimant {
        settings: Some(&other),
        ..Claimant::default()
    };
    assert!(matches!(
        store
            .claim_ready(&pool, Actor::Portal, None, mismatch, claimed_at)
            .await
            .unwrap(),
        ReadyClaim::Empty
    ));
    let none = std::collections::BTreeMap::new();
    let claimant = Claimant {
        max_duration_s: Some(120),
        settings: Some(&none),
        ..Claimant::default()
    };
    let ReadyClaim::Claimed(claimed) = store
        .claim_ready(&pool, Actor::Portal, None, claimant, claimed_at)
        .await
        .unwrap()
    else {
        panic!("the ready game is claimed");
    };
    let expires = Some(claimed_at + time::Duration::seconds(120));
    assert_eq!(
        (claimed.max_duration_s, claimed.expires_at),
        (Some(120), expires)
    );
    let read = store.get(&ready.session_id).await.unwrap();
    assert_eq!((read.max_duration_s, read.expires_at), (Some(120), expires));

    // Warned once, however often asked.
    let head = store.stream_head().await.unwrap();
    let mut sent = 0;
    for _ in 0..3 {
        if store
            .notice_once(EventType::SessionExpiring, &read, Actor::Sweep, claimed_at)
            .await
            .unwrap()
        {
            sent += 1;
        }
    }
    assert_eq!(sent, 1);
    let after = store.stream_after(head, 10).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].kind, EventType::SessionExpiring);
    assert_eq!(
        after[0].session.as_ref().unwrap().session_id,
        read.session_id
    );
    // Ending by its limit: `expired` from the stop on.
    let stopping = store
        .transition(
            &read.session_id,
            &SessionEvent::Expired,
            Actor::Sweep,
            claimed_at,
        )
        .await
        .unwrap();
    assert_eq!(stopping.end_reason, Some(EndReason::Expired));
    let over = store
        .transition(
            &read.session_id,
            &SessionEvent::Stopped,
            Actor::Agent,
            claimed_at,
        )
        .await
        .unwrap();
    assert_eq!(
        (over.status, over.end_reason, over.expires_at),
        (SessionStatus::Ended, Some(EndReason::Expired), None)
    );
    assert_eq!(store.get(&read.session_id).await.unwrap(), over);
}

/// A join token is kept as its hash; it is redeemed once, only while unexpired and while
/// its session runs, with `session.joined` on the stream; a replaced token is refused; a
/// secret is made once.
async fn redeems_each_join_token_once(store: Store) {
    use broker::store::{JoinRecord, JoinRefusal, Redeemed};
    let s = session(1, "g", "host-a");
    let hash = |t: &str| broker::join::token_hash(t);
    let record = |t: &str, expires_at| JoinRecord {
        token_hash: hash(t),
        sealed: Some([7; 16]),
        expires_at,
        used_at: None,
    };
    let later = now() + time::Duration::minutes(2);
    // No session: nothing is kept.
    assert!(matches!(
        store
            .put_join(&s.session_id, &record("t1", later), false)
            .await,
        Err(StoreError::NotFound(_))
    ));
    insert(&store, &s).await;
    assert!(store
        .put_join(&s.session_id, &record("t1", later), false)
        .await
        .unwrap());
    // Only the first is kept unless replacing.
    assert!(!store
        .put_join(&s.session_id, &record("t2", later), false)
        .await
        .unwrap());
    let kept = store.join_of(&s.session_id).await.unwrap().unwrap();
    assert_eq!(kept.token_hash, hash("t1"));
    assert_eq!(kept.sealed, Some([7; 16]));
    let refused = |r: Redeemed| match r {
        Redeemed::Refused(why) => why,
        Redeemed::Joined(s) => panic!("joined {s:?}"),
    };
    // Not while it starts.
    let r = store
        .redeem(&s.session_id, &hash("t1"), now(), Actor::Game)
        .await
        .unwrap();
    assert_eq!(refused(r), JoinRefusal::NotRunning);
    store
        .transition(&s.session_id, &launched(42), Actor::Agent, now())
        .await
        .unwrap();
    let head = store.stream_head().await.unwrap();
    let r = store
        .redeem(&s.session_id, &hash("t2"), now(), Actor::Game)
        .await
        .unwrap();
    assert_eq!(refused(r), JoinRefusal::WrongToken);
    let r = store
        .redeem(&s.session_id, &hash("t1"), later, Actor::Game)
        .await
        .unwrap();
    assert_eq!(refused(r), JoinRefusal::Expired);
    let Redeemed::Joined(joined) = store
        .redeem(&s.session_id, &hash("t1"), now(), Actor::Game)
        .await
        .unwrap()
    else {
        panic!("the first redeem joins");
    };
    assert_eq!(joined.session_id, s.session_id);
    let r = store
        .redeem(&s.session_id, &hash("t1"), now(), Actor::Game)
        .await
        .unwrap();
    assert_eq!(refused(r), JoinRefusal::Used);
    let events = store.stream_after(head, 10).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventType::SessionJoined);
    assert_eq!(events[0].actor, "game");
    // A fresh token voids the used one and can be redeemed.
    let mut fresh = record("t3", later);
    fresh.sealed = None;
    assert!(store.put_join(&s.session_id, &fresh, true).await.unwrap());
    let r = store
        .redeem(&s.session_id, &hash("t1"), now(), Actor::Game)
        .await
        .unwrap();
    assert_eq!(refused(r), JoinRefusal::WrongToken);
    assert!(matches!(
        store
            .redeem(&s.session_id, &hash("t3"), now(), Actor::Game)
            .await
            .unwrap(),
        Redeemed::Joined(_)
    ));
    // Over: its key is dead.
    assert!(store
        .put_join(&s.session_id, &record("t4", later), true)
        .await
        .unwrap());
    store
        .transition(
            &s.session_id,
            &SessionEvent::StopRequested,
            Actor::Portal,
            now(),
        )
        .await
        .unwrap();
    let r = store
        .redeem(&s.session_id, &hash("t4"), now(), Actor::Game)
        .await
        .unwrap();
    assert_eq!(refused(r), JoinRefusal::NotRunning);
    let missing = SessionId::new("s-none").unwrap();
    let r = store
        .redeem(&missing, &hash("t4"), now(), Actor::Game)
        .await
        .unwrap();
    assert_eq!(refused(r), JoinRefusal::NotFound);
    // One secret per name, the same at every ask.
    let a = store.secret("game-keys").await.unwrap();
    assert_eq!(a.len(), 32);
    assert_eq!(store.secret("game-keys").await.unwrap(), a);
    assert_ne!(store.secret("other").await.unwrap(), a);
}

/// A build is recorded once, listed newest first, and forgotten.
async fn keeps_builds(store: Store) {
    use broker::store::builds::BuildRecord;
    use protocol::api::BuildKind;
    let rec = |n: u8, secs: i64| BuildRecord {
        build: protocol::BuildId::of_digest(&[n; 32]),
        size: 1000 + u64::from(n),
        kind: if n % 2 == 0 {
            BuildKind::Archive
        } else {
            BuildKind::File
        },
        created_at: OffsetDateTime::from_unix_timestamp(1_900_000_000 + secs).unwrap(),
    };
    let (a, b) = (rec(1, 0), rec(2, 10));
    assert!(store.put_build(&a).await.unwrap());
    assert!(store.put_build(&b).await.unwrap());
    // Once: a build never changes, so a second record of it changes nothing.
    let mut again = a.clone();
    again.size = 1;
    assert!(!store.put_build(&again).await.unwrap());
    assert_eq!(store.build(&a.build).await.unwrap(), Some(a.clone()));
    assert_eq!(store.builds().await.unwrap(), vec![b.clone(), a.clone()]);
    assert!(store.delete_build(&a.build).await.unwrap());
    assert!(!store.delete_build(&a.build).await.unwrap());
    assert_eq!(store.build(&a.build).await.unwrap(), None);
    assert_eq!(store.builds().await.unwrap(), vec![b]);
}

/// A central game is written under its version, keeps its previous build, rolls back, and is
/// removed under `If-Match`.
async fn keeps_central_games(store: Store) {
    use broker::store::games::{GameChange, GameRemoved, GameWrite, RolloutStep};
    use broker::store::pools::Precondition;
    let id = GameId::new("neverball").unwrap();
    let b = |n: u8| protocol::BuildId::of_digest(&[n; 32]);
    let set = |n: u8| GameChange::Set {
        entry: format!("{{\"command\":\"/g{n}\"}}"),
        build: b(n),
        rollout: protocol::api::RolloutSpec::default(),
    };
    let GameWrite::Created(v1) = store.put_game(&id, &set(1), None, now()).await.unwrap() else {
        panic!("created");
    };
    assert_eq!((v1.version, v1.previous_build.clone()), (1, None));
    assert_eq!(
        store
            .put_game(&id, &set(2), Some(&Precondition::Version(vec![9])), now())
            .await
            .unwrap(),
        GameWrite::PreconditionFailed
    );
    let GameWrite::Updated(v2) = store
        .put_game(&id, &set(2), Some(&Precondition::Version(vec![1])), now())
        .await
        .unwrap()
    else {
        panic!("updated");
    };
    assert_eq!(
        (v2.build.clone(), v2.previous_build.clone()),
        (b(2), Some(b(1)))
    );
    assert_eq!(store.game(&id).await.unwrap(), Some(v2.clone()));
    // The change of build started a rollout, kept with the entry that ran the old build.
    assert_eq!(
        v2.rollout.as_ref().map(|r| r.state),
        Some(protocol::api::RolloutState::Canary)
    );
    assert_eq!(v2.entry_of(&b(1)), Some("{\"command\":\"/g1\"}"));
    let canaries = GameChange::Rollout(RolloutStep::Canaries(vec![HostId::new("h").unwrap()]));
    let GameWrite::Updated(v2) = store
        .put_game(&id, &canaries, Some(&Precondition::Version(vec![2])), now())
        .await
        .unwrap()
    else {
        panic!("a rollout step");
    };
    assert_eq!(store.game(&id).await.unwrap(), Some(v2.clone()));
    assert_eq!(
        store.put_game(&id, &canaries, None, now()).await.unwrap(),
        GameWrite::NotApplied,
        "canaries are chosen once"
    );
    let GameWrite::Updated(back) = store
        .put_game(&id, &GameChange::Rollback, None, now())
        .await
        .unwrap()
    else {
        panic!("rolled back");
    };
    assert_eq!((back.build.clone(), back.version), (b(1), 4));
    assert_eq!(
        back.entry, "{\"command\":\"/g1\"}",
        "the old build runs with its entry"
    );
    assert_eq!(back.rollout, None);
    let other = GameId::new("other").unwrap();
    assert_eq!(
        store
            .put_game(&other, &GameChange::Rollback, None, now())
            .await
            .unwrap(),
        GameWrite::NotApplied
    );
    assert_eq!(store.games().await.unwrap(), vec![back.clone()]);
    assert_eq!(
        store
            .delete_game(&id, Some(&Precondition::Version(vec![3])))
            .await
            .unwrap(),
        GameRemoved::PreconditionFailed
    );
    assert_eq!(
        store.delete_game(&id, None).await.unwrap(),
        GameRemoved::Removed(Box::new(back))
    );
    assert_eq!(
        store.delete_game(&id, None).await.unwrap(),
        GameRemoved::NotFound
    );
    assert!(store.games().await.unwrap().is_empty());
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(broker::store::Store::memory()).await
                }
            )*
        }
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(url) = tests::mariadb::database().await else { return };
                    let store = broker::store::mysql::MysqlStore::connect(&url).await.unwrap();
                    super::$name(broker::store::Store::Mysql(store)).await
                }
            )*
        }
        /// The contract on a three-node Galera cluster: each test's store on another node,
        /// so the suite writes through all three.
        mod galera {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = tests::galera::database().await else { return };
                    let node = super::galera_node();
                    let store = broker::store::mysql::MysqlStore::connect(&db.urls[node]).await.unwrap();
                    super::$name(broker::store::Store::Mysql(store)).await
                }
            )*
        }
    };
}

/// The next Galera node a contract test's store uses, in turn.
fn galera_node() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed) % 3
}

/// Where a test of several brokers' stores connects: the brokers' URLs, one database (and,
/// on Galera, the test's turn on the shared cluster).
struct Db {
    urls: [String; 3],
    _galera: Option<tests::galera::Database>,
}

impl Db {
    /// One database on the shared MariaDB: every broker on the one server.
    async fn mariadb() -> Option<Self> {
        let url = tests::mariadb::database().await?;
        Some(Self {
            urls: [url.clone(), url.clone(), url],
            _galera: None,
        })
    }

    /// One database on the shared Galera cluster: broker `k` on node `k`.
    async fn galera() -> Option<Self> {
        let db = tests::galera::database().await?;
        Some(Self {
            urls: db.urls.clone(),
            _galera: Some(db),
        })
    }

    /// Broker `k`'s URL.
    fn url(&self, k: usize) -> &str {
        &self.urls[k % 3]
    }
}

/// A pool's ready games claimed by three brokers at once (on Galera, through three nodes):
/// each game once, and every claim past them finds the pool empty. (Each store's claim picks
/// its game with `FOR UPDATE SKIP LOCKED`, whose lock a Galera node keeps to itself: the
/// claim's write of that game's row is what makes two nodes' claims of it conflict.)
async fn ready_games_are_claimed_once_across_stores(db: Db) {
    use broker::store::pools::{Claimant, ReadyClaim};
    let mut stores = Vec::new();
    for k in 0..3 {
        stores.push(Arc::new(Store::Mysql(
            MysqlStore::connect(db.url(k)).await.unwrap(),
        )));
    }
    let pool = PoolId::new("lobby").unwrap();
    stores[0]
        .put_pool(&pool, &pool_spec(6), None)
        .await
        .unwrap();
    for n in 1..=6 {
        ready_in_pool(&stores[0], n, "h", &pool).await;
    }
    let claims: Vec<_> = (0..18)
        .map(|i| {
            let (store, pool) = (Arc::clone(&stores[i % 3]), pool.clone());
            tokio::spawn(async move {
                store
                    .claim_ready(&pool, Actor::Portal, None, Claimant::default(), now())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut got = Vec::new();
    for c in claims {
        match c.await.unwrap() {
            ReadyClaim::Claimed(s) => got.push(s.session_id.to_string()),
            ReadyClaim::Empty => {}
            other => panic!("{other:?}"),
        }
    }
    got.sort();
    assert_eq!(
        got,
        ["s-0001", "s-0002", "s-0003", "s-0004", "s-0005", "s-0006"]
    );
    let p = &stores[2].pools().await.unwrap()[0];
    assert_eq!((p.claims, p.misses), (6, 12));
    let running = stores[1]
        .stream_after(0, 1000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == protocol::api::EventType::SessionRunning)
        .count();
    assert_eq!(running, 6);
}

/// Tests of several brokers' stores at once, each run on MariaDB (as `mysql_NAME`) and on
/// Galera, each broker on its own node (as `galera::NAME`).
macro_rules! shared_store {
    ($($name:ident => $mysql:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $mysql() {
                let Some(db) = Db::mariadb().await else { return };
                $name(db).await
            }
        )*
        mod galera_shared {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(db) = super::Db::galera().await else { return };
                    super::$name(db).await
                }
            )*
        }
    };
}

shared_store!(
    stream_is_gapless_under_concurrent_writers => mysql_stream_is_gapless_under_concurrent_writers,
    records_survive_a_new_connection_and_migrations_run_once => mysql_records_survive_a_new_connection_and_migrations_run_once,
    changes_by_another_broker_are_seen => mysql_changes_by_another_broker_are_seen,
    owners_fences_claims_and_leases => mysql_owners_fences_claims_and_leases,
    ready_games_hold_their_slots => mysql_ready_games_hold_their_slots,
    claims_count_each_users_quota => mysql_claims_count_each_users_quota,
    ready_games_are_claimed_once_across_stores => mysql_ready_games_are_claimed_once_across_stores,
);

contract!(
    round_trips_every_field,
    enforces_the_lifecycle_and_keeps_history,
    records_a_session_with_its_first_change,
    lists_newest_first_with_filters_and_pages,
    lists_ready_games_only_when_asked_for,
    finds_active_sessions,
    binds_idempotency_keys,
    remembers_hosts,
    serialises_concurrent_changes_of_one_session,
    streams_each_status_change_once_in_order,
    keeps_pools_under_if_match,
    claims_each_ready_game_once,
    keeps_limits_and_sends_each_notice_once,
    redeems_each_join_token_once,
    keeps_builds,
    keeps_central_games,
);

/// Writers on two brokers' stores at once, and a reader polling the stream meanwhile: the
/// reader sees every event exactly once, numbers consecutive, never one before a smaller
/// one (the reason for the counter row: an AUTO_INCREMENT would let it).
async fn stream_is_gapless_under_concurrent_writers(db: Db) {
    let a = Arc::new(Store::Mysql(MysqlStore::connect(db.url(0)).await.unwrap()));
    let b = Arc::new(Store::Mysql(MysqlStore::connect(db.url(1)).await.unwrap()));
    let writers: Vec<_> = (0..16u32)
        .map(|w| {
            let store = Arc::clone(if w % 2 == 0 { &a } else { &b });
            tokio::spawn(async move {
                for i in 0..10 {
                    let s = session(w * 100 + i, "g", "h");
                    insert(&store, &s).await;
                    store
                        .transition(&s.session_id, &launched(7), Actor::Agent, now())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let total = 16 * 10 * 2;
    let reader = Arc::clone(&a);
    let read = tokio::spawn(async move {
        let mut last = 0u64;
        let mut seen = Vec::new();
        while last < total {
            for e in reader.stream_after(last, 37).await.unwrap() {
                assert_eq!(e.id, last + 1, "a gap or a repeat after {last}");
                last = e.id;
                seen.push(e);
            }
            tokio::task::yield_now().await;
        }
        seen
    });
    for w in writers {
        w.await.unwrap();
    }
    let seen = tokio::time::timeout(std::time::Duration::from_secs(60), read)
        .await
        .expect("the reader sees every event")
        .unwrap();
    // Each session's own events in its order: created, then running.
    let mut first: std::collections::HashMap<SessionId, u64> = Default::default();
    for e in &seen {
        let s = e.session.as_ref().unwrap();
        match e.kind {
            protocol::api::EventType::SessionCreated => {
                first.insert(s.session_id.clone(), e.id);
            }
            _ => assert!(first.contains_key(&s.session_id), "running before created"),
        }
    }
    assert_eq!(first.len(), 160);
}

async fn records_survive_a_new_connection_and_migrations_run_once(db: Db) {
    // Two brokers starting at once on an empty database: both migrate safely.
    let (a, b) = tokio::join!(
        MysqlStore::connect(db.url(0)),
        MysqlStore::connect(db.url(1))
    );
    let (a, b) = (Store::Mysql(a.unwrap()), Store::Mysql(b.unwrap()));
    let s = session(1, "g", "h");
    insert(&a, &s).await;
    a.transition(&s.session_id, &launched(9), Actor::Agent, now())
        .await
        .unwrap();
    assert_eq!(b.get(&s.session_id).await.unwrap().pid, Some(9));
    drop((a, b));
    let c = Store::Mysql(MysqlStore::connect(db.url(2)).await.unwrap());
    assert_eq!(
        c.get(&s.session_id).await.unwrap().status,
        SessionStatus::Running
    );
}

/// Each MySQL store remembers the state it last wrote and computes changes from it; another
/// broker changing the session meanwhile must make it decide on the row, not on its memory.
async fn changes_by_another_broker_are_seen(db: Db) {
    let a = Store::Mysql(MysqlStore::connect(db.url(0)).await.unwrap());
    let b = Store::Mysql(MysqlStore::connect(db.url(1)).await.unwrap());
    let (s1, s2) = (session(1, "g", "h"), session(2, "g", "h"));
    for s in [&s1, &s2] {
        insert(&a, s).await;
        a.transition(&s.session_id, &launched(7), Actor::Agent, now())
            .await
            .unwrap();
    }
    // Elsewhere, s1 is asked to stop, and s2's game exits.
    let stopping = b
        .transition(
            &s1.session_id,
            &SessionEvent::StopRequested,
            Actor::Api,
            now(),
        )
        .await
        .unwrap();
    assert_eq!(stopping.status, SessionStatus::Stopping);
    let exit = |code| SessionEvent::Exited(ExitStatus::Code(code));
    b.transition(&s2.session_id, &exit(3), Actor::GameExit, now())
        .await
        .unwrap();
    // `a` remembers s1 running, where `Stopped` does not apply; on the row it does.
    let ended = a
        .transition(&s1.session_id, &SessionEvent::Stopped, Actor::Agent, now())
        .await
        .unwrap();
    assert_eq!(
        (ended.status, ended.end_reason),
        (SessionStatus::Ended, Some(EndReason::EndedByRequest))
    );
    // `a` remembers s2 running, where another exit applies; the row is over and keeps its own.
    assert!(matches!(
        a.transition(&s2.session_id, &exit(5), Actor::GameExit, now())
            .await,
        Err(StoreError::Transition(_))
    ));
    assert_eq!(a.get(&s2.session_id).await.unwrap().exit_code, Some(3));
    let statuses: Vec<String> = a
        .events(&s2.session_id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.status)
        .collect();
    assert_eq!(statuses, ["starting", "running", "ended"]);
}

#[tokio::test]
async fn an_unreachable_database_names_the_url_without_its_password() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let err = MysqlStore::connect(&format!("mysql://arcade:hunter2@127.0.0.1:{port}/arcade"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("mysql://arcade:***@127.0.0.1:{port}/arcade")),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

/// A host is lost only a heartbeat timeout after the last evidence that it was alive: its
/// owner's beats say so while the owner holds it, and a replica that leaves (SIGTERM) says so
/// as it leaves, so its hosts are offline, not lost, while others take them over (issue 25).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_host_whose_owner_left_is_lost_only_a_timeout_after_it_was_last_seen() {
    use broker::store::{Fence, HostLoad};
    let Some(url) = tests::mariadb::database().await else {
        return;
    };
    let store = Store::Mysql(MysqlStore::connect(&url).await.unwrap());
    let h = HostId::new("host-a").unwrap();
    store.beat("b1", "127.0.0.1:1").await.unwrap();
    let epoch = store.own_host(&h, "b1", &facts(4)).await.unwrap();
    let fence = Fence {
        host: h.clone(),
        epoch,
    };
    assert!(store.host_ready(&fence).await.unwrap());
    let s = session(1, "g", "host-a");
    store
        .insert_after(
            &s,
            Actor::Portal,
            &launched(7),
            Actor::Agent,
            now(),
            Some(&fence),
        )
        .await
        .unwrap();
    let timeout = std::time::Duration::from_millis(600);
    // Longer ago than the timeout, the host was registered and its session started; the
    // owner's beat since is the evidence.
    // Not a synchronisation: the time the rule measures.
    tokio::time::sleep(timeout + std::time::Duration::from_millis(200)).await;
    store.beat("b1", "127.0.0.1:1").await.unwrap();
    store
        .write_loads(&[HostLoad {
            fence: fence.clone(),
            cpu_percent: 1.0,
            mem_used_bytes: 1,
        }])
        .await
        .unwrap();
    store.leave("b1").await.unwrap();
    assert_eq!(
        store.lost_hosts(timeout).await.unwrap(),
        Vec::<Fence>::new(),
        "a host whose owner just left is offline, not lost"
    );
    tokio::time::sleep(timeout + std::time::Duration::from_millis(200)).await;
    assert_eq!(
        store.lost_hosts(timeout).await.unwrap(),
        vec![fence],
        "nobody took it over within the timeout"
    );
}

/// What replicas share beyond sessions (issue 15), on MariaDB: a host's owner and epoch, the
/// fence that makes a stale owner's writes change nothing, claims that never exceed a host's
/// capacity, keys that bind once, and a lease one replica holds at a time.
async fn owners_fences_claims_and_leases(db: Db) {
    use broker::store::{Claimed, Fence};
    let a = MysqlStore::connect(db.url(0)).await.unwrap();
    let b = MysqlStore::connect(db.url(1)).await.unwrap();
    let h = HostId::new("host-a").unwrap();
    let facts = facts(2);
    let e1 = a.own_host(&h, "b1", &facts).await.unwrap();
    let old = Fence {
        host: h.clone(),
        epoch: e1,
    };
    let claim = |n: u32| {
        let mut s = session(n, "g", "host-a");
        s.created_at = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        s
    };
    assert_eq!(
        a.claim(&claim(1), None, Actor::Portal, None, None)
            .await
            .unwrap(),
        Claimed::Gone,
        "a host takes no session before its reconcile"
    );
    assert!(a.host_ready(&old).await.unwrap());
    let (s1, s2) = (claim(2), claim(3));
    for s in [&s1, &s2] {
        assert_eq!(
            a.claim(s, None, Actor::Portal, None, None).await.unwrap(),
            Claimed::New { epoch: e1 }
        );
    }
    assert_eq!(
        b.claim(&claim(4), None, Actor::Portal, None, None)
            .await
            .unwrap(),
        Claimed::Full
    );
    // The agent connects to another replica: a new epoch fences the old owner off.
    let e2 = b.own_host(&h, "b2", &facts).await.unwrap();
    assert!(e2 > e1);
    let stale = a
        .transition_fenced(
            &s1.session_id,
            &launched(7),
            Actor::Agent,
            now(),
            Some(&old),
        )
        .await;
    assert_eq!(stale, Err(StoreError::Fenced(h.clone())));
    let sb = Store::Mysql(b.clone());
    assert_eq!(
        sb.get(&s1.session_id).await.unwrap().status,
        SessionStatus::Starting,
        "the stale write changed nothing"
    );
    let new = Fence {
        host: h.clone(),
        epoch: e2,
    };
    let running = b
        .transition_fenced(
            &s1.session_id,
            &launched(7),
            Actor::Agent,
            now(),
            Some(&new),
        )
        .await
        .unwrap();
    assert_eq!(running.status, SessionStatus::Running);
    // An owner's record of a new session is fenced too: the old owner's insert with its
    // outcome, and its claim at its epoch, write nothing.
    let sa = Store::Mysql(a.clone());
    let late = claim(40);
    assert_eq!(
        sa.insert_after(
            &late,
            Actor::Portal,
            &launched(9),
            Actor::Agent,
            now(),
            Some(&old),
        )
        .await,
        Err(StoreError::Fenced(h.clone()))
    );
    assert_eq!(
        sa.get(&late.session_id).await,
        Err(StoreError::NotFound(late.session_id.clone()))
    );
    assert_eq!(
        a.claim(&claim(41), None, Actor::Portal, None, Some(e1))
            .await
            .unwrap(),
        Claimed::Gone,
        "a claim at a stale epoch"
    );
    let recorded = sb
        .insert_after(
            &claim(42),
            Actor::Portal,
            &SessionEvent::LaunchFailed,
            Actor::Agent,
            now(),
            Some(&new),
        )
        .await
        .unwrap();
    assert_eq!(recorded.status, SessionStatus::Failed, "the owner's insert");
    // Load is written by the owner of the newest epoch only.
    let load = |fence: &Fence, mem| broker::store::HostLoad {
        fence: fence.clone(),
        cpu_percent: 50.0,
        mem_used_bytes: mem,
    };
    a.write_loads(&[load(&old, 1)]).await.unwrap();
    b.write_loads(&[load(&new, 2)]).await.unwrap();
    a.write_loads(&[load(&old, 3)]).await.unwrap();
    let shared = a
        .shared_hosts(std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(shared[0].load, (50.0, 2));
    assert!(!a.disown_host(&old).await.unwrap(), "a stale disconnect");
    assert_eq!(a.owner(&h).await.unwrap().as_deref(), Some("b2"));
    assert!(b.disown_host(&new).await.unwrap());
    assert_eq!(a.owner(&h).await.unwrap(), None);

    // A key binds one claim.
    let e3 = a.own_host(&h, "b1", &facts).await.unwrap();
    a.host_ready(&Fence {
        host: h.clone(),
        epoch: e3,
    })
    .await
    .unwrap();
    sb.transition(
        &s2.session_id,
        &SessionEvent::LaunchFailed,
        Actor::Agent,
        now(),
    )
    .await
    .unwrap();
    let req = tests::start("g");
    let key = IdempotencyKey::new("k-1".into(), &req);
    assert!(matches!(
        a.claim(&claim(5), Some(&key), Actor::Portal, None, None)
            .await
            .unwrap(),
        Claimed::New { .. }
    ));
    // (A free slot, so the claim reaches the key.)
    for e in [SessionEvent::StopRequested, SessionEvent::Stopped] {
        sb.transition(&s1.session_id, &e, Actor::Api, now())
            .await
            .unwrap();
    }
    assert_eq!(
        b.claim(&claim(6), Some(&key), Actor::Portal, None, None)
            .await
            .unwrap(),
        Claimed::KeyTaken
    );

    // One holder at a time; another takes the lease once it has expired, at the next epoch.
    let ttl = std::time::Duration::from_millis(300);
    let first = a.lease("sweep", "b1", ttl).await.unwrap().expect("free");
    assert!(b.lease("sweep", "b2", ttl).await.unwrap().is_none());
    let renewed = a.lease("sweep", "b1", ttl).await.unwrap();
    assert_eq!(renewed.as_ref(), Some(&first), "renewed at the same epoch");
    tests::wait_until(
        "the lease expires",
        std::time::Duration::from_secs(10),
        || async { b.lease("sweep", "b2", ttl).await.unwrap().is_some() },
    )
    .await;
    // Renewed for long enough that a loaded machine cannot let it lapse before a asks.
    let long = std::time::Duration::from_secs(60);
    let taken = b
        .lease("sweep", "b2", long)
        .await
        .unwrap()
        .expect("renewed");
    assert_eq!(taken.epoch, first.epoch + 1);
    assert!(a.lease("sweep", "b1", ttl).await.unwrap().is_none());

    // A sweep's write under the old hold (a sweeper whose write was queued behind a stall)
    // changes nothing; under the new one it applies (migration 14).
    let left = claim(7);
    assert!(matches!(
        b.claim(&left, None, Actor::Portal, None, None)
            .await
            .unwrap(),
        Claimed::New { .. }
    ));
    let failed = |hold| {
        a.transition_leased(
            &left.session_id,
            &SessionEvent::LaunchTimedOut,
            Actor::Sweep,
            now(),
            None,
            hold,
        )
    };
    assert_eq!(
        failed(&first).await,
        Err(StoreError::LeaseLost("sweep".into()))
    );
    assert_eq!(
        sb.get(&left.session_id).await.unwrap().status,
        SessionStatus::Starting,
        "the stale sweep changed nothing"
    );
    assert_eq!(failed(&taken).await.unwrap().status, SessionStatus::Failed);
}

/// A pool's ready game holds its host's slot: claims see the host full, and the shared view
/// counts it (migration 8).
async fn ready_games_hold_their_slots(db: Db) {
    use broker::store::{Claimed, Fence};
    let a = MysqlStore::connect(db.url(0)).await.unwrap();
    let h = HostId::new("host-a").unwrap();
    let epoch = a.own_host(&h, "b1", &facts(2)).await.unwrap();
    assert!(a
        .host_ready(&Fence {
            host: h.clone(),
            epoch
        })
        .await
        .unwrap());
    let claim = |n: u32| {
        let mut s = session(n, "g", "host-a");
        s.created_at = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        s
    };
    let pooled = claim(1);
    assert_eq!(
        a.claim(&pooled, None, Actor::Portal, None, None)
            .await
            .unwrap(),
        Claimed::New { epoch }
    );
    let readied = SessionEvent::Readied {
        pid: 9,
        ip: "10.0.0.5".parse().unwrap(),
        port: 20002,
        ports: vec![20002],
    };
    let store = Store::Mysql(a.clone());
    store
        .transition(&pooled.session_id, &readied, Actor::Agent, now())
        .await
        .unwrap();
    assert_eq!(
        a.claim(&claim(2), None, Actor::Portal, None, None)
            .await
            .unwrap(),
        Claimed::New { epoch }
    );
    assert_eq!(
        a.claim(&claim(3), None, Actor::Portal, None, None)
            .await
            .unwrap(),
        Claimed::Full,
        "the ready game holds the second slot"
    );
    let shared = a
        .shared_hosts(std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let host = shared.iter().find(|s| s.record.host_id == h).unwrap();
    assert_eq!(host.sessions, 2);
}

/// With replicas, a user's quota is counted in the claim's own transaction: of concurrent
/// claims for one user through two stores, exactly as many as the quota are recorded, and a
/// pool's ready game is not claimed past it either.
async fn claims_count_each_users_quota(db: Db) {
    use broker::store::pools::{Claimant, ReadyClaim};
    use broker::store::{Claimed, Fence};
    let user = |u, max| Claimant {
        user: Some((u, Some(max))),
        ..Claimant::default()
    };
    let a = MysqlStore::connect(db.url(0)).await.unwrap();
    let b = MysqlStore::connect(db.url(1)).await.unwrap();
    let h = HostId::new("host-a").unwrap();
    let epoch = a.own_host(&h, "b1", &facts(20)).await.unwrap();
    assert!(a.host_ready(&Fence { host: h, epoch }).await.unwrap());
    let claims: Vec<_> = (0..8u32)
        .map(|n| {
            let store = if n % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let mut s = session(n, "g", "host-a");
                s.created_at = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
                s.user_id = Some("player-1".into());
                store
                    .claim(&s, None, Actor::Portal, Some(3), None)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut got = Vec::new();
    for c in claims {
        got.push(c.await.unwrap());
    }
    let new = got
        .iter()
        .filter(|c| matches!(c, Claimed::New { .. }))
        .count();
    let quota = got.iter().filter(|c| **c == Claimed::Quota).count();
    assert_eq!((new, quota), (3, 5), "{got:?}");
    let store = Store::Mysql(a.clone());
    assert_eq!(store.live_of_user("player-1").await.unwrap().len(), 3);
    // Another user is not counted.
    let mut other = session(20, "g", "host-a");
    other.created_at = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    other.user_id = Some("player-2".into());
    assert!(matches!(
        a.claim(&other, None, Actor::Portal, Some(3), None)
            .await
            .unwrap(),
        Claimed::New { .. }
    ));
    // A pool's ready game: not past the quota, and the user's once claimed.
    let pool = PoolId::new("lobby").unwrap();
    store.put_pool(&pool, &pool_spec(1), None).await.unwrap();
    let ready = ready_in_pool(&store, 30, "host-a", &pool).await;
    let at = OffsetDateTime::now_utc();
    assert_eq!(
        store
            .claim_ready(&pool, Actor::Portal, None, user("player-1", 3), at)
            .await
            .unwrap(),
        ReadyClaim::Quota
    );
    match store
        .claim_ready(&pool, Actor::Portal, None, user("player-2", 3), at)
        .await
        .unwrap()
    {
        ReadyClaim::Claimed(s) => assert_eq!(s.user_id.as_deref(), Some("player-2")),
        other => panic!("{other:?}"),
    }
    let claimed = store.get(&ready.session_id).await.unwrap();
    assert_eq!(claimed.user_id.as_deref(), Some("player-2"));
}
