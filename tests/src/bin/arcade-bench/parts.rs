//! The pair's cost taken apart: each side of the link with the other side simulated, so a
//! slow pair can be pinned on the broker or on the agent.
//!
//! - [`agent_alone`]: real agents (in this process, over real sockets), each driven by a
//!   simulated broker of its own that launches a game and stops it as soon as it runs, as
//!   many sessions at once per agent as in the pairs phase: the agents' and the games' cost
//!   with no HTTP and no broker.
//! - [`broker_alone`]: the real broker and HTTP API with simulated agents that answer at once
//!   (those of [`crate::scale`]), driven by the lean load clients ([`load::raw_pairs`]): the
//!   broker's cost with no process started.
//!
//! Both report a rate and the CPU per pair (see [`stats::CpuMark`]).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::catalog::Catalog;
use futures::{SinkExt, StreamExt};
use protocol::codec::MessageCodec;
use protocol::wire::{AgentMessage, BrokerMessage, Hello, HelloReply, LaunchRequest};
use protocol::{GameId, SessionId};
use tests::{AgentOptions, BrokerOptions, TestAgent, TestBroker};
use tokio::sync::Semaphore;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::load;
use crate::stats::CpuMark;

/// Sessions at once per agent, at most: a test agent has 10 ports (`tests::fresh_port_range`)
/// and a simulated one offers 8 slots (`scale`'s hello).
pub const MAX_AT_ONCE_PER_AGENT: usize = 8;

/// The whole phase, handshake to last stop, within this.
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);

/// What a part measured: pairs per second, CPU per pair (µs), the steal share (%), errors.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    pub rate: f64,
    pub cpu_us: f64,
    pub steal: f64,
    pub errors: usize,
}

/// `agents` real agents, each driven by a simulated broker of its own: `n` launch+stop pairs
/// in all, `parallel` at once in all (as many per agent as in the pairs phase).
pub async fn agent_alone(
    catalog: &Catalog,
    state_root: Option<&Path>,
    n: usize,
    parallel: usize,
    agents: usize,
) -> Part {
    let agents = agents.max(1);
    let mut links = Vec::new();
    let mut running = Vec::new();
    for i in 0..agents {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("addr");
        let mut o = AgentOptions::host(&format!("alone-{i}"));
        o.max_sessions = 1000;
        o.catalog = Some(catalog.clone());
        o.state_dir = state_root.map(|root| tempfile::tempdir_in(root).expect("state dir").keep());
        running.push(TestAgent::start(addr, o).await);
        links.push(
            tokio::time::timeout(PHASE_TIMEOUT, handshake(listener))
                .await
                .expect("the agent connects in time"),
        );
    }
    let (per, at_once) = (n.div_ceil(agents), parallel.div_ceil(agents));
    let mark = CpuMark::now();
    let t0 = Instant::now();
    let tasks: Vec<_> = links
        .into_iter()
        .enumerate()
        .map(|(i, link)| {
            tokio::spawn(tokio::time::timeout(
                PHASE_TIMEOUT,
                drive(link, i, per, at_once),
            ))
        })
        .collect();
    let mut errors = 0;
    for t in tasks {
        errors += t
            .await
            .expect("driver task")
            .expect("the agent-alone phase finishes in time");
    }
    let rate = (per * agents) as f64 / t0.elapsed().as_secs_f64();
    let (cpu_us, steal) = mark.per_op(per * agents);
    for a in running {
        a.stop().await;
    }
    Part {
        rate,
        cpu_us,
        steal,
        errors,
    }
}

type BrokerSide = Framed<tokio::net::TcpStream, MessageCodec<AgentMessage, BrokerMessage>>;

/// Accepts an agent and welcomes it, as the broker does.
async fn handshake(listener: tokio::net::TcpListener) -> BrokerSide {
    let (stream, _) = listener.accept().await.expect("the agent connects");
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, MessageCodec::<Hello, HelloReply>::new());
    framed
        .next()
        .await
        .expect("a hello")
        .expect("a valid hello");
    framed
        .send(HelloReply::Welcome {
            heartbeat_interval_ms: 1000,
        })
        .await
        .expect("welcome");
    framed.map_codec(|_| MessageCodec::new())
}

/// `n` launch+stop pairs through one agent's link, `parallel` at once, each stop sent as soon
/// as its launch is answered. Returns the pairs that failed.
async fn drive(mut link: BrokerSide, agent: usize, n: usize, parallel: usize) -> usize {
    let launch = |k: usize| {
        BrokerMessage::Launch(LaunchRequest {
            session_id: SessionId::new(format!("alone-{agent}-{k}")).expect("id"),
            game_id: GameId::new("bench").expect("id"),
            mode: None,
            config: None,
            settings: Default::default(),
            join: None,
            build: None,
            gpus: Vec::new(),
        })
    };
    let (mut sent, mut done, mut errors) = (0, 0, 0);
    while sent < parallel.min(n) {
        link.send(launch(sent)).await.expect("send");
        sent += 1;
    }
    while done < n {
        let msg = link
            .next()
            .await
            .expect("the agent stays connected")
            .expect("a valid message");
        match msg {
            AgentMessage::Launched(l) => {
                link.send(BrokerMessage::Stop {
                    session_id: l.session_id,
                })
                .await
                .expect("send");
                continue;
            }
            AgentMessage::Stopped { .. } => {}
            AgentMessage::LaunchFailed { .. } | AgentMessage::Exited { .. } => errors += 1,
            AgentMessage::Heartbeat(_) | AgentMessage::Log(_) | AgentMessage::Offers { .. } => {
                continue
            }
        }
        done += 1;
        if sent < n {
            link.send(launch(sent)).await.expect("send");
            sent += 1;
        }
    }
    errors
}

/// The real broker, `agents` simulated agents that answer at once, `clients` load clients:
/// `n` start+end pairs.
pub async fn broker_alone(n: usize, clients: usize, agents: usize) -> Part {
    let broker = TestBroker::start_with(BrokerOptions::default()).await;
    let counters = Arc::new(crate::scale::Counters::default());
    let stop = CancellationToken::new();
    let handshakes = Arc::new(Semaphore::new(agents.max(1)));
    for i in 0..agents {
        tokio::spawn(crate::scale::sim_agent(
            i,
            broker.agent_addr,
            Arc::clone(&handshakes),
            Arc::clone(&counters),
            stop.clone(),
        ));
    }
    let client = portal_client::Client::new(&broker.url, None).expect("client");
    tests::wait_hosts_online(&client, agents).await;
    let per = n.div_ceil(clients);
    let mark = CpuMark::now();
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(load::raw_pairs(broker.http_addr, per)))
        .collect();
    let (mut done, mut errors) = (0, 0);
    for t in tasks {
        let (_, _, pairs, err) = t.await.expect("client task");
        done += pairs.len();
        errors += err;
    }
    let rate = done as f64 / t0.elapsed().as_secs_f64();
    let (cpu_us, steal) = mark.per_op(done);
    stop.cancel();
    let _ = broker.stop().await;
    Part {
        rate,
        cpu_us,
        steal,
        errors,
    }
}

impl Part {
    /// Finite and positive, with no error: what a smoke run checks.
    pub fn sane(&self) -> bool {
        self.errors == 0 && self.rate.is_finite() && self.rate > 0.0 && self.cpu_us >= 0.0
    }
}

/// Prints a part's line.
pub fn print(what: &str, p: &Part) {
    println!(
        "{what}: {:.0}/s, {:.0} µs CPU per pair; {} errors (steal {:.0}%)",
        p.rate, p.cpu_us, p.errors, p.steal
    );
}
