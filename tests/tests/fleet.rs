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

/// The seconds of `s` inside `[from, to)`, from its own record (ended: by then).
fn inside(s: &Session, from: time::OffsetDateTime, to: time::OffsetDateTime) -> f64 {
    let (start, end) = (s.started_at.unwrap(), s.ended_at.unwrap());
    let (a, b) = (start.max(from), end.min(to));
    if b > a {
        (b - a).whole_microseconds() as f64 / 1e6
    } else {
        0.0
    }
}

/// Usage summed by the broker against the sessions' own timestamps, on `database` (or the
/// in-memory store): by user, game and host, whole and cut windows, a filter, and CSV.
async fn usage_adds_up(database_url: Option<String>) {
    use protocol::api::{UsageBy, UsageQuery};
    use time::format_description::well_known::Rfc3339;
    let broker = TestBroker::start_with(BrokerOptions {
        database_url,
        ..BrokerOptions::default()
    })
    .await;
    let client = Client::new(&broker.url, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = TestAgent::start(broker.agent_addr, host("u-1", dir.path(), 8, &[], &[0, 1])).await;
    online(&client, 1).await;
    let begun = time::OffsetDateTime::now_utc();
    let as_user = |game: &str, user: Option<&str>| {
        let mut s = start(game);
        s.user_id = user.map(str::to_owned);
        s
    };
    let mut ran = Vec::new();
    for (game, user) in [
        ("plain", Some("ann")),
        ("gpu", Some("bob")),
        ("plain", Some("ann")),
        ("plain", None),
    ] {
        let s = client.start_session(&as_user(game, user)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        ran.push(s);
    }
    let mut ended = Vec::new();
    for s in &ran {
        ended.push(client.end_session(&s.session_id).await.unwrap());
    }
    let finished = time::OffsetDateTime::now_utc();
    let rfc = |t: time::OffsetDateTime| t.format(&Rfc3339).unwrap();
    let ask = |from: time::OffsetDateTime, to: time::OffsetDateTime, by: UsageBy| UsageQuery {
        from: Some(rfc(from)),
        to: Some(rfc(to)),
        by: Some(by),
        ..UsageQuery::default()
    };
    let close = |got: f64, want: f64, what: &str| {
        assert!((got - want).abs() < 0.002, "{what}: {got} against {want}");
    };
    let whole = (
        begun - time::Duration::hours(1),
        finished + time::Duration::hours(1),
    );

    // By user: ann's two sessions, bob's one, and one without a user (key null).
    let u = client
        .usage(&ask(whole.0, whole.1, UsageBy::User))
        .await
        .unwrap();
    let row = |key: Option<&str>| {
        u.rows
            .iter()
            .find(|r| r.key.as_deref() == key)
            .unwrap_or_else(|| panic!("no row {key:?} in {u:?}"))
            .clone()
    };
    let sum = |pick: &dyn Fn(&Session) -> bool| {
        ended
            .iter()
            .filter(|s| pick(s))
            .map(|s| inside(s, whole.0, whole.1))
            .sum::<f64>()
    };
    let ann = row(Some("ann"));
    assert_eq!(ann.sessions, 2);
    close(
        ann.seconds,
        sum(&|s| s.user_id.as_deref() == Some("ann")),
        "ann",
    );
    assert_eq!(ann.gpu_seconds, 0.0);
    let bob = row(Some("bob"));
    close(
        bob.seconds,
        sum(&|s| s.user_id.as_deref() == Some("bob")),
        "bob",
    );
    close(bob.gpu_seconds, bob.seconds, "bob's one GPU");
    assert_eq!(row(None).sessions, 1);
    assert!(
        u.rows.windows(2).all(|w| w[0].seconds >= w[1].seconds),
        "the most time first: {u:?}"
    );

    // By game and by host, over the same window: the same total.
    let total = sum(&|_| true);
    for by in [UsageBy::Game, UsageBy::Host] {
        let g = client.usage(&ask(whole.0, whole.1, by)).await.unwrap();
        close(g.rows.iter().map(|r| r.seconds).sum(), total, by.as_str());
        assert_eq!(g.rows.iter().map(|r| r.sessions).sum::<u64>(), 4);
    }

    // A window that cuts sessions: from the middle of the first's run to the middle of the
    // third's.
    let mid = |s: &Session| {
        let (a, b) = (s.started_at.unwrap(), s.ended_at.unwrap());
        a + (b - a) / 2
    };
    let cut = (mid(&ended[0]), mid(&ended[2]));
    let c = client
        .usage(&ask(cut.0, cut.1, UsageBy::User))
        .await
        .unwrap();
    for key in [Some("ann"), Some("bob"), None] {
        let mine: Vec<&Session> = ended
            .iter()
            .filter(|s| s.user_id.as_deref() == key)
            .filter(|s| inside(s, cut.0, cut.1) > 0.0)
            .collect();
        let want: f64 = mine.iter().map(|s| inside(s, cut.0, cut.1)).sum();
        match c.rows.iter().find(|r| r.key.as_deref() == key) {
            Some(r) => {
                close(r.seconds, want, &format!("{key:?}, cut"));
                assert_eq!(r.sessions as usize, mine.len(), "{key:?}, cut");
            }
            None => assert!(mine.is_empty(), "{key:?} ran in the window: {c:?}"),
        }
    }
    let got_ann = c
        .rows
        .iter()
        .find(|r| r.key.as_deref() == Some("ann"))
        .unwrap();
    assert!(got_ann.seconds < ann.seconds, "the window cut her sessions");

    // One user's only; and CSV.
    let mut only = ask(whole.0, whole.1, UsageBy::Game);
    only.user_id = Some("bob".into());
    let b = client.usage(&only).await.unwrap();
    assert_eq!(
        b.rows
            .iter()
            .map(|r| r.key.clone().unwrap())
            .collect::<Vec<_>>(),
        ["gpu"]
    );
    let csv = client
        .usage_csv(&ask(whole.0, whole.1, UsageBy::User))
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "user,sessions,seconds,gpu_seconds");
    assert_eq!(lines.len(), 4, "{csv}");
    let ann_line = lines.iter().find(|l| l.starts_with("ann,")).unwrap();
    let seconds: f64 = ann_line.split(',').nth(2).unwrap().parse().unwrap();
    close(seconds, ann.seconds, "ann in CSV");

    // A running session counts until now.
    let live = client
        .start_session(&as_user("plain", Some("cat")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now = client
        .usage(&UsageQuery {
            user_id: Some("cat".into()),
            ..UsageQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(now.rows.len(), 1);
    assert!(now.rows[0].seconds >= 0.3, "{now:?}");
    client.end_session(&live.session_id).await.unwrap();
    // Nonsense windows: 400.
    match client.usage(&ask(whole.1, whole.0, UsageBy::User)).await {
        Err(ClientError::Api { status: 400, .. }) => {}
        other => panic!("from after to: {other:?}"),
    }
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_adds_up_in_memory() {
    usage_adds_up(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_adds_up_on_mariadb() {
    let Some(db) = tests::mariadb::database().await else {
        return;
    };
    usage_adds_up(Some(db)).await;
}

/// `(host, gpu)` of each session.
fn gpu_pairs(sessions: &[Session]) -> Vec<(String, u32)> {
    sessions
        .iter()
        .flat_map(|s| s.gpus.iter().map(|g| (s.host_id.to_string(), *g)))
        .collect()
}

fn distinct(pairs: &[(String, u32)]) -> bool {
    pairs.iter().collect::<BTreeSet<_>>().len() == pairs.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpus_are_exact_across_replicas_and_kept_through_a_replica_kill9() {
    use tests::cluster::{Cluster, HEARTBEAT_TIMEOUT};
    // 3 + 3 + 2 + 2 = 10 GPUs over four hosts of 12 or 13 slots.
    let Some(mut c) = Cluster::start_gpus(HEARTBEAT_TIMEOUT, [3, 3, 2, 2]).await else {
        return;
    };
    // 50 concurrent starts through the three replicas: exactly 10 run, on 10 distinct GPUs.
    let starts = (0..50).map(|i| {
        let client = c.client(i);
        async move { client.start_session(&start("gpu-sleeper")).await }
    });
    let answers = futures::future::join_all(starts).await;
    let mut running = Vec::new();
    for a in answers {
        match a {
            Ok(s) => running.push(s),
            Err(ClientError::Api {
                status: 503,
                code: ErrorCode::NoCapacity,
                ..
            }) => {}
            Err(e) => panic!("a start: {e}"),
        }
    }
    let pairs = gpu_pairs(&running);
    assert_eq!(running.len(), 10, "one session per GPU: {pairs:?}");
    assert!(distinct(&pairs), "a GPU given twice: {pairs:?}");

    // The replica holding the most of them dies; its hosts move; every session keeps its GPUs.
    let owners = c.owners(1).await;
    let victim = {
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &running {
            *count.entry(owners[&s.host_id].as_str()).or_default() += 1;
        }
        count
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .unwrap()
            .0
            .to_owned()
    };
    let v = c.replicas.iter().position(|r| r.id == victim).unwrap();
    c.replicas[v].kill9();
    let survivor = (v + 1) % 3;
    let client = c.client(survivor);
    wait_until(
        "every host is held by a live replica again",
        WAIT * 2,
        || {
            let client = client.clone();
            let victim = victim.clone();
            async move {
                client.hosts().await.is_ok_and(|h| {
                    h.hosts.iter().all(|h| {
                        h.status == HostStatus::Online
                            && h.broker_id.as_deref().is_some_and(|b| b != victim)
                    })
                })
            }
        },
    )
    .await;
    for s in &running {
        let now = client.get_session(&s.session_id).await.unwrap();
        assert_eq!((now.status, &now.gpus), (SessionStatus::Running, &s.gpus));
    }
    let used: u32 = client
        .hosts()
        .await
        .unwrap()
        .hosts
        .iter()
        .map(|h| h.gpus_used)
        .sum();
    assert_eq!(used, 10);
    // No GPU free: 503 through either survivor; three ended give exactly their three back. A
    // survivor may still route to the dead replica for a moment (503 host_unavailable, with
    // Retry-After): a client that honours it gets the answer.
    for i in [survivor, (v + 2) % 3] {
        let client = c.client(i);
        let deadline = std::time::Instant::now() + WAIT;
        let answer = loop {
            let r = client.start_session(&start("gpu-sleeper")).await;
            match &r {
                Err(ClientError::Api {
                    code: ErrorCode::HostUnavailable,
                    retry_after: Some(s),
                    ..
                }) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_secs(*s)).await;
                }
                _ => break r,
            }
        };
        no_capacity(answer, "every GPU is held after the kill");
    }
    let freed = gpu_pairs(&running[..3]);
    for s in &running[..3] {
        client.end_session(&s.session_id).await.unwrap();
    }
    let mut again = Vec::new();
    for _ in 0..3 {
        again.push(client.start_session(&start("gpu-sleeper")).await.unwrap());
    }
    let mut got = gpu_pairs(&again);
    let mut want = freed;
    got.sort();
    want.sort();
    assert_eq!(got, want, "the ended sessions' GPUs, and only those");
    let all: Vec<Session> = running[3..].iter().cloned().chain(again).collect();
    assert!(distinct(&gpu_pairs(&all)));
    for s in &all {
        client.end_session(&s.session_id).await.unwrap();
    }
    tests::cluster::no_orphan(&c, survivor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_with_9_keeps_its_games_gpus() {
    let agent_bin = tests::test_game().with_file_name("arcade-agent");
    if !agent_bin.is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing",
            agent_bin.display()
        );
        return;
    }
    let broker = TestBroker::start_with(BrokerOptions {
        heartbeat_timeout: Duration::from_secs(30),
        ..BrokerOptions::default()
    })
    .await;
    let client = Client::new(&broker.url, None).unwrap();
    let state = tests::reaper::StateDir::new();
    let catalog = state.path().join("catalog.toml");
    std::fs::write(
        &catalog,
        "[games.gpu]\ncommand = \"/bin/sleep\"\nargs = [\"3600\"]\ngpus = 1\n",
    )
    .unwrap();
    let range = tests::fresh_port_range();
    let spawn = || {
        tokio::process::Command::new(&agent_bin)
            .arg("--broker")
            .arg(broker.agent_addr.to_string())
            .arg("--catalog")
            .arg(&catalog)
            .args(["--host-id", "k9", "--gpus", "0,1", "--label", "region=eu"])
            .arg("--port-range")
            .arg(format!("{}-{}", range.lo, range.hi))
            .arg("--state-dir")
            .arg(state.path())
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut agent = spawn();
    online(&client, 1).await;
    let first = client.start_session(&start("gpu")).await.unwrap();
    assert_eq!(first.labels, labels(&[("region", "eu")]));
    agent.start_kill().unwrap();
    agent.wait().await.unwrap();
    assert!(tests::group_alive(first.pid.unwrap()), "its game runs on");
    let mut agent = spawn();
    let id = first.session_id.clone();
    wait_until("the agent is back, its game taken back", WAIT, || {
        let client = client.clone();
        async move {
            client.hosts().await.is_ok_and(|h| {
                h.hosts
                    .iter()
                    .any(|h| h.status == HostStatus::Online && h.gpus_used == 1)
            })
        }
    })
    .await;
    let kept = client.get_session(&id).await.unwrap();
    assert_eq!(
        (kept.status, &kept.gpus),
        (SessionStatus::Running, &first.gpus)
    );
    // The other GPU, then none.
    let second = client.start_session(&start("gpu")).await.unwrap();
    assert_ne!(second.gpus, first.gpus);
    no_capacity(client.start_session(&start("gpu")).await, "both GPUs held");
    for s in [&first, &second] {
        client.end_session(&s.session_id).await.unwrap();
    }
    agent.start_kill().unwrap();
    agent.wait().await.unwrap();
}
