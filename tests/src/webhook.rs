//! A webhook receiver for tests: a plain HTTP/1.1 server on loopback (keep-alive, one request
//! at a time per connection) that records every delivery and answers 503 while it is "down"
//! or for its first `fail_first` requests, 200 otherwise.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Its headers, names lower-cased.
    pub headers: HashMap<String, String>,
    /// Its body.
    pub body: String,
    /// What the receiver answered.
    pub status: u16,
    /// When its body had arrived whole.
    pub at: std::time::Instant,
}

#[derive(Debug, Default)]
struct State {
    deliveries: Mutex<Vec<Delivery>>,
    down: AtomicBool,
    fail_first: AtomicUsize,
}

/// The receiver; stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    /// `http://127.0.0.1:PORT/hooks`.
    pub url: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver that refuses its first `fail_first` requests.
    pub async fn start(fail_first: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
        let state = Arc::new(State::default());
        state.fail_first.store(fail_first, Ordering::Relaxed);
        let s = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, Arc::clone(&s)));
            }
        });
        Self { url, state, task }
    }

    /// Answers 503 to everything while `down`.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::Relaxed);
    }

    /// Every request so far, in order of arrival.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state
            .deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The requests answered 200, in order.
    pub fn accepted(&self) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| d.status == 200)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut conn: TcpStream, state: Arc<State>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // The head.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let headers: HashMap<String, String> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < end + len {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[end..end + len]).into_owned();
        buf.drain(..end + len);
        let failing = state.down.load(Ordering::Relaxed)
            || state
                .fail_first
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
        let status = if failing { 503 } else { 200 };
        state
            .deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Delivery {
                headers,
                body,
                status,
                at: std::time::Instant::now(),
            });
        let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        if conn.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Whether `d` is signed with `secret` (`whsec_<base64>` or raw) as Standard Webhooks says,
/// checked the way its libraries check: HMAC-SHA256 of `id.timestamp.body`, base64, `v1,`,
/// compared in constant time, against any of the space-separated signatures.
pub fn verify(d: &Delivery, secret: &str) -> bool {
    use base64::Engine as _;
    let key = match secret.strip_prefix("whsec_") {
        Some(b64) => match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(k) => k,
            Err(_) => return false,
        },
        None => secret.as_bytes().to_vec(),
    };
    let (Some(id), Some(ts), Some(sigs)) = (
        d.headers.get("webhook-id"),
        d.headers.get("webhook-timestamp"),
        d.headers.get("webhook-signature"),
    ) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let signed = format!("{id}.{ts}.{}", d.body);
    sigs.split(' ').any(|s| {
        s.strip_prefix("v1,")
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .is_some_and(|tag| ring::hmac::verify(&key, signed.as_bytes(), &tag).is_ok())
    })
}
