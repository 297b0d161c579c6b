//! A TCP proxy between agents and the broker, on loopback, that can cut, delay and black-hole
//! the link, flip a byte of what the broker sends, or stall after some bytes: the
//! fault-injection suite's way to break the network without leaving the machine. It keeps
//! the first MiB of what clients sent, for tests that check a request (a `Range` header).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the proxy does with bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards them.
    Pass,
    /// Forwards each chunk after this long.
    Delay(Duration),
    /// Swallows them; connections stay open, nothing arrives (a dead network path).
    BlackHole,
    /// Flips the bits of the byte at this offset of the next connection's answer (what the
    /// upstream sends), then passes everything again.
    FlipOnce(usize),
    /// Passes each connection's first this many bytes of answer, then swallows the rest.
    StallAfter(usize),
}

/// The most client bytes kept for [`FaultProxy::sent`].
const KEPT: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    mode: Mode,
    /// Bumped by [`FaultProxy::cut`]: connections of an older generation close.
    generation: u64,
}

/// A running proxy; dropping it stops it and closes its connections.
pub struct FaultProxy {
    addr: SocketAddr,
    state: watch::Sender<State>,
    stop: CancellationToken,
    sent: Arc<Mutex<Vec<u8>>>,
}

impl FaultProxy {
    /// Proxies `127.0.0.1:<new port>` to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        Self::start_on(listener, upstream)
    }

    /// Proxies what `listener` accepts to `upstream` (for a proxy whose address must be known
    /// before its upstream is: a broker's `--public-url`).
    pub fn start_on(listener: TcpListener, upstream: SocketAddr) -> Self {
        let addr = listener.local_addr().expect("proxy addr");
        let (state, rx) = watch::channel(State {
            mode: Mode::Pass,
            generation: 0,
        });
        let stop = CancellationToken::new();
        let stop2 = stop.clone();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&sent);
        let state2 = state.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    () = stop2.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let rx = rx.clone();
                let stop = stop2.clone();
                let kept = Arc::clone(&kept);
                let state = state2.clone();
                tokio::spawn(async move {
                    let generation = rx.borrow().generation;
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let conn = CancellationToken::new();
                    let up = Pump {
                        state: rx.clone(),
                        generation,
                        done: conn.clone(),
                        answer: None,
                        kept: Some(kept),
                    };
                    let down = Pump {
                        state: rx,
                        generation,
                        done: conn.clone(),
                        answer: Some(state),
                        kept: None,
                    };
                    let a = tokio::spawn(up.run(cr, sw));
                    let b = tokio::spawn(down.run(sr, cw));
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = conn.cancelled() => {}
                    }
                    a.abort();
                    b.abort();
                });
            }
        });
        Self {
            addr,
            state,
            stop,
            sent,
        }
    }

    /// What clients sent through the proxy so far (its first MiB), as text.
    pub fn sent(&self) -> String {
        String::from_utf8_lossy(&self.sent.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Where agents should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets what happens to bytes from now on.
    pub fn set(&self, mode: Mode) {
        self.state.send_modify(|s| s.mode = mode);
    }

    /// Closes every open connection (new ones are accepted as usual).
    pub fn cut(&self) {
        self.state.send_modify(|s| s.generation += 1);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One direction of one connection.
struct Pump {
    state: watch::Receiver<State>,
    generation: u64,
    done: CancellationToken,
    /// For the answer's direction: the proxy's state, to clear a one-time fault once done.
    answer: Option<watch::Sender<State>>,
    /// For the clients' direction: where what they send is kept.
    kept: Option<Arc<Mutex<Vec<u8>>>>,
}

impl Pump {
    async fn run(
        mut self,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        let mut offset = 0usize;
        loop {
            let n = tokio::select! {
                r = from.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
                changed = self.state.changed() => {
                    if changed.is_err() || self.state.borrow().generation != self.generation {
                        break;
                    }
                    continue;
                }
            };
            let now = *self.state.borrow();
            if now.generation != self.generation {
                break;
            }
            if let Some(kept) = &self.kept {
                let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                let room = KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            let chunk = &mut buf[..n];
            let mut len = n;
            match (now.mode, &self.answer) {
                (Mode::Pass, _) => {}
                (Mode::Delay(d), _) => tokio::time::sleep(d).await,
                (Mode::BlackHole, _) => continue,
                (Mode::FlipOnce(at), Some(state)) if (offset..offset + n).contains(&at) => {
                    chunk[at - offset] ^= 0xff;
                    state.send_modify(|s| s.mode = Mode::Pass);
                }
                (Mode::StallAfter(limit), Some(_)) => len = n.min(limit.saturating_sub(offset)),
                (Mode::FlipOnce(_) | Mode::StallAfter(_), _) => {}
            }
            offset += n;
            if len > 0 && to.write_all(&chunk[..len]).await.is_err() {
                break;
            }
        }
        self.done.cancel();
    }
}
