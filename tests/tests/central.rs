//! Central games reaching real agents (issue 27): a build uploaded and set as a game is
//! fetched by every agent with its token, checked, unpacked read-only under its state dir,
//! and only then offered; a start runs the game from the build's own files and records the
//! build it runs.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::collections::BTreeSet;
use std::time::Duration;

use portal_client::Client;
use protocol::api::{CentralGame, EventType, GameSource, RolloutState, Session};
use protocol::{BuildId, GameId, HostId};
use tests::builds::{broken_build, game_build, game_entry};
use tests::{keys, AgentOptions, BrokerOptions, TestAgent, TestBroker};

struct Fleet {
    broker: TestBroker,
    agents: Vec<TestAgent>,
    admin: Client,
    portal: Client,
}

impl Fleet {
    /// A broker with keys and an agent token, and `hosts` agents holding it.
    async fn start(hosts: &[&str]) -> Self {
        Self::start_with(hosts, |_| {}).await
    }

    /// [`Fleet::start`], each agent's options changed by `tweak`.
    async fn start_with(hosts: &[&str], tweak: impl Fn(&mut AgentOptions)) -> Self {
        let broker = TestBroker::start_with(BrokerOptions {
            api_keys: vec![
                format!("admin:{}", keys::ADMIN),
                format!("portal:{}", keys::PORTAL),
            ],
            agent_token: Some(keys::AGENT.into()),
            ..Default::default()
        })
        .await;
        let mut agents = Vec::new();
        for h in hosts {
            let mut opts = AgentOptions::host(h);
            opts.token = Some(keys::AGENT.into());
            tweak(&mut opts);
            agents.push(TestAgent::start(broker.agent_addr, opts).await);
        }
        let admin = Client::new(&broker.url, Some(keys::ADMIN.into())).unwrap();
        let portal = Client::new(&broker.url, Some(keys::PORTAL.into())).unwrap();
        tests::wait_hosts_online(&admin, hosts.len()).await;
        Self {
            broker,
            agents,
            admin,
            portal,
        }
    }

    /// Uploads `data` as a build.
    async fn upload(&self, data: &[u8]) -> BuildId {
        tests::builds::upload(&self.admin, data).await
    }

    /// Sets central game `game` to `build`, with [`game_entry`]'s keys and `more`.
    async fn set_game(&self, game: &GameId, build: &BuildId, more: serde_json::Value) {
        let mut body = game_entry();
        body["build"] = serde_json::json!(build);
        if let serde_json::Value::Object(m) = more {
            body.as_object_mut().unwrap().extend(m);
        }
        self.admin.put_game(game, &body, None).await.unwrap();
    }

    /// Waits until `n` hosts offer `game` with `build`.
    async fn offered_by(&self, game: &GameId, build: &BuildId, n: usize) {
        let what = format!("{n} hosts offer {game} with its build");
        tests::wait_until(&what, Duration::from_secs(30), || async {
            let games = self.admin.games().await.unwrap().games;
            // During a rollout, `hosts` counts hosts offering either build: its
            // `hosts_ready` says how many run the new one.
            games.iter().any(|g| {
                g.game_id == *game
                    && g.hosts as usize >= n
                    && g.build.as_ref() == Some(build)
                    && g.rollout
                        .as_ref()
                        .is_none_or(|r| r.build == *build && r.hosts_ready as usize >= n)
            })
        })
        .await;
    }
}

impl Fleet {
    /// Starts a session of `game` through the portal.
    async fn play(&self, game: &str) -> Session {
        self.portal
            .start_session(&tests::start(game))
            .await
            .unwrap()
    }

    /// Waits until `game`'s rollout satisfies `ok`, and answers the game then.
    async fn rollout_until(
        &self,
        game: &GameId,
        what: &str,
        ok: impl Fn(&CentralGame) -> bool,
    ) -> CentralGame {
        let seen = std::sync::Mutex::new(None);
        tests::wait_until(what, Duration::from_secs(40), || async {
            let g = self.admin.central_game(game).await.unwrap();
            let done = ok(&g);
            *seen.lock().unwrap() = Some(g);
            done
        })
        .await;
        seen.into_inner().unwrap().unwrap()
    }
}

/// The types of the events of `types` in the stream so far, in order.
async fn events_so_far(admin: &Client, types: &[EventType]) -> Vec<(EventType, CentralGame)> {
    let mut stream = admin.events(types, None, None, Some(0)).await.unwrap();
    let mut out = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
        let e = e.unwrap();
        out.push((e.kind, e.game.expect("a game event carries its game")));
    }
    out
}

/// What a player connecting to `s` reads first.
async fn greeting(s: &Session) -> String {
    tests::greeting(s.port.unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_central_game_is_fetched_by_every_agent_and_runs_from_its_build() {
    let fleet = Fleet::start(&["gpu-1", "gpu-2"]).await;
    let game = GameId::new("arena").unwrap();
    let build = fleet.upload(&game_build("build one")).await;
    fleet.set_game(&game, &build, serde_json::json!({})).await;
    fleet.offered_by(&game, &build, 2).await;
    let listed = fleet.admin.games().await.unwrap().games;
    let arena = listed.iter().find(|g| g.game_id == game).unwrap();
    assert_eq!(arena.source, GameSource::Central);

    // Two starts spread over both hosts; each game greets from its build's own file.
    let mut hosts = BTreeSet::new();
    for _ in 0..2 {
        let s = fleet.play("arena").await;
        assert_eq!(
            s.build.as_ref(),
            Some(&build),
            "the session records its build"
        );
        assert_eq!(
            greeting(&s).await,
            format!("session {} build one", s.session_id)
        );
        let read = fleet.portal.get_session(&s.session_id).await.unwrap();
        assert_eq!(read.build.as_ref(), Some(&build));
        hosts.insert(s.host_id.clone());
    }
    assert_eq!(hosts.len(), 2, "both agents offered and ran it: {hosts:?}");

    // A host's own catalog game records no build.
    let own = fleet.play("game").await;
    assert_eq!(own.build, None);

    // Each agent holds the build unpacked under its state dir, read-only.
    for agent in &fleet.agents {
        use std::os::unix::fs::PermissionsExt as _;
        let builds = agent.state_dir.path().join("builds");
        let dir = builds.join(build.as_str());
        let greeting = std::fs::read_to_string(dir.join("greeting.txt")).unwrap();
        assert_eq!(greeting, "build one\n");
        for path in [dir.clone(), dir.join("greeting.txt"), dir.join("bin/start")] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o222, 0, "no write bit on {path:?}: {mode:o}");
        }
        assert!(
            !builds.join(".partial").join(build.as_str()).exists(),
            "no download is left behind"
        );
    }

    // The build is held while its game is set.
    let held = fleet.admin.delete_build(&build).await.unwrap_err();
    assert_eq!(tests::api_error(&held).0, 409);
    tests::wait_sessions_settled(&fleet.admin).await;
    drop(fleet.broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_build_rolls_out_through_its_canary_and_running_sessions_keep_theirs() {
    let fleet = Fleet::start(&["gpu-1", "gpu-2", "gpu-3"]).await;
    let game = GameId::new("arena").unwrap();
    let one = fleet.upload(&game_build("one")).await;
    fleet.set_game(&game, &one, serde_json::json!({})).await;
    fleet.offered_by(&game, &one, 3).await;
    let old = fleet.play("arena").await;
    assert_eq!(old.build.as_ref(), Some(&one));

    let two = fleet.upload(&game_build("two")).await;
    let rollout =
        serde_json::json!({"rollout": {"canary_hosts": 1, "hold_s": 3, "max_failures": 1}});
    fleet.set_game(&game, &two, rollout).await;
    let canary = fleet
        .rollout_until(&game, "the canary runs the new build", |g| {
            g.rollout
                .as_ref()
                .is_some_and(|r| r.state == RolloutState::Canary && r.hosts_ready == 1)
        })
        .await;
    let r = canary.rollout.unwrap();
    assert_eq!(
        r.canaries,
        vec![HostId::new("gpu-1").unwrap()],
        "the lowest id"
    );
    assert_eq!(
        (r.build.clone(), r.previous_build.clone()),
        (two.clone(), one.clone())
    );

    // While the canary holds, its new sessions run the new build, every other host's the
    // previous one: each game greets from the build its session recorded.
    // Placement spreads starts over the least loaded hosts: within six, both kinds.
    let mut during = Vec::new();
    while during.len() < 6
        && !(during
            .iter()
            .any(|s: &Session| s.build.as_ref() == Some(&two))
            && during.len() >= 3)
    {
        let s = fleet.play("arena").await;
        let want = if s.host_id.as_str() == "gpu-1" {
            &two
        } else {
            &one
        };
        assert_eq!(s.build.as_ref(), Some(want), "on {}", s.host_id);
        let word = if want == &two { "two" } else { "one" };
        assert_eq!(
            greeting(&s).await,
            format!("session {} {word}", s.session_id)
        );
        during.push(s);
    }
    assert!(during.iter().any(|s| s.build.as_ref() == Some(&two)));

    // After the hold, every host switches; the rollout is done once all three have it.
    let done = fleet
        .rollout_until(&game, "the rollout is done", |g| {
            g.rollout
                .as_ref()
                .is_some_and(|r| r.state == RolloutState::Done)
        })
        .await;
    let r = done.rollout.unwrap();
    assert_eq!((r.hosts_ready, r.hosts_total, r.failures), (3, 3, 0));
    for _ in 0..3 {
        let s = fleet.play("arena").await;
        assert_eq!(s.build.as_ref(), Some(&two));
        assert_eq!(greeting(&s).await, format!("session {} two", s.session_id));
    }
    // The session of the first build runs on, as it was.
    let still = fleet.portal.get_session(&old.session_id).await.unwrap();
    assert_eq!(still.status, protocol::api::SessionStatus::Running);
    assert_eq!(
        greeting(&still).await,
        format!("session {} one", old.session_id)
    );

    // The stream told it all, each event carrying the game.
    let events = events_so_far(
        &fleet.admin,
        &[
            EventType::GameUpdated,
            EventType::RolloutProgressed,
            EventType::RolloutHalted,
            EventType::RolloutDone,
        ],
    )
    .await;
    let kinds: Vec<EventType> = events.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds.first(), Some(&EventType::GameUpdated), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&EventType::RolloutDone), "{kinds:?}");
    assert!(!kinds.contains(&EventType::RolloutHalted), "{kinds:?}");
    let progressed: Vec<RolloutState> = events
        .iter()
        .filter(|(k, _)| *k == EventType::RolloutProgressed)
        .map(|(_, g)| g.rollout.as_ref().unwrap().state)
        .collect();
    assert!(
        progressed.contains(&RolloutState::Rolling),
        "{progressed:?}"
    );
    // The build the old session runs cannot go while it does.
    fleet.admin.delete_game(&game).await.unwrap();
    let held = fleet.admin.delete_build(&one).await.unwrap_err();
    assert_eq!(tests::api_error(&held).0, 409);
    tests::wait_sessions_settled(&fleet.admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_build_is_halted_by_its_canary_and_rolled_back() {
    let fleet = Fleet::start(&["gpu-1", "gpu-2"]).await;
    let game = GameId::new("arena").unwrap();
    let good = fleet.upload(&game_build("good")).await;
    fleet.set_game(&game, &good, serde_json::json!({})).await;
    fleet.offered_by(&game, &good, 2).await;

    let broken = fleet.upload(&broken_build()).await;
    let rollout =
        serde_json::json!({"rollout": {"canary_hosts": 1, "hold_s": 600, "max_failures": 1}});
    fleet.set_game(&game, &broken, rollout).await;
    fleet
        .rollout_until(&game, "the canary offers the broken build", |g| {
            g.rollout.as_ref().is_some_and(|r| r.hosts_ready == 1)
        })
        .await;

    // Players start until one lands on the canary: that launch fails, and it is the only
    // one that does.
    let mut failures = 0;
    for _ in 0..10 {
        match fleet.portal.start_session(&tests::start("arena")).await {
            Ok(s) => assert_eq!(s.build.as_ref(), Some(&good)),
            Err(e) => {
                assert_eq!(tests::api_error(&e).0, 502, "{e}");
                failures += 1;
                break;
            }
        }
    }
    assert_eq!(failures, 1, "a start reached the canary");
    let halted = fleet
        .rollout_until(&game, "the rollout halts", |g| {
            g.rollout
                .as_ref()
                .is_some_and(|r| r.state == RolloutState::Halted)
        })
        .await;
    let r = halted.rollout.unwrap();
    assert_eq!(r.failures, 1);
    assert!(
        r.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("failed launch"),
        "{r:?}"
    );
    // Halted: every host offers the previous build again, and every start succeeds.
    tests::wait_until(
        "both hosts offer the good build",
        Duration::from_secs(20),
        || async {
            let hosts = fleet.admin.hosts().await.unwrap().hosts;
            hosts.iter().filter(|h| h.games.contains(&game)).count() == 2
        },
    )
    .await;
    for _ in 0..4 {
        let s = fleet.play("arena").await;
        assert_eq!(s.build.as_ref(), Some(&good));
    }
    let kinds: Vec<EventType> = events_so_far(&fleet.admin, &[EventType::RolloutHalted])
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(kinds, vec![EventType::RolloutHalted]);

    // Rollback: the good build is the game's again, at once, with no rollout.
    let back = fleet.admin.rollback_game(&game).await.unwrap();
    assert_eq!(
        (back.build.clone(), back.previous_build.clone()),
        (good.clone(), Some(broken.clone()))
    );
    assert_eq!(back.rollout, None);
    let s = fleet.play("arena").await;
    assert_eq!(s.build.as_ref(), Some(&good));
    tests::wait_sessions_settled(&fleet.admin).await;
}

/// A broker whose `--public-url` is a [`FaultProxy`] in front of its own API, so agents
/// download builds through the proxy; and one agent on `state_dir`.
async fn behind_proxy(state_dir: Option<&std::path::Path>) -> (Fleet, tests::proxy::FaultProxy) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{}", listener.local_addr().unwrap());
    let broker = TestBroker::start_with(BrokerOptions {
        api_keys: vec![
            format!("admin:{}", keys::ADMIN),
            format!("portal:{}", keys::PORTAL),
        ],
        agent_token: Some(keys::AGENT.into()),
        public_url: Some(public),
        ..Default::default()
    })
    .await;
    let proxy = tests::proxy::FaultProxy::start_on(listener, broker.http_addr);
    let mut opts = AgentOptions::host("gpu-1");
    opts.token = Some(keys::AGENT.into());
    opts.state_dir = state_dir.map(std::path::Path::to_owned);
    let agent = TestAgent::start(broker.agent_addr, opts).await;
    let admin = Client::new(&broker.url, Some(keys::ADMIN.into())).unwrap();
    let portal = Client::new(&broker.url, Some(keys::PORTAL.into())).unwrap();
    tests::wait_hosts_online(&admin, 1).await;
    let fleet = Fleet {
        broker,
        agents: vec![agent],
        admin,
        portal,
    };
    (fleet, proxy)
}

/// The requests for `build`'s content the proxy carried.
fn downloads(proxy: &tests::proxy::FaultProxy, build: &BuildId) -> Vec<String> {
    let sent = proxy.sent();
    let wanted = format!("GET /v1/builds/{build}/content");
    sent.split("\r\n\r\n")
        .filter(|r| r.contains(&wanted))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_flipped_in_transit_is_refused_and_the_build_fetched_again() {
    let (fleet, proxy) = behind_proxy(None).await;
    let game = GameId::new("arena").unwrap();
    let data = tests::builds::game_build_with(
        "whole",
        &[("assets.bin", &tests::builds::noise(256 << 10, 7))],
    );
    let build = fleet.upload(&data).await;
    // One bit pattern flipped well inside the first download's body.
    proxy.set(tests::proxy::Mode::FlipOnce(100_000));
    fleet.set_game(&game, &build, serde_json::json!({})).await;
    fleet.offered_by(&game, &build, 1).await;
    let asked = downloads(&proxy, &build);
    assert_eq!(asked.len(), 2, "refused once, fetched again: {asked:?}");
    assert!(
        !asked[1].to_ascii_lowercase().contains("range:"),
        "a mismatch starts over: {}",
        asked[1]
    );
    let s = fleet.play("arena").await;
    assert_eq!(
        greeting(&s).await,
        format!("session {} whole", s.session_id)
    );
    let kept = std::fs::read(
        fleet.agents[0]
            .state_dir
            .path()
            .join("builds")
            .join(build.as_str())
            .join("assets.bin"),
    )
    .unwrap();
    assert_eq!(
        kept,
        tests::builds::noise(256 << 10, 7),
        "the asset is whole"
    );
    tests::wait_sessions_settled(&fleet.admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_download_resumes_where_it_was() {
    let agent_bin = tests::test_game().with_file_name("arcade-agent");
    if !agent_bin.is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing: CI runs cargo test --workspace, which builds it",
            agent_bin.display()
        );
        eprintln!("skipped: no {} (cargo build -p agent)", agent_bin.display());
        return;
    }
    let state = tests::reaper::StateDir::new();
    let (mut fleet, proxy) = behind_proxy(None).await;
    let game = GameId::new("arena").unwrap();
    let asset = tests::builds::noise(1 << 20, 11);
    let data = tests::builds::game_build_with("resumed", &[("assets.bin", &asset)]);
    let build = fleet.upload(&data).await;
    // The real agent binary, on its own state dir, as a second host.
    let catalog = state.path().join("catalog.toml");
    std::fs::write(&catalog, "[games.sleeper]\ncommand = \"/bin/sleep\"\n").unwrap();
    let mut agent = tokio::process::Command::new(&agent_bin)
        .arg("--broker")
        .arg(fleet.broker.agent_addr.to_string())
        .arg("--catalog")
        .arg(&catalog)
        .args(["--host-id", "gpu-2", "--token", keys::AGENT])
        .arg("--state-dir")
        .arg(state.path())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tests::wait_hosts_online(&fleet.admin, 2).await;
    let gpu1 = fleet.agents.pop().unwrap();
    gpu1.stop().await;
    proxy.set(tests::proxy::Mode::StallAfter(400_000));
    fleet.set_game(&game, &build, serde_json::json!({})).await;
    let partial = state.path().join("builds/.partial").join(build.as_str());
    tests::wait_until(
        "part of the build is on disk",
        Duration::from_secs(20),
        || async { std::fs::metadata(&partial).is_ok_and(|m| m.len() > 300_000) },
    )
    .await;
    // kill -9 mid-download; a new agent starts on the same state directory with the network
    // healthy again.
    agent.start_kill().unwrap();
    agent.wait().await.unwrap();
    let had = std::fs::metadata(&partial).unwrap().len();
    proxy.set(tests::proxy::Mode::Pass);
    let mut opts = AgentOptions::host("gpu-2");
    opts.token = Some(keys::AGENT.into());
    opts.state_dir = Some(state.path().to_owned());
    fleet
        .agents
        .push(TestAgent::start(fleet.broker.agent_addr, opts).await);
    fleet.offered_by(&game, &build, 1).await;
    let asked = downloads(&proxy, &build);
    assert_eq!(asked.len(), 2, "{asked:?}");
    let resumed = asked[1].to_ascii_lowercase();
    assert!(
        resumed.contains(&format!("range: bytes={had}-")),
        "resumed from the {had} bytes kept: {resumed}"
    );
    let s = fleet.play("arena").await;
    assert_eq!(
        greeting(&s).await,
        format!("session {} resumed", s.session_id)
    );
    assert!(
        !partial.exists(),
        "the partial download is gone once placed"
    );
    tests::wait_sessions_settled(&fleet.admin).await;
}

/// A tmpfs of `size` mounted on a new directory, unmounted when dropped; `None` where this
/// process may not mount (not root).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_says_why_keeps_the_old_build_and_leaves_nothing_half_unpacked() {
    let Some(disk) = Tmpfs::mount("3m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let state = disk.0.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let (fleet, _proxy) = behind_proxy(Some(&state)).await;
    let game = GameId::new("arena").unwrap();
    let small = fleet.upload(&game_build("small")).await;
    fleet.set_game(&game, &small, serde_json::json!({})).await;
    fleet.offered_by(&game, &small, 1).await;
    // 8 MiB of zeros: a few KiB to download, more than the disk to unpack.
    let zeros = vec![0u8; 8 << 20];
    let big = fleet
        .upload(&tests::builds::game_build_with(
            "big",
            &[("assets.bin", &zeros)],
        ))
        .await;
    let rollout = serde_json::json!({"rollout": {"canary_hosts": 1, "hold_s": 1}});
    fleet.set_game(&game, &big, rollout).await;
    let stuck = fleet
        .rollout_until(&game, "the host says why it cannot take the build", |g| {
            g.rollout
                .as_ref()
                .and_then(|r| r.last_error.as_deref())
                .is_some_and(|e| e.contains("No space left"))
        })
        .await;
    let r = stuck.rollout.unwrap();
    assert_eq!((r.state, r.hosts_ready), (RolloutState::Canary, 0), "{r:?}");
    assert!(r.last_error.unwrap().starts_with("host gpu-1: "));
    // The old build is still served, and nothing of the new one is left on the disk.
    let s = fleet.play("arena").await;
    assert_eq!(s.build.as_ref(), Some(&small));
    assert_eq!(
        greeting(&s).await,
        format!("session {} small", s.session_id)
    );
    let builds = state.join("builds");
    let left: Vec<String> = std::fs::read_dir(&builds)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".partial")
        .collect();
    assert_eq!(left, vec![small.to_string()], "only the old build");
    assert_eq!(
        std::fs::read_dir(builds.join(".partial")).unwrap().count(),
        0
    );
    tests::wait_sessions_settled(&fleet.admin).await;
    fleet.admin.end_session(&s.session_id).await.unwrap();
    drop(fleet);
    drop(disk);
}

/// Replica `i`'s log, as far as it was written.
fn log_of(c: &tests::cluster::Cluster, i: usize) -> String {
    std::fs::read_to_string(&c.replicas[i].log).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_survives_the_kill_9_of_the_replica_driving_it() {
    let Some(mut c) = tests::cluster::Cluster::start().await else {
        return;
    };
    let game = GameId::new("arena").unwrap();
    let clients: Vec<Client> = (0..3).map(|i| c.client(i)).collect();
    let clients = &clients;
    // Uploaded through one replica, set through another, offered by every host.
    let push =
        |i: usize, data: Vec<u8>| async move { tests::builds::upload(&clients[i], &data).await };
    let one = push(0, game_build("one")).await;
    let mut body = game_entry();
    body["build"] = serde_json::json!(one);
    clients[1].put_game(&game, &body, None).await.unwrap();
    let offered = |build: BuildId| {
        let client = clients[2].clone();
        let game = game.clone();
        move || {
            let (client, game, build) = (client.clone(), game.clone(), build.clone());
            async move {
                client.games().await.is_ok_and(|l| {
                    l.games.iter().any(|g| {
                        g.game_id == game && g.hosts == 4 && g.build.as_ref() == Some(&build)
                    })
                })
            }
        }
    };
    tests::wait_until(
        "four hosts offer the first build",
        WAIT,
        offered(one.clone()),
    )
    .await;

    let two = push(2, game_build("two")).await;
    body["build"] = serde_json::json!(two);
    body["rollout"] = serde_json::json!({"canary_hosts": 1, "hold_s": 4, "max_failures": 1});
    clients[0].put_game(&game, &body, None).await.unwrap();
    let state = |i: usize| {
        let client = clients[i].clone();
        let game = game.clone();
        async move {
            client
                .central_game(&game)
                .await
                .ok()
                .and_then(|g| g.rollout)
        }
    };
    tests::wait_until("the canary runs the new build", WAIT, || async {
        state(1).await.is_some_and(|r| r.hosts_ready == 1)
    })
    .await;
    // The replica holding the sweep lease drives the rollout: kill it mid-hold.
    let driver = (0..3)
        .find(|i| log_of(&c, *i).contains("rollout moved on"))
        .expect("a replica drove the rollout");
    c.replicas[driver].kill9();
    let alive = (driver + 1) % 3;
    let done = || async {
        state(alive)
            .await
            .is_some_and(|r| r.state == RolloutState::Done)
    };
    tests::wait_until("another replica finishes the rollout", WAIT * 3, done).await;
    let r = state(alive).await.unwrap();
    assert_eq!(
        (r.hosts_ready, r.hosts_total, r.failures),
        (4, 4, 0),
        "{r:?}"
    );
    let after: Vec<usize> = (0..3)
        .filter(|i| *i != driver)
        .filter(|i| log_of(&c, *i).contains("rollout moved on"))
        .collect();
    assert!(
        !after.is_empty(),
        "a surviving replica took the rollout over"
    );
    c.wait_online(4).await;
    for k in 0..4 {
        let s = c
            .client(alive + k % 2)
            .start_session(&tests::start("arena"))
            .await;
        let s = s.unwrap();
        assert_eq!(s.build.as_ref(), Some(&two));
        assert_eq!(greeting(&s).await, format!("session {} two", s.session_id));
    }
    tests::cluster::no_orphan(&c, alive).await;
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pools_ready_games_are_replaced_as_their_host_switches_builds() {
    use protocol::api::{PoolSpec, SessionQuery, SessionStatus};
    let fleet = Fleet::start(&["gpu-1"]).await;
    let game = GameId::new("arena").unwrap();
    let one = fleet.upload(&game_build("one")).await;
    fleet.set_game(&game, &one, serde_json::json!({})).await;
    fleet.offered_by(&game, &one, 1).await;
    let spec = PoolSpec {
        game_id: game.clone(),
        mode: None,
        config: None,
        settings: Default::default(),
        size: 2,
        max_age_s: None,
    };
    let pool = protocol::PoolId::new("lobby").unwrap();
    fleet.admin.put_pool(&pool, &spec, None).await.unwrap();
    let ready = || async {
        let q = SessionQuery {
            status: Some(SessionStatus::Ready),
            ..SessionQuery::default()
        };
        fleet.admin.list_sessions(&q).await.unwrap().sessions
    };
    tests::wait_until("two games of the first build are ready", WAIT, || async {
        let r = ready().await;
        r.len() == 2 && r.iter().all(|s| s.build.as_ref() == Some(&one))
    })
    .await;
    let before: Vec<_> = ready().await.into_iter().map(|s| s.session_id).collect();

    // The host is the canary: once it switches, the pool's games are replaced, each
    // replacement ready before the game it replaces goes.
    let two = fleet.upload(&game_build("two")).await;
    let rollout = serde_json::json!({"rollout": {"canary_hosts": 1, "hold_s": 1}});
    fleet.set_game(&game, &two, rollout).await;
    tests::wait_until(
        "the pool holds two games of the new build",
        WAIT,
        || async {
            let r = ready().await;
            r.len() == 2 && r.iter().all(|s| s.build.as_ref() == Some(&two))
        },
    )
    .await;
    for id in before {
        let s = fleet.admin.get_session(&id).await.unwrap();
        assert_eq!(s.status, SessionStatus::Ended, "{id} was retired");
    }
    // A player's start takes one of them: the new build's.
    let s = fleet.play("arena").await;
    assert_eq!(s.pool_id.as_ref(), Some(&pool));
    assert_eq!(greeting(&s).await, format!("session {} two", s.session_id));
    fleet.admin.delete_pool(&pool, None).await.unwrap();
    tests::wait_sessions_settled(&fleet.admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_removes_builds_nothing_needs_least_recently_used_first() {
    // Room for one build of 700 KB, not two.
    let fleet = Fleet::start_with(&["gpu-1"], |o| o.build_cache = 1 << 20).await;
    let game = GameId::new("arena").unwrap();
    let build = |n: u64| {
        tests::builds::game_build_with(
            &format!("b{n}"),
            &[("assets.bin", &tests::builds::noise(700 << 10, n))],
        )
    };
    let cache = fleet.agents[0].state_dir.path().join("builds");
    let now = serde_json::json!({"rollout": {"canary_hosts": 0}});

    let b1 = fleet.upload(&build(1)).await;
    fleet.set_game(&game, &b1, serde_json::json!({})).await;
    fleet.offered_by(&game, &b1, 1).await;
    let s1 = fleet.play("arena").await;
    // Over the budget, but the previous build is kept for a rollback.
    let b2 = fleet.upload(&build(2)).await;
    fleet.set_game(&game, &b2, now.clone()).await;
    fleet.offered_by(&game, &b2, 1).await;
    assert!(cache.join(b1.as_str()).is_dir());
    // b1 is neither the game's build nor its previous one, but a session runs it: kept.
    let b3 = fleet.upload(&build(3)).await;
    fleet.set_game(&game, &b3, now).await;
    fleet.offered_by(&game, &b3, 1).await;
    assert!(
        cache.join(b1.as_str()).is_dir(),
        "a running session's build stays"
    );
    assert_eq!(greeting(&s1).await, format!("session {} b1", s1.session_id));
    // Its session ends: the least recently used build nothing needs goes.
    fleet.portal.end_session(&s1.session_id).await.unwrap();
    tests::wait_until("the unneeded build leaves the cache", WAIT, || async {
        !cache.join(b1.as_str()).exists()
    })
    .await;
    for kept in [&b2, &b3] {
        assert!(cache.join(kept.as_str()).is_dir(), "{kept} is wanted");
    }
    tests::wait_sessions_settled(&fleet.admin).await;
}
