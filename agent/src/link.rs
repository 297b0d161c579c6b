//! The agent's side of the agent link: connect, handshake, then serve until the link drops.
//!
//! One task owns the connection. It reads [`BrokerMessage`]s and hands launches and stops to
//! tasks of [`Games`] (launches wait for a state write and a spawn, stops for the game's group
//! to be gone), whose answers come back through the bounded event channel, like the games' own
//! exits; so a slow launch never holds up the next message. It sends a heartbeat every
//! interval. A broker silent for [`SILENT_HEARTBEATS`] intervals is taken as
//! gone: the link is dropped and the caller reconnects.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use protocol::codec::{CodecError, MessageCodec};
use protocol::wire::{
    AgentMessage, BrokerMessage, Hello, HelloReply, HostFacts, Load, PROTOCOL_VERSION,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{interval, timeout, Instant, MissedTickBehavior};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::brokers::Target;
use crate::games::Games;
use crate::load::Sampler;
use crate::Config;

/// Connecting and the handshake must each finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A write to the broker that does not complete within this drops the link: a broker that
/// stops reading must not hold the agent's events (and their memory) forever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Heartbeat intervals without a frame from the broker before the link is declared dead.
pub const SILENT_HEARTBEATS: u32 = 5;
// The broker acks one heartbeat in `HEARTBEATS_PER_ACK`: leave room for a late one.
const _: () = assert!(SILENT_HEARTBEATS > 2 * protocol::wire::HEARTBEATS_PER_ACK);

/// How a link ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The broker refused this agent; retrying as is will likely fail again.
    #[error("broker refused this agent: {0}")]
    Rejected(String),
    /// The broker could not be reached or the link broke.
    #[error("{0}")]
    Lost(String),
}

impl From<CodecError> for LinkError {
    fn from(e: CodecError) -> Self {
        Self::Lost(e.to_string())
    }
}

/// What a served link reports: whether it got past the handshake (so the caller resets its
/// backoff), and why it ended.
#[derive(Debug)]
pub struct LinkOutcome {
    /// The broker welcomed us.
    pub welcomed: bool,
    /// `Ok` when ended by shutdown.
    pub result: Result<(), LinkError>,
}

/// Sends one message, within `deadline`.
pub async fn write<S>(sink: &mut S, msg: AgentMessage, deadline: Duration) -> Result<(), LinkError>
where
    S: futures::Sink<AgentMessage, Error = CodecError> + Unpin,
{
    match timeout(deadline, sink.send(msg)).await {
        Ok(sent) => Ok(sent?),
        Err(_) => Err(LinkError::Lost(format!(
            "a write to the broker did not complete within {deadline:?}"
        ))),
    }
}

/// Connects once to `target` and serves until the link drops or `shutdown` fires.
pub async fn connect_and_serve(
    config: &Config,
    target: &Target,
    games: &Arc<Games>,
    events: &mut mpsc::Receiver<AgentMessage>,
    sampler: &Sampler,
    shutdown: &CancellationToken,
) -> LinkOutcome {
    let mut welcomed = false;
    let result = serve(
        config,
        target,
        games,
        events,
        sampler,
        shutdown,
        &mut welcomed,
    )
    .await;
    LinkOutcome { welcomed, result }
}

async fn serve(
    config: &Config,
    target: &Target,
    games: &Arc<Games>,
    events: &mut mpsc::Receiver<AgentMessage>,
    sampler: &Sampler,
    shutdown: &CancellationToken,
    welcomed: &mut bool,
) -> Result<(), LinkError> {
    let broker = &target.name;
    let stream = timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(target.addr))
        .await
        .map_err(|_| LinkError::Lost(format!("connecting to {broker} timed out")))?
        .map_err(|e| {
            LinkError::Lost(format!("cannot connect to {broker} ({}): {e}", target.addr))
        })?;
    // Small frames, latency matters more than packing.
    let _ = stream.set_nodelay(true);
    let ip = match config.advertise_ip {
        Some(ip) => ip,
        None => stream
            .local_addr()
            .map_err(|e| LinkError::Lost(e.to_string()))?
            .ip(),
    };
    match &config.tls {
        Some(tls) => {
            let server_name = tls
                .name_for(broker)
                .map_err(|e| LinkError::Rejected(e.to_string()))?;
            let stream = timeout(
                HANDSHAKE_TIMEOUT,
                tls.connector.connect(server_name, stream),
            )
            .await
            .map_err(|_| LinkError::Lost("the TLS handshake with the broker timed out".into()))?
            .map_err(|e| LinkError::Rejected(format!("TLS handshake with {broker} failed: {e}")))?;
            session(
                config, target, stream, ip, games, events, sampler, shutdown, welcomed,
            )
            .await
        }
        None => {
            session(
                config, target, stream, ip, games, events, sampler, shutdown, welcomed,
            )
            .await
        }
    }
}

/// The link over an established (plain or TLS) stream: handshake, then messages.
#[allow(clippy::too_many_arguments)]
async fn session<S>(
    config: &Config,
    target: &Target,
    stream: S,
    ip: IpAddr,
    games: &Arc<Games>,
    events: &mut mpsc::Receiver<AgentMessage>,
    sampler: &Sampler,
    shutdown: &CancellationToken,
    welcomed: &mut bool,
) -> Result<(), LinkError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let sample = sampler.sample().await;
    let (offers, builds) = games.central().offers();
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        host_id: config.host_id.clone(),
        token: config.token.clone(),
        facts: HostFacts {
            hostname: config.hostname.clone(),
            ip,
            cpus: config.cpus,
            mem_total_bytes: sample.mem_total_bytes,
            games: offers,
            max_sessions: config.max_sessions,
            port_range: config.port_range,
            builds,
            labels: config.labels.clone(),
            gpus: config.gpus.clone(),
        },
        running: games.running(),
        exited: games.exited(),
    };
    let mut framed = Framed::new(stream, MessageCodec::<HelloReply, Hello>::new());
    let reply = timeout(HANDSHAKE_TIMEOUT, async {
        framed.send(hello).await?;
        framed.next().await.transpose()
    })
    .await
    .map_err(|_| LinkError::Lost("the broker did not answer the handshake in time".into()))??;
    let heartbeat_every = match reply {
        Some(HelloReply::Welcome {
            heartbeat_interval_ms,
        }) => Duration::from_millis(u64::from(heartbeat_interval_ms.clamp(50, 60_000))),
        Some(HelloReply::Rejected(reason)) => return Err(LinkError::Rejected(reason)),
        None => {
            return Err(LinkError::Lost(
                "the broker closed the link during the handshake".into(),
            ))
        }
    };
    *welcomed = true;
    tracing::info!(broker = %target.name, addr = %target.addr, host = %config.host_id, %ip, "registered with the broker");
    let framed = framed.map_codec(|_| MessageCodec::<BrokerMessage, AgentMessage>::new());
    let (mut sink, mut stream) = framed.split();

    let mut tick = interval(heartbeat_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let silent_limit = heartbeat_every * SILENT_HEARTBEATS;
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            frame = stream.next() => {
                let msg = match frame {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(LinkError::Lost("the broker closed the link".into())),
                };
                last_heard = Instant::now();
                if msg == BrokerMessage::GoingAway {
                    return Err(LinkError::Lost("the broker is shutting down".into()));
                }
                handle(msg, games, ip);
            }
            Some(event) = events.recv() => write(&mut sink, event, WRITE_TIMEOUT).await?,
            _ = tick.tick() => {
                if last_heard.elapsed() > silent_limit {
                    return Err(LinkError::Lost(format!(
                        "the broker has been silent for {silent_limit:?}"
                    )));
                }
                let s = sampler.sample().await;
                let connected = connected_ports(games).await;
                let heartbeat = AgentMessage::Heartbeat(Load {
                    cpu_percent: s.cpu_percent,
                    mem_used_bytes: s.mem_used_bytes,
                    mem_total_bytes: s.mem_total_bytes,
                    sessions: games.running_seen(connected.as_ref()),
                });
                write(&mut sink, heartbeat, WRITE_TIMEOUT).await?;
            }
        }
    }
}

/// The local ports with a connection now, when a game watches for idleness (off the async
/// threads); `None` when none does, or the TCP table cannot be read (said once: idle games
/// then keep running).
async fn connected_ports(games: &Arc<Games>) -> Option<std::collections::HashSet<u16>> {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !games.watches_idle() {
        return None;
    }
    match tokio::task::spawn_blocking(crate::tcp::established_ports).await {
        Ok(Ok(ports)) => Some(ports),
        Ok(Err(e)) => {
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(error = %e, "cannot read the TCP table; idle timeouts are not enforced");
            }
            None
        }
        Err(_) => None,
    }
}

/// Hands one broker message to [`Games`]; the answers come on the event channel.
fn handle(msg: BrokerMessage, games: &Arc<Games>, ip: IpAddr) {
    match msg {
        BrokerMessage::Launch(req) => games.launch_and_report(req, ip),
        BrokerMessage::Stop { session_id } => games.stop_and_report(session_id),
        BrokerMessage::ReadLog(req) => games.read_log_and_report(req),
        BrokerMessage::CentralGames(set) => games.central().set_games(set),
        BrokerMessage::CentralGame(game) => games.central().set_game(game),
        BrokerMessage::HeartbeatAck | BrokerMessage::GoingAway => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_broker_that_stops_reading_drops_the_link_at_the_deadline() {
        // A peer that never reads, with room for one byte.
        let (ours, _theirs) = tokio::io::duplex(1);
        let mut sink = Framed::new(ours, MessageCodec::<BrokerMessage, AgentMessage>::new());
        let heartbeat = AgentMessage::Heartbeat(Load {
            cpu_percent: 1.0,
            mem_used_bytes: 1,
            mem_total_bytes: 2,
            sessions: Vec::new(),
        });
        let started = Instant::now();
        let err = write(&mut sink, heartbeat, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(
            matches!(err, LinkError::Lost(ref m) if m.contains("did not complete")),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
