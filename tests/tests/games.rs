//! Central games through the real HTTP server (issue 27): a catalog entry set with its build,
//! checked as a host checks its own, versioned under `If-Match`, rolled back, listed beside
//! the hosts' games, and keeping its builds from removal.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use protocol::api::{CentralGame, GameList, GameSource};
use serde_json::json;
use tests::{keys, BrokerOptions, TestBroker};

fn sha256(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

struct Api {
    broker: TestBroker,
    http: reqwest::Client,
}

impl Api {
    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Option<String>, String) {
        let r = req.bearer_auth(keys::ADMIN).send().await.unwrap();
        let etag = r
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_owned());
        (r.status().as_u16(), etag, r.text().await.unwrap())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.broker.url)
    }

    async fn build(&self, data: &[u8]) -> String {
        let id = sha256(data);
        let (status, _, body) = self
            .send(
                self.http
                    .put(self.url(&format!("/v1/builds/{id}")))
                    .body(data.to_vec()),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        id
    }

    async fn put(
        &self,
        game: &str,
        body: serde_json::Value,
        if_match: Option<&str>,
    ) -> (u16, Option<String>, String) {
        let mut req = self
            .http
            .put(self.url(&format!("/v1/games/{game}")))
            .json(&body);
        if let Some(m) = if_match {
            req = req.header("If-Match", m);
        }
        self.send(req).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_central_game_is_set_checked_versioned_rolled_back_and_removed() {
    let broker = TestBroker::start_with(BrokerOptions {
        api_keys: vec![
            format!("admin:{}", keys::ADMIN),
            format!("portal:{}", keys::PORTAL),
        ],
        ..Default::default()
    })
    .await;
    let api = Api {
        broker,
        http: reqwest::Client::new(),
    };
    let b1 = api.build(b"#!/bin/sh\necho one\n").await;
    let b2 = api.build(b"#!/bin/sh\necho two\n").await;
    let entry = |build: &str| {
        json!({
            "build": build,
            "command": "{build}/bin/neverball",
            "args": ["--port", "{port}"],
            "modes": ["normal", "hard"],
            "ready": {"tcp": true},
        })
    };

    // Set: a new game, with its version as its ETag.
    let (status, etag, body) = api.put("neverball", entry(&b1), None).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(etag.as_deref(), Some("\"1\""));
    let g: CentralGame = serde_json::from_str(&body).unwrap();
    assert_eq!((g.build.as_str(), g.previous_build), (b1.as_str(), None));
    assert_eq!(g.entry.modes, ["normal", "hard"]);
    assert_eq!(g.entry.command, "{build}/bin/neverball");

    // Refused as a host would refuse it, naming why; an unknown build; no build.
    for (body, says) in [
        (
            json!({"build": b1, "command": "/x", "args": ["{nope}"]}),
            "unknown placeholder",
        ),
        (
            json!({"build": b1, "command": "/x", "colour": "red"}),
            "unknown field",
        ),
        (
            json!({"build": b1, "command": "/x", "env": {"ARCADE_GAME_KEY": "x"}}),
            "env key",
        ),
        (
            json!({"build": sha256(b"never stored"), "command": "/x"}),
            "upload it first",
        ),
        (json!({"command": "/x"}), "is required: the sha256"),
        (
            json!({"build": b1, "command": "/x", "rollout": {"max_failures": 0}}),
            "max_failures must be at least 1",
        ),
        (
            json!({"build": b1, "command": "/x", "rollout": {"canary_hosts": -1}}),
            "expected u32",
        ),
        (
            json!({"build": b1, "command": "/x", "rollout": {"hold": 5}}),
            "unknown field `hold`",
        ),
    ] {
        let (status, _, text) = api.put("broken", body, None).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains(says), "{says}: {text}");
    }

    // A stale If-Match is 412; the current one writes. A new build keeps the old for rollback.
    let (status, _, _) = api.put("neverball", entry(&b2), Some("\"7\"")).await;
    assert_eq!(status, 412);
    let (status, etag, body) = api.put("neverball", entry(&b2), Some("\"1\"")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(etag.as_deref(), Some("\"2\""));
    let g: CentralGame = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            g.build.as_str(),
            g.previous_build.as_ref().map(|b| b.as_str())
        ),
        (b2.as_str(), Some(b1.as_str()))
    );

    // Listed beside the hosts' games (no host offers it yet), to a portal too.
    let list: GameList = api
        .http
        .get(api.url("/v1/games"))
        .bearer_auth(keys::PORTAL)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = list
        .games
        .iter()
        .find(|g| g.game_id.as_str() == "neverball")
        .unwrap();
    assert_eq!(
        (
            listed.source,
            listed.hosts,
            listed.build.as_ref().map(|b| b.as_str())
        ),
        (GameSource::Central, 0, Some(b2.as_str()))
    );
    assert_eq!(listed.modes, ["normal", "hard"]);

    // Each build names the game that holds it.
    let (_, _, text) = api
        .send(api.http.get(api.url(&format!("/v1/builds/{b1}"))))
        .await;
    let held: protocol::api::Build = serde_json::from_str(&text).unwrap();
    assert_eq!(held.games, [protocol::GameId::new("neverball").unwrap()]);

    // Neither build may be removed while the game holds it.
    for b in [&b1, &b2] {
        let (status, _, text) = api
            .send(api.http.delete(api.url(&format!("/v1/builds/{b}"))))
            .await;
        assert_eq!(status, 409, "{text}");
        assert!(text.contains("neverball"), "{text}");
    }

    // Rollback: back to b1 at once; b2 is now the previous.
    let (status, etag, body) = api
        .send(api.http.post(api.url("/v1/games/neverball/rollback")))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(etag.as_deref(), Some("\"3\""));
    let g: CentralGame = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            g.build.as_str(),
            g.previous_build.as_ref().map(|b| b.as_str())
        ),
        (b1.as_str(), Some(b2.as_str()))
    );
    let (status, _, _) = api
        .send(api.http.post(api.url("/v1/games/nothing/rollback")))
        .await;
    assert_eq!(status, 404);

    // Removed under its ETag; then its builds may go.
    let (status, _, _) = api
        .send(
            api.http
                .delete(api.url("/v1/games/neverball"))
                .header("If-Match", "\"2\""),
        )
        .await;
    assert_eq!(status, 412);
    let (status, _, _) = api
        .send(
            api.http
                .delete(api.url("/v1/games/neverball"))
                .header("If-Match", "\"3\""),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, _) = api.send(api.http.get(api.url("/v1/games/neverball"))).await;
    assert_eq!(status, 404);
    for b in [&b1, &b2] {
        let (status, _, text) = api
            .send(api.http.delete(api.url(&format!("/v1/builds/{b}"))))
            .await;
        assert_eq!(status, 200, "{text}");
    }
}
