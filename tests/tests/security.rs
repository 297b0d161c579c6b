//! The API and the agent link attacked the way an outsider would: no key, a wrong key, a key of
//! the wrong role, a flood of bad agent handshakes.

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::time::{Duration, Instant};

use portal_client::Client;
use protocol::api::{ErrorCode, HostStatus, SessionStatus};
use tests::{wait_until, AgentOptions, BrokerOptions, TestAgent, TestBroker};

use tests::keys::{ADMIN, PORTAL, PROVIDER};
use tests::secured;
const WAIT: Duration = Duration::from_secs(10);

/// Status and error code of a raw call with an optional bearer key.
async fn call(
    method: reqwest::Method,
    url: String,
    key: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value, Option<String>) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.body(b.to_owned());
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let www = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let json = res.json().await.unwrap_or(serde_json::Value::Null);
    (status, json, www)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_a_valid_key_and_the_right_role() {
    let (broker, _agent) = secured().await;
    let u = |p: &str| format!("{}{p}", broker.url);
    use reqwest::Method as M;
    let routes: Vec<(M, String, Option<&str>)> = vec![
        (M::POST, u("/v1/sessions"), Some(r#"{"game_id":"sleeper"}"#)),
        (M::GET, u("/v1/sessions"), None),
        (M::GET, u("/v1/sessions/x"), None),
        (M::DELETE, u("/v1/sessions/x"), None),
        (M::GET, u("/v1/sessions/x/events"), None),
        (M::GET, u("/v1/hosts"), None),
        (M::POST, u("/v1/hosts/host-a/drain"), None),
        (M::POST, u("/v1/hosts/host-a/resume"), None),
        (M::GET, u("/v1/games"), None),
        (M::GET, u("/IP?gameId=sleeper"), None),
        (M::GET, u("/End?serverIp=127.0.0.1&pid=1"), None),
    ];
    for (method, url, body) in &routes {
        for key in [None, Some("wrong-key-0123456789"), Some("")] {
            let (status, json, www) = call(method.clone(), url.clone(), key, *body).await;
            assert_eq!(status, 401, "{method} {url} with {key:?}: {json}");
            assert_eq!(json["error"]["code"], "unauthorized", "{method} {url}");
            assert_eq!(www.as_deref(), Some("Bearer"));
        }
    }
    // The legacy calls keep their own body shape.
    let (_, json, _) = call(M::GET, u("/IP?gameId=sleeper"), None, None).await;
    assert_eq!(json["gamestatus"], "FALSE");
    let (_, json, _) = call(M::GET, u("/End?serverIp=1.2.3.4&pid=1"), None, None).await;
    assert_eq!(json["gamestatus"], "failed");
    // /healthz stays open.
    assert_eq!(call(M::GET, u("/healthz"), None, None).await.0, 200);

    // Roles: portal may not see or drain hosts; provider may not start.
    let forbidden = [
        (PORTAL, M::GET, u("/v1/hosts"), None),
        (PORTAL, M::POST, u("/v1/hosts/host-a/drain"), None),
        (
            PROVIDER,
            M::POST,
            u("/v1/sessions"),
            Some(r#"{"game_id":"sleeper"}"#),
        ),
        (PROVIDER, M::GET, u("/IP?gameId=sleeper"), None),
        (PROVIDER, M::GET, u("/v1/games"), None),
    ];
    for (key, method, url, body) in forbidden {
        let (status, json, _) = call(method.clone(), url.clone(), Some(key), body).await;
        assert_eq!(
            (status, json["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{method} {url}"
        );
    }
    // A body from an unauthenticated caller is not even parsed: 401, not 400.
    let (status, _, _) = call(M::POST, u("/v1/sessions"), None, Some("{not json")).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_its_job_and_the_history_says_who() {
    let (broker, _agent) = secured().await;
    let portal = Client::new(&broker.url, Some(PORTAL.into())).unwrap();
    let provider = Client::new(&broker.url, Some(PROVIDER.into())).unwrap();
    let admin = Client::new(&broker.url, Some(ADMIN.into())).unwrap();
    assert!(!portal.games().await.unwrap().games.is_empty());
    let s = portal
        .start_session(&tests::start("sleeper"))
        .await
        .unwrap();
    assert_eq!(
        provider.get_session(&s.session_id).await.unwrap().status,
        SessionStatus::Running
    );
    let host = provider.hosts().await.unwrap().hosts[0].host_id.clone();
    provider.drain_host(&host).await.unwrap();
    provider.resume_host(&host).await.unwrap();
    let ended = provider.end_session(&s.session_id).await.unwrap();
    assert_eq!(ended.status, SessionStatus::Ended);
    let e = portal.hosts().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    let s2 = admin.start_session(&tests::start("sleeper")).await.unwrap();
    admin.end_session(&s2.session_id).await.unwrap();
    let (_, json, _) = call(
        reqwest::Method::GET,
        format!("{}/v1/sessions/{}/events", broker.url, s.session_id),
        Some(ADMIN),
        None,
    )
    .await;
    let actors: Vec<&str> = json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors, ["portal", "agent", "provider", "agent"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_agent_handshakes_does_not_slow_the_broker() {
    use protocol::wire::PROTOCOL_VERSION;
    use tests::{fake_hello, FakeAgent};
    let broker = TestBroker::start_with(BrokerOptions {
        agent_token: Some("the-agent-token".into()),
        ..Default::default()
    })
    .await;
    let client = Client::new(&broker.url, None).unwrap();
    let flood: Vec<_> = (0..200)
        .map(|i| {
            let addr = broker.agent_addr;
            tokio::spawn(async move {
                let hello = fake_hello(&format!("intruder-{i}"), PROTOCOL_VERSION, Some("guess"));
                FakeAgent::connect(addr, hello).await.err()
            })
        })
        .collect();
    // While the flood runs, the API answers and a real agent registers.
    let t0 = Instant::now();
    let mut opts = AgentOptions::host("real");
    opts.token = Some("the-agent-token".into());
    let _agent = TestAgent::start(broker.agent_addr, opts).await;
    wait_until("the real agent registers", WAIT, || {
        let client = client.clone();
        async move {
            client
                .hosts()
                .await
                .is_ok_and(|h| h.hosts.iter().any(|h| h.host_id.as_str() == "real"))
        }
    })
    .await;
    let took = t0.elapsed();
    for f in flood {
        let refusal = f.await.unwrap().expect("every intruder is refused");
        assert!(
            refusal.contains("agent token") || refusal.contains("closed"),
            "{refusal}"
        );
    }
    assert_eq!(
        client.hosts().await.unwrap().hosts.len(),
        1,
        "no intruder registered"
    );
    assert!(took < WAIT, "registration took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_slowly_is_cut_off_and_does_not_block_others() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = TestBroker::start().await;
    let addr = broker.url.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(
        format!("POST /v1/sessions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{{").as_bytes(),
    )
    .await
    .unwrap();
    // Others are served meanwhile.
    let client = Client::new(&broker.url, None).unwrap();
    assert!(client.health().await.is_ok());
    let t0 = Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        broker::http::BODY_DEADLINE + Duration::from_secs(5),
        slow.read_to_end(&mut answer),
    )
    .await
    .expect("the broker answers a trickled body within its deadline");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("\"bad_request\""), "{text}");
    assert!(t0.elapsed() >= broker::http::BODY_DEADLINE - Duration::from_secs(1));
}

mod tls {
    use super::*;
    use tests::TestPki;

    async fn tls_broker(pki: &TestPki, mutual: bool) -> TestBroker {
        TestBroker::start_with(BrokerOptions {
            agent_tls: Some(broker::config::AgentTls {
                cert: pki.server_cert.clone(),
                key: pki.server_key.clone(),
                client_ca: mutual.then(|| pki.ca.clone()),
            }),
            ..Default::default()
        })
        .await
    }

    fn agent_opts(host: &str, tls: agent::tls::Tls) -> AgentOptions {
        let mut o = AgentOptions::host(host);
        o.tls = Some(tls);
        o
    }

    async fn registered(client: &Client, host: &str) -> bool {
        client
            .hosts()
            .await
            .unwrap()
            .hosts
            .iter()
            .any(|h| h.host_id.as_str() == host)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn agents_speak_tls_and_strangers_are_refused() {
        let pki = TestPki::new();
        let broker = tls_broker(&pki, false).await;
        let client = Client::new(&broker.url, None).unwrap();
        let good = agent::tls::Tls::new(&pki.ca, "127.0.0.1", None).unwrap();
        let _agent = TestAgent::start(broker.agent_addr, agent_opts("tls-host", good)).await;
        wait_until("the TLS agent registers", WAIT, || {
            let client = client.clone();
            async move { registered(&client, "tls-host").await }
        })
        .await;
        let s = client
            .start_session(&tests::start("sleeper"))
            .await
            .unwrap();
        assert_eq!(s.status, SessionStatus::Running);
        client.end_session(&s.session_id).await.unwrap();

        // An agent trusting another CA refuses the broker; a plain-TCP agent gets nowhere.
        let other = TestPki::new();
        let wrong = agent::tls::Tls::new(&other.ca, "127.0.0.1", None).unwrap();
        let _a = TestAgent::start(broker.agent_addr, agent_opts("wrong-ca", wrong)).await;
        let hello = tests::fake_hello("plain", protocol::wire::PROTOCOL_VERSION, None);
        assert!(tests::FakeAgent::connect(broker.agent_addr, hello)
            .await
            .is_err());
        // A good agent started after them gets in; by then the bad ones have tried.
        let late = agent::tls::Tls::new(&pki.ca, "localhost", None).unwrap();
        let _late = TestAgent::start(broker.agent_addr, agent_opts("late", late)).await;
        wait_until("the late agent registers", WAIT, || {
            let client = client.clone();
            async move { registered(&client, "late").await }
        })
        .await;
        assert!(!registered(&client, "wrong-ca").await && !registered(&client, "plain").await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mutual_tls_requires_a_client_certificate() {
        let pki = TestPki::new();
        let broker = tls_broker(&pki, true).await;
        let client = Client::new(&broker.url, None).unwrap();
        let anonymous = agent::tls::Tls::new(&pki.ca, "localhost", None).unwrap();
        let _anon = TestAgent::start(broker.agent_addr, agent_opts("anonymous", anonymous)).await;
        let certified = agent::tls::Tls::new(
            &pki.ca,
            "localhost",
            Some((&pki.client_cert, &pki.client_key)),
        )
        .unwrap();
        let _cert = TestAgent::start(broker.agent_addr, agent_opts("certified", certified)).await;
        wait_until("the certified agent registers", WAIT, || {
            let client = client.clone();
            async move { registered(&client, "certified").await }
        })
        .await;
        assert!(
            !registered(&client, "anonymous").await,
            "an agent without a certificate got in"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_speaks_https_and_the_cli_trusts_a_private_ca() {
    let pki = tests::TestPki::new();
    let broker = TestBroker::start_with(BrokerOptions {
        http_tls: Some((pki.server_cert.clone(), pki.server_key.clone())),
        ..Default::default()
    })
    .await;
    let ca = std::fs::read(&pki.ca).unwrap();
    let client = Client::with_ca(&broker.url, None, Some(&ca)).unwrap();
    wait_until("the broker answers over HTTPS", WAIT, || {
        let client = client.clone();
        async move { client.health().await.is_ok() }
    })
    .await;
    assert!(broker.url.starts_with("https://"));
    // Without the CA, the certificate is not trusted; plain HTTP gets no answer it can parse.
    let untrusting = Client::new(&broker.url, None).unwrap();
    assert!(untrusting.health().await.is_err());
    let plain = Client::new(&broker.url.replace("https://", "http://"), None).unwrap();
    assert!(plain.health().await.is_err());
}

mod agent_link {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_that_never_says_hello_is_closed_after_five_seconds() {
        let broker = TestBroker::start().await;
        let mut silent = tokio::net::TcpStream::connect(broker.agent_addr)
            .await
            .unwrap();
        let t0 = Instant::now();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
            .await
            .expect("closed within the handshake deadline")
            .unwrap_or(0);
        assert_eq!(n, 0, "the broker sent something to a silent peer");
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_secs(4) && took < Duration::from_secs(8),
            "{took:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn garbage_after_the_handshake_closes_that_link_only() {
        use protocol::wire::PROTOCOL_VERSION;
        let broker = TestBroker::start().await;
        let _good = TestAgent::start(broker.agent_addr, AgentOptions::host("good")).await;
        let client = Client::new(&broker.url, None).unwrap();
        wait_until("the good agent is online", WAIT, || {
            let client = client.clone();
            async move {
                client
                    .hosts()
                    .await
                    .unwrap()
                    .hosts
                    .iter()
                    .any(|h| h.host_id.as_str() == "good")
            }
        })
        .await;
        // A registered peer that then sends a well-framed frame holding nonsense, and one whose
        // length prefix claims 4 GiB.
        for frame in [
            &[0, 0, 0, 3, 0xFF, 0xFF, 0xFF][..],
            &[0xFF, 0xFF, 0xFF, 0xFF, 1][..],
        ] {
            let stream = tokio::net::TcpStream::connect(broker.agent_addr)
                .await
                .unwrap();
            let mut framed =
                tokio_util::codec::Framed::new(stream, protocol::codec::length_codec());
            let hello = tests::fake_hello("rogue", PROTOCOL_VERSION, None);
            futures::SinkExt::send(&mut framed, protocol::codec::encode(&hello).unwrap())
                .await
                .unwrap();
            let _welcome = futures::StreamExt::next(&mut framed).await;
            let mut stream = framed.into_inner();
            stream.write_all(frame).await.unwrap();
            let mut buf = Vec::new();
            let closed = tokio::time::timeout(WAIT, stream.read_to_end(&mut buf)).await;
            assert!(closed.is_ok(), "the rogue link stays open");
            wait_until("the rogue host is offline", WAIT, || {
                let client = client.clone();
                async move {
                    client
                        .hosts()
                        .await
                        .unwrap()
                        .hosts
                        .iter()
                        .all(|h| h.host_id.as_str() != "rogue" || h.status == HostStatus::Offline)
                }
            })
            .await;
        }
        // Nothing else was disturbed.
        let s = client
            .start_session(&tests::start("sleeper"))
            .await
            .unwrap();
        assert_eq!(s.host_id.as_str(), "good");
        client.end_session(&s.session_id).await.unwrap();
    }
}
