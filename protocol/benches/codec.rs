//! Encode and decode every message of the agent link, both directions (criterion).
//! Run: `cargo bench -p protocol --bench codec`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_main, Criterion};
use protocol::codec::{decode, encode};
use protocol::wire::*;
use protocol::{GameId, HostId, SessionId};

fn sid(n: u32) -> SessionId {
    SessionId::new(format!("0190c3c8-7d2e-7f00-8000-{n:012}")).expect("id")
}

fn running(n: u32) -> Vec<RunningGame> {
    (0..n)
        .map(|i| RunningGame {
            session_id: sid(i),
            pid: 1000 + i,
            pgid: 1000 + i,
            port: 20000 + i as u16,
            idle_ms: None,
            gpus: Vec::new(),
            slots: 1,
        })
        .collect()
}

fn agent_messages() -> Vec<(&'static str, AgentMessage)> {
    vec![
        (
            "launched",
            AgentMessage::Launched(Launched {
                session_id: sid(1),
                pid: 4242,
                ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
                port: 20001,
                ports: vec![20001],
            }),
        ),
        (
            "launch_failed",
            AgentMessage::LaunchFailed {
                session_id: sid(1),
                kind: LaunchFailure::SpawnFailed,
                message: "cannot start /opt/ga/bin/ga-server-periodic: No such file".into(),
            },
        ),
        ("stopped", AgentMessage::Stopped { session_id: sid(1) }),
        (
            "exited",
            AgentMessage::Exited {
                session_id: sid(1),
                status: ExitStatus::Code(3),
            },
        ),
        (
            "heartbeat_8_sessions",
            AgentMessage::Heartbeat(Load {
                cpu_percent: 37.5,
                mem_used_bytes: 3 << 30,
                mem_total_bytes: 32 << 30,
                sessions: running(8),
            }),
        ),
    ]
}

fn broker_messages() -> Vec<(&'static str, BrokerMessage)> {
    vec![
        (
            "launch",
            BrokerMessage::Launch(LaunchRequest {
                session_id: sid(1),
                game_id: GameId::new("neverball").expect("id"),
                mode: Some("event-driven".into()),
                config: Some("server.neverball.conf".into()),
                settings: Default::default(),
                join: None,
                build: None,
                gpus: Vec::new(),
            }),
        ),
        ("stop", BrokerMessage::Stop { session_id: sid(1) }),
        ("heartbeat_ack", BrokerMessage::HeartbeatAck),
        ("going_away", BrokerMessage::GoingAway),
    ]
}

fn hello() -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        host_id: HostId::new("gpu-01").expect("id"),
        token: Some("secret-token".into()),
        facts: HostFacts {
            hostname: "gpu-01".into(),
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
            cpus: 32,
            mem_total_bytes: 128 << 30,
            games: (0..10)
                .map(|i| GameOffer {
                    game_id: GameId::new(format!("game-{i}")).expect("id"),
                    modes: vec!["event-driven".into(), "periodic".into()],
                    ready_timeout_ms: None,
                    settings: Vec::new(),
                    max_duration_s: None,
                    idle_timeout_s: None,
                    build: None,
                    gpus: 0,
                    slots: 1,
                })
                .collect(),
            max_sessions: 8,
            port_range: PortRange {
                lo: 20000,
                hi: 20999,
            },
            builds: Vec::new(),
            gpus: Vec::new(),
            labels: Default::default(),
        },
        running: running(8),
        exited: vec![],
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("agent_to_broker");
    for (name, msg) in agent_messages() {
        let bytes = encode(&msg).expect("encode");
        g.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| encode(black_box(&msg)))
        });
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| decode::<AgentMessage>(black_box(&bytes)))
        });
    }
    let h = hello();
    let bytes = encode(&h).expect("encode");
    g.bench_function("encode/hello", |b| b.iter(|| encode(black_box(&h))));
    g.bench_function("decode/hello", |b| {
        b.iter(|| decode::<Hello>(black_box(&bytes)))
    });
    g.finish();
    let mut g = c.benchmark_group("broker_to_agent");
    for (name, msg) in broker_messages() {
        let bytes = encode(&msg).expect("encode");
        g.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| encode(black_box(&msg)))
        });
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| decode::<BrokerMessage>(black_box(&bytes)))
        });
    }
    g.finish();
}

// criterion's macro makes an undocumented pub fn.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
