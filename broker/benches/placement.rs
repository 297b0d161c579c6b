//! Placement over 100, 1,000 and 10,000 hosts (criterion): the broker's index
//! (`HostIndex::place`), the reference scan (`place`) as the same run's baseline, and the cost
//! of keeping the index up to date: on a heartbeat (`set_cpu`, what the registry calls) and on
//! any change of a host's view (`upsert`). The figure to reach:
//! under 20 µs at 10,000 hosts. Run: `cargo bench -p broker --bench placement`.

use std::hint::black_box;

use broker::placement::{place, HostIndex, HostView};
use criterion::{criterion_main, Criterion};
use protocol::api::HostStatus;
use protocol::wire::GameOffer;
use protocol::{GameId, HostId};

fn hosts(n: usize) -> Vec<HostView> {
    (0..n)
        .map(|i| HostView {
            host_id: HostId::new(format!("host-{i:05}")).expect("id"),
            status: if i % 10 == 0 {
                HostStatus::Draining
            } else {
                HostStatus::Online
            },
            games: (0..5)
                .map(|g| GameOffer {
                    game_id: GameId::new(format!("game-{}", (i + g) % 20)).expect("id"),
                    modes: vec!["event-driven".into(), "periodic".into()],
                    ready_timeout_ms: None,
                    settings: Vec::new(),
                    max_duration_s: None,
                    idle_timeout_s: None,
                    build: None,
                })
                .collect(),
            max_sessions: 8,
            sessions: (i % 9) as u32,
            cpu_percent: (i % 100) as f32,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let game = GameId::new("game-7").expect("id");
    for n in [100, 1_000, 10_000] {
        let hs = hosts(n);
        let mut index = HostIndex::default();
        for h in &hs {
            index.upsert(h);
        }
        let mut g = c.benchmark_group(format!("{n} hosts"));
        g.bench_function("index place", |b| {
            b.iter(|| index.place(black_box(&game), Some("periodic")))
        });
        g.bench_function("scan place (baseline)", |b| {
            b.iter(|| place(black_box(&hs), black_box(&game), Some("periodic")))
        });
        let mut i = 0usize;
        // An online host with free slots (every tenth is draining), so each update re-ranks it.
        let mut host = hs[n / 2 + 1].clone();
        assert!(host.status == HostStatus::Online && host.sessions < host.max_sessions);
        g.bench_function("index heartbeat (set_cpu)", |b| {
            b.iter(|| {
                i += 1;
                index.set_cpu(black_box(&host.host_id), (i % 1000) as f32 / 10.0);
            })
        });
        g.bench_function("index update, whole view (upsert)", |b| {
            b.iter(|| {
                i += 1;
                host.cpu_percent = (i % 1000) as f32 / 10.0;
                index.upsert(black_box(&host));
            })
        });
        g.finish();
    }
}

// criterion's macro makes an undocumented pub fn.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
