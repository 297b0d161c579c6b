//! Placement: which host gets a new session. A pure function over a view of the hosts; it
//! does no IO and holds no state, so it is tested by tables and benchmarked alone.

use std::cmp::Ordering;

use protocol::api::HostStatus;
use protocol::wire::GameOffer;
use protocol::{GameId, HostId};

/// What placement needs to know of a host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostView {
    /// The host.
    pub host_id: HostId,
    /// Only `Online` hosts take new sessions.
    pub status: HostStatus,
    /// The games it offers.
    pub games: Vec<GameOffer>,
    /// Its capacity.
    pub max_sessions: u32,
    /// Sessions placed on it and not over, reservations included.
    pub sessions: u32,
    /// CPU use from its last heartbeat, 0 to 100.
    pub cpu_percent: f32,
}

/// Why no host was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementError {
    /// No known host offers the game.
    UnknownGame,
    /// Hosts offer the game, but none in this mode; these are the modes they offer.
    UnknownMode(Vec<String>),
    /// Hosts offer it, but none is online with a free slot.
    NoCapacity,
}

/// The chosen host and the mode the session runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The host.
    pub host_id: HostId,
    /// The requested mode, or the host's default for the game.
    pub mode: String,
}

/// Picks a host for `game` in `mode` (`None`: the game's default mode).
///
/// Candidates are online (connected, not draining), offer the game in that mode, and have a
/// free slot. Among them the least loaded wins: lowest `sessions / max_sessions`, then lowest
/// CPU, then lowest host id, so the choice is deterministic.
pub fn place<'a>(
    hosts: impl IntoIterator<Item = &'a HostView>,
    game: &GameId,
    mode: Option<&str>,
) -> Result<Choice, PlacementError> {
    let mut offered = false;
    let mut mode_known = mode.is_none();
    let mut modes_offered: Vec<String> = Vec::new();
    let mut best: Option<(&HostView, &str)> = None;
    for h in hosts {
        let Some(offer) = h.games.iter().find(|g| &g.game_id == game) else {
            continue;
        };
        offered = true;
        let chosen = match mode {
            None => offer.modes.first(),
            Some(m) => {
                for x in &offer.modes {
                    if !modes_offered.contains(x) {
                        modes_offered.push(x.clone());
                    }
                }
                offer.modes.iter().find(|x| *x == m)
            }
        };
        let Some(chosen) = chosen else { continue };
        mode_known = true;
        if h.status != HostStatus::Online || h.sessions >= h.max_sessions {
            continue;
        }
        if best.is_none_or(|(b, _)| less_loaded(h, b) == Ordering::Less) {
            best = Some((h, chosen.as_str()));
        }
    }
    match best {
        Some((h, m)) => Ok(Choice {
            host_id: h.host_id.clone(),
            mode: m.to_owned(),
        }),
        None if !offered => Err(PlacementError::UnknownGame),
        None if !mode_known => Err(PlacementError::UnknownMode(modes_offered)),
        None => Err(PlacementError::NoCapacity),
    }
}

fn less_loaded(a: &HostView, b: &HostView) -> Ordering {
    // a.sessions / a.max  vs  b.sessions / b.max, exactly, by cross-multiplying.
    let la = u64::from(a.sessions) * u64::from(b.max_sessions.max(1));
    let lb = u64::from(b.sessions) * u64::from(a.max_sessions.max(1));
    la.cmp(&lb)
        .then(a.cpu_percent.total_cmp(&b.cpu_percent))
        .then_with(|| a.host_id.cmp(&b.host_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(
        id: &str,
        status: HostStatus,
        games: &[(&str, &[&str])],
        max: u32,
        sessions: u32,
        cpu: f32,
    ) -> HostView {
        HostView {
            host_id: HostId::new(id).unwrap(),
            status,
            games: games
                .iter()
                .map(|(g, modes)| GameOffer {
                    game_id: GameId::new(*g).unwrap(),
                    modes: modes.iter().map(|m| (*m).to_owned()).collect(),
                })
                .collect(),
            max_sessions: max,
            sessions,
            cpu_percent: cpu,
        }
    }

    use HostStatus::{Draining, Offline, Online};
    const GA: &[&str] = &["event-driven", "periodic"];
    const DEF: &[&str] = &["default"];

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            hosts: Vec<HostView>,
            game: &'static str,
            mode: Option<&'static str>,
            want: Result<(&'static str, &'static str), PlacementError>,
        }
        let cases = vec![
            Case {
                name: "no hosts",
                hosts: vec![],
                game: "g",
                mode: None,
                want: Err(PlacementError::UnknownGame),
            },
            Case {
                name: "nobody offers it",
                hosts: vec![host("a", Online, &[("other", DEF)], 4, 0, 0.0)],
                game: "g",
                mode: None,
                want: Err(PlacementError::UnknownGame),
            },
            Case {
                name: "default mode is the first",
                hosts: vec![host("a", Online, &[("nb", GA)], 4, 0, 0.0)],
                game: "nb",
                mode: None,
                want: Ok(("a", "event-driven")),
            },
            Case {
                name: "asked mode",
                hosts: vec![host("a", Online, &[("nb", GA)], 4, 0, 0.0)],
                game: "nb",
                mode: Some("periodic"),
                want: Ok(("a", "periodic")),
            },
            Case {
                name: "unknown mode lists the modes",
                hosts: vec![host("a", Online, &[("nb", GA)], 4, 0, 0.0)],
                game: "nb",
                mode: Some("turbo"),
                want: Err(PlacementError::UnknownMode(vec![
                    "event-driven".into(),
                    "periodic".into(),
                ])),
            },
            Case {
                name: "mode only on a full host is no capacity, not unknown",
                hosts: vec![
                    host("a", Online, &[("nb", &["periodic"])], 1, 1, 0.0),
                    host("b", Online, &[("nb", &["event-driven"])], 4, 0, 0.0),
                ],
                game: "nb",
                mode: Some("periodic"),
                want: Err(PlacementError::NoCapacity),
            },
            Case {
                name: "mode only on one host picks it",
                hosts: vec![
                    host("a", Online, &[("nb", &["event-driven"])], 4, 0, 0.0),
                    host("b", Online, &[("nb", GA)], 4, 3, 90.0),
                ],
                game: "nb",
                mode: Some("periodic"),
                want: Ok(("b", "periodic")),
            },
            Case {
                name: "full host",
                hosts: vec![host("a", Online, &[("g", DEF)], 2, 2, 0.0)],
                game: "g",
                mode: None,
                want: Err(PlacementError::NoCapacity),
            },
            Case {
                name: "draining and offline hosts take nothing",
                hosts: vec![
                    host("a", Draining, &[("g", DEF)], 4, 0, 0.0),
                    host("b", Offline, &[("g", DEF)], 4, 0, 0.0),
                ],
                game: "g",
                mode: None,
                want: Err(PlacementError::NoCapacity),
            },
            Case {
                name: "least loaded by ratio, not count",
                hosts: vec![
                    host("a", Online, &[("g", DEF)], 2, 1, 0.0),
                    host("b", Online, &[("g", DEF)], 10, 3, 50.0),
                ],
                game: "g",
                mode: None,
                want: Ok(("b", "default")),
            },
            Case {
                name: "equal ratio: lower cpu",
                hosts: vec![
                    host("a", Online, &[("g", DEF)], 4, 2, 70.0),
                    host("b", Online, &[("g", DEF)], 2, 1, 20.0),
                ],
                game: "g",
                mode: None,
                want: Ok(("b", "default")),
            },
            Case {
                name: "full tie: lowest host id",
                hosts: vec![
                    host("c", Online, &[("g", DEF)], 4, 0, 0.0),
                    host("a", Online, &[("g", DEF)], 4, 0, 0.0),
                    host("b", Online, &[("g", DEF)], 4, 0, 0.0),
                ],
                game: "g",
                mode: None,
                want: Ok(("a", "default")),
            },
            Case {
                name: "skips full and draining for a free one",
                hosts: vec![
                    host("a", Online, &[("g", DEF)], 1, 1, 0.0),
                    host("b", Draining, &[("g", DEF)], 8, 0, 0.0),
                    host("c", Online, &[("g", DEF)], 8, 7, 99.0),
                ],
                game: "g",
                mode: None,
                want: Ok(("c", "default")),
            },
        ];
        for c in cases {
            let got = place(&c.hosts, &GameId::new(c.game).unwrap(), c.mode);
            let got = got.map(|ch| (ch.host_id.to_string(), ch.mode));
            let want = c.want.map(|(h, m)| (h.to_owned(), m.to_owned()));
            assert_eq!(got, want, "case {:?}", c.name);
        }
    }
}
