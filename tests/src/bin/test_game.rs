//! `arcade-test-game`: a game program for the end-to-end tests, whose behaviour each test
//! chooses with flags.
//!
//! - `--listen`: listen on 127.0.0.1:$ARCADE_PORT and greet each connection with
//!   `session $ARCADE_SESSION_ID\n`, then hold it open until the player closes it, as a game
//!   server holds its players' streams (tests of idle timeouts);
//! - `--exit-after-ms N` and `--exit-code C`: exit with C after N ms;
//! - `--ignore-term`: survive SIGTERM (only SIGKILL ends it);
//! - `--fork`: start a copy of itself in the same process group (without `--fork`) and exit
//!   at once, as a launcher does;
//! - `--config PATH`: print the path (checked by tests through the log);
//! - `--listen-after-ms N`: do everything else N ms late: listen, print `ready`, touch (tests of
//!   readiness);
//! - `--touch PATH`: create PATH once ready;
//! - `--join`: with `--listen`, after the greeting read one line from the player, the join
//!   token, redeem it as a game does (`POST $ARCADE_JOIN_URL` with
//!   `Authorization: Bearer $ARCADE_GAME_KEY`) and answer `joined USER` or
//!   `refused STATUS CODE`;
//! - `--join-env-dir DIR`: write `DIR/$ARCADE_SESSION_ID.env` with its `ARCADE_JOIN_URL` and
//!   `ARCADE_GAME_KEY` (tests that redeem as the game would, from anywhere);
//! - `--gpu-env-dir DIR`: write `DIR/$ARCADE_SESSION_ID.gpu` with its `CUDA_VISIBLE_DEVICES`,
//!   `NVIDIA_VISIBLE_DEVICES` and the value of `--gpu-arg` (`{gpu}` in tests of GPUs);
//! - `--greet-file PATH`: with `--listen`, greet with `session $ARCADE_SESSION_ID`, a space
//!   and PATH's first line (a central game's test reads its greeting from its build);
//! - `--print-lines N`: print `line 1` to `line N` at start, every tenth to stderr (tests of
//!   `GET /v1/sessions/{id}/logs`); with `--listen`, each connection is also logged as
//!   `greeted a player`.
//!
//! It prints `ready` once its SIGTERM handler is in place (and it listens, with `--listen`).
//! Without `--ignore-term`, SIGTERM makes it exit with status 0.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if has("--fork") {
        let rest: Vec<&String> = args.iter().filter(|a| *a != "--fork").collect();
        let exe = std::env::current_exe().expect("current exe");
        let child = std::process::Command::new(exe)
            .args(rest)
            .spawn()
            .expect("spawn the game");
        println!("launcher: started the game as pid {}", child.id());
        std::process::exit(0);
    }
    if let Some(c) = value("--config") {
        println!("config: {c}");
    }
    let exit_after = value("--exit-after-ms").map(|v| v.parse::<u64>().expect("--exit-after-ms N"));
    let exit_code: i32 = value("--exit-code").map_or(0, |v| v.parse().expect("--exit-code C"));
    if let Some(n) = value("--print-lines") {
        let n: u32 = n.parse().expect("--print-lines N");
        for i in 1..=n {
            if i % 10 == 0 {
                eprintln!("line {i}");
            } else {
                println!("line {i}");
            }
        }
    }
    let ignore_term = has("--ignore-term");
    let listen = has("--listen");
    let session = std::env::var("ARCADE_SESSION_ID").unwrap_or_default();
    let port: u16 = std::env::var("ARCADE_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);

    let late = value("--listen-after-ms").map(|v| v.parse::<u64>().expect("--listen-after-ms N"));
    let touch = value("--touch");
    let join = has("--join");
    let greeting = match value("--greet-file") {
        Some(path) => {
            let text = std::fs::read_to_string(&path).expect("--greet-file PATH");
            format!(
                "session {session} {}\n",
                text.lines().next().unwrap_or_default()
            )
        }
        None => format!("session {session}\n"),
    };
    if let Some(dir) = value("--gpu-env-dir") {
        let env = |k: &str| std::env::var(k).unwrap_or_default();
        std::fs::write(
            std::path::Path::new(&dir).join(format!("{session}.gpu")),
            format!(
                "CUDA_VISIBLE_DEVICES={}\nNVIDIA_VISIBLE_DEVICES={}\nARG={}\n",
                env("CUDA_VISIBLE_DEVICES"),
                env("NVIDIA_VISIBLE_DEVICES"),
                value("--gpu-arg").unwrap_or_default()
            ),
        )
        .expect("write the GPU env");
    }
    if let Some(dir) = value("--join-env-dir") {
        let env = |k: &str| std::env::var(k).unwrap_or_default();
        std::fs::write(
            std::path::Path::new(&dir).join(format!("{session}.env")),
            format!(
                "ARCADE_JOIN_URL={}\nARCADE_GAME_KEY={}\n",
                env("ARCADE_JOIN_URL"),
                env("ARCADE_GAME_KEY")
            ),
        )
        .expect("write the join env");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let code = rt.block_on(async move {
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        if let Some(ms) = late {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let listener = if listen {
            Some(
                tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .expect("listen on ARCADE_PORT"),
            )
        } else {
            None
        };
        let exit_timer = async {
            match exit_after {
                Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(exit_timer);
        println!("ready");
        if let Some(path) = &touch {
            std::fs::write(path, "ready\n").expect("touch");
        }
        loop {
            tokio::select! {
                () = &mut exit_timer => return exit_code,
                _ = term.recv() => {
                    if !ignore_term {
                        return 0;
                    }
                    println!("ignoring SIGTERM");
                }
                conn = async {
                    match &listener {
                        Some(l) => l.accept().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Ok((mut s, _)) = conn {
                        println!("greeted a player");
                        let _ = s.write_all(greeting.as_bytes()).await;
                        tokio::spawn(async move {
                            if join {
                                // A connect that sends nothing (a readiness probe) redeems
                                // nothing.
                                let token = read_line(&mut s).await;
                                if !token.trim().is_empty() {
                                    let answer = redeem(token.trim()).await;
                                    let _ = s.write_all(format!("{answer}\n").as_bytes()).await;
                                }
                            }
                            let mut buf = [0u8; 256];
                            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                        });
                    }
                }
            }
        }
    });
    std::process::exit(code);
}

/// One line from the player, at most 256 bytes.
async fn read_line(s: &mut tokio::net::TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 256 && matches!(s.read(&mut byte).await, Ok(1)) && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// Redeems `token` as a game does; what to tell the player.
async fn redeem(token: &str) -> String {
    let url = std::env::var("ARCADE_JOIN_URL").unwrap_or_default();
    let key = std::env::var("ARCADE_GAME_KEY").unwrap_or_default();
    let answer = reqwest::Client::new()
        .post(url)
        .bearer_auth(key)
        .json(&serde_json::json!({ "token": token }))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    match answer {
        Ok(r) if r.status().is_success() => {
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            format!("joined {}", body["user_id"].as_str().unwrap_or("-"))
        }
        Ok(r) => {
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            format!(
                "refused {status} {}",
                body["error"]["code"].as_str().unwrap_or("-")
            )
        }
        Err(e) => format!("refused 0 {e}"),
    }
}
