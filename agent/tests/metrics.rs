//! The real `arcade-agent` with `--metrics 127.0.0.1:0`: it says where it listens, and its
//! `/metrics`, read by a Prometheus text parser, counts what happened to its games.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use portal_client::Client;
use tests::{wait_until, TestBroker};

const WAIT: Duration = Duration::from_secs(20);

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The samples of `/metrics`: (name, outcome label or "", value).
async fn scrape(url: &str) -> Vec<(String, String, f64)> {
    let res = reqwest::get(url).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let text = res.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("unexpected {other:?}"),
            };
            let outcome = s.labels.get("outcome").unwrap_or_default().to_owned();
            (s.metric, outcome, value)
        })
        .collect()
}

fn value(samples: &[(String, String, f64)], name: &str, outcome: &str) -> f64 {
    samples
        .iter()
        .find(|(n, o, _)| n == name && o == outcome)
        .map_or(0.0, |s| s.2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_its_counts_to_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    // Killing the agent leaves its games running: they end with the test, pass or fail.
    let _games = tests::Reaper::for_state_dir(&dir.path().join("state"));
    std::fs::write(
        dir.path().join("catalog.toml"),
        "[games.sleeper]\ncommand = \"/bin/sleep\"\nargs = [\"3600\"]\n\
         [games.broken]\ncommand = \"/nonexistent/arcade/game\"\n",
    )
    .unwrap();
    let broker = TestBroker::start().await;
    let log_path = dir.path().join("agent.log");
    let _agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_arcade-agent"))
            .args(["--broker", &broker.agent_addr.to_string()])
            .args([
                "--catalog",
                &dir.path().join("catalog.toml").display().to_string(),
            ])
            .args([
                "--host-id",
                "metered",
                "--stop-grace",
                "1",
                "--max-sessions",
                "4",
            ])
            .args(["--port-range", "31600-31609"])
            .args([
                "--state-dir",
                &dir.path().join("state").display().to_string(),
            ])
            .args(["--metrics", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
            .spawn()
            .unwrap(),
    );
    // It says where it listens (port 0 picks a free one).
    let mut url = String::new();
    wait_until("the agent names its metrics address", WAIT, || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(at) = log.find("serving metrics on http://") {
            let rest = &log[at + "serving metrics on ".len()..];
            url = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
        std::future::ready(!url.is_empty())
    })
    .await;
    let client = Client::new(&broker.url, None).unwrap();
    tests::wait_hosts_online(&client, 1).await;

    let before = scrape(&url).await;
    assert_eq!(value(&before, "arcade_agent_games_running", ""), 0.0);

    let a = client
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap();
    let _b = client
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap();
    let e = client
        .start_session(&tests::start("broken"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(502), "{e}");
    let during = scrape(&url).await;
    assert_eq!(value(&during, "arcade_agent_games_running", ""), 2.0);
    assert_eq!(
        value(&during, "arcade_agent_launches_total", "launched"),
        2.0
    );
    assert_eq!(
        value(&during, "arcade_agent_launches_total", "spawn_failed"),
        1.0
    );
    assert!(value(&during, "arcade_agent_state_writes_total", "ok") >= 3.0);

    client.end_session(&a.session_id).await.unwrap();
    let after = scrape(&url).await;
    assert_eq!(value(&after, "arcade_agent_games_running", ""), 1.0);
    assert_eq!(value(&after, "arcade_agent_stops_total", "terminated"), 1.0);
    assert_eq!(
        value(&after, "arcade_agent_state_writes_total", "error"),
        0.0
    );

    // Only /metrics is served.
    let other = reqwest::get(url.replace("/metrics", "/other"))
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 404);
}
