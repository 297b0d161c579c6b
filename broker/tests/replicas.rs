//! Several brokers, one system, as operators run it: three real `arcade-broker` processes on
//! one throwaway MariaDB and one throwaway `nats-server`, four agents that know all three,
//! and a portal that sends each request to any replica. Replicas are killed (`kill -9`),
//! paused (`SIGSTOP`), and cut from NATS, and every answer is checked against what one broker
//! would have said.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use broker::session::Actor;
use broker::store::mysql::MysqlStore;
use broker::store::Claimed;
use nix::sys::signal::Signal;
use portal_client::{Client, ClientError, LogRange};
use protocol::api::{EndReason, ErrorCode, HostStatus, Session, SessionStatus, StartSession};
use protocol::{GameId, HostId, SessionId};
use tests::cluster::{all_sessions, no_orphan, violations, Cluster, HEARTBEAT_TIMEOUT, TURN, WAIT};
use tests::keyed_load::KeyedLoad;
use tests::{fresh_port_ranges, mariadb, processes_of, wait_until, AgentOptions, TestAgent};

fn no_capacity(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Api {
            status: 503,
            code: ErrorCode::NoCapacity,
            ..
        }
    )
}

/// Sessions not over, per host, as the store has them (through replica `via`).
async fn live_per_host(c: &Cluster, via: usize) -> HashMap<HostId, u32> {
    let hosts = c.client(via).hosts().await.unwrap().hosts;
    hosts.into_iter().map(|h| (h.host_id, h.sessions)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capacity_is_exact_and_any_replica_serves_any_call() {
    let Some(c) = Cluster::start().await else {
        return;
    };
    serves_as_one_system(c).await;
}

/// The same on a three-node Galera cluster, each replica on its own node: 100 concurrent
/// starts over the three against a capacity of 50 start exactly 50 (issue 30).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_galera_capacity_is_exact_and_any_replica_serves_any_call() {
    let Some(db) = tests::galera::database().await else {
        return;
    };
    let Some(c) = Cluster::start_on(db.urls.clone(), HEARTBEAT_TIMEOUT).await else {
        return;
    };
    let cluster = tests::galera::shared().unwrap();
    for i in 0..3 {
        let ready = c.client(i).ready().await.unwrap();
        let node = format!("127.0.0.1:{}", cluster.port(i));
        assert_eq!(
            ready.database.as_deref(),
            Some(node.as_str()),
            "replica {i}'s node"
        );
    }
    serves_as_one_system(c).await;
}

async fn serves_as_one_system(c: Cluster) {
    // Every replica lists the three, and each host with the replica its agent is connected to.
    for i in 0..3 {
        let brokers = c.client(i).brokers().await.unwrap().brokers;
        let ids: Vec<&str> = brokers.iter().map(|b| b.broker_id.as_str()).collect();
        assert_eq!(ids, ["b1", "b2", "b3"]);
        assert_eq!(brokers.iter().map(|b| b.hosts).sum::<u32>(), 4);
    }
    let owners = c.owners(0).await;
    assert_eq!(owners.len(), 4);
    assert_eq!(owners, c.owners(2).await, "replicas disagree on owners");
    // Each host's load, as its agent reports it to its owner, is seen through every replica.
    for i in 0..3 {
        let client = c.client(i);
        wait_until("every host's load through every replica", WAIT, || {
            let client = client.clone();
            async move {
                client
                    .hosts()
                    .await
                    .is_ok_and(|h| h.hosts.iter().all(|h| h.mem_used_bytes > 0))
            }
        })
        .await;
    }

    // Streams of events opened on two replicas, from the first event, live through it all.
    let mut streams = Vec::new();
    for i in [1, 2] {
        streams.push(c.client(i).events(&[], None, None, Some(0)).await.unwrap());
    }

    // 100 concurrent starts round-robin over the replicas against a total capacity of 50.
    let total: u32 = c.capacity.values().sum();
    assert_eq!(total, 50);
    let starts = (0..100).map(|i| {
        let client = c.client(i);
        async move { client.start_session(&tests::start("sleeper")).await }
    });
    let results = futures::future::join_all(starts).await;
    let mut started: Vec<Session> = Vec::new();
    for r in results {
        match r {
            Ok(s) => started.push(s),
            Err(e) => assert!(no_capacity(&e), "a start failed otherwise: {e}"),
        }
    }
    assert_eq!(started.len(), 50, "exactly the capacity succeeds");
    let ids: HashSet<&SessionId> = started.iter().map(|s| &s.session_id).collect();
    assert_eq!(ids.len(), 50, "all sessions distinct");
    let mut per_host: HashMap<&HostId, u32> = HashMap::new();
    for s in &started {
        assert_eq!(s.status, SessionStatus::Running);
        *per_host.entry(&s.host_id).or_default() += 1;
    }
    for (host, n) in &per_host {
        assert!(*n <= c.capacity[*host], "{host} is over capacity: {n}");
    }
    assert_eq!(live_per_host(&c, 1).await, { c.capacity.clone() });
    let pids: HashSet<u32> = started.iter().filter_map(|s| s.pid).collect();
    assert_eq!(pids.len(), 50);

    // Any replica reads any session; any replica ends any session, whoever holds its host.
    for (i, s) in started.iter().enumerate() {
        let got = c.client(i + 1).get_session(&s.session_id).await.unwrap();
        assert_eq!(got.pid, s.pid);
    }
    let ends = started.iter().enumerate().map(|(i, s)| {
        let client = c.client(i + 2);
        let id = s.session_id.clone();
        async move { client.end_session(&id).await }
    });
    for ended in futures::future::join_all(ends).await {
        assert_eq!(ended.unwrap().status, SessionStatus::Ended);
    }
    let all: Vec<SessionId> = started.iter().map(|s| s.session_id.clone()).collect();
    assert!(processes_of(&all).is_empty(), "an ended game still runs");

    // Each stream told every change through whichever replica made it, once, in the same
    // order, numbered without a gap.
    let mut told = Vec::new();
    for stream in &mut streams {
        let mut ended = HashSet::new();
        let mut events = Vec::new();
        while ended.len() < 50 {
            let e = tokio::time::timeout(WAIT, stream.next())
                .await
                .expect("events from every replica")
                .unwrap()
                .unwrap();
            if e.kind == protocol::api::EventType::SessionEnded {
                ended.insert(e.session.as_ref().unwrap().session_id.clone());
            }
            events.push((e.id, e.kind, e.session.map(|s| (s.session_id, s.status))));
        }
        let ids: Vec<u64> = events.iter().map(|e| e.0).collect();
        assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
        told.push(events);
    }
    assert_eq!(told[0], told[1], "two replicas told different stories");

    // A start retried with the same Idempotency-Key through another replica answers the same
    // session and starts nothing.
    let first = c
        .client(0)
        .start_session_idempotent(&tests::start("sleeper"), "order-42")
        .await
        .unwrap();
    for i in 1..3 {
        let again = c
            .client(i)
            .start_session_idempotent(&tests::start("sleeper"), "order-42")
            .await
            .unwrap();
        assert_eq!(again.session_id, first.session_id);
        assert_eq!(again.pid, first.pid);
    }
    let running = c
        .client(1)
        .list_sessions(&protocol::api::SessionQuery {
            status: Some(SessionStatus::Running),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(running.sessions.len(), 1, "a retry started nothing");

    // A game's output reads the same through every replica, whichever holds its host: the
    // others fetch it from the owner page by page (`chatty` prints about 210 KB).
    let chatty = c
        .client(0)
        .start_session(&tests::start("chatty"))
        .await
        .unwrap();
    let id = chatty.session_id.clone();
    let mut logs = Vec::new();
    for i in 0..3 {
        let client = c.client(i);
        wait_until(&format!("the whole log through replica {i}"), WAIT, || {
            let (client, id) = (client.clone(), id.clone());
            async move {
                let log = client.session_log(&id, LogRange::Tail(1)).await;
                log.is_ok_and(|l| l.text == b"ready\n")
            }
        })
        .await;
        logs.push(
            client
                .session_log(&id, LogRange::Tail(100_000))
                .await
                .unwrap(),
        );
    }
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[1], logs[2]);
    assert_eq!(logs[0].text.split(|b| *b == b'\n').count(), 20_002);
    c.client(2).end_session(&id).await.unwrap();

    // Draining through one replica is what every replica's placement sees.
    let host = first.host_id.clone();
    c.client(2).drain_host(&host).await.unwrap();
    for i in 0..6 {
        let s = c
            .client(i)
            .start_session(&tests::start("sleeper"))
            .await
            .unwrap();
        assert_ne!(s.host_id, host, "a drained host took a session");
    }
}

/// The replica holding the most hosts.
async fn busiest(c: &Cluster) -> usize {
    let owners = c.owners(0).await;
    let count = |id: &str| owners.values().filter(|o| o.as_str() == id).count();
    (0..3).max_by_key(|i| count(&c.replicas[*i].id)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_under_load_loses_no_session_and_leaves_no_orphan() {
    let Some(mut c) = Cluster::start().await else {
        return;
    };
    let victim = busiest(&c).await;
    let victim_id = c.replicas[victim].id.clone();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let before: Vec<Session> = {
        let mut v = Vec::new();
        for i in 0..6 {
            v.push(
                c.client(i)
                    .start_session(&tests::start("sleeper"))
                    .await
                    .unwrap(),
            );
        }
        v
    };
    // A start loop over every replica; the busiest is killed in the middle of it.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Session>::new()));
    let clients: Vec<Client> = (0..3).map(|i| c.client(i)).collect();
    let loop_acked = std::sync::Arc::clone(&acked);
    let starts = tokio::spawn(async move {
        for i in 0..30 {
            if let Ok(s) = clients[i % 3].start_session(&tests::start("sleeper")).await {
                loop_acked.lock().unwrap().push(s);
            }
        }
    });
    wait_until("a few starts acknowledged", WAIT, || async {
        acked.lock().unwrap().len() >= 5
    })
    .await;
    c.replicas[victim].kill9();
    starts.await.unwrap();

    // Every agent re-homes on a survivor, within the heartbeat timeout.
    let t0 = std::time::Instant::now();
    c.wait_online(4).await;
    let rehomed = t0.elapsed();
    assert!(
        rehomed < Duration::from_secs(6),
        "agents took {rehomed:?} to re-home"
    );
    let owners = c.owners(survivors[0]).await;
    assert_eq!(owners.len(), 4);
    assert!(owners.values().all(|o| *o != victim_id), "{owners:?}");

    // Every acknowledged session is still there, with the same game process.
    let acked: Vec<Session> = acked.lock().unwrap().clone();
    for s in before.iter().chain(&acked) {
        let now = c
            .client(survivors[1])
            .get_session(&s.session_id)
            .await
            .unwrap();
        assert_eq!(now.status, SessionStatus::Running, "{}", s.session_id);
        assert_eq!(now.pid, s.pid);
    }
    no_orphan(&c, survivors[0]).await;
    let lost = all_sessions(&c, survivors[0])
        .await
        .into_iter()
        .filter(|s| s.status == SessionStatus::Lost)
        .count();
    assert_eq!(
        lost, 0,
        "a host was declared lost while its agent was connected"
    );

    // Each can be ended through any survivor.
    for (i, s) in before.iter().chain(&acked).enumerate() {
        let ended = c
            .client(survivors[i % 2])
            .end_session(&s.session_id)
            .await
            .unwrap();
        assert_eq!(ended.status, SessionStatus::Ended);
    }
    no_orphan(&c, survivors[1]).await;
}

/// A start recorded by a replica that died before any agent heard of it is failed by
/// whichever replica sweeps, at the game's own launch deadline, whoever holds its host.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_a_dead_replica_left_fails_at_its_deadline_whoever_sweeps() {
    let Some(c) = Cluster::start().await else {
        return;
    };
    // What a replica killed between its claim and its call leaves: a `starting` session in
    // the store, on each host (one replica sweeps; the others hold most of these hosts).
    let store = MysqlStore::connect(&c.db).await.unwrap();
    let mut left = Vec::new();
    for (i, host) in c.capacity.keys().enumerate() {
        let s = broker::session::new_session(
            SessionId::new(format!("left-by-a-dead-replica-{i}")).unwrap(),
            GameId::new("sleeper").unwrap(),
            "default".into(),
            None,
            host.clone(),
            time::OffsetDateTime::now_utc(),
        );
        let claimed = store
            .claim(&s, None, Actor::Portal, None, None)
            .await
            .unwrap();
        assert!(matches!(claimed, Claimed::New { .. }), "{claimed:?}");
        left.push(s.session_id);
    }
    // `--launch-timeout 5`, no readiness check, and the sweep's grace: well within WAIT.
    let client = c.client(0);
    wait_until("every start left behind has failed", WAIT, || async {
        for id in &left {
            match client.get_session(id).await {
                Ok(s) if s.status == SessionStatus::Failed => {
                    assert_eq!(s.end_reason, Some(EndReason::LaunchTimeout));
                }
                _ => return false,
            }
        }
        true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_replica_whose_agents_moved_on_changes_nothing_when_it_resumes() {
    let Some(c) = Cluster::start().await else {
        return;
    };
    let paused = busiest(&c).await;
    let paused_id = c.replicas[paused].id.clone();
    let others: Vec<usize> = (0..3).filter(|i| *i != paused).collect();
    let mut sessions = Vec::new();
    for i in 0..8 {
        sessions.push(
            c.client(others[i % 2])
                .start_session(&tests::start("sleeper"))
                .await
                .unwrap(),
        );
    }
    c.replicas[paused].signal(Signal::SIGSTOP);
    // Its agents find it silent and move on; the others take them at a newer epoch.
    for i in &others {
        let client = c.client(*i);
        let paused_id = paused_id.clone();
        wait_until("the paused replica's agents moved on", WAIT, || {
            let client = client.clone();
            let paused_id = paused_id.clone();
            async move {
                client.hosts().await.is_ok_and(|h| {
                    h.hosts.iter().all(|h| {
                        h.status == HostStatus::Online
                            && h.broker_id.as_ref().is_some_and(|b| *b != paused_id)
                    })
                })
            }
        })
        .await;
    }
    let owners = c.owners(others[0]).await;
    c.replicas[paused].signal(Signal::SIGCONT);
    // Once it has run again (it answers), what it had queued about its old hosts is applied
    // against a newer epoch, and changes nothing.
    let client = c.client(paused);
    wait_until("the resumed replica answers", WAIT, || {
        let client = client.clone();
        async move { client.health().await.is_ok() }
    })
    .await;
    for s in &sessions {
        let now = c.client(paused).get_session(&s.session_id).await.unwrap();
        assert_eq!(now.status, SessionStatus::Running);
        assert_eq!(now.pid, s.pid);
    }
    assert_eq!(c.owners(others[1]).await, owners, "owners changed back");
    // It serves as any replica: an end through it reaches the host's new owner.
    let ended = c
        .client(paused)
        .end_session(&sessions[0].session_id)
        .await
        .unwrap();
    assert_eq!(ended.status, SessionStatus::Ended);
    no_orphan(&c, others[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_nats_a_replica_answers_503_for_others_hosts_and_serves_its_own() {
    let Some(mut c) = Cluster::start().await else {
        return;
    };
    let mut sessions = Vec::new();
    for i in 0..12 {
        sessions.push(
            c.client(i)
                .start_session(&tests::start("sleeper"))
                .await
                .unwrap(),
        );
    }
    let owners = c.owners(0).await;
    let b1 = c.replicas[0].id.clone();
    let (mine, theirs): (Vec<&Session>, Vec<&Session>) =
        sessions.iter().partition(|s| owners[&s.host_id] == b1);
    assert!(!mine.is_empty() && !theirs.is_empty(), "{owners:?}");
    c.nats.kill();
    let client = c.client(0);
    wait_until("b1 is not ready without NATS", WAIT, || {
        let url = format!("{}/readyz", client.base_url());
        async move {
            reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().as_u16() == 503)
        }
    })
    .await;
    // A command for a host held by another replica: 503 host_unavailable with Retry-After,
    // at once rather than at a deadline.
    let t0 = std::time::Instant::now();
    match c.client(0).end_session(&theirs[0].session_id).await {
        Err(ClientError::Api {
            status: 503,
            code: ErrorCode::HostUnavailable,
            retry_after: Some(_),
            ..
        }) => {}
        other => panic!("expected 503 host_unavailable, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // Its own hosts keep working.
    let ended = c.client(0).end_session(&mine[0].session_id).await.unwrap();
    assert_eq!(ended.status, SessionStatus::Ended);
    // NATS back: the same call goes through.
    c.nats.restart();
    for i in 0..3 {
        let client = c.client(i);
        wait_until("ready again with NATS", WAIT, || {
            let url = format!("{}/readyz", client.base_url());
            async move {
                reqwest::get(&url)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
    }
    let ended = c
        .client(0)
        .end_session(&theirs[0].session_id)
        .await
        .unwrap();
    assert_eq!(ended.status, SessionStatus::Ended);
    no_orphan(&c, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_stopped_with_sigterm_hands_its_agents_over_without_losing_a_session() {
    let Some(mut c) = Cluster::start().await else {
        return;
    };
    let mut sessions = Vec::new();
    for i in 0..10 {
        sessions.push(
            c.client(i)
                .start_session(&tests::start("sleeper"))
                .await
                .unwrap(),
        );
    }
    let leaving = busiest(&c).await;
    let leaving_id = c.replicas[leaving].id.clone();
    let stay: Vec<usize> = (0..3).filter(|i| *i != leaving).collect();
    c.replicas[leaving].terminate();
    c.wait_online(4).await;
    let owners = c.owners(stay[0]).await;
    assert!(owners.values().all(|o| *o != leaving_id), "{owners:?}");
    let brokers = c.client(stay[1]).brokers().await.unwrap().brokers;
    assert!(
        brokers.iter().all(|b| b.broker_id != leaving_id),
        "a replica that left is still listed"
    );
    for (i, s) in sessions.iter().enumerate() {
        let now = c
            .client(stay[i % 2])
            .get_session(&s.session_id)
            .await
            .unwrap();
        assert_eq!((now.status, now.pid), (SessionStatus::Running, s.pid));
        let ended = c
            .client(stay[(i + 1) % 2])
            .end_session(&s.session_id)
            .await
            .unwrap();
        assert_eq!(ended.status, SessionStatus::Ended);
    }
    no_orphan(&c, stay[0]).await;
}

/// A warm pool served through every replica: one keeper (the `pools` lease holder) fills it
/// across the hosts of all replicas, and starts sent at once to all three replicas take each
/// ready game once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_serves_starts_through_every_replica_each_ready_game_once() {
    use protocol::api::PoolSpec;
    use protocol::PoolId;
    let Some(c) = Cluster::start().await else {
        return;
    };
    let id = PoolId::new("lobby").unwrap();
    let spec = PoolSpec {
        game_id: GameId::new("sleeper").unwrap(),
        mode: None,
        config: None,
        settings: Default::default(),
        size: 8,
        max_age_s: None,
    };
    c.client(0).put_pool(&id, &spec, None).await.unwrap();
    let full = |via: usize| {
        let (client, id) = (c.client(via), id.clone());
        async move {
            client
                .pool(&id)
                .await
                .is_ok_and(|p| p.ready == 8 && p.starting == 0)
        }
    };
    wait_until("the pool is full, as replica b3 reads it", WAIT, || full(2)).await;
    let q = protocol::api::SessionQuery {
        status: Some(SessionStatus::Ready),
        ..protocol::api::SessionQuery::default()
    };
    let ready: Vec<Session> = c.client(1).list_sessions(&q).await.unwrap().sessions;
    assert_eq!(ready.len(), 8);
    let hosts: HashSet<&HostId> = ready.iter().map(|s| &s.host_id).collect();
    assert!(hosts.len() >= 3, "spread over the hosts: {hosts:?}");
    let starts: Vec<_> = (0..24)
        .map(|i| {
            let client = c.client(i);
            tokio::spawn(async move { client.start_session(&tests::start("sleeper")).await })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut hits = 0u64;
    for s in starts {
        let s = s.await.unwrap().unwrap();
        assert_eq!(s.status, SessionStatus::Running);
        assert!(ids.insert(s.session_id.clone()), "answered twice");
        hits += u64::from(s.pool_id.is_some());
    }
    assert!(ready.iter().all(|s| ids.contains(&s.session_id)));
    assert!(hits >= 8, "{hits} hits");
    let p = c.client(1).pool(&id).await.unwrap();
    assert_eq!((p.claims, p.misses), (hits, 24 - hits));
    // The keeper refills it, whichever replica holds its lease.
    wait_until("the pool is full again", WAIT, || full(0)).await;
    c.client(2).delete_pool(&id, None).await.unwrap();
    for s in &ids {
        c.client(0).end_session(s).await.unwrap();
    }
    no_orphan(&c, 1).await;
}

/// `--max-sessions-per-user 3` on every replica: 12 starts of one user sent at once through
/// all three replicas leave the user with exactly 3 sessions; the others are 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_users_quota_holds_across_replicas() {
    let Some(c) = Cluster::start().await else {
        return;
    };
    let of_user = StartSession {
        user_id: Some("player-1".into()),
        ..tests::start("sleeper")
    };
    let starts: Vec<_> = (0..12)
        .map(|i| {
            let (client, req) = (c.client(i), of_user.clone());
            tokio::spawn(async move { client.start_session(&req).await })
        })
        .collect();
    let (mut running, mut refused) = (Vec::new(), 0);
    for s in starts {
        match s.await.unwrap() {
            Ok(s) => running.push(s),
            Err(ClientError::Api {
                status: 429,
                code: ErrorCode::QuotaExceeded,
                ..
            }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((running.len(), refused), (3, 9));
    for s in &running {
        c.client(2).end_session(&s.session_id).await.unwrap();
    }
    no_orphan(&c, 0).await;
}

/// A host whose agent is gone for good is still lost among replicas, a heartbeat timeout after
/// it went, whichever replica sweeps: judging host loss only once the store has answered
/// steadily for a whole timeout delays nothing while the store is steady. (Its game is ended
/// by the test's reaper: a lost host's games are its agent's to stop when it comes back.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_whose_agent_is_gone_loses_its_sessions_among_replicas() {
    let Some(c) = Cluster::start().await else {
        return;
    };
    // One more host, the only one offering `solo`, held by replica 1; its agent leaves its
    // games running when it stops, as after a host's crash.
    let mut opts = AgentOptions::host("gone-1");
    opts.catalog = Some(
        agent::catalog::Catalog::from_entries([(
            "solo".to_owned(),
            agent::catalog::GameEntry {
                command: "/bin/sleep".into(),
                args: vec!["3600".into()],
                ..Default::default()
            },
        )])
        .unwrap(),
    );
    opts.stop_games_on_exit = false;
    opts.port_range = Some(fresh_port_ranges(1));
    let gone = TestAgent::start(c.replicas[1].agent_addr(), opts).await;
    c.wait_online(5).await;
    let s = c
        .client(0)
        .start_session(&tests::start("solo"))
        .await
        .unwrap();
    assert_eq!(s.host_id.as_str(), "gone-1");
    let t0 = std::time::Instant::now();
    gone.stop().await;
    let timeout = Duration::from_secs(HEARTBEAT_TIMEOUT.parse().unwrap());
    wait_until("the gone host's session is lost", timeout * 4, || {
        let (client, id) = (c.client(2), s.session_id.clone());
        async move {
            client
                .get_session(&id)
                .await
                .is_ok_and(|s| s.status == SessionStatus::Lost)
        }
    })
    .await;
    assert!(
        t0.elapsed() >= timeout,
        "lost before the heartbeat timeout: {:?}",
        t0.elapsed()
    );
}

/// A database stall longer than the heartbeat timeout looks, to the store, like every
/// replica's death (their beats stalled too); no host whose agent stayed connected is declared
/// lost for it, and every session runs on after it (issue 25).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_stall_longer_than_the_heartbeat_timeout_loses_no_host() {
    let Some(c) = Cluster::start().await else {
        return;
    };
    let mut sessions = Vec::new();
    for i in 0..8 {
        sessions.push(
            c.client(i)
                .start_session(&tests::start("sleeper"))
                .await
                .unwrap(),
        );
    }
    let db = mariadb::shared().expect("the server the cluster uses");
    let timeout = Duration::from_secs(HEARTBEAT_TIMEOUT.parse().unwrap());
    let stalled = mariadb::Paused::new(db);
    // Not a synchronisation: the stall's length, then the time in which a sweep that took the
    // stall for the replicas' death would have declared their hosts lost.
    tokio::time::sleep(timeout + Duration::from_secs(2)).await;
    drop(stalled);
    tokio::time::sleep(timeout + Duration::from_secs(4)).await;
    for (i, s) in sessions.iter().enumerate() {
        let now = c.client(i).get_session(&s.session_id).await.unwrap();
        assert_eq!(
            (now.status, now.pid),
            (SessionStatus::Running, s.pid),
            "{}",
            s.session_id
        );
    }
    c.wait_online(4).await;
    no_orphan(&c, 0).await;
}

/// A write sent as the database stalls longer than a store call's deadline is not answered
/// "unavailable" while it lands later: it is tried again until the store answers, and the
/// answer is what it became, written once (issue 25: a start answered 503 though its record
/// committed after).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_sent_into_a_database_stall_answers_what_it_became() {
    use broker::session::SessionEvent;
    use broker::store::{IdempotencyKey, Store};
    let _turn = TURN.lock().await;
    let Some(url) = mariadb::database().await else {
        return;
    };
    let db = mariadb::shared().expect("the server the database is on");
    let store = Store::Mysql(MysqlStore::connect(&url).await.unwrap());
    let session = |n: u32| {
        broker::session::new_session(
            SessionId::new(format!("stalled-{n}")).unwrap(),
            GameId::new("g").unwrap(),
            "default".into(),
            None,
            HostId::new("h").unwrap(),
            time::OffsetDateTime::now_utc(),
        )
    };
    let launched = SessionEvent::Launched {
        pid: 7,
        ip: [127, 0, 0, 1].into(),
        port: 5000,
        ports: vec![5000],
    };
    let stall = broker::store::mysql::CALL_TIMEOUT + Duration::from_secs(2);
    let store = std::sync::Arc::new(store);

    // A new session with its launch (one broker's start), a keyed `starting` record, and a
    // change, each sent into a stall that outlasts a call's deadline.
    let (first, keyed) = (session(1), session(2));
    let key = IdempotencyKey::new("stalled-key".into(), &tests::start("g"));
    let paused = mariadb::Paused::new(db);
    let writes = {
        let (store, first, keyed, key, launched) = (
            std::sync::Arc::clone(&store),
            first.clone(),
            keyed.clone(),
            key.clone(),
            launched.clone(),
        );
        tokio::spawn(async move {
            let now = time::OffsetDateTime::now_utc();
            let a = store
                .insert_after(&first, Actor::Portal, &launched, Actor::Agent, now, None)
                .await;
            let b = store.insert(&keyed, Some(&key), Actor::Portal, None).await;
            (a, b)
        })
    };
    // Not a synchronisation: the stall's length.
    tokio::time::sleep(stall).await;
    drop(paused);
    let (a, b) = writes.await.unwrap();
    assert_eq!(a.unwrap().status, SessionStatus::Running);
    assert_eq!(b.unwrap(), broker::store::Inserted::New);
    assert_eq!(
        store.get(&first.session_id).await.unwrap().pid,
        Some(7),
        "recorded with its launch"
    );
    assert_eq!(store.events(&first.session_id).await.unwrap().len(), 2);
    assert_eq!(
        store.find_key(&key).await.unwrap(),
        Some(broker::store::KeyMatch::Same(keyed.session_id.clone())),
        "the key is bound to the session recorded"
    );

    // A change sent into a stall.
    let paused = mariadb::Paused::new(db);
    let change = {
        let store = std::sync::Arc::clone(&store);
        let id = keyed.session_id.clone();
        tokio::spawn(async move {
            let now = time::OffsetDateTime::now_utc();
            store.transition(&id, &launched, Actor::Agent, now).await
        })
    };
    tokio::time::sleep(stall).await;
    drop(paused);
    assert_eq!(
        change.await.unwrap().unwrap().status,
        SessionStatus::Running
    );
    assert_eq!(store.events(&keyed.session_id).await.unwrap().len(), 2);
}

/// Waits until the load has done `more` pairs beyond what it had done.
async fn pairs_done(load: &KeyedLoad, more: u64) {
    let want = load.pairs() + more;
    wait_until(&format!("{want} pairs done"), WAIT * 2, || async {
        load.pairs() >= want
    })
    .await;
}

/// Issue 25's load (8 clients, start+end pairs under an `Idempotency-Key`, each 503 retried
/// on the next replica) through a rolling restart (SIGTERM each replica in turn, start it
/// again, wait for `/readyz`) and a `kill -9`: every start succeeds, once per key, nothing is
/// lost, every end ends, no game is left without a session. (`arcade-bench faults` runs it
/// ten times in a row and measures the waits.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_keyed_load_loses_nothing_and_runs_one_game_per_key() {
    let Some(mut c) = Cluster::start().await else {
        return;
    };
    let load = KeyedLoad::start((0..3).map(|i| c.client(i)).collect(), 8, "sleeper");
    pairs_done(&load, 10).await;
    let faults = c.rolling_restart().await;
    pairs_done(&load, 10).await;
    let tally = load.finish().await;
    let found = violations(&c, 0, &tally).await;
    assert!(found.is_empty(), "{found:#?}");
    assert!(tally.pairs >= 20, "{} pairs", tally.pairs);
    for (from, to) in faults {
        eprintln!(
            "longest start wait in a fault: {:?}",
            tally.longest_wait(from, to)
        );
    }
}

/// The same load while MariaDB is stopped (`SIGSTOP`) for longer than the replicas'
/// heartbeat timeout, with one replica killed (`kill -9`) in the middle of the stall: no host
/// whose agent stayed connected is lost, every start under a key answers its session's true
/// state, and starts succeed again once the database answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_stall_with_a_replica_killed_in_it_loses_nothing_under_keyed_load() {
    let Some(mut c) = Cluster::start_with("4").await else {
        return;
    };
    let load = KeyedLoad::start((0..3).map(|i| c.client(i)).collect(), 8, "sleeper");
    pairs_done(&load, 10).await;
    let (from, to) = c.database_stall(Duration::from_secs(6), true).await;
    pairs_done(&load, 10).await;
    let tally = load.finish().await;
    c.wait_online(4).await;
    let found = violations(&c, 1, &tally).await;
    assert!(found.is_empty(), "{found:#?}");
    eprintln!(
        "longest start wait in the stall: {:?}; first success after it: {:?}",
        tally.longest_wait(from, to),
        tally.first_success_after(to)
    );
}
