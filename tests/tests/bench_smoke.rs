//! Short runs of every `arcade-bench` mode, so the benchmarks cannot rot. Each asserts only
//! that the mode completes and that its own sanity checks pass (figures present, finite, p50
//! no more than p99, no errors): never a speed, which belongs to the benchmarks themselves
//! (BENCHMARKS.md), not to tests on a shared machine.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const BENCH: &str = env!("CARGO_BIN_EXE_arcade-bench");

/// Runs `arcade-bench ARGS` to completion (bounded) and returns its output, failing the test
/// with that output unless it exits successfully.
fn smoke(args: &[&str]) -> String {
    let started = Instant::now();
    let child = Command::new(BENCH)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start arcade-bench");
    // A bench that hangs fails the test rather than CI's whole run.
    let limit = Duration::from_secs(300);
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            std::thread::park_timeout(Duration::from_millis(200));
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    });
    let out = child.wait_with_output().expect("arcade-bench output");
    watchdog.thread().unpark();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "arcade-bench {args:?} failed after {:?} ({}):\n{text}",
        started.elapsed(),
        out.status
    );
    text
}

/// Fails unless the bench's output names each of `figures`.
fn assert_shows(out: &str, figures: &[&str]) {
    for figure in figures {
        assert!(out.contains(figure), "no {figure:?} in:\n{out}");
    }
}

#[test]
fn pairs_smoke_completes_with_sane_figures() {
    let out = smoke(&["pairs", "--smoke"]);
    assert_shows(
        &out,
        &[
            "floor: spawn of the game (posix_spawn)",
            "floor: spawn+kill+reap",
            "start, 1 client",
            "end, 1 client",
            "0 errors",
        ],
    );
}

#[test]
fn pairs_smoke_against_mariadb_completes_with_sane_figures() {
    if tests::mariadb::server_program().is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "MariaDB is required in CI"
        );
        return;
    }
    let out = smoke(&["pairs", "--smoke", "--mariadb"]);
    assert_shows(
        &out,
        &["store: mysql", "floor: database commit", "0 errors"],
    );
}

#[test]
fn galera_smoke_completes_with_sane_figures() {
    if !tests::galera::installed() {
        assert!(std::env::var_os("CI").is_none(), "Galera is required in CI");
        return;
    }
    let out = smoke(&["galera", "--smoke"]);
    assert_shows(
        &out,
        &[
            "Galera: commit of one row (floor)",
            "single MariaDB: start",
            "Galera: start",
            "pair by pair",
        ],
    );
}

#[test]
fn events_smoke_completes_with_sane_figures() {
    let out = smoke(&["events", "--smoke"]);
    assert_shows(
        &out,
        &[
            "start, 5 streams open",
            "game exit to session.ended on a stream",
            "the broker's",
            "the readers' own CPU",
            "errors: 0",
        ],
    );
}

#[test]
fn ready_smoke_completes_with_sane_figures() {
    let out = smoke(&["ready", "--smoke"]);
    assert_shows(
        &out,
        &[
            "ready check: game connectable (first try)",
            "no check: game connectable (client retries)",
            "pool claim: game connectable (first try)",
            "store: claim of a ready game",
            "pool hits: 3 of 3 starts",
            "errors: 0",
        ],
    );
}

#[test]
fn players_smoke_completes_with_sane_figures() {
    let out = smoke(&["players", "--smoke"]);
    assert_shows(
        &out,
        &[
            "GET a session: player token, seen before",
            "GET a session: fresh EdDSA token",
            "redeem a join token (HTTP)",
            "store: redeem a join token",
            "errors: 0",
        ],
    );
}

#[test]
fn replicas_smoke_completes_with_sane_figures() {
    if tests::mariadb::server_program().is_none() || tests::nats::server_program().is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "MariaDB and nats-server are required in CI"
        );
        return;
    }
    let out = smoke(&["replicas", "--smoke"]);
    assert_shows(
        &out,
        &[
            "floor: NATS request-reply",
            "floor: start, one broker alone on MariaDB",
            "store: an owner's insert with outcome, fenced",
            "start through another replica",
            "3 replicas",
            "errors: 0",
        ],
    );
}

#[test]
fn scale_smoke_completes_with_sane_figures() {
    let out = smoke(&["scale", "--smoke"]);
    assert_shows(
        &out,
        &[
            "100 agents registered",
            "hosts online at the broker: 100",
            "broker CPU",
            "broker RSS",
        ],
    );
}

#[test]
fn idle_agent_smoke_completes_with_sane_figures() {
    // The mode runs the real `arcade-agent` from beside `arcade-bench`; `cargo test
    // --workspace` builds it (the agent's own tests need it).
    let agent = PathBuf::from(BENCH).with_file_name("arcade-agent");
    if !agent.is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing: CI runs cargo test --workspace, which builds it",
            agent.display()
        );
        eprintln!("skipped: no {} (cargo build -p agent)", agent.display());
        return;
    }
    let out = smoke(&["idle-agent", "--smoke"]);
    assert_shows(&out, &["idle agent RSS"]);
}

#[test]
fn faults_smoke_completes_without_a_violation() {
    // The mode runs the real `arcade-broker` from beside `arcade-bench`; `cargo test
    // --workspace` builds it (the broker's own tests need it).
    let broker = PathBuf::from(BENCH).with_file_name("arcade-broker");
    if !broker.is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing: CI runs cargo test --workspace, which builds it",
            broker.display()
        );
        eprintln!("skipped: no {} (cargo build -p broker)", broker.display());
        return;
    }
    let out = smoke(&[
        "faults", "--smoke", "--fault", "stall", "--stall", "3", "--kill",
    ]);
    assert_shows(&out, &["run  1:", "violations: 0"]);
}

#[test]
fn builds_smoke_completes_with_sane_figures() {
    // The mode runs the real `arcade-broker` and `arcade-agent` from beside `arcade-bench`;
    // `cargo test --workspace` builds them (their own tests need them).
    let bins = ["arcade-broker", "arcade-agent"].map(|b| PathBuf::from(BENCH).with_file_name(b));
    if let Some(missing) = bins.iter().find(|b| !b.is_file()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing: CI runs cargo test --workspace, which builds it",
            missing.display()
        );
        eprintln!("skipped: no {}", missing.display());
        return;
    }
    let out = smoke(&["builds", "--smoke"]);
    assert_shows(
        &out,
        &[
            "floor: cp",
            "build reaches 2 agents",
            "broker peak RSS above idle",
            "agent peak RSS above idle",
        ],
    );
}

#[test]
fn usage_smoke_completes_with_sane_figures() {
    if tests::mariadb::server_program().is_none() && std::env::var_os("CI").is_none() {
        eprintln!("skipped: no MariaDB server program");
        return;
    }
    let out = smoke(&["usage", "--smoke"]);
    assert_shows(
        &out,
        &[
            "EXPLAIN of one month's usage by user",
            "floor: one session by id",
            "one month by user",
            "the query reads the index sessions_usage: true",
        ],
    );
}
