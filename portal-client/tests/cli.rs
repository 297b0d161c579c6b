//! The `arcade` CLI as a user runs it: the real binary against a live broker and agent.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use protocol::api::{HostStatus, Session, SessionStatus};
use tests::{group_alive, wait_until, AgentOptions, TestAgent, TestBroker};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn arcade(url: &str, args: &[&str]) -> Out {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_arcade"))
        .args(args)
        .env("ARCADE_URL", url)
        .env_remove("ARCADE_API_KEY")
        .output()
        .await
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_a_live_broker() {
    let broker = TestBroker::start().await;
    let _agent = TestAgent::start(broker.agent_addr, AgentOptions::host("host-a")).await;
    let url = broker.url.clone();
    wait_until("the agent is online", Duration::from_secs(10), || {
        let url = url.clone();
        async move { arcade(&url, &["hosts"]).await.stdout.contains("online") }
    })
    .await;

    let games = arcade(&url, &["games"]).await;
    assert_eq!(games.code, 0, "{}", games.stderr);
    assert!(
        games.stdout.contains("GAME") && games.stdout.contains("sleeper"),
        "{}",
        games.stdout
    );

    // --json gives the API's JSON, options may follow the command.
    let started = arcade(&url, &["start", "sleeper", "--json"]).await;
    assert_eq!(started.code, 0, "{}", started.stderr);
    let s: Session = serde_json::from_str(&started.stdout).unwrap();
    assert_eq!(s.status, SessionStatus::Running);
    let pid = s.pid.unwrap();
    assert!(group_alive(pid));

    // The table for people.
    let human = arcade(&url, &["start", "sleeper", "--mode", "default"]).await;
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert!(
        human.stdout.contains("running") && human.stdout.contains("127.0.0.1:"),
        "{}",
        human.stdout
    );

    let list = arcade(&url, &["sessions", "--status", "running"]).await;
    assert_eq!(list.code, 0);
    assert!(
        list.stdout.contains(s.session_id.as_str()),
        "{}",
        list.stdout
    );
    assert_eq!(
        list.stdout
            .lines()
            .filter(|l| l.contains("running"))
            .count(),
        2,
        "{}",
        list.stdout
    );

    let drained = arcade(&url, &["drain", "host-a"]).await;
    assert_eq!(drained.code, 0, "{}", drained.stderr);
    let hosts = arcade(&url, &["hosts", "--json"]).await;
    let hosts: protocol::api::HostList = serde_json::from_str(&hosts.stdout).unwrap();
    assert_eq!(hosts.hosts[0].status, HostStatus::Draining);
    let refused = arcade(&url, &["start", "sleeper"]).await;
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("no_capacity"), "{}", refused.stderr);
    assert_eq!(arcade(&url, &["resume", "host-a"]).await.code, 0);

    let ended = arcade(&url, &["end", s.session_id.as_str(), "--json"]).await;
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    let e: Session = serde_json::from_str(&ended.stdout).unwrap();
    assert_eq!(e.status, SessionStatus::Ended);
    assert!(!group_alive(pid));

    // Failures: one line that says what went wrong, and a non-zero exit.
    let unknown = arcade(&url, &["start", "no-such-game"]).await;
    assert_ne!(unknown.code, 0);
    assert_eq!(
        unknown.stderr.trim().lines().count(),
        1,
        "{}",
        unknown.stderr
    );
    assert!(
        unknown.stderr.contains("no-such-game"),
        "{}",
        unknown.stderr
    );
    let missing = arcade(&url, &["end", "no-such-session"]).await;
    assert_ne!(missing.code, 0);
    assert!(missing.stderr.contains("not_found"), "{}", missing.stderr);
}

/// A start that chooses settings, names its player and limits its length, as a portal
/// operator types it; the player's sessions listed by name; a setting the game does not allow
/// refused on one line, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arcade_start_sets_settings_a_user_and_a_limit() {
    let broker = TestBroker::start().await;
    let _agent = TestAgent::start(broker.agent_addr, AgentOptions::host("host-a")).await;
    let url = broker.url.clone();
    let client = portal_client::Client::new(&url, None).unwrap();
    tests::wait_hosts_online(&client, 1).await;

    let started = arcade(
        &url,
        &[
            "start",
            "ga-style",
            "--set",
            "video-fps=30",
            "--user",
            "player-1",
            "--max-duration",
            "600",
            "--json",
        ],
    )
    .await;
    assert_eq!(started.code, 0, "{}", started.stderr);
    let s: Session = serde_json::from_str(&started.stdout).unwrap();
    assert_eq!(s.status, SessionStatus::Running);
    assert_eq!(s.settings["video-fps"], "30");
    assert_eq!(s.user_id.as_deref(), Some("player-1"));
    assert_eq!(s.max_duration_s, Some(600));
    let other = arcade(&url, &["start", "sleeper", "--user", "player-2", "--json"]).await;
    assert_eq!(other.code, 0, "{}", other.stderr);

    let mine = arcade(&url, &["sessions", "--user", "player-1"]).await;
    assert_eq!(mine.code, 0, "{}", mine.stderr);
    assert!(
        mine.stdout.contains(s.session_id.as_str()),
        "{}",
        mine.stdout
    );
    assert_eq!(
        mine.stdout
            .lines()
            .filter(|l| l.contains("running"))
            .count(),
        1,
        "{}",
        mine.stdout
    );

    let refused = arcade(&url, &["start", "ga-style", "--set", "video-fps=29"]).await;
    assert_ne!(refused.code, 0);
    assert_eq!(
        refused.stderr.trim().lines().count(),
        1,
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("bad_request") && refused.stderr.contains("video-fps"),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn an_unreachable_broker_is_one_clear_line() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let out = arcade(&url, &["sessions"]).await;
    assert_ne!(out.code, 0);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot reach the broker"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arcade_events_follows_the_stream() {
    use protocol::api::{Event, EventType};
    let broker = TestBroker::start().await;
    let _agent = TestAgent::start(broker.agent_addr, AgentOptions::host("host-e")).await;
    let url = broker.url.clone();
    wait_until("the agent is online", Duration::from_secs(10), || {
        let url = url.clone();
        async move { arcade(&url, &["hosts"]).await.stdout.contains("online") }
    })
    .await;
    // Following from the first event, only session types, two of them, as JSON lines.
    let follower = tokio::spawn({
        let url = url.clone();
        async move {
            let args = [
                "events",
                "--after",
                "0",
                "--types",
                "session.created,session.running",
                "--count",
                "2",
                "--json",
            ];
            tokio::time::timeout(Duration::from_secs(20), arcade(&url, &args))
                .await
                .expect("arcade events exits after --count events")
        }
    });
    let started = arcade(&url, &["start", "sleeper", "--json"]).await;
    assert_eq!(started.code, 0, "{}", started.stderr);
    let s: Session = serde_json::from_str(&started.stdout).unwrap();
    let out = follower.await.unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events: Vec<Event> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<EventType> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventType::SessionCreated, EventType::SessionRunning]
    );
    assert!(events
        .iter()
        .all(|e| e.session.as_ref().unwrap().session_id == s.session_id));

    // For people: a line per event, from the first.
    let text = arcade(&url, &["events", "--after", "0", "--count", "1"]).await;
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stdout.starts_with("1 ") && text.stdout.contains("host.online host-e online by agent"),
        "{}",
        text.stdout
    );
    let bad = arcade(&url, &["events", "--types", "session.teleported"]).await;
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("unknown event type"), "{}", bad.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arcade_logs_prints_a_games_output_and_follows_it_to_the_end() {
    let broker = TestBroker::start().await;
    let _agent = TestAgent::start(broker.agent_addr, AgentOptions::host("host-o")).await;
    let url = broker.url.clone();
    wait_until("the agent is online", Duration::from_secs(10), || {
        let url = url.clone();
        async move { arcade(&url, &["hosts"]).await.stdout.contains("online") }
    })
    .await;
    let started = arcade(&url, &["start", "chatty", "--json"]).await;
    assert_eq!(started.code, 0, "{}", started.stderr);
    let s: Session = serde_json::from_str(&started.stdout).unwrap();
    let id = s.session_id.to_string();
    wait_until(
        "the game has printed everything",
        Duration::from_secs(10),
        || {
            let (url, id) = (url.clone(), id.clone());
            async move { arcade(&url, &["logs", &id, "--tail", "1"]).await.stdout == "ready\n" }
        },
    )
    .await;
    let two = arcade(&url, &["logs", &id, "--tail", "2"]).await;
    assert_eq!((two.code, two.stdout.as_str()), (0, "line 20000\nready\n"));

    // --follow prints the tail, then what comes, and exits once the session is over.
    let mut follower = tokio::process::Command::new(env!("CARGO_BIN_EXE_arcade"))
        .args(["logs", &id, "--tail", "1", "--follow"])
        .env("ARCADE_URL", &url)
        .env_remove("ARCADE_API_KEY")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("a line within 10 s")
            .unwrap()
    };
    assert_eq!(next_line().await.as_deref(), Some("ready"));
    tests::greeting(s.port.unwrap()).await.unwrap();
    assert_eq!(next_line().await.as_deref(), Some("greeted a player"));
    let ended = arcade(&url, &["end", &id]).await;
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    assert_eq!(next_line().await, None, "the output ends with the session");
    let status = tokio::time::timeout(Duration::from_secs(10), follower.wait())
        .await
        .expect("arcade logs --follow exits when the session ends")
        .unwrap();
    assert!(status.success());

    let none = arcade(&url, &["logs", "no-such-session"]).await;
    assert_eq!(none.code, 1);
    assert!(none.stderr.contains("not_found"), "{}", none.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arcade_build_push_prints_the_sha256_and_uploads_the_file() {
    let broker = TestBroker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("game.bin");
    let data: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(&file, &data).unwrap();
    let want: String = ring::digest::digest(&ring::digest::SHA256, &data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    let pushed = arcade(&broker.url, &["build", "push", file.to_str().unwrap()]).await;
    assert_eq!(pushed.code, 0, "{}", pushed.stderr);
    assert_eq!(pushed.stderr.lines().next(), Some(want.as_str()));
    assert!(
        pushed
            .stdout
            .starts_with(&format!("stored {want} (1200000 bytes, file)")),
        "{}",
        pushed.stdout
    );
    let again = arcade(&broker.url, &["build", "push", file.to_str().unwrap()]).await;
    assert!(
        again.stdout.starts_with("already stored:"),
        "{}",
        again.stdout
    );
    let listed = arcade(&broker.url, &["builds"]).await;
    assert!(
        listed.stdout.contains("BUILD") && listed.stdout.contains(&want),
        "{}",
        listed.stdout
    );
    // The broker kept the very bytes.
    assert_eq!(std::fs::read(broker.build_store.join(&want)).unwrap(), data);
    let missing = arcade(&broker.url, &["build", "push", "/nonexistent/game.bin"]).await;
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("cannot read /nonexistent/game.bin"),
        "{}",
        missing.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arcade_game_set_rollback_and_delete_manage_a_central_game() {
    let broker = TestBroker::start().await;
    let _agent = TestAgent::start(broker.agent_addr, AgentOptions::host("host-a")).await;
    let client = portal_client::Client::new(&broker.url, None).unwrap();
    tests::wait_hosts_online(&client, 1).await;
    let one = tests::builds::upload(&client, &tests::builds::game_build("one")).await;
    let two = tests::builds::upload(&client, &tests::builds::game_build("two")).await;
    let dir = tempfile::tempdir().unwrap();
    let entry = dir.path().join("arena.toml");
    std::fs::write(
        &entry,
        "command = \"{build}/bin/start\"\nready = { tcp = true }\nready_timeout = 10\n",
    )
    .unwrap();

    let set = arcade(
        &broker.url,
        &[
            "game",
            "set",
            "arena",
            "--build",
            one.as_str(),
            "--from-file",
            entry.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(set.code, 0, "{}", set.stderr);
    assert!(
        set.stdout.contains(&format!("build {one}")),
        "{}",
        set.stdout
    );
    // The entry kept, a new build rolled out as asked.
    let changed = arcade(
        &broker.url,
        &[
            "game",
            "set",
            "arena",
            "--build",
            two.as_str(),
            "--canary-hosts",
            "0",
        ],
    )
    .await;
    assert_eq!(changed.code, 0, "{}", changed.stderr);
    assert!(
        changed.stdout.contains(&format!("previous build {one}")),
        "{}",
        changed.stdout
    );
    assert!(
        changed.stdout.contains("rollout rolling"),
        "{}",
        changed.stdout
    );
    let game = protocol::GameId::new("arena").unwrap();
    let g = client.central_game(&game).await.unwrap();
    assert_eq!(g.entry.command, "{build}/bin/start");
    assert_eq!(g.rollout.unwrap().spec.canary_hosts, 0);
    wait_until(
        "the host offers the new build",
        Duration::from_secs(20),
        || async {
            arcade(&broker.url, &["games"])
                .await
                .stdout
                .contains(&format!("central {}", &two.as_str()[..12]))
        },
    )
    .await;

    let back = arcade(&broker.url, &["game", "rollback", "arena"]).await;
    assert_eq!(back.code, 0, "{}", back.stderr);
    assert!(
        back.stdout.contains(&format!("build {one}")),
        "{}",
        back.stdout
    );
    let bad = arcade(
        &broker.url,
        &["game", "set", "arena", "--build", "not-a-sha"],
    )
    .await;
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("64 lowercase hex digits"),
        "{}",
        bad.stderr
    );
    let gone = arcade(&broker.url, &["game", "delete", "arena"]).await;
    assert_eq!(gone.code, 0, "{}", gone.stderr);
    assert_eq!(gone.stdout, "game arena removed\n");
}
