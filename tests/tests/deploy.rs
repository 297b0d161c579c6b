//! What operators install (issue 29), checked as their tools check it: the systemd units of
//! `deploy/systemd` verified by `systemd-analyze verify` against the binaries built here, and
//! `install.sh` placing binaries, units and settings under a root of the test's own.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's `deploy/` directory.
fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The directory of the built binaries (`arcade-broker`, `arcade-agent`), beside the test
/// game; `None` (outside CI) when they are not built.
fn binaries() -> Option<PathBuf> {
    let dir = tests::test_game().parent().unwrap().to_owned();
    let built = ["arcade-broker", "arcade-agent"]
        .iter()
        .all(|b| dir.join(b).is_file());
    if !built {
        assert!(
            std::env::var_os("CI").is_none(),
            "the binaries are missing: CI runs cargo test --workspace, which builds them"
        );
        eprintln!("skipped: arcade-broker and arcade-agent are not built");
        return None;
    }
    Some(dir)
}

/// The first of `paths` that is installed, or `None` (outside CI) when none is: `scripts/test`
/// installs each tool these tests use.
fn installed(paths: &[&str], what: &str) -> Option<PathBuf> {
    let found = paths.iter().map(PathBuf::from).find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is missing: scripts/test installs it"
        );
        eprintln!("skipped: no {what}");
    }
    found
}

fn systemd_analyze() -> Option<PathBuf> {
    installed(
        &["/usr/bin/systemd-analyze", "/bin/systemd-analyze"],
        "systemd-analyze",
    )
}

#[test]
fn the_systemd_units_verify_and_install() {
    let (Some(bin), Some(analyze)) = (binaries(), systemd_analyze()) else {
        return;
    };
    let units = deploy().join("systemd");
    let tmp = tempfile::tempdir().unwrap();
    // The units as installed, their programs where this build put them.
    let mut checked = Vec::new();
    for role in ["broker", "agent"] {
        let name = format!("arcade-{role}.service");
        let text = std::fs::read_to_string(units.join(&name)).unwrap();
        let text = text.replace(
            "ExecStart=/usr/local/bin/",
            &format!("ExecStart={}/", bin.display()),
        );
        let path = tmp.path().join(&name);
        std::fs::write(&path, text).unwrap();
        checked.push(path);
    }
    let out = Command::new(&analyze)
        .arg("verify")
        .args(&checked)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");

    // What the units promise: the agent's games outlive it; the broker has time to hand over.
    let agent = std::fs::read_to_string(units.join("arcade-agent.service")).unwrap();
    assert!(agent.lines().any(|l| l == "KillMode=process"), "{agent}");
    let broker = std::fs::read_to_string(units.join("arcade-broker.service")).unwrap();
    for line in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "TimeoutStopSec=45s",
    ] {
        assert!(broker.lines().any(|l| l == line), "{line} in {broker}");
    }

    // install.sh under a root of our own: binaries, units, settings only readable by root.
    let root = tmp.path().join("root");
    let status = Command::new(units.join("install.sh"))
        .arg("--root")
        .arg(&root)
        .arg("--bin")
        .arg(&bin)
        .args(["broker", "agent"])
        .status()
        .unwrap();
    assert!(status.success());
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(root.join(p))
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("usr/local/bin/arcade-broker"), 0o755);
    assert_eq!(mode("usr/local/bin/arcade-agent"), 0o755);
    assert_eq!(mode("etc/systemd/system/arcade-agent.service"), 0o644);
    assert_eq!(mode("etc/arcade/broker.env"), 0o600, "it holds keys");
    // Settings already there are kept.
    std::fs::write(root.join("etc/arcade/agent.env"), "ARCADE_CATALOG=/mine\n").unwrap();
    let again = Command::new(units.join("install.sh"))
        .arg("--root")
        .arg(&root)
        .arg("--bin")
        .arg(&bin)
        .arg("agent")
        .status()
        .unwrap();
    assert!(again.success());
    assert_eq!(
        std::fs::read_to_string(root.join("etc/arcade/agent.env")).unwrap(),
        "ARCADE_CATALOG=/mine\n"
    );
}

fn kubectl() -> Option<PathBuf> {
    installed(&["/usr/bin/kubectl", "/usr/local/bin/kubectl"], "kubectl")
}

/// Where `scripts/test` installs kubernetes-validate (with its schemas).
fn kubernetes_validate() -> Option<PathBuf> {
    let venv =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/venv/bin/kubernetes-validate");
    installed(
        &[venv.to_str()?],
        "kubernetes-validate in target/tools/venv",
    )
}

#[test]
fn the_kubernetes_manifests_render_and_validate() {
    let (Some(kubectl), Some(validate)) = (kubectl(), kubernetes_validate()) else {
        return;
    };
    let out = Command::new(&kubectl)
        .arg("kustomize")
        .arg(deploy().join("k8s/overlays/example"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
    let rendered = String::from_utf8(out.stdout).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("arcade.yaml");
    std::fs::write(&file, &rendered).unwrap();
    // Every object against Kubernetes' own schemas, unknown fields refused.
    let checked = Command::new(&validate)
        .args(["--strict", "--quiet", "-k", "1.31.0"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // What the issue asks of them, as rendered.
    let kinds: Vec<&str> = rendered
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    for kind in [
        "Deployment",
        "DaemonSet",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Secret",
        "ConfigMap",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    for wanted in [
        "replicas: 3",
        "path: /readyz",
        "path: /healthz",
        "preStop:",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "minAvailable: 2",
        "hostNetwork: true",
        "clusterIP: None",
        "port: 7070",
        "image: registry.example.com/arcade-broker:0.1.0",
        "name: ARCADE_GPUS",
        "cidr: 10.20.0.0/16",
        "namespace: arcade",
    ] {
        assert!(rendered.contains(wanted), "no {wanted:?} in:\n{rendered}");
    }
    // Keys and tokens only in Secrets (encoded), never in plain sight.
    assert!(!rendered.contains("CHANGE-ME-agent-token"), "{rendered}");
}

/// The images `scripts/test-deploy` built (`ARCADE_IMAGE_TAG`, with `DOCKER_HOST` naming its
/// daemon), run as an operator would: on the host's network, configured by `ARCADE_*`.
mod images {
    use std::process::Command;
    use std::time::Duration;

    use portal_client::Client;
    use protocol::api::SessionStatus;

    /// Containers of this test, removed however it ends.
    struct Containers(Vec<String>);

    impl Drop for Containers {
        fn drop(&mut self) {
            for name in &self.0 {
                let _ = Command::new("docker").args(["rm", "-f", name]).output();
            }
        }
    }

    fn docker(args: &[&str]) -> String {
        let out = Command::new("docker").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_a_game_and_refuse_dev() {
        let Ok(tag) = std::env::var("ARCADE_IMAGE_TAG") else {
            eprintln!("skipped: scripts/test-deploy runs this against the images it builds");
            return;
        };
        let (broker, agent) = (
            format!("arcade-broker:{tag}"),
            format!("arcade-agent:{tag}"),
        );
        let id = std::process::id();
        let names = (format!("arcade-b-{id}"), format!("arcade-a-{id}"));
        let _containers = Containers(vec![names.0.clone(), names.1.clone()]);
        let http = tests::mariadb::free_port();
        let link = tests::mariadb::free_port();
        let catalog = tempfile::tempdir().unwrap();
        std::fs::write(
            catalog.path().join("catalog.toml"),
            "[games.sleeper]\ncommand = \"/bin/sleep\"\nargs = [\"3600\"]\n",
        )
        .unwrap();
        let range = tests::fresh_port_range();
        let started = std::time::Instant::now();
        docker(&[
            "run",
            "-d",
            "--name",
            &names.0,
            "--network",
            "host",
            "-e",
            &format!("ARCADE_HTTP=127.0.0.1:{http}"),
            "-e",
            &format!("ARCADE_AGENT_LISTEN=127.0.0.1:{link}"),
            &broker,
        ]);
        docker(&[
            "run",
            "-d",
            "--name",
            &names.1,
            "--network",
            "host",
            "-v",
            &format!("{}:/etc/arcade:ro", catalog.path().display()),
            "-e",
            &format!("ARCADE_BROKER=127.0.0.1:{link}"),
            "-e",
            "ARCADE_HOST_ID=image-host",
            "-e",
            &format!("ARCADE_PORT_RANGE={}-{}", range.lo, range.hi),
            &agent,
        ]);
        let client = Client::new(&format!("http://127.0.0.1:{http}"), None).unwrap();
        tests::wait_hosts_online(&client, 1).await;
        let s = client
            .start_session(&tests::start("sleeper"))
            .await
            .unwrap();
        println!("first game {:?} after docker run", started.elapsed());
        assert_eq!(s.status, SessionStatus::Running);
        let ended = client.end_session(&s.session_id).await.unwrap();
        assert_eq!(ended.status, SessionStatus::Ended);
        // The image's health check says healthy; it runs as its own user.
        tests::wait_until(
            "the broker container is healthy",
            Duration::from_secs(30),
            || {
                let name = names.0.clone();
                async move {
                    docker(&["inspect", &name, "--format", "{{.State.Health.Status}}"]) == "healthy"
                }
            },
        )
        .await;
        assert_eq!(
            docker(&["inspect", &broker, "--format", "{{.Config.User}}"]),
            "10001:10001"
        );
        // Built without the --dev agent: it says so and exits.
        let dev = Command::new("docker")
            .args(["run", "--rm", "--network", "host", &broker, "--dev"])
            .output()
            .unwrap();
        assert!(!dev.status.success());
        assert!(
            String::from_utf8_lossy(&dev.stderr).contains("built without the dev feature"),
            "{}",
            String::from_utf8_lossy(&dev.stderr)
        );
    }

    /// The compose project of a test, taken down (volumes too) however it ends.
    struct Project {
        file: std::path::PathBuf,
        name: String,
        tag: String,
    }

    impl Project {
        fn compose(&self, args: &[&str]) -> std::process::Output {
            Command::new("docker-compose")
                .arg("-p")
                .arg(&self.name)
                .arg("-f")
                .arg(&self.file)
                .args(args)
                .env("ARCADE_TAG", &self.tag)
                .output()
                .unwrap()
        }
    }

    impl Drop for Project {
        fn drop(&mut self) {
            let _ = self.compose(&["down", "-v", "--timeout", "10"]);
        }
    }

    /// A start through the load balancer as a careful portal makes it: under one
    /// `Idempotency-Key`, again after each 503 (waiting its `Retry-After`) or broken
    /// connection, for at most a minute.
    async fn start_retrying(client: &Client, key: &str) -> protocol::api::Session {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match client
                .start_session_idempotent(&tests::start("sleeper"), key)
                .await
            {
                Ok(s) => return s,
                Err(e) if std::time::Instant::now() < deadline => {
                    let wait = match &e {
                        portal_client::ClientError::Api {
                            status: 503,
                            retry_after,
                            ..
                        } => retry_after.unwrap_or(1),
                        portal_client::ClientError::Transport { .. } => 1,
                        other => panic!("start {key}: {other}"),
                    };
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
                Err(e) => panic!("start {key} still failing after a minute: {e}"),
            }
        }
    }

    /// The same for an end.
    async fn end_retrying(client: &Client, id: &protocol::SessionId) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match client.end_session(id).await {
                Ok(s) => {
                    assert_eq!(s.status, SessionStatus::Ended);
                    return;
                }
                Err(
                    portal_client::ClientError::Api { status: 503, .. }
                    | portal_client::ClientError::Transport { .. },
                ) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => panic!("end {id}: {e}"),
            }
        }
    }

    /// deploy/compose's cluster (3 brokers behind HAProxy, 3 NATS nodes, MariaDB, 2 agents):
    /// 20 games started and ended through HAProxy by 4 clients while a broker and a NATS node
    /// stop; none fails for a client that honours Retry-After.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_compose_cluster_serves_through_a_broker_and_a_nats_stop() {
        let Ok(tag) = std::env::var("ARCADE_IMAGE_TAG") else {
            eprintln!("skipped: scripts/test-deploy runs this against the images it builds");
            return;
        };
        let project = Project {
            file: super::deploy().join("compose/docker-compose.yml"),
            name: format!("arcade{}", std::process::id()),
            tag,
        };
        let started = std::time::Instant::now();
        let up = project.compose(&["up", "-d"]);
        assert!(
            up.status.success(),
            "{}",
            String::from_utf8_lossy(&up.stderr)
        );
        let client = Client::new("http://127.0.0.1:18080", None).unwrap();
        tests::wait_until(
            "two agents online through HAProxy",
            Duration::from_secs(120),
            || {
                let client = client.clone();
                async move {
                    client.hosts().await.is_ok_and(|h| {
                        h.hosts
                            .iter()
                            .filter(|h| h.status == protocol::api::HostStatus::Online)
                            .count()
                            == 2
                    })
                }
            },
        )
        .await;
        let first = start_retrying(&client, "first").await;
        println!("first game {:?} after docker-compose up", started.elapsed());
        end_retrying(&client, &first.session_id).await;
        let id = std::process::id();
        let clients = (0..4).map(|c| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..5 {
                    let s = start_retrying(&client, &format!("c{c}-{i}-{id}")).await;
                    assert_eq!(s.status, SessionStatus::Running);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    end_retrying(&client, &s.session_id).await;
                }
            })
        });
        let clients: Vec<_> = clients.collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        for service in ["broker-2", "nats-2"] {
            let stop = project.compose(&["stop", "--timeout", "30", service]);
            assert!(
                stop.status.success(),
                "{}",
                String::from_utf8_lossy(&stop.stderr)
            );
        }
        for c in clients {
            c.await.unwrap();
        }
        // Every session that was started is over; nothing runs.
        let sessions = client
            .list_sessions(&protocol::api::SessionQuery {
                limit: Some(100),
                ..Default::default()
            })
            .await
            .unwrap()
            .sessions;
        assert!(sessions.len() >= 21, "{}", sessions.len());
        assert!(
            sessions.iter().all(|s| s.status == SessionStatus::Ended),
            "{sessions:?}"
        );
    }
}
