//! Placement over 100, 1,000 and 10,000 hosts (criterion): the broker's index
//! (`HostIndex::place`), the reference scan (`place`) as the same run's baseline, and the cost
//! of keeping the index up to date: on a heartbeat (`set_cpu`, what the registry calls) and on
//! any change of a host's view (`upsert`). The fleet has labels (3 regions x 2 GPU classes),
//! GPUs (8 a host, some held) and weights (games of 1 and 2 slots, some needing a GPU); starts
//! are placed with and without required and preferred labels, under `spread` and `pack`. The
//! figure to reach: p50 under 2 µs per placement at 10,000 hosts. Run:
//! `cargo bench -p broker --bench placement`.

use std::hint::black_box;
use std::sync::Arc;

use broker::placement::{place, HostIndex, HostView, Request, Strategy};
use criterion::{criterion_main, Criterion};
use protocol::api::HostStatus;
use protocol::labels::Labels;
use protocol::wire::GameOffer;
use protocol::{GameId, HostId};

fn labels(i: usize) -> Labels {
    [
        ("region", ["eu-west", "us-east", "ap-south"][i % 3]),
        ("gpu", ["a100", "rtx4090"][(i / 3) % 2]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn hosts(n: usize) -> Vec<HostView> {
    // Shared, as the registry shares a host's labels between its views.
    let sets: Vec<Arc<Labels>> = (0..6).map(|i| Arc::new(labels(i))).collect();
    (0..n)
        .map(|i| HostView {
            host_id: HostId::new(format!("host-{i:05}")).expect("id"),
            status: if i % 10 == 0 {
                HostStatus::Draining
            } else {
                HostStatus::Online
            },
            games: (0..5)
                .map(|g| {
                    let id = (i + g) % 20;
                    GameOffer {
                        game_id: GameId::new(format!("game-{id}")).expect("id"),
                        modes: vec!["event-driven".into(), "periodic".into()],
                        ready_timeout_ms: None,
                        settings: Vec::new(),
                        max_duration_s: None,
                        idle_timeout_s: None,
                        build: None,
                        slots: 1 + (id % 2) as u32,
                        gpus: (id % 3 == 1) as u32,
                    }
                })
                .collect(),
            max_sessions: 8,
            used: (i % 9) as u32,
            cpu_percent: (i % 100) as f32,
            labels: Arc::clone(&sets[i % 6]),
            gpus_free: (i % 9) as u32,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    // game-7: 2 slots and one GPU a session.
    let game = GameId::new("game-7").expect("id");
    let region: Labels = [("region".to_owned(), "eu-west".to_owned())].into();
    let prefer: Labels = [("gpu".to_owned(), "rtx4090".to_owned())].into();
    let plain = Request::new(&game, Some("periodic"));
    let labelled = plain.with_labels(&region, &prefer);
    for n in [100, 1_000, 10_000] {
        let hs = hosts(n);
        let mut g = c.benchmark_group(format!("{n} hosts"));
        for strategy in [Strategy::Spread, Strategy::Pack] {
            let mut index = HostIndex::new(strategy);
            for h in &hs {
                index.upsert(h);
            }
            assert!(index.place(&labelled).is_ok());
            g.bench_function(format!("index place, {strategy:?}"), |b| {
                b.iter(|| index.place(black_box(&plain)))
            });
            g.bench_function(format!("index place, labels + prefer, {strategy:?}"), |b| {
                b.iter(|| index.place(black_box(&labelled)))
            });
        }
        g.bench_function("scan place, labels + prefer (baseline)", |b| {
            b.iter(|| place(black_box(&hs), black_box(&labelled), Strategy::Spread))
        });
        let mut index = HostIndex::new(Strategy::Spread);
        for h in &hs {
            index.upsert(h);
        }
        let mut i = 0usize;
        // An online host with free slots (every tenth is draining), so each update re-ranks it.
        let mut host = hs[n / 2 + 1].clone();
        assert!(host.status == HostStatus::Online && host.used < host.max_sessions);
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
                host.used = (i % 3) as u32;
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
