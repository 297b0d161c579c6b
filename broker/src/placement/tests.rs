//! Placement's rules by table, and the index checked against the scan through long runs of
//! random changes, under both strategies.

use std::collections::BTreeMap;

use super::*;
use protocol::api::HostStatus::{Draining, Offline, Online};

fn offer(g: &str, modes: &[&str], slots: u32, gpus: u32) -> GameOffer {
    GameOffer {
        game_id: GameId::new(g).unwrap(),
        modes: modes.iter().map(|m| (*m).to_owned()).collect(),
        ready_timeout_ms: None,
        settings: Vec::new(),
        max_duration_s: None,
        idle_timeout_s: None,
        build: None,
        slots,
        gpus,
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn host(
    id: &str,
    status: HostStatus,
    games: &[(&str, &[&str])],
    max: u32,
    used: u32,
    cpu: f32,
) -> HostView {
    HostView {
        host_id: HostId::new(id).unwrap(),
        status,
        games: games.iter().map(|(g, m)| offer(g, m, 1, 0)).collect(),
        max_sessions: max,
        used,
        cpu_percent: cpu,
        labels: Arc::new(Labels::new()),
        gpus_free: 0,
    }
}

fn with_labels(mut h: HostView, pairs: &[(&str, &str)]) -> HostView {
    h.labels = Arc::new(labels(pairs));
    h
}

fn with_gpus(mut h: HostView, free: u32, game_gpus: u32) -> HostView {
    h.gpus_free = free;
    for o in &mut h.games {
        o.gpus = game_gpus;
    }
    h
}

fn with_slots(mut h: HostView, slots: u32) -> HostView {
    for o in &mut h.games {
        o.slots = slots;
    }
    h
}

const GA: &[&str] = &["event-driven", "periodic"];
const DEF: &[&str] = &["default"];

struct Case {
    name: &'static str,
    hosts: Vec<HostView>,
    game: &'static str,
    mode: Option<&'static str>,
    labels: Labels,
    prefer: Labels,
    strategy: Strategy,
    want: Result<(&'static str, &'static str), PlacementError>,
}

fn case(
    name: &'static str,
    hosts: Vec<HostView>,
    game: &'static str,
    mode: Option<&'static str>,
    want: Result<(&'static str, &'static str), PlacementError>,
) -> Case {
    Case {
        name,
        hosts,
        game,
        mode,
        labels: Labels::new(),
        prefer: Labels::new(),
        strategy: Strategy::Spread,
        want,
    }
}

fn cases() -> Vec<Case> {
    let eu = &[("region", "eu")][..];
    let us = &[("region", "us")][..];
    vec![
        case(
            "no hosts",
            vec![],
            "g",
            None,
            Err(PlacementError::UnknownGame),
        ),
        case(
            "nobody offers it",
            vec![host("a", Online, &[("other", DEF)], 4, 0, 0.0)],
            "g",
            None,
            Err(PlacementError::UnknownGame),
        ),
        case(
            "default mode is the first",
            vec![host("a", Online, &[("nb", GA)], 4, 0, 0.0)],
            "nb",
            None,
            Ok(("a", "event-driven")),
        ),
        case(
            "asked mode",
            vec![host("a", Online, &[("nb", GA)], 4, 0, 0.0)],
            "nb",
            Some("periodic"),
            Ok(("a", "periodic")),
        ),
        case(
            "unknown mode lists the modes",
            vec![host("a", Online, &[("nb", GA)], 4, 0, 0.0)],
            "nb",
            Some("turbo"),
            Err(PlacementError::UnknownMode(vec![
                "event-driven".into(),
                "periodic".into(),
            ])),
        ),
        case(
            "mode only on a full host is no capacity, not unknown",
            vec![
                host("a", Online, &[("nb", &["periodic"])], 1, 1, 0.0),
                host("b", Online, &[("nb", &["event-driven"])], 4, 0, 0.0),
            ],
            "nb",
            Some("periodic"),
            Err(PlacementError::NoCapacity),
        ),
        case(
            "mode only on one host picks it",
            vec![
                host("a", Online, &[("nb", &["event-driven"])], 4, 0, 0.0),
                host("b", Online, &[("nb", GA)], 4, 3, 90.0),
            ],
            "nb",
            Some("periodic"),
            Ok(("b", "periodic")),
        ),
        case(
            "full host",
            vec![host("a", Online, &[("g", DEF)], 2, 2, 0.0)],
            "g",
            None,
            Err(PlacementError::NoCapacity),
        ),
        case(
            "draining and offline hosts take nothing",
            vec![
                host("a", Draining, &[("g", DEF)], 4, 0, 0.0),
                host("b", Offline, &[("g", DEF)], 4, 0, 0.0),
            ],
            "g",
            None,
            Err(PlacementError::NoCapacity),
        ),
        case(
            "least loaded by ratio, not count",
            vec![
                host("a", Online, &[("g", DEF)], 2, 1, 0.0),
                host("b", Online, &[("g", DEF)], 10, 3, 50.0),
            ],
            "g",
            None,
            Ok(("b", "default")),
        ),
        case(
            "equal ratio: lower cpu",
            vec![
                host("a", Online, &[("g", DEF)], 4, 2, 70.0),
                host("b", Online, &[("g", DEF)], 2, 1, 20.0),
            ],
            "g",
            None,
            Ok(("b", "default")),
        ),
        case(
            "full tie: lowest host id",
            vec![
                host("c", Online, &[("g", DEF)], 4, 0, 0.0),
                host("a", Online, &[("g", DEF)], 4, 0, 0.0),
                host("b", Online, &[("g", DEF)], 4, 0, 0.0),
            ],
            "g",
            None,
            Ok(("a", "default")),
        ),
        case(
            "skips full and draining for a free one",
            vec![
                host("a", Online, &[("g", DEF)], 1, 1, 0.0),
                host("b", Draining, &[("g", DEF)], 8, 0, 0.0),
                host("c", Online, &[("g", DEF)], 8, 7, 99.0),
            ],
            "g",
            None,
            Ok(("c", "default")),
        ),
        Case {
            labels: labels(eu),
            ..case(
                "required labels: only hosts with them, however loaded",
                vec![
                    with_labels(host("a", Online, &[("g", DEF)], 4, 0, 0.0), us),
                    with_labels(host("b", Online, &[("g", DEF)], 4, 3, 90.0), eu),
                ],
                "g",
                None,
                Ok(("b", "default")),
            )
        },
        Case {
            labels: labels(&[("region", "mars")]),
            ..case(
                "a label no host has is no capacity, not an unknown game",
                vec![with_labels(host("a", Online, &[("g", DEF)], 4, 0, 0.0), eu)],
                "g",
                None,
                Err(PlacementError::NoCapacity),
            )
        },
        Case {
            prefer: labels(eu),
            ..case(
                "preferred labels come before load",
                vec![
                    with_labels(host("a", Online, &[("g", DEF)], 4, 0, 0.0), us),
                    with_labels(host("b", Online, &[("g", DEF)], 4, 3, 90.0), eu),
                ],
                "g",
                None,
                Ok(("b", "default")),
            )
        },
        Case {
            prefer: labels(&[("region", "eu"), ("gpu", "a100")]),
            ..case(
                "more preferred labels win; a full preferred host does not",
                vec![
                    with_labels(host("a", Online, &[("g", DEF)], 4, 1, 0.0), eu),
                    with_labels(
                        host("b", Online, &[("g", DEF)], 4, 4, 0.0),
                        &[("region", "eu"), ("gpu", "a100")],
                    ),
                    with_labels(
                        host("c", Online, &[("g", DEF)], 4, 2, 0.0),
                        &[("region", "eu"), ("gpu", "a100"), ("x", "y")],
                    ),
                ],
                "g",
                None,
                Ok(("c", "default")),
            )
        },
        case(
            "a heavy game needs its slots free",
            vec![
                with_slots(host("a", Online, &[("g", DEF)], 4, 3, 0.0), 2),
                with_slots(host("b", Online, &[("g", DEF)], 8, 7, 0.0), 2),
                with_slots(host("c", Online, &[("g", DEF)], 8, 6, 0.0), 2),
            ],
            "g",
            None,
            Ok(("c", "default")),
        ),
        case(
            "no free GPU is no capacity, even with free slots",
            vec![with_gpus(host("a", Online, &[("g", DEF)], 8, 0, 0.0), 1, 2)],
            "g",
            None,
            Err(PlacementError::NoCapacity),
        ),
        case(
            "the host with the GPUs takes it",
            vec![
                with_gpus(host("a", Online, &[("g", DEF)], 8, 0, 0.0), 0, 1),
                with_gpus(host("b", Online, &[("g", DEF)], 8, 5, 0.0), 1, 1),
            ],
            "g",
            None,
            Ok(("b", "default")),
        ),
        Case {
            strategy: Strategy::Pack,
            ..case(
                "pack: the fullest host that fits",
                vec![
                    host("a", Online, &[("g", DEF)], 4, 1, 0.0),
                    host("b", Online, &[("g", DEF)], 4, 3, 0.0),
                    host("c", Online, &[("g", DEF)], 4, 4, 0.0),
                    host("d", Online, &[("g", DEF)], 4, 0, 0.0),
                ],
                "g",
                None,
                Ok(("b", "default")),
            )
        },
        Case {
            strategy: Strategy::Pack,
            ..case(
                "pack: among empty hosts the lowest id, whatever the CPU",
                vec![
                    host("b", Online, &[("g", DEF)], 4, 0, 0.0),
                    host("a", Online, &[("g", DEF)], 4, 0, 90.0),
                ],
                "g",
                None,
                Ok(("a", "default")),
            )
        },
    ]
}

#[test]
fn table() {
    for c in cases() {
        let want = c.want.map(|(h, m)| (h.to_owned(), m.to_owned()));
        let game = GameId::new(c.game).unwrap();
        let req = Request::new(&game, c.mode).with_labels(&c.labels, &c.prefer);
        let got = place(&c.hosts, &req, c.strategy);
        let got = got.map(|ch| (ch.host_id.to_string(), ch.mode));
        assert_eq!(got, want, "scan, case {:?}", c.name);
        let mut index = HostIndex::new(c.strategy);
        for h in &c.hosts {
            index.upsert(h);
        }
        let got = index.place(&req);
        let got = got.map(|ch| (ch.host_id.to_string(), ch.mode));
        assert_eq!(got, want, "index, case {:?}", c.name);
    }
}

/// A small deterministic generator, so a failure repeats.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn random_labels(rng: &mut Rng) -> Labels {
    let mut l = Labels::new();
    if rng.below(3) > 0 {
        l.insert("region".into(), ["eu", "us"][rng.below(2) as usize].into());
    }
    if rng.below(2) > 0 {
        l.insert("gpu".into(), ["a100", "rtx"][rng.below(2) as usize].into());
    }
    l
}

fn random_host(rng: &mut Rng, id: u64) -> HostView {
    let statuses = [Online, Online, Online, Draining, Offline];
    let all_modes = ["m0", "m1", "m2"];
    let games = (0..rng.below(4))
        .map(|_| {
            let modes = (0..rng.below(3))
                .map(|_| all_modes[rng.below(3) as usize])
                .collect::<Vec<_>>();
            let g = format!("g{}", rng.below(4));
            offer(&g, &modes, 1 + rng.below(2) as u32, rng.below(2) as u32)
        })
        .collect();
    let max = rng.below(4) as u32;
    HostView {
        host_id: HostId::new(format!("h{id}")).unwrap(),
        status: statuses[rng.below(5) as usize],
        games,
        max_sessions: max,
        used: rng.below(u64::from(max) + 2) as u32,
        cpu_percent: [0.0, 10.0, 50.0][rng.below(3) as usize],
        labels: Arc::new(random_labels(rng)),
        gpus_free: rng.below(3) as u32,
    }
}

/// The index answers as the scan does, through a long run of random changes, under both
/// strategies, with and without labels.
#[test]
fn index_agrees_with_the_scan() {
    for strategy in [Strategy::Spread, Strategy::Pack] {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut hosts: BTreeMap<u64, HostView> = BTreeMap::new();
        let mut index = HostIndex::new(strategy);
        for step in 0..12_000 {
            let id = rng.below(12);
            match rng.below(10) {
                0 => {
                    hosts.remove(&id);
                    index.remove(&HostId::new(format!("h{id}")).unwrap());
                }
                1..=3 => {
                    let h = random_host(&mut rng, id);
                    index.upsert(&h);
                    hosts.insert(id, h);
                }
                4..=7 => {
                    if let Some(h) = hosts.get_mut(&id) {
                        h.used = rng.below(u64::from(h.max_sessions) + 2) as u32;
                        h.gpus_free = rng.below(3) as u32;
                        h.cpu_percent = [0.0, 10.0, 50.0][rng.below(3) as usize];
                        index.upsert(h);
                    }
                }
                _ => {
                    // A heartbeat: only the CPU moves (or an unknown host's does nothing).
                    let cpu = [0.0, 10.0, 50.0, -0.0][rng.below(4) as usize];
                    index.set_cpu(&HostId::new(format!("h{id}")).unwrap(), cpu);
                    if let Some(h) = hosts.get_mut(&id) {
                        h.cpu_percent = cpu;
                    }
                }
            }
            let (want_labels, prefer) = (random_labels(&mut rng), random_labels(&mut rng));
            for g in ["g0", "g1", "g2", "g3", "g9"] {
                let game = GameId::new(g).unwrap();
                for mode in [None, Some("m0"), Some("m1"), Some("x")] {
                    let sorted = |r: Result<Choice, PlacementError>| match r {
                        Err(PlacementError::UnknownMode(mut v)) => {
                            v.sort();
                            Err(PlacementError::UnknownMode(v))
                        }
                        other => other,
                    };
                    for req in [
                        Request::new(&game, mode),
                        Request::new(&game, mode).with_labels(&want_labels, &prefer),
                    ] {
                        let want = sorted(place(hosts.values(), &req, strategy));
                        let got = sorted(index.place(&req));
                        assert_eq!(got, want, "{strategy:?} step {step}, {g} {mode:?} {req:?}");
                    }
                }
            }
        }
    }
}
