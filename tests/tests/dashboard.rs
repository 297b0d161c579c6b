//! The operator dashboard (`GET /ui`) in a real browser: Debian's chromium, headless, driven
//! over WebDriver by its chromedriver, which the test starts on a free loopback port. The page
//! asks for a key; a session started through the API appears without a reload; its end button
//! ends it (its processes are gone); the drain and resume buttons drain and resume a host.
//!
//! With `ARCADE_SCREENSHOT=FILE` the test saves a screenshot of the page there (the README's).

#![allow(clippy::unwrap_used)] // test helpers, not only #[test] fns

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use portal_client::Client;
use protocol::api::{HostStatus, SessionStatus};
use serde_json::{json, Value};
use tests::keys::{PORTAL, PROVIDER};
use tests::{group_alive, secured, wait_until};

const WAIT: Duration = Duration::from_secs(15);

/// The W3C WebDriver element key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process of the test's own.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Driver {
    /// `None` (outside CI) when chromium or chromedriver is not installed.
    async fn start() -> Option<Self> {
        let exe = std::env::var_os("ARCADE_CHROMEDRIVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"));
        if !exe.is_file() || !chromium().is_file() {
            assert!(
                std::env::var_os("CI").is_none(),
                "chromium and chromedriver are needed; scripts/test installs them"
            );
            eprintln!("skipped: chromium or chromedriver is not installed");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(exe)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        wait_until("chromedriver answers", WAIT, || {
            let status = status.clone();
            async move { reqwest::get(&status).await.is_ok() }
        })
        .await;
        Some(Self { child, url })
    }
}

fn chromium() -> PathBuf {
    std::env::var_os("ARCADE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// A browser session: the few WebDriver commands the test needs.
#[derive(Clone)]
struct Browser {
    http: reqwest::Client,
    session: String,
}

impl Browser {
    async fn open(driver: &Driver) -> Self {
        let http = reqwest::Client::new();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,720",
                         "--no-first-run", "--no-default-browser-check"],
            },
        }}});
        let res: Value = http
            .post(format!("{}/session", driver.url))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {res}"));
        Self {
            http,
            session: format!("{}/session/{id}", driver.url),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res: Value = req.send().await.unwrap().json().await.unwrap();
        res["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// The element `css` selects, if any.
    async fn find(&self, css: &str) -> Option<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().map(str::to_owned)
    }

    /// Waits for `css` to select an element.
    async fn wait_for(&self, css: &str) -> String {
        wait_until(&format!("the page shows {css}"), WAIT, || {
            let (me, css) = (self.clone(), css.to_owned());
            async move { me.find(&css).await.is_some() }
        })
        .await;
        self.find(css).await.unwrap()
    }

    /// The text of what `css` selects, "" when nothing does.
    async fn text(&self, css: &str) -> String {
        match self.find(css).await {
            Some(e) => self
                .call(reqwest::Method::GET, &format!("/element/{e}/text"), None)
                .await
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            None => String::new(),
        }
    }

    /// Waits for the text of `css` to be `want`.
    async fn wait_text(&self, css: &str, want: &str) {
        wait_until(&format!("{css} reads {want:?}"), WAIT, || {
            let me = self.clone();
            let (css, want) = (css.to_owned(), want.to_owned());
            async move { me.text(&css).await == want }
        })
        .await;
    }

    async fn click(&self, css: &str) {
        let e = self.wait_for(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_in(&self, css: &str, text: &str) {
        let e = self.wait_for(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Runs `script` in the page and answers its value.
    async fn run(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    async fn screenshot(&self) -> Vec<u8> {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap()
    }

    async fn quit(self) {
        self.call(reqwest::Method::DELETE, "", None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_changes_and_its_buttons_act() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let (broker, agent) = secured().await;
    let portal = Client::new(&broker.url, Some(PORTAL.to_owned())).unwrap();
    let provider = Client::new(&broker.url, Some(PROVIDER.to_owned())).unwrap();
    let host = agent.host_id.clone();

    // The page is the broker's own, open, and keeps to its origin.
    let page = reqwest::get(format!("{}/ui", broker.url)).await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("://"),
        "the page loads nothing from another host"
    );

    let browser = Browser::open(&driver).await;
    browser.goto(&format!("{}/ui", broker.url)).await;
    // The broker has keys: the page asks for one. A wrong one is refused.
    browser.type_in("#key", "not-a-key-0123456789").await;
    browser.click("#login button[type=submit]").await;
    browser
        .wait_text("#login-error", "That key was not accepted.")
        .await;
    browser.type_in("#key", PROVIDER).await;
    browser.click("#login button[type=submit]").await;
    let host_row = format!("tr[data-host='{host}']");
    browser
        .wait_text(&format!("{host_row} .status"), "online")
        .await;
    // Its labels, and no GPU.
    browser
        .wait_text(&format!("{host_row} .labels"), "region=eu-west")
        .await;
    browser.wait_text(&format!("{host_row} .gpus"), "-").await;
    browser.wait_text("#live", "live").await;

    // Sessions started through the API appear without a reload.
    let mut sessions = Vec::new();
    for game in ["game", "sleeper", "game"] {
        sessions.push(portal.start_session(&tests::start(game)).await.unwrap());
    }
    for s in &sessions {
        let row = format!("tr[data-session='{}']", s.session_id);
        browser
            .wait_text(&format!("{row} .status"), "running")
            .await;
    }
    browser
        .wait_text(&format!("{host_row} .sessions"), "3/8")
        .await;
    if let Some(path) = std::env::var_os("ARCADE_SCREENSHOT") {
        std::fs::write(path, browser.screenshot().await).unwrap();
    }

    // The end button ends the session: its processes are gone, and it leaves the live list.
    let ended = &sessions[0];
    let row = format!("tr[data-session='{}']", ended.session_id);
    browser.click(&format!("{row} button.end")).await;
    wait_until("the row leaves the live list", WAIT, || {
        let (b, row) = (browser.clone(), row.clone());
        async move { b.find(&row).await.is_none() }
    })
    .await;
    browser
        .wait_text(&format!("{host_row} .sessions"), "2/8")
        .await;
    let s = provider.get_session(&ended.session_id).await.unwrap();
    assert_eq!(s.status, SessionStatus::Ended);
    assert!(!group_alive(ended.pid.unwrap()));
    // Shown again, as ended, when the filter asks for any status.
    browser
        .run("const f = document.getElementById('f-status'); f.value = '*'; f.dispatchEvent(new Event('change')); return f.value;")
        .await;
    browser.wait_text(&format!("{row} .status"), "ended").await;

    // The drain button drains the host; resume brings it back.
    browser.click(&format!("{host_row} button.drain")).await;
    browser
        .wait_text(&format!("{host_row} .status"), "draining")
        .await;
    let status = |c: Client, host: protocol::HostId| async move {
        c.hosts()
            .await
            .unwrap()
            .hosts
            .into_iter()
            .find(|h| h.host_id == host)
            .unwrap()
            .status
    };
    assert_eq!(
        status(provider.clone(), host.clone()).await,
        HostStatus::Draining
    );
    browser.click(&format!("{host_row} button.resume")).await;
    browser
        .wait_text(&format!("{host_row} .status"), "online")
        .await;
    assert_eq!(
        status(provider.clone(), host.clone()).await,
        HostStatus::Online
    );

    // A change made elsewhere (another operator's end) shows up too.
    provider.end_session(&sessions[1].session_id).await.unwrap();
    let row = format!("tr[data-session='{}']", sessions[1].session_id);
    browser.wait_text(&format!("{row} .status"), "ended").await;

    // A central game shows with its source and build, then its rollout as it goes.
    let admin = Client::new(&broker.url, Some(tests::keys::ADMIN.to_owned())).unwrap();
    let arena = protocol::GameId::new("arena").unwrap();
    let set = |build: protocol::BuildId, rollout: serde_json::Value| {
        let mut body = tests::builds::game_entry();
        body["build"] = json!(build);
        body["rollout"] = rollout;
        let (admin, arena) = (admin.clone(), arena.clone());
        async move { admin.put_game(&arena, &body, None).await.unwrap() }
    };
    let one = tests::builds::upload(&admin, &tests::builds::game_build("one")).await;
    set(one.clone(), json!(null)).await;
    // A provider may not list games; an admin sees them.
    browser
        .wait_text("#games-note", "Your key's role may not see this.")
        .await;
    browser.click("#forget").await;
    browser.type_in("#key", tests::keys::ADMIN).await;
    browser.click("#login button[type=submit]").await;
    let game_row = "tr[data-game='arena']";
    browser
        .wait_text(&format!("{game_row} .source"), "central")
        .await;
    browser
        .wait_text(&format!("{game_row} .build"), &one.as_str()[..12])
        .await;
    browser.wait_text(&format!("{game_row} .hosts"), "1").await;
    let two = tests::builds::upload(&admin, &tests::builds::game_build("two")).await;
    set(two.clone(), json!({"canary_hosts": 1, "hold_s": 600})).await;
    browser
        .wait_text(&format!("{game_row} .build"), &two.as_str()[..12])
        .await;
    browser
        .wait_text(&format!("{game_row} .rollout"), "canary 1/1")
        .await;

    browser.quit().await;
    drop(driver.child);
}
