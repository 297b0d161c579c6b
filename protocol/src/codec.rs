//! Framing and payload format of the agent link.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of payload, at most
//! [`MAX_FRAME_LEN`]. The length is checked before anything is buffered (tokio-util's
//! `LengthDelimitedCodec` reserves the declared length as soon as the header arrives, so the
//! cap is what bounds a peer's claim on our memory).
//!
//! The payload is bincode 2 (serde mode, standard config), decoded with a byte limit equal to
//! the frame size: without one, a 10-byte frame that claims a vector of 2^60 elements makes
//! bincode try to allocate it and abort the process. A payload must be consumed exactly;
//! trailing bytes are an error.
//!
//! This module is the only place that knows the payload format: swapping bincode for another
//! format means changing [`encode`] and [`decode`] and nothing else.

use std::io;
use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::wire::VersionProbe;

/// The largest frame payload accepted or sent, in bytes.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_FRAME_LEN>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_FRAME_LEN>()
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The connection failed, or a frame's length prefix is over [`MAX_FRAME_LEN`].
    #[error("agent link: {0}")]
    Io(#[from] io::Error),
    /// The payload is not a valid message of the expected type.
    #[error("agent link: malformed message: {0}")]
    Decode(String),
    /// A message could not be encoded (or is larger than [`MAX_FRAME_LEN`]).
    #[error("agent link: cannot encode message: {0}")]
    Encode(String),
}

/// Encodes one message as a frame payload.
pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes, CodecError> {
    let bytes = bincode::serde::encode_to_vec(msg, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    if bytes.len() > MAX_FRAME_LEN {
        return Err(CodecError::Encode(format!(
            "message of {} bytes is over the {MAX_FRAME_LEN}-byte frame limit",
            bytes.len()
        )));
    }
    Ok(Bytes::from(bytes))
}

/// Decodes one frame payload as exactly one message.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    let (msg, read) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if read != payload.len() {
        return Err(CodecError::Decode(format!(
            "{} trailing bytes after the message",
            payload.len() - read
        )));
    }
    Ok(msg)
}

/// Reads just the protocol version at the start of a [`crate::wire::Hello`] payload, whatever
/// follows it.
pub fn probe_version(payload: &[u8]) -> Result<u32, CodecError> {
    let (probe, _): (VersionProbe, usize) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    Ok(probe.protocol_version)
}

/// The length-delimited framing with this protocol's limit.
pub fn length_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_LEN)
        .length_field_length(4)
        .new_codec()
}

/// A typed codec: decodes frames as `In`, encodes `Out` as frames.
///
/// The broker uses `MessageCodec<AgentMessage, BrokerMessage>`, the agent the reverse. For the
/// handshake, read raw frames with [`RawCodec`] or use `MessageCodec<Hello, HelloReply>`, then
/// switch with `Framed::map_codec`, which keeps buffered bytes.
pub struct MessageCodec<In, Out> {
    frames: LengthDelimitedCodec,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> MessageCodec<In, Out> {
    /// A codec with a fresh framing state.
    pub fn new() -> Self {
        Self {
            frames: length_codec(),
            _types: PhantomData,
        }
    }
}

impl<In, Out> Default for MessageCodec<In, Out> {
    fn default() -> Self {
        Self::new()
    }
}

impl<In: DeserializeOwned, Out> Decoder for MessageCodec<In, Out> {
    type Item = In;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
        match self.frames.decode(src)? {
            Some(frame) => decode(&frame).map(Some),
            None => Ok(None),
        }
    }
}

impl<In, Out: Serialize> Encoder<Out> for MessageCodec<In, Out> {
    type Error = CodecError;

    fn encode(&mut self, msg: Out, dst: &mut BytesMut) -> Result<(), CodecError> {
        let payload = encode(&msg)?;
        self.frames.encode(payload, dst)?;
        Ok(())
    }
}

/// Raw frames in, typed messages out: what the broker reads a handshake with, so that it can
/// probe the version before decoding the rest.
pub type RawCodec = LengthDelimitedCodec;

/// The versions of the agent link a broker takes: its own, and the one before (so agents are
/// upgraded after their brokers, host by host).
pub const ACCEPTED_VERSIONS: [u32; 2] = [crate::wire::PROTOCOL_VERSION, crate::wire::v7::VERSION];

/// Decodes an agent's [`crate::wire::Hello`] of any accepted version as this version's, or
/// `None` for a version the broker does not take (refused by the caller, naming both).
pub fn decode_hello(payload: &[u8]) -> Result<Option<crate::wire::Hello>, CodecError> {
    match probe_version(payload)? {
        v if v == crate::wire::PROTOCOL_VERSION => decode(payload).map(Some),
        crate::wire::v7::VERSION => {
            decode::<crate::wire::v7::Hello>(payload).map(|h| Some(h.into()))
        }
        _ => Ok(None),
    }
}

/// The broker's side of an agent's link after the handshake, in the agent's version: decodes
/// [`AgentMessage`]s and encodes [`BrokerMessage`]s as this version's or, for an agent of
/// [`crate::wire::v7::VERSION`], through its types. A message the agent's version cannot say
/// is an encode error ([`CodecError::Encode`]), never sent misread.
///
/// [`AgentMessage`]: crate::wire::AgentMessage
/// [`BrokerMessage`]: crate::wire::BrokerMessage
pub struct BrokerCodec {
    frames: LengthDelimitedCodec,
    version: u32,
}

impl BrokerCodec {
    /// A codec for an agent speaking `version`, one of [`ACCEPTED_VERSIONS`].
    pub fn new(version: u32) -> Self {
        Self {
            frames: length_codec(),
            version,
        }
    }
}

impl Decoder for BrokerCodec {
    type Item = crate::wire::AgentMessage;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        let Some(frame) = self.frames.decode(src)? else {
            return Ok(None);
        };
        if self.version == crate::wire::v7::VERSION {
            return decode::<crate::wire::v7::AgentMessage>(&frame).map(|m| Some(m.into()));
        }
        decode(&frame).map(Some)
    }
}

impl Encoder<crate::wire::BrokerMessage> for BrokerCodec {
    type Error = CodecError;

    fn encode(
        &mut self,
        msg: crate::wire::BrokerMessage,
        dst: &mut BytesMut,
    ) -> Result<(), CodecError> {
        let payload = if self.version == crate::wire::v7::VERSION {
            let old = crate::wire::v7::BrokerMessage::try_from(msg)
                .map_err(|e| CodecError::Encode(e.to_string()))?;
            encode(&old)?
        } else {
            encode(&msg)?
        };
        self.frames.encode(payload, dst)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::ids::{GameId, HostId, SessionId};
    use crate::wire::*;

    fn sid() -> SessionId {
        SessionId::new("0190c3c8-7d2e-7f00-8000-000000000001").unwrap()
    }

    fn build() -> crate::BuildId {
        crate::BuildId::of_digest(&[7; 32])
    }

    /// A central game as large as one may be: two builds, each with the largest entry.
    fn largest_central_game() -> CentralGame {
        let one = || GameBuild {
            build: build(),
            kind: crate::api::BuildKind::Archive,
            size: u64::MAX,
            entry: "\u{10ffff}".repeat(MAX_ENTRY_JSON / 4),
        };
        CentralGame {
            game_id: GameId::new("g".repeat(crate::ids::MAX_ID_LEN)).unwrap(),
            builds: vec![one(), one()],
        }
    }

    fn running() -> RunningGame {
        RunningGame {
            session_id: sid(),
            pid: 4242,
            pgid: 4242,
            port: 20000,
            idle_ms: None,
            slots: 2,
            gpus: vec![0, 3],
        }
    }

    fn hello() -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            host_id: HostId::new("host-a").unwrap(),
            token: Some("secret".into()),
            facts: HostFacts {
                hostname: "gpu-01".into(),
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                cpus: 16,
                mem_total_bytes: 64 << 30,
                games: vec![GameOffer {
                    game_id: GameId::new("neverball").unwrap(),
                    modes: vec!["event-driven".into(), "periodic".into()],
                    ready_timeout_ms: None,
                    settings: Vec::new(),
                    max_duration_s: None,
                    idle_timeout_s: None,
                    build: Some(build()),
                    slots: 2,
                    gpus: 1,
                }],
                max_sessions: 4,
                port_range: PortRange {
                    lo: 20000,
                    hi: 20999,
                },
                builds: vec![BuildState {
                    game_id: GameId::new("neverball").unwrap(),
                    build: build(),
                    status: BuildStatus::Failed("no space left on device".into()),
                }],
                labels: [("region".to_owned(), "eu-west".to_owned())].into(),
                gpus: vec![0, 1, 2, 3],
            },
            running: vec![running()],
            exited: vec![ExitedGame {
                session_id: sid(),
                status: ExitStatus::Signal(15),
            }],
        }
    }

    fn agent_messages() -> Vec<AgentMessage> {
        vec![
            AgentMessage::Launched(Launched {
                session_id: sid(),
                pid: 1,
                ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
                port: 20001,
                ports: vec![20001],
            }),
            AgentMessage::LaunchFailed {
                session_id: sid(),
                kind: LaunchFailure::BadRequest,
                message: "unknown mode".into(),
            },
            AgentMessage::LaunchFailed {
                session_id: sid(),
                kind: LaunchFailure::SpawnFailed,
                message: "no such file".into(),
            },
            AgentMessage::Stopped { session_id: sid() },
            AgentMessage::Exited {
                session_id: sid(),
                status: ExitStatus::Code(3),
            },
            AgentMessage::Exited {
                session_id: sid(),
                status: ExitStatus::Signal(9),
            },
            AgentMessage::Heartbeat(Load {
                cpu_percent: 12.5,
                mem_used_bytes: 1 << 30,
                mem_total_bytes: 8 << 30,
                sessions: vec![running()],
            }),
            AgentMessage::Log(LogPage {
                request_id: 7,
                result: Ok(LogChunk {
                    offset: 3,
                    data: vec![b'x'; MAX_LOG_PAGE as usize],
                    size: 1 << 20,
                }),
            }),
            AgentMessage::Log(LogPage {
                request_id: 8,
                result: Err(LogUnavailable::NotFound),
            }),
            AgentMessage::Offers {
                games: hello().facts.games,
                builds: hello().facts.builds,
            },
        ]
    }

    fn broker_messages() -> Vec<BrokerMessage> {
        vec![
            BrokerMessage::Launch(LaunchRequest {
                session_id: sid(),
                game_id: GameId::new("neverball").unwrap(),
                mode: Some("periodic".into()),
                config: Some("server.neverball.conf".into()),
                settings: Default::default(),
                join: None,
                build: Some(build()),
                gpus: vec![1, 2],
            }),
            BrokerMessage::CentralGames(CentralGames {
                builds_url: "https://broker.example:8080".into(),
                games: (0..MAX_CENTRAL_GAMES)
                    .map(|i| GameId::new(format!("{i:0>128}")).unwrap())
                    .collect(),
            }),
            BrokerMessage::CentralGame(largest_central_game()),
            BrokerMessage::Stop { session_id: sid() },
            BrokerMessage::HeartbeatAck,
            BrokerMessage::GoingAway,
            BrokerMessage::ReadLog(LogRequest {
                request_id: 1,
                session_id: sid(),
                read: LogRead::Tail {
                    lines: 200,
                    max_bytes: 1 << 20,
                },
            }),
            BrokerMessage::ReadLog(LogRequest {
                request_id: 2,
                session_id: sid(),
                read: LogRead::From { offset: 1 << 40 },
            }),
        ]
    }

    fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: &T) {
        let bytes = encode(msg).unwrap();
        let back: T = decode(&bytes).unwrap();
        assert_eq!(&back, msg);
    }

    #[test]
    fn every_message_round_trips() {
        roundtrip(&hello());
        roundtrip(&HelloReply::Welcome {
            heartbeat_interval_ms: 1000,
        });
        roundtrip(&HelloReply::Rejected("bad token".into()));
        agent_messages().iter().for_each(roundtrip);
        broker_messages().iter().for_each(roundtrip);
    }

    #[test]
    fn every_message_round_trips_through_frames() {
        let mut agent_side = MessageCodec::<BrokerMessage, AgentMessage>::new();
        let mut broker_side = MessageCodec::<AgentMessage, BrokerMessage>::new();
        let mut buf = BytesMut::new();
        for m in agent_messages() {
            agent_side.encode(m, &mut buf).unwrap();
        }
        let mut got = Vec::new();
        while let Some(m) = broker_side.decode(&mut buf).unwrap() {
            got.push(m);
        }
        assert_eq!(got, agent_messages());
        for m in broker_messages() {
            broker_side.encode(m, &mut buf).unwrap();
        }
        let mut got = Vec::new();
        while let Some(m) = agent_side.decode(&mut buf).unwrap() {
            got.push(m);
        }
        assert_eq!(got, broker_messages());
    }

    #[test]
    fn version_probe_reads_any_hello() {
        let bytes = encode(&hello()).unwrap();
        assert_eq!(probe_version(&bytes).unwrap(), PROTOCOL_VERSION);
        // A future Hello with other fields after the version still probes.
        let future = encode(&(77u32, "whatever", vec![1u8, 2, 3])).unwrap();
        assert_eq!(probe_version(&future).unwrap(), 77);
    }

    #[test]
    fn rejected_stays_variant_one_with_a_string() {
        // Old and new agents alike must read a rejection: pin its encoding.
        let bytes = encode(&HelloReply::Rejected("no".into())).unwrap();
        assert_eq!(&bytes[..], &[1, 2, b'n', b'o']);
    }

    #[test]
    fn truncated_payload_is_an_error() {
        let bytes = encode(&hello()).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode::<Hello>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut bytes = encode(&BrokerMessage::HeartbeatAck).unwrap().to_vec();
        bytes.push(0);
        assert!(decode::<BrokerMessage>(&bytes).is_err());
    }

    #[test]
    fn truncated_frame_waits_then_errors_at_eof() {
        let mut codec = MessageCodec::<AgentMessage, AgentMessage>::new();
        let mut buf = BytesMut::new();
        codec
            .encode(AgentMessage::Stopped { session_id: sid() }, &mut buf)
            .unwrap();
        let mut cut = BytesMut::from(&buf[..buf.len() - 1]);
        assert!(codec.decode(&mut cut).unwrap().is_none());
        assert!(codec.decode_eof(&mut cut).is_err());
    }

    #[test]
    fn oversized_length_prefix_is_refused_before_buffering() {
        let mut codec = MessageCodec::<AgentMessage, AgentMessage>::new();
        let mut buf = BytesMut::from(&(u32::MAX).to_be_bytes()[..]);
        buf.extend_from_slice(&[0; 6]);
        assert!(codec.decode(&mut buf).is_err());
        assert!(buf.capacity() < 1024, "decoder reserved {}", buf.capacity());
        let mut buf = BytesMut::from(&((MAX_FRAME_LEN + 1) as u32).to_be_bytes()[..]);
        assert!(codec.decode(&mut buf).is_err());
    }

    #[test]
    fn allocation_bomb_is_an_error_not_an_abort() {
        // Variant 4 (Heartbeat): f32, two varint u64s, then a Vec length of u64::MAX (0xFD + 8
        // bytes). Without a decode limit bincode would try to reserve that many elements.
        let mut payload = vec![4u8];
        payload.extend_from_slice(&0f32.to_le_bytes());
        payload.extend_from_slice(&[0, 0, 0xFD]);
        payload.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode::<AgentMessage>(&payload).is_err());
        // And a bare string claiming 2^60 bytes.
        let mut payload = vec![1u8, 0xFD];
        payload.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(decode::<HelloReply>(&payload).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let len = rng.gen_range(0..64);
            let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let _ = decode::<AgentMessage>(&bytes);
            let _ = decode::<BrokerMessage>(&bytes);
            let _ = decode::<Hello>(&bytes);
            let _ = probe_version(&bytes);
        }
    }

    #[test]
    fn mutated_valid_frames_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let valid: Vec<Vec<u8>> = agent_messages()
            .iter()
            .map(|m| encode(m).unwrap().to_vec())
            .chain(std::iter::once(encode(&hello()).unwrap().to_vec()))
            .collect();
        for _ in 0..20_000 {
            let mut bytes = valid[rng.gen_range(0..valid.len())].clone();
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..bytes.len());
                bytes[i] = rng.gen();
            }
            let _ = decode::<AgentMessage>(&bytes);
            let _ = decode::<Hello>(&bytes);
        }
    }

    /// A broker takes an agent of the previous version: its frames decode as this version's
    /// messages (one slot, no GPU, no label), and what the broker says reaches it in its own
    /// layout; a launch with GPUs, which it could not follow, is refused, never misread.
    #[test]
    fn a_broker_speaks_to_a_version_7_agent() {
        let game = GameId::new("neverball").unwrap();
        let offer = v7::GameOffer {
            game_id: game.clone(),
            modes: vec!["event-driven".into()],
            ready_timeout_ms: Some(5000),
            settings: Vec::new(),
            max_duration_s: None,
            idle_timeout_s: None,
            build: None,
        };
        let running = v7::RunningGame {
            session_id: sid(),
            pid: 42,
            pgid: 42,
            port: 20000,
            idle_ms: None,
        };
        let old = v7::Hello {
            protocol_version: v7::VERSION,
            host_id: HostId::new("old-host").unwrap(),
            token: None,
            facts: v7::HostFacts {
                hostname: "old".into(),
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                cpus: 4,
                mem_total_bytes: 1 << 30,
                games: vec![offer.clone()],
                max_sessions: 4,
                port_range: PortRange { lo: 1, hi: 9 },
                builds: Vec::new(),
            },
            running: vec![running.clone()],
            exited: Vec::new(),
        };
        let hello = decode_hello(&encode(&old).unwrap()).unwrap().unwrap();
        assert_eq!(hello.host_id.as_str(), "old-host");
        assert_eq!(hello.facts.games[0].game_id, game);
        assert_eq!(
            (hello.facts.games[0].slots, hello.facts.games[0].gpus),
            (1, 0)
        );
        assert_eq!(hello.facts.games[0].ready_timeout_ms, Some(5000));
        assert!(hello.facts.labels.is_empty() && hello.facts.gpus.is_empty());
        assert_eq!((hello.running[0].pid, hello.running[0].slots), (42, 1));
        // Older than 7, or newer than this: not taken.
        let mut too_old = old.clone();
        too_old.protocol_version = 6;
        assert_eq!(decode_hello(&encode(&too_old).unwrap()).unwrap(), None);
        let mut newer = hello_frame_of(PROTOCOL_VERSION + 1);
        assert_eq!(decode_hello(&newer.split().freeze()).unwrap(), None);

        let mut broker = BrokerCodec::new(v7::VERSION);
        let mut agent = MessageCodec::<v7::BrokerMessage, v7::AgentMessage>::new();
        let mut buf = BytesMut::new();
        let beat = v7::AgentMessage::Heartbeat(v7::Load {
            cpu_percent: 12.5,
            mem_used_bytes: 1,
            mem_total_bytes: 2,
            sessions: vec![running],
        });
        agent.encode(beat, &mut buf).unwrap();
        agent
            .encode(
                v7::AgentMessage::Offers {
                    games: vec![offer],
                    builds: Vec::new(),
                },
                &mut buf,
            )
            .unwrap();
        match broker.decode(&mut buf).unwrap().unwrap() {
            AgentMessage::Heartbeat(l) => {
                assert_eq!(
                    (l.cpu_percent, l.sessions[0].port, l.sessions[0].slots),
                    (12.5, 20000, 1)
                );
            }
            other => panic!("{other:?}"),
        }
        match broker.decode(&mut buf).unwrap().unwrap() {
            AgentMessage::Offers { games, .. } => assert_eq!(games[0].slots, 1),
            other => panic!("{other:?}"),
        }
        let launch = |gpus: Vec<u32>| {
            BrokerMessage::Launch(LaunchRequest {
                session_id: sid(),
                game_id: game.clone(),
                mode: None,
                config: None,
                settings: Default::default(),
                join: None,
                build: None,
                gpus,
            })
        };
        broker.encode(launch(Vec::new()), &mut buf).unwrap();
        broker.encode(BrokerMessage::GoingAway, &mut buf).unwrap();
        match agent.decode(&mut buf).unwrap().unwrap() {
            v7::BrokerMessage::Launch(r) => assert_eq!(r.game_id, game),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            agent.decode(&mut buf).unwrap(),
            Some(v7::BrokerMessage::GoingAway)
        );
        let refused = broker.encode(launch(vec![0]), &mut buf);
        assert!(matches!(refused, Err(CodecError::Encode(_))), "{refused:?}");
        assert!(buf.is_empty(), "nothing of it was written");
        // This version's agents get this version's layout.
        let mut now = BrokerCodec::new(PROTOCOL_VERSION);
        now.encode(launch(vec![0, 1]), &mut buf).unwrap();
        let mut current = MessageCodec::<BrokerMessage, AgentMessage>::new();
        assert_eq!(current.decode(&mut buf).unwrap(), Some(launch(vec![0, 1])));
    }

    /// A `Hello` of this shape with `version`, as one frame's payload.
    fn hello_frame_of(version: u32) -> BytesMut {
        let mut h = hello();
        h.protocol_version = version;
        BytesMut::from(&encode(&h).unwrap()[..])
    }
}
