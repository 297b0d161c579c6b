//! A lean HTTP/1.1 load client for the throughput phase of [`crate::pairs`].
//!
//! The load generator shares the machine's two cores with what it measures, so it should
//! cost little next to it, as wrk does: one keep-alive connection per client, requests
//! written from a template, responses read by `Content-Length`. It still checks every answer:
//! the status code, and the body decoded as the API's `Session`. `--load-client portal`
//! measures with the `portal-client` crate instead (reqwest), for comparison.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use portal_client::Client;
use protocol::api::{Session, SessionStatus, StartSession};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest answer accepted, headers and body.
const MAX_RESPONSE: usize = 64 * 1024;
/// Each request, written and answered, within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One keep-alive connection to the broker's HTTP API.
pub struct RawClient {
    stream: TcpStream,
    host: String,
    buf: Vec<u8>,
}

impl RawClient {
    /// Connects to the API at `addr`.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            host: addr.to_string(),
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one request and answers its status code and body.
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), String> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n",
            self.host
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut out = req.into_bytes();
        out.extend_from_slice(body);
        tokio::time::timeout(REQUEST_TIMEOUT, async {
            self.stream
                .write_all(&out)
                .await
                .map_err(|e| format!("write: {e}"))?;
            self.read_response().await
        })
        .await
        .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?
    }

    async fn read_response(&mut self) -> Result<(u16, Vec<u8>), String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).map_err(|e| e.to_string())?;
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse::<u16>().ok())
                    .ok_or_else(|| format!("bad status line in {head:?}"))?;
                let len = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
                let total = end + 4 + len;
                if total > MAX_RESPONSE {
                    return Err(format!("answer of {total} bytes"));
                }
                while self.buf.len() < total {
                    self.fill().await?;
                }
                let body = self.buf[end + 4..total].to_vec();
                self.buf.drain(..total);
                return Ok((status, body));
            }
            if self.buf.len() > MAX_RESPONSE {
                return Err("headers too long".into());
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 4096];
        let n = self
            .stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed".into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// `POST /v1/sessions` with `body`: the running session.
    pub async fn start(&mut self, body: &[u8]) -> Result<Session, String> {
        let (status, body) = self.call("POST", "/v1/sessions", body).await?;
        let s = session(status, 201, &body)?;
        if s.status != SessionStatus::Running {
            return Err(format!("started session is {}", s.status));
        }
        Ok(s)
    }

    /// `DELETE /v1/sessions/{id}`: the ended session.
    pub async fn end(&mut self, s: &Session) -> Result<Session, String> {
        let path = format!("/v1/sessions/{}", s.session_id);
        let (status, body) = self.call("DELETE", &path, b"").await?;
        let s = session(status, 200, &body)?;
        if s.status != SessionStatus::Ended {
            return Err(format!("ended session is {}", s.status));
        }
        Ok(s)
    }
}

fn session(status: u16, want: u16, body: &[u8]) -> Result<Session, String> {
    if status != want {
        return Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(body)
                .chars()
                .take(300)
                .collect::<String>()
        ));
    }
    serde_json::from_slice(body).map_err(|e| format!("not a session: {e}"))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A client of the start+end loop ([`timed_pairs`]).
pub enum PairClient {
    /// Through the `portal-client` crate, with its start request.
    Portal(Client, StartSession),
    /// Through [`RawClient`].
    Raw(RawClient),
}

impl PairClient {
    /// Through `client`.
    pub fn portal(client: Client) -> Self {
        Self::Portal(client, tests::start("bench"))
    }

    /// Starts the game `bench`.
    async fn start(&mut self) -> Result<Session, String> {
        match self {
            Self::Portal(c, req) => c.start_session(req).await.map_err(|e| e.to_string()),
            Self::Raw(c) => c.start(br#"{"game_id":"bench"}"#).await,
        }
    }

    /// Ends `s`.
    async fn end(&mut self, s: &Session) -> Result<(), String> {
        match self {
            Self::Portal(c, _) => c
                .end_session(&s.session_id)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Self::Raw(c) => c.end(s).await.map(drop),
        }
    }
}

/// One client's start+end pairs of the game `bench`, one at a time; returns start, end and
/// pair latencies and the errors.
pub async fn timed_pairs(
    mut client: PairClient,
    n: usize,
) -> (Vec<Duration>, Vec<Duration>, Vec<Duration>, usize) {
    timed_pairs_with(&mut client, n).await
}

/// [`timed_pairs`] through a client kept for more.
pub async fn timed_pairs_with(
    client: &mut PairClient,
    n: usize,
) -> (Vec<Duration>, Vec<Duration>, Vec<Duration>, usize) {
    let (mut starts, mut ends, mut pairs, mut errors) = (vec![], vec![], vec![], 0);
    for _ in 0..n {
        let t = Instant::now();
        match client.start().await {
            Ok(s) => {
                starts.push(t.elapsed());
                let t2 = Instant::now();
                match client.end(&s).await {
                    Ok(()) => {
                        ends.push(t2.elapsed());
                        pairs.push(t.elapsed());
                    }
                    Err(e) => {
                        errors += 1;
                        eprintln!("end failed: {e}");
                    }
                }
            }
            Err(e) => {
                errors += 1;
                eprintln!("start failed: {e}");
            }
        }
    }
    (starts, ends, pairs, errors)
}

/// [`timed_pairs`] on a new [`RawClient`] connection to `addr`.
pub async fn raw_pairs(
    addr: SocketAddr,
    n: usize,
) -> (Vec<Duration>, Vec<Duration>, Vec<Duration>, usize) {
    match RawClient::connect(addr).await {
        Ok(c) => timed_pairs(PairClient::Raw(c), n).await,
        Err(e) => {
            eprintln!("connect failed: {e}");
            (vec![], vec![], vec![], n)
        }
    }
}
