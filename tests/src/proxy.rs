//! A TCP proxy between agents and the broker, on loopback, that can cut, delay and black-hole
//! the link: the fault-injection suite's way to break the network without leaving the machine.

use std::net::SocketAddr;
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
}

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
}

impl FaultProxy {
    /// Proxies `127.0.0.1:<new port>` to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (state, rx) = watch::channel(State {
            mode: Mode::Pass,
            generation: 0,
        });
        let stop = CancellationToken::new();
        let stop2 = stop.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    () = stop2.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let rx = rx.clone();
                let stop = stop2.clone();
                tokio::spawn(async move {
                    let generation = rx.borrow().generation;
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let conn = CancellationToken::new();
                    let a = tokio::spawn(pump(cr, sw, rx.clone(), generation, conn.clone()));
                    let b = tokio::spawn(pump(sr, cw, rx, generation, conn.clone()));
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = conn.cancelled() => {}
                    }
                    a.abort();
                    b.abort();
                });
            }
        });
        Self { addr, state, stop }
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

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<State>,
    generation: u64,
    done: CancellationToken,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            changed = state.changed() => {
                if changed.is_err() || state.borrow().generation != generation {
                    break;
                }
                continue;
            }
        };
        let now = *state.borrow();
        if now.generation != generation {
            break;
        }
        match now.mode {
            Mode::Pass => {}
            Mode::Delay(d) => tokio::time::sleep(d).await,
            Mode::BlackHole => continue,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    done.cancel();
}
