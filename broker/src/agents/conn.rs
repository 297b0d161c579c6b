//! The broker's side of the agent link: the listener, the handshake, and one task per
//! connected agent that owns its connection.
//!
//! Nothing else touches a connection. Others reach an agent through its [`AgentLink`]; what
//! agents say on their own (a game exited, a host registered) comes out as [`HostEvent`]s on a
//! bounded channel. This module knows frames, hosts and pending requests, not session records.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use protocol::codec::{self, BrokerCodec, CodecError, RawCodec};
use protocol::wire::{
    AgentMessage, BrokerMessage, Hello, HelloReply, LogChunk, LogRequest, LogUnavailable,
    HEARTBEATS_PER_ACK, PROTOCOL_VERSION,
};
use protocol::{HostId, SessionId};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handle::{
    AgentCommand, AgentLink, HostEvent, Launch, LaunchReply, LinkInbox, ReadLog, Stop,
};
use super::registry::{ConnId, Registry};
use crate::auth::same_secret;

/// The handshake must complete within this, or the connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A write to an agent that does not complete within this closes its connection: an agent
/// that stops reading must not keep its host "online".
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

async fn write<S>(sink: &mut S, msg: BrokerMessage) -> Result<(), CodecError>
where
    S: futures::Sink<BrokerMessage, Error = CodecError> + Unpin,
{
    timeout(WRITE_TIMEOUT, sink.send(msg)).await.map_err(|_| {
        CodecError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "write timed out",
        ))
    })?
}

/// Someone waiting for an agent's answer, and the span of the request it serves.
struct Waiter<T> {
    reply: oneshot::Sender<T>,
    span: tracing::Span,
}

/// Connections in their handshake at once, at most.
pub const MAX_HANDSHAKES: usize = 256;

/// Log reads waiting for one agent's answers, at most; past it a read is answered "busy".
const MAX_LOG_READS: usize = 16;

/// Log reads waiting for an agent's answer, by request id.
type LogWaiters = HashMap<u64, oneshot::Sender<Result<LogChunk, LogUnavailable>>>;

/// Commands queued per agent connection.
const COMMAND_QUEUE: usize = 256;

/// The initial read and write buffer of an agent connection. Frames are small (a heartbeat is
/// under 100 bytes) and a buffer grows to fit a bigger one, so this is about memory at scale:
/// `Framed`'s default of 8 KiB each way would be 160 MiB at 10,000 agents.
const LINK_BUFFER: usize = 512;

/// Settings of the agent listener.
#[derive(Clone)]
pub struct LinkSettings {
    /// Agents must present this token, when set.
    pub token: Option<String>,
    /// A connected agent silent this long is dropped.
    pub heartbeat_timeout: Duration,
    /// How often agents heartbeat.
    pub heartbeat_interval: Duration,
    /// Agent connections at once, at most.
    pub max_connections: usize,
    /// TLS for the agent link; `None`: plain TCP (loopback or a private network).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for LinkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSettings")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("max_connections", &self.max_connections)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Accepts agents until `shutdown`; each connection runs in a task of `tracker`.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    events: mpsc::Sender<HostEvent>,
    settings: LinkSettings,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    // Connections not yet authenticated hold one of these too, so a flood of them cannot
    // crowd out the agents.
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let settings = Arc::new(settings);
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "agent listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::warn!(%peer, max = settings.max_connections, "agent listener: too many connections; refusing");
            continue;
        };
        let Ok(handshake) = Arc::clone(&handshakes).try_acquire_owned() else {
            tracing::warn!(%peer, max = MAX_HANDSHAKES, "agent listener: too many unauthenticated connections; refusing");
            continue;
        };
        let conn = Connection {
            registry: Arc::clone(&registry),
            events: events.clone(),
            settings: Arc::clone(&settings),
            shutdown: shutdown.clone(),
            peer,
        };
        tracker.spawn(async move {
            conn.run(stream, handshake).await;
            drop(permit);
        });
    }
}

struct Connection {
    registry: Arc<Registry>,
    events: mpsc::Sender<HostEvent>,
    settings: Arc<LinkSettings>,
    shutdown: CancellationToken,
    peer: SocketAddr,
}

/// The same connection with another codec, keeping bytes already read. Not `map_codec`: it
/// goes through `FramedParts`, which grows both buffers back to 8 KiB (see [`LINK_BUFFER`]).
fn with_codec<S, A, B>(framed: Framed<S, A>, codec: B) -> Framed<S, B>
where
    S: AsyncRead + AsyncWrite,
{
    let parts = framed.into_parts();
    let mut framed = Framed::with_capacity(parts.io, codec, LINK_BUFFER);
    framed.read_buffer_mut().extend_from_slice(&parts.read_buf);
    framed
}

/// Why an agent is refused at its handshake; the text is sent back to the agent.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    /// Its first frame could not be read.
    #[error("unreadable handshake: {0}")]
    Unreadable(std::io::Error),
    /// Its first frame is not a hello.
    #[error("unreadable handshake: {0}")]
    Malformed(CodecError),
    /// It closed before saying hello.
    #[error("closed during the handshake")]
    Closed,
    /// It speaks another protocol version.
    #[error("protocol version mismatch: the agent speaks {0}, this broker speaks {current} (and takes agents of {previous}); upgrade brokers first, then agents", current = PROTOCOL_VERSION, previous = protocol::wire::v7::VERSION)]
    Version(u32),
    /// Its token is wrong or missing.
    #[error("wrong or missing agent token: give the agent the broker's --agent-token")]
    Token,
    /// Its host id is taken by a connected agent.
    #[error(transparent)]
    Register(#[from] super::registry::RegisterError),
}

impl Connection {
    /// Runs a connection: the TLS handshake when configured (within the same deadline as the
    /// protocol handshake), then [`Connection::run_on`].
    async fn run(self, stream: TcpStream, handshake: tokio::sync::OwnedSemaphorePermit) {
        let _ = stream.set_nodelay(true);
        match self.settings.tls.clone() {
            // Boxed: a TLS stream is large, and the plain-TCP connection task should not
            // carry room for one (each task's future is allocated whole).
            Some(acceptor) => {
                Box::pin(async move {
                    match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => self.run_on(tls, handshake).await,
                        Ok(Err(e)) => {
                            tracing::warn!(peer = %self.peer, error = %e, "agent refused: TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::warn!(peer = %self.peer, "agent refused: TLS handshake timed out")
                        }
                    }
                })
                .await
            }
            None => self.run_on(stream, handshake).await,
        }
    }

    async fn run_on<S>(self, stream: S, handshake: tokio::sync::OwnedSemaphorePermit)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let mut framed = Framed::with_capacity(stream, codec::length_codec(), LINK_BUFFER);
        let hello = match timeout(HANDSHAKE_TIMEOUT, self.handshake(&mut framed)).await {
            Ok(Ok(hello)) => hello,
            Ok(Err(reason)) => return self.refuse(&mut framed, &reason).await,
            Err(_) => {
                tracing::warn!(peer = %self.peer, "agent handshake timed out");
                return;
            }
        };
        drop(handshake);
        let version = hello.protocol_version;
        let (link, inbox) = AgentLink::channel(COMMAND_QUEUE);
        let host = hello.host_id.clone();
        let conn_id = match self.registry.register(&hello, link) {
            Ok(id) => id,
            Err(e) => return self.refuse(&mut framed, &Refusal::from(e)).await,
        };
        let welcome = HelloReply::Welcome {
            heartbeat_interval_ms: u32::try_from(self.settings.heartbeat_interval.as_millis())
                .unwrap_or(u32::MAX),
        };
        let sent = match codec::encode(&welcome) {
            Ok(bytes) => framed.send(bytes).await.is_ok(),
            Err(_) => false,
        };
        if sent {
            tracing::info!(peer = %self.peer, %host, version, games = hello.facts.games.len(), running = hello.running.len(), "agent registered");
            let registered = HostEvent::Registered {
                host_id: host.clone(),
                facts: hello.facts,
                running: hello.running,
                exited: hello.exited,
            };
            if self.events.send(registered).await.is_ok() {
                let framed = with_codec(framed, BrokerCodec::new(version));
                self.serve(&host, conn_id, framed, inbox).await;
            }
        }
        let epoch = self.registry.disconnect(&host, conn_id);
        tracing::info!(peer = %self.peer, %host, "agent disconnected");
        let gone = HostEvent::Disconnected {
            host_id: host,
            epoch,
        };
        // At shutdown nobody listens any more: the next owner's claim fences this one.
        let _ = self.events.send(gone).await;
    }

    /// Tells the agent why it is refused (within the handshake's deadline) and logs it.
    async fn refuse<S>(&self, framed: &mut Framed<S, RawCodec>, reason: &Refusal)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        tracing::warn!(peer = %self.peer, %reason, "agent refused");
        if let Ok(bytes) = codec::encode(&HelloReply::Rejected(reason.to_string())) {
            let _ = timeout(HANDSHAKE_TIMEOUT, framed.send(bytes)).await;
        }
    }

    /// Reads and checks the agent's `Hello`; on refusal returns the reason to send back.
    async fn handshake<S>(&self, framed: &mut Framed<S, RawCodec>) -> Result<Hello, Refusal>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let frame = match framed.next().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => return Err(Refusal::Unreadable(e)),
            None => return Err(Refusal::Closed),
        };
        let version = codec::probe_version(&frame).map_err(Refusal::Malformed)?;
        // This version's agents, and the previous version's (brokers are upgraded first).
        let hello: Hello = codec::decode_hello(&frame)
            .map_err(Refusal::Malformed)?
            .ok_or(Refusal::Version(version))?;
        if let Some(want) = &self.settings.token {
            let ok = hello
                .token
                .as_deref()
                .is_some_and(|got| same_secret(got.as_bytes(), want.as_bytes()));
            if !ok {
                return Err(Refusal::Token);
            }
        }
        Ok(hello)
    }

    async fn serve<S>(
        &self,
        host: &HostId,
        conn: ConnId,
        framed: Framed<S, BrokerCodec>,
        mut inbox: LinkInbox,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut framed = framed;
        let mut launches: HashMap<SessionId, Waiter<LaunchReply>> = HashMap::new();
        let mut stops: HashMap<SessionId, Vec<Waiter<()>>> = HashMap::new();
        let mut reads = LogWaiters::new();
        let mut next_read = 0u64;
        let silence = self.settings.heartbeat_timeout;
        // One timer for the link's life, re-armed only when it fires: moving a deadline on
        // every frame would touch the runtime's timer wheel 10,000 times a second at scale.
        let mut last_heard = Instant::now();
        let silent = sleep_until(last_heard + silence);
        tokio::pin!(silent);
        let mut unacked = 0u32;
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => {
                    // Requests have drained. Stops they left (a launch that timed out, a
                    // record that failed) go out first; then the agent learns this is a
                    // shutdown, not a fault.
                    for session_id in inbox.stops.take() {
                        if write(&mut framed, BrokerMessage::Stop { session_id }).await.is_err() {
                            return;
                        }
                    }
                    let _ = write(&mut framed, BrokerMessage::GoingAway).await;
                    return;
                }
                () = inbox.stops.pending() => {
                    for session_id in inbox.stops.take() {
                        if let Err(e) = write(&mut framed, BrokerMessage::Stop { session_id }).await {
                            tracing::warn!(%host, error = %e, "agent link write failed; closing it");
                            return;
                        }
                    }
                }
                Some(cmd) = inbox.commands.recv() => {
                    let mut launching = None;
                    let msg = match cmd {
                        AgentCommand::Launch(launch) => {
                            let Launch { req, reply, span } = *launch;
                            // Waiters that gave up (their start timed out) are dropped here.
                            launches.retain(|_, w| !w.reply.is_closed());
                            stops.retain(|_, rs| {
                                rs.retain(|r| !r.reply.is_closed());
                                !rs.is_empty()
                            });
                            tracing::debug!(parent: &span, %host, "launch sent to the agent");
                            launches.insert(req.session_id.clone(), Waiter { reply, span });
                            launching = Some(req.session_id.clone());
                            BrokerMessage::Launch(req)
                        }
                        AgentCommand::Stop(stop) => {
                            let Stop { session_id, reply, span } = *stop;
                            tracing::debug!(parent: &span, %host, "stop sent to the agent");
                            stops.entry(session_id.clone()).or_default().push(Waiter { reply, span });
                            BrokerMessage::Stop { session_id }
                        }
                        AgentCommand::Central(messages) => {
                            for msg in *messages {
                                if let Err(e) = write(&mut framed, msg).await {
                                    tracing::warn!(%host, error = %e, "agent link write failed; closing it");
                                    return;
                                }
                            }
                            continue;
                        }
                        AgentCommand::ReadLog(read) => {
                            let ReadLog { session_id, read, reply } = *read;
                            reads.retain(|_, r| !r.is_closed());
                            if reads.len() >= MAX_LOG_READS {
                                let _ = reply.send(Err(LogUnavailable::Busy));
                                continue;
                            }
                            next_read += 1;
                            reads.insert(next_read, reply);
                            BrokerMessage::ReadLog(LogRequest { request_id: next_read, session_id, read })
                        }
                    };
                    match write(&mut framed, msg).await {
                        Ok(()) => {}
                        // What the agent's version cannot say (an older agent asked for GPUs)
                        // is not sent; the link goes on, and a launch fails with the reason.
                        Err(CodecError::Encode(why)) => {
                            tracing::warn!(%host, %why, "a message the agent's version cannot take was not sent");
                            if let Some(w) = launching.and_then(|id| launches.remove(&id)) {
                                let _ = w.reply.send(LaunchReply::Failed {
                                    kind: protocol::wire::LaunchFailure::BadRequest,
                                    message: format!("the host's agent is too old: {why}"),
                                });
                            }
                        }
                        Err(e) => {
                            tracing::warn!(%host, error = %e, "agent link write failed; closing it");
                            return;
                        }
                    }
                }
                () = &mut silent => {
                    if last_heard.elapsed() < silence {
                        silent.as_mut().reset(last_heard + silence);
                        continue;
                    }
                    tracing::warn!(%host, timeout = ?silence, "agent silent; dropping its link");
                    return;
                }
                frame = framed.next() => {
                    let msg = match frame {
                        None => return,
                        Some(Err(e)) => {
                            tracing::warn!(%host, error = %e, "agent link broken; closing it");
                            return;
                        }
                        Some(Ok(msg)) => msg,
                    };
                    last_heard = Instant::now();
                    let heartbeat = matches!(msg, AgentMessage::Heartbeat(_));
                    if let Err(()) = self.handle(host, conn, msg, &mut launches, &mut stops, &mut reads, &mut framed).await {
                        return;
                    }
                    if heartbeat {
                        unacked += 1;
                        if unacked >= HEARTBEATS_PER_ACK {
                            unacked = 0;
                            if write(&mut framed, BrokerMessage::HeartbeatAck).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn handle<S>(
        &self,
        host: &HostId,
        conn: ConnId,
        msg: AgentMessage,
        launches: &mut HashMap<SessionId, Waiter<LaunchReply>>,
        stops: &mut HashMap<SessionId, Vec<Waiter<()>>>,
        reads: &mut LogWaiters,
        sink: &mut S,
    ) -> Result<(), ()>
    where
        S: futures::Sink<BrokerMessage, Error = CodecError> + Unpin,
    {
        match msg {
            AgentMessage::Heartbeat(load) => {
                self.registry.seen(host, Some(&load));
                // Said again at every heartbeat while it lasts: one the service has no room
                // for now is dropped rather than holding up the link.
                for g in load.sessions.into_iter().filter(|g| g.idle_ms.is_some()) {
                    let event = HostEvent::Idle {
                        host_id: host.clone(),
                        idle: std::time::Duration::from_millis(g.idle_ms.unwrap_or_default()),
                        session_id: g.session_id,
                    };
                    if let Err(mpsc::error::TrySendError::Closed(_)) = self.events.try_send(event) {
                        return Err(());
                    }
                }
            }
            AgentMessage::Launched(l) => {
                self.registry.seen(host, None);
                let id = l.session_id.clone();
                let delivered = launches.remove(&id).is_some_and(|w| {
                    tracing::debug!(parent: &w.span, %host, pid = l.pid, "the agent launched the game");
                    w.reply.send(LaunchReply::Launched(l)).is_ok()
                });
                if !delivered {
                    // Nobody waits for it any more (the start timed out): no game may run
                    // without a session.
                    tracing::warn!(%host, session = %id, "late launch; stopping the game");
                    write(sink, BrokerMessage::Stop { session_id: id })
                        .await
                        .map_err(|_| ())?;
                }
            }
            AgentMessage::LaunchFailed {
                session_id,
                kind,
                message,
            } => {
                if let Some(w) = launches.remove(&session_id) {
                    tracing::debug!(parent: &w.span, %host, ?kind, %message, "the agent could not launch the game");
                    let _ = w.reply.send(LaunchReply::Failed { kind, message });
                }
            }
            AgentMessage::Stopped { session_id } => {
                let waiting = stops.remove(&session_id).unwrap_or_default();
                let mut delivered = false;
                for w in waiting {
                    tracing::debug!(parent: &w.span, %host, "the agent stopped the game");
                    delivered |= w.reply.send(()).is_ok();
                }
                if !delivered {
                    let event = HostEvent::Stopped {
                        host_id: host.clone(),
                        session_id,
                    };
                    self.events.send(event).await.map_err(|_| ())?;
                }
            }
            AgentMessage::Exited { session_id, status } => {
                self.registry.seen(host, None);
                let event = HostEvent::Exited {
                    host_id: host.clone(),
                    session_id,
                    status,
                };
                self.events.send(event).await.map_err(|_| ())?;
            }
            AgentMessage::Offers { games, builds } => {
                if let Some(facts) = self.registry.set_offers(host, conn, games, builds) {
                    let event = HostEvent::Offers {
                        host_id: host.clone(),
                        facts: Box::new(facts),
                    };
                    self.events.send(event).await.map_err(|_| ())?;
                }
            }
            AgentMessage::Log(page) => {
                if let Some(reply) = reads.remove(&page.request_id) {
                    let _ = reply.send(page.result);
                }
            }
        }
        Ok(())
    }
}
