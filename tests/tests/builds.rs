//! Builds through the real HTTP server (issue 27): an upload is kept under its sha256 only
//! when its bytes hash to it and, for an archive, every entry is safe to unpack; it is read
//! back whole or by range, by an admin or an agent's token; nothing partial is ever visible.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::io::Write;
use std::time::Duration;

use protocol::api::{Build, BuildKind, BuildList};
use tests::{keys, BrokerOptions, TestBroker};

fn sha256(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A `.tar.gz` of `entries` (path, type, link target, content), written raw so that hostile
/// ones are possible.
fn archive(entries: &[(&str, tar::EntryType, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut tarred = tar::Builder::new(Vec::new());
    for (path, kind, link, content) in entries {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(*kind);
        h.set_size(content.len() as u64);
        h.set_mode(0o755);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_cksum();
        tarred.append(&h, *content).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tarred.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

/// 1 GiB of zeros, gzipped: 1,024 members of 1 MiB each, about 1 MiB in all.
fn bomb() -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 1 << 20]).unwrap();
    gz.finish().unwrap().repeat(1024)
}

struct Api {
    broker: TestBroker,
    http: reqwest::Client,
}

impl Api {
    async fn start(max_build_size: Option<u64>) -> Self {
        let broker = TestBroker::start_with(BrokerOptions {
            api_keys: vec![
                format!("admin:{}", keys::ADMIN),
                format!("portal:{}", keys::PORTAL),
            ],
            agent_token: Some(keys::AGENT.into()),
            max_build_size,
            ..Default::default()
        })
        .await;
        Self {
            broker,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.broker.url)
    }

    async fn put(&self, id: &str, body: Vec<u8>, key: &str) -> (u16, String) {
        let r = self
            .http
            .put(self.url(&format!("/v1/builds/{id}")))
            .bearer_auth(key)
            .body(body)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn get(&self, path: &str, key: &str, range: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(self.url(path)).bearer_auth(key);
        if let Some(r) = range {
            req = req.header("Range", r);
        }
        req.send().await.unwrap()
    }

    /// `PUT` of `body` with `Transfer-Encoding: chunked` over a raw connection (so its size
    /// is not announced): the answer's status.
    async fn put_chunked(&self, id: &str, body: &[u8]) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.broker.http_addr;
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "PUT /v1/builds/{id} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            keys::ADMIN
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        for chunk in body.chunks(1 << 20) {
            let sent = async {
                conn.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
                conn.write_all(chunk).await?;
                conn.write_all(b"\r\n").await
            };
            // The broker may answer and close before it has read the rest.
            if sent.await.is_err() {
                break;
            }
        }
        let _ = conn.write_all(b"0\r\n\r\n").await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        text.split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// Files in the build store but its spool.
    fn stored(&self) -> Vec<String> {
        std::fs::read_dir(&self.broker.build_store)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".incoming")
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_is_kept_under_its_sha256_and_read_back_whole_or_by_range() {
    let api = Api::start(None).await;
    let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let id = sha256(&data);

    let (status, body) = api.put(&id, data.clone(), keys::ADMIN).await;
    assert_eq!(status, 201, "{body}");
    let b: Build = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (b.build.as_str(), b.size, b.kind),
        (id.as_str(), 400_000, BuildKind::File)
    );
    // Again: stored before, nothing read.
    let (status, body) = api.put(&id, data.clone(), keys::ADMIN).await;
    assert_eq!(status, 200, "{body}");
    let listed: BuildList = api
        .get("/v1/builds", keys::ADMIN, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed.builds.len(), 1);

    // Whole, by an admin and by an agent's token.
    for key in [keys::ADMIN, keys::AGENT] {
        let r = api
            .get(&format!("/v1/builds/{id}/content"), key, None)
            .await;
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["accept-ranges"], "bytes");
        assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);
    }
    // A range: where a broken download resumes.
    let r = api
        .get(
            &format!("/v1/builds/{id}/content"),
            keys::AGENT,
            Some("bytes=399990-"),
        )
        .await;
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 399990-399999/400000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[399_990..]);
    let r = api
        .get(
            &format!("/v1/builds/{id}/content"),
            keys::ADMIN,
            Some("bytes=400000-"),
        )
        .await;
    assert_eq!(r.status().as_u16(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */400000");

    // The agent's token downloads and does nothing else; a portal cannot upload.
    let r = api.get("/v1/builds", keys::AGENT, None).await;
    assert_eq!(r.status().as_u16(), 403);
    let (status, _) = api.put(&sha256(b"x"), b"x".to_vec(), keys::PORTAL).await;
    assert_eq!(status, 403);

    // Removed: gone from the list, the store and the disk.
    let r = api
        .http
        .delete(api.url(&format!("/v1/builds/{id}")))
        .bearer_auth(keys::ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = api
        .get(&format!("/v1/builds/{id}"), keys::ADMIN, None)
        .await;
    assert_eq!(r.status().as_u16(), 404);
    assert!(api.stored().is_empty(), "{:?}", api.stored());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_hash_a_large_body_and_hostile_archives_keep_nothing() {
    let api = Api::start(Some(16 << 20)).await;
    use tar::EntryType as T;

    // Bytes that are not the named build.
    let (status, body) = api.put(&sha256(b"one"), b"two".to_vec(), keys::ADMIN).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("sha256"), "{body}");
    // Larger than --max-build-size: 413, announced or not.
    let big = vec![1u8; (16 << 20) + 1];
    let (status, _) = api.put(&sha256(&big), big.clone(), keys::ADMIN).await;
    assert_eq!(status, 413);
    // Chunked, its size unannounced: the broker stops reading past the limit.
    assert_eq!(api.put_chunked(&sha256(&big), &big).await, 413);

    // Archives that may not be unpacked are refused, naming the entry.
    for (upload, named) in [
        (
            archive(&[("../../etc/evil", T::Regular, None, b"x")]),
            "../../etc/evil",
        ),
        (
            archive(&[("game/x", T::Symlink, Some("../../../etc/passwd"), b"")]),
            "game/x",
        ),
        (archive(&[("game/dev", T::Block, None, b"")]), "game/dev"),
        (bomb(), "after its end"),
    ] {
        let (status, body) = api.put(&sha256(&upload), upload, keys::ADMIN).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains(named), "{named}: {body}");
    }

    // A good archive is one.
    let good = archive(&[
        ("game/", T::Directory, None, b""),
        ("game/run", T::Regular, None, b"#!/bin/sh\necho hi\n"),
    ]);
    let (status, body) = api.put(&sha256(&good), good.clone(), keys::ADMIN).await;
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("\"kind\":\"archive\""), "{body}");
    // Nothing of the refused ones is visible: one build listed, one file stored, an empty
    // spool.
    let listed: BuildList = api
        .get("/v1/builds", keys::ADMIN, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed.builds.len(), 1);
    assert_eq!(api.stored(), vec![sha256(&good)]);
    let spool = api.broker.build_store.join(".incoming");
    let parts: usize = std::fs::read_dir(&spool)
        .unwrap()
        .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(parts, 0);
}

/// Among replicas on MariaDB and NATS (JetStream): a build uploaded through one is served by
/// another, and a replica killed with `kill -9` mid-upload leaves nothing visible anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_past_the_brokers_limit_wait_their_turn() {
    use tokio::io::AsyncWriteExt;
    let api = Api::start(None).await;
    let addr = api.broker.http_addr;
    // Four uploads sent half-way, then held: the most a broker receives at once.
    let mut held = Vec::new();
    for n in 0..4u8 {
        let data = vec![n; 1 << 20];
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "PUT /v1/builds/{} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
             Content-Length: {}\r\n\r\n",
            sha256(&data),
            keys::ADMIN,
            data.len()
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(&data[..data.len() / 2]).await.unwrap();
        held.push(conn);
    }
    let spool = api.broker.build_store.join(".incoming");
    tests::wait_until(
        "four uploads are being received",
        Duration::from_secs(20),
        || async {
            let spooled = std::fs::read_dir(&spool)
                .into_iter()
                .flatten()
                .flatten()
                .flat_map(|owner| {
                    std::fs::read_dir(owner.path())
                        .into_iter()
                        .flatten()
                        .flatten()
                })
                .filter(|f| f.metadata().is_ok_and(|m| m.len() > 0))
                .count();
            spooled == 4
        },
    )
    .await;
    let fifth = b"the fifth build".to_vec();
    let id = sha256(&fifth);
    let r = api
        .http
        .put(api.url(&format!("/v1/builds/{id}")))
        .bearer_auth(keys::ADMIN)
        .body(fifth.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let body = r.text().await.unwrap();
    assert!(body.contains("\"too_many_uploads\""), "{body}");
    // One of them goes away: the fifth gets its turn.
    drop(held.pop());
    tests::wait_until(
        "the fifth upload is stored",
        Duration::from_secs(20),
        || async { api.put(&id, fifth.clone(), keys::ADMIN).await.0 == 201 },
    )
    .await;
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_builds_and_a_kill_9_mid_upload_leaves_nothing() {
    use tokio::io::AsyncWriteExt;
    let _turn = tests::cluster::TURN.lock().await;
    let Some(db) = tests::mariadb::database().await else {
        return;
    };
    let Some(nats) = tests::nats::NatsServer::start() else {
        return;
    };
    let (hb, nats_url) = (tests::cluster::HEARTBEAT_TIMEOUT, nats.url());
    let mut b1 = tests::cluster::Replica::up("b1", &db, &nats_url, hb).await;
    let b2 = tests::cluster::Replica::up("b2", &db, &nats_url, hb).await;
    let http = reqwest::Client::new();
    let data: Vec<u8> = (0..(6u32 << 20)).map(|i| (i % 251) as u8).collect();
    let id = sha256(&data);

    // Half of it sent to b1, which dies.
    let addr = b1.url().trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /v1/builds/{id} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        data.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&data[..data.len() / 2]).await.unwrap();
    conn.flush().await.unwrap();
    tests::wait_until("b1 spools the upload", Duration::from_secs(20), || {
        let spool = b1.build_store().join(".incoming/b1");
        async move {
            std::fs::read_dir(spool)
                .map(|d| d.flatten().any(|f| f.metadata().is_ok_and(|m| m.len() > 0)))
                .unwrap_or(false)
        }
    })
    .await;
    b1.kill9();
    drop(conn);
    for url in [b2.url()] {
        let r = http
            .get(format!("{url}/v1/builds/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
    }
    b1.restart(&db, &nats_url).await;
    let listed: BuildList = http
        .get(format!("{}/v1/builds", b1.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed.builds.is_empty(), "{listed:?}");
    let spool = b1.build_store().join(".incoming/b1");
    assert_eq!(
        std::fs::read_dir(spool).unwrap().count(),
        0,
        "the dead upload's spool"
    );

    // Whole, through b1; read back through b2, whole and from the middle.
    let r = http
        .put(format!("{}/v1/builds/{id}", b1.url()))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let r = http
        .get(format!("{}/v1/builds/{id}/content", b2.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);
    let r = http
        .get(format!("{}/v1/builds/{id}/content", b2.url()))
        .header("Range", "bytes=5000000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[5_000_000..]);
    // Removed through b2: gone for b1 too.
    let r = http
        .delete(format!("{}/v1/builds/{id}", b2.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = http
        .get(format!("{}/v1/builds/{id}/content", b1.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}
