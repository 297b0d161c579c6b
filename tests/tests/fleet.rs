//! A fleet placement understands (API.md, "Fleet"), through real agents and games: labels
//! that restrict and order hosts, GPUs given to one session at a time (named to the game) and
//! kept across restarts, games' weights, `pack` against `spread`, the host events an
//! autoscaler needs, and usage summed from the sessions' own times.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use agent::catalog::{Catalog, GameEntry};
use portal_client::{Client, ClientError};
use protocol::api::{ErrorCode, EventType, HostStatus, Session, SessionStatus, StartSession};
use protocol::labels::Labels;
use protocol::HostId;
use tests::{wait_until, AgentOptions, BrokerOptions, TestAgent, TestBroker};

const WAIT: Duration = Duration::from_secs(30);

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The fleet's games: `plain`; `heavy`, which takes 3 slots; `gpu`, one GPU a session, which
/// writes what it was given into `gpu_dir`; `eu-only`, for hosts labelled `region=eu`.
fn catalog(gpu_dir: &Path) -> Catalog {
    let game = tests::test_game().display().to_string();
    let entry = |args: &[&str]| GameEntry {
        command: game.clone(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        ..GameEntry::default()
    };
    let dir = gpu_dir.display().to_string();
    Catalog::from_entries([
        ("plain".to_owned(), entry(&["--listen"])),
        ("heavy".to_owned(), {
            let mut e = entry(&["--listen"]);
            e.slots = Some(3);
            e
        }),
        ("gpu".to_owned(), {
            let mut e = entry(&["--listen", "--gpu-arg", "{gpu}", "--gpu-env-dir", &dir]);
            e.gpus = Some(1);
            e
        }),
        ("eu-only".to_owned(), {
            let mut e = entry(&["--listen"]);
            e.labels = labels(&[("region", "eu")]);
            e
        }),
    ])
    .unwrap()
}

/// An agent of the fleet.
fn host(id: &str, gpu_dir: &Path, max: u32, tags: &[(&str, &str)], gpus: &[u32]) -> AgentOptions {
    let mut o = AgentOptions::host(id);
    o.catalog = Some(catalog(gpu_dir));
    o.max_sessions = max;
    o.port_range = Some(tests::fresh_port_ranges(2));
    o.stop_grace = Duration::from_millis(500);
    o.labels = labels(tags);
    o.gpus = gpus.to_vec();
    o
}

fn start(game: &str) -> StartSession {
    tests::start(game)
}

fn with(game: &str, need: &[(&str, &str)], prefer: &[(&str, &str)]) -> StartSession {
    let mut s = start(game);
    s.labels = labels(need);
    s.prefer = labels(prefer);
    s
}

async fn online(client: &Client, n: usize) {
    tests::wait_hosts_online(client, n).await;
}

/// What a GPU game was given, as it saw it: `(CUDA_VISIBLE_DEVICES, NVIDIA_VISIBLE_DEVICES,
/// {gpu})`.
async fn gpu_env(dir: &Path, s: &Session) -> (String, String, String) {
    let file = dir.join(format!("{}.gpu", s.session_id));
    let f = file.clone();
    wait_until("the game wrote what it was given", WAIT, || {
        let f = f.clone();
        // Whole: the game writes it in one call, but not atomically.
        async move { std::fs::read_to_string(&f).is_ok_and(|t| t.lines().count() == 3) }
    })
    .await;
    let text = std::fs::read_to_string(&file).unwrap();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_default()
            .to_owned()
    };
    (
        get("CUDA_VISIBLE_DEVICES"),
        get("NVIDIA_VISIBLE_DEVICES"),
        get("ARG"),
    )
}

fn no_capacity(r: Result<Session, ClientError>, what: &str) {
    match r {
        Err(ClientError::Api {
            status: 503,
            code: ErrorCode::NoCapacity,
            retry_after: Some(_),
            ..
        }) => {}
        other => panic!("{what}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_restrict_hosts_and_preferences_order_them() {
    let broker = TestBroker::start().await;
    let client = Client::new(&broker.url, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let eu = TestAgent::start(
        broker.agent_addr,
        host(
            "eu-1",
            dir.path(),
            5,
            &[("region", "eu"), ("tier", "gold")],
            &[],
        ),
    )
    .await;
    let us = TestAgent::start(
        broker.agent_addr,
        host("us-1", dir.path(), 4, &[("region", "us")], &[]),
    )
    .await;
    online(&client, 2).await;

    // Hosts show their labels, and can be listed by them.
    let listed = client.hosts().await.unwrap().hosts;
    let eu_host = listed
        .iter()
        .find(|h| h.host_id.as_str() == "eu-1")
        .unwrap();
    assert_eq!(
        eu_host.labels,
        labels(&[("region", "eu"), ("tier", "gold")])
    );
    let only_us = client
        .hosts_labelled(&labels(&[("region", "us")]))
        .await
        .unwrap()
        .hosts;
    assert_eq!(
        only_us
            .iter()
            .map(|h| h.host_id.as_str())
            .collect::<Vec<_>>(),
        ["us-1"]
    );

    // A required label: only hosts with it, however loaded (eu-1 gets one first).
    let first = client
        .start_session(&with("plain", &[("region", "eu")], &[]))
        .await
        .unwrap();
    assert_eq!(first.host_id.as_str(), "eu-1");
    assert_eq!(first.labels, labels(&[("region", "eu"), ("tier", "gold")]));
    let again = client
        .start_session(&with("plain", &[("region", "eu")], &[]))
        .await
        .unwrap();
    assert_eq!(
        again.host_id.as_str(),
        "eu-1",
        "the less loaded us-1 lacks the label"
    );

    // A preference wins over load among the hosts that fit; without one, load decides.
    let preferred = client
        .start_session(&with("plain", &[], &[("tier", "gold")]))
        .await
        .unwrap();
    assert_eq!(preferred.host_id.as_str(), "eu-1");
    let spread = client.start_session(&start("plain")).await.unwrap();
    assert_eq!(spread.host_id.as_str(), "us-1");

    // A label no host has, now or ever: 503 with Retry-After, never 404.
    no_capacity(
        client
            .start_session(&with("plain", &[("region", "mars")], &[]))
            .await,
        "a label no host has",
    );
    // A game whose catalog requires a label is offered only where it fits.
    for _ in 0..2 {
        let s = client.start_session(&start("eu-only")).await.unwrap();
        assert_eq!(s.host_id.as_str(), "eu-1");
    }
    // Labels a start may not carry: 400.
    match client
        .start_session(&with("plain", &[("region", "eu west")], &[]))
        .await
    {
        Err(ClientError::Api { status: 400, .. }) => {}
        other => panic!("a label with a space: {other:?}"),
    }
    // eu-1 is full (5 of 5): a start that needs it waits for room.
    no_capacity(
        client
            .start_session(&with("plain", &[("region", "eu")], &[]))
            .await,
        "the only host with the label is full",
    );
    tests::wait_sessions_settled(&client).await;
    eu.stop().await;
    us.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_gpu_goes_to_one_session_and_is_named_to_its_game() {
    let broker = TestBroker::start().await;
    let client = Client::new(&broker.url, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let two = TestAgent::start(
        broker.agent_addr,
        host("gpu-2", dir.path(), 8, &[], &[0, 1]),
    )
    .await;
    let one = TestAgent::start(broker.agent_addr, host("gpu-1", dir.path(), 8, &[], &[7])).await;
    online(&client, 2).await;

    let mut given = BTreeSet::new();
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let s = client.start_session(&start("gpu")).await.unwrap();
        assert_eq!(s.gpus.len(), 1, "{s:?}");
        let gpu = s.gpus[0];
        assert!(
            given.insert((s.host_id.to_string(), gpu)),
            "GPU {gpu} of {} twice",
            s.host_id
        );
        let (cuda, nvidia, arg) = gpu_env(dir.path(), &s).await;
        assert_eq!(
            (cuda.as_str(), nvidia.as_str(), arg.as_str()),
            (&*gpu.to_string(), &*gpu.to_string(), &*gpu.to_string())
        );
        sessions.push(s);
    }
    let want: BTreeSet<(String, u32)> = [("gpu-1", 7), ("gpu-2", 0), ("gpu-2", 1)]
        .map(|(h, g)| (h.to_owned(), g))
        .into();
    assert_eq!(given, want);
    let hosts = client.hosts().await.unwrap().hosts;
    for h in &hosts {
        assert_eq!(h.gpus_used as usize, h.gpus.len(), "{h:?}");
        assert!(h.slots_used < h.max_sessions, "slots are free: {h:?}");
    }

    // Every GPU is held: 503 although slots are free; a game without GPUs still starts.
    no_capacity(client.start_session(&start("gpu")).await, "no free GPU");
    let plain = client.start_session(&start("plain")).await.unwrap();
    assert!(plain.gpus.is_empty());

    // An ended session's GPU is given again.
    let ended = client.end_session(&sessions[1].session_id).await.unwrap();
    assert_eq!(ended.status, SessionStatus::Ended);
    let reused = client.start_session(&start("gpu")).await.unwrap();
    assert_eq!(
        (reused.host_id.clone(), reused.gpus.clone()),
        (sessions[1].host_id.clone(), sessions[1].gpus.clone())
    );
    tests::wait_sessions_settled(&client).await;
    two.stop().await;
    one.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heavy_game_takes_its_slots() {
    let broker = TestBroker::start().await;
    let client = Client::new(&broker.url, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(broker.agent_addr, host("w-1", dir.path(), 4, &[], &[])).await;
    online(&client, 1).await;
    let heavy = client.start_session(&start("heavy")).await.unwrap();
    assert_eq!(heavy.slots, 3);
    let h = &client.hosts().await.unwrap().hosts[0];
    assert_eq!((h.sessions, h.slots_used), (1, 3));
    // 3 of 4 taken: a second heavy game does not fit, a light one does.
    no_capacity(client.start_session(&start("heavy")).await, "3 + 3 > 4");
    let light = client.start_session(&start("plain")).await.unwrap();
    assert_eq!(light.slots, 1);
    no_capacity(client.start_session(&start("plain")).await, "4 of 4");
    client.end_session(&heavy.session_id).await.unwrap();
    let h = &client.hosts().await.unwrap().hosts[0];
    assert_eq!((h.sessions, h.slots_used), (1, 1));
    client.start_session(&start("heavy")).await.unwrap();
    tests::wait_sessions_settled(&client).await;
    agent.stop().await;
}

/// The stream's next event, within [`WAIT`].
async fn next(events: &mut portal_client::events::EventStream) -> protocol::api::Event {
    tokio::time::timeout(WAIT, events.next())
        .await
        .expect("an event in time")
        .unwrap()
        .unwrap()
}

/// Where `n` plain starts go under `strategy`, over three hosts of 4 slots.
async fn placed_by(strategy: broker::placement::Strategy, n: usize) -> BTreeMap<String, usize> {
    let broker = TestBroker::start_with(BrokerOptions {
        placement: strategy,
        ..BrokerOptions::default()
    })
    .await;
    let client = Client::new(&broker.url, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut agents = Vec::new();
    for h in ["p-1", "p-2", "p-3"] {
        agents.push(TestAgent::start(broker.agent_addr, host(h, dir.path(), 4, &[], &[])).await);
    }
    online(&client, 3).await;
    let mut on: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..n {
        let s = client.start_session(&start("plain")).await.unwrap();
        *on.entry(s.host_id.to_string()).or_default() += 1;
    }
    tests::wait_sessions_settled(&client).await;
    for a in agents {
        a.stop().await;
    }
    on
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pack_fills_hosts_in_turn_where_spread_evens_them() {
    use broker::placement::Strategy;
    let spread = placed_by(Strategy::Spread, 6).await;
    assert_eq!(spread.values().copied().collect::<Vec<_>>(), [2, 2, 2]);
    let pack = placed_by(Strategy::Pack, 6).await;
    assert_eq!(
        pack,
        BTreeMap::from([("p-1".to_owned(), 4), ("p-2".to_owned(), 2)]),
        "p-3 stays empty, to be powered down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_drained_hosts_are_announced() {
    let broker = TestBroker::start_with(BrokerOptions {
        heartbeat_timeout: Duration::from_secs(1),
        host_idle_after: Some(Duration::from_millis(800)),
        ..BrokerOptions::default()
    })
    .await;
    let client = Client::new(&broker.url, None).unwrap();
    let mut events = client
        .events(
            &[EventType::HostIdle, EventType::HostDrained],
            None,
            None,
            None,
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(broker.agent_addr, host("idle-1", dir.path(), 4, &[], &[])).await;
    let id = HostId::new("idle-1").unwrap();
    // Idle from the start, once.
    let idle = next(&mut events).await;
    assert_eq!(idle.kind, EventType::HostIdle);
    assert_eq!(idle.host.as_ref().unwrap().host_id, id);
    // Busy, then idle again after it.
    let s = client.start_session(&start("plain")).await.unwrap();
    client.end_session(&s.session_id).await.unwrap();
    let again = next(&mut events).await;
    assert_eq!(
        again.kind,
        EventType::HostIdle,
        "idle again after a busy period"
    );
    // A drained host's last session: host.drained, once it ends.
    let s = client.start_session(&start("plain")).await.unwrap();
    let drained = client.drain_host(&id).await.unwrap();
    assert_eq!(drained.status, HostStatus::Draining);
    assert!(
        tokio::time::timeout(Duration::from_secs(2), events.next())
            .await
            .is_err(),
        "no host.drained while a session runs"
    );
    client.end_session(&s.session_id).await.unwrap();
    let ev = next(&mut events).await;
    assert_eq!(ev.kind, EventType::HostDrained);
    assert_eq!(ev.host.as_ref().unwrap().sessions, 0);
    agent.stop().await;
}
