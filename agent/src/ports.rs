//! What a session holds on its host: its share of `--max-sessions` (its game's `slots`), its
//! ports from the host's `--port-range`, its slot number (a small integer unique among the
//! host's live games, for display numbers and device indices), and its GPUs from `--gpus`.
//! One pool hands them all out, under the table's lock, so a launch takes all or nothing.

use std::collections::BTreeSet;

use protocol::wire::PortRange;

/// What one session holds: its ports (the first is `{port}`, the next `{port1}`, ...), its
/// slot number, its weight and its GPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// One or more ports, the first the session's `port`.
    pub ports: Vec<u16>,
    /// 0 to `max_sessions - 1`, unique among the host's live games.
    pub slot: u32,
    /// How much of `max_sessions` it takes (its game's `slots`).
    pub weight: u32,
    /// The GPUs it was given, none held by another session.
    pub gpus: Vec<u32>,
}

impl Lease {
    /// The session's first port.
    pub fn port(&self) -> u16 {
        self.ports[0]
    }
}

/// What a launch asks of the pool.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// Ports.
    pub ports: usize,
    /// Share of `max_sessions`.
    pub weight: u32,
    /// These GPUs, each one of the host's and free.
    pub gpus: &'a [u32],
}

/// Why the pool cannot lease what a launch asks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Short {
    /// Its weight does not fit in what is left of `max_sessions`.
    #[error("the host has {free} of its max_sessions {max} free; this game takes {weight}")]
    Slots {
        /// Left.
        free: u32,
        /// The host's `--max-sessions`.
        max: u32,
        /// The game's `slots`.
        weight: u32,
    },
    /// Not enough free ports.
    #[error("fewer than {0} free ports in the host's --port-range")]
    Ports(usize),
    /// A GPU is not one of `--gpus`.
    #[error("GPU {0} is not one of this host's --gpus")]
    NoSuchGpu(u32),
    /// A GPU is held by another session.
    #[error("GPU {0} is held by another session")]
    GpuTaken(u32),
}

/// The host's free and taken ports, slot numbers, GPUs and share of `max_sessions`. Takes the
/// lowest free ports and slot numbers, so a quiet host hands out predictable ones; all come
/// back when their session's processes are gone.
#[derive(Debug)]
pub struct PortPool {
    range: PortRange,
    max_weight: u32,
    gpus: BTreeSet<u32>,
    in_use: BTreeSet<u16>,
    slots: BTreeSet<u32>,
    gpus_in_use: BTreeSet<u32>,
    weight: u32,
}

impl PortPool {
    /// A pool over `range`, `max_sessions` and `gpus`, all free.
    pub fn new(range: PortRange, max_sessions: u32, gpus: &[u32]) -> Self {
        Self {
            range,
            max_weight: max_sessions,
            gpus: gpus.iter().copied().collect(),
            in_use: BTreeSet::new(),
            slots: BTreeSet::new(),
            gpus_in_use: BTreeSet::new(),
            weight: 0,
        }
    }

    /// Takes what `want` asks and the lowest free slot number, or says what is short; takes
    /// nothing then.
    pub fn take(&mut self, want: Wanted<'_>) -> Result<Lease, Short> {
        let free = self.max_weight.saturating_sub(self.weight);
        if want.weight > free {
            return Err(Short::Slots {
                free,
                max: self.max_weight,
                weight: want.weight,
            });
        }
        let n = want.ports.max(1);
        let ports: Vec<u16> = (self.range.lo..=self.range.hi)
            .filter(|p| !self.in_use.contains(p))
            .take(n)
            .collect();
        if ports.len() < n {
            return Err(Short::Ports(n));
        }
        for (i, g) in want.gpus.iter().enumerate() {
            if !self.gpus.contains(g) {
                return Err(Short::NoSuchGpu(*g));
            }
            if self.gpus_in_use.contains(g) || want.gpus[..i].contains(g) {
                return Err(Short::GpuTaken(*g));
            }
        }
        self.in_use.extend(&ports);
        self.gpus_in_use.extend(want.gpus);
        self.weight += want.weight;
        let slot = self.free_slot();
        self.slots.insert(slot);
        Ok(Lease {
            ports,
            slot,
            weight: want.weight,
            gpus: want.gpus.to_vec(),
        })
    }

    /// The lowest slot number not in use.
    pub fn free_slot(&self) -> u32 {
        (0..u32::MAX)
            .find(|s| !self.slots.contains(s))
            .unwrap_or(u32::MAX)
    }

    /// Marks a lease used (a game found again after a restart). False if any of it already
    /// was.
    pub fn claim(&mut self, lease: &Lease) -> bool {
        let mut fresh = self.slots.insert(lease.slot);
        for p in &lease.ports {
            fresh &= self.in_use.insert(*p);
        }
        for g in &lease.gpus {
            fresh &= self.gpus_in_use.insert(*g);
        }
        self.weight += lease.weight;
        fresh
    }

    /// Gives a lease back.
    pub fn release(&mut self, lease: &Lease) {
        for p in &lease.ports {
            self.in_use.remove(p);
        }
        for g in &lease.gpus {
            self.gpus_in_use.remove(g);
        }
        self.slots.remove(&lease.slot);
        self.weight = self.weight.saturating_sub(lease.weight);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(ports: usize, weight: u32, gpus: &[u32]) -> Wanted<'_> {
        Wanted {
            ports,
            weight,
            gpus,
        }
    }

    #[test]
    fn hands_out_each_port_and_slot_once_and_takes_them_back() {
        let mut pool = PortPool::new(PortRange { lo: 10, hi: 14 }, 8, &[]);
        let a = pool.take(want(1, 1, &[])).unwrap();
        assert_eq!((a.ports.as_slice(), a.slot), (&[10][..], 0));
        let b = pool.take(want(2, 1, &[])).unwrap();
        assert_eq!((b.ports.as_slice(), b.slot), (&[11, 12][..], 1));
        assert_eq!(pool.take(want(3, 1, &[])), Err(Short::Ports(3)));
        pool.release(&a);
        let c = pool.take(want(3, 1, &[])).unwrap();
        assert_eq!((c.ports.as_slice(), c.slot), (&[10, 13, 14][..], 0));
        assert!(!pool.claim(&b));
        pool.release(&b);
        assert!(pool.claim(&b));
    }

    #[test]
    fn weights_fill_max_sessions_and_gpus_are_held_once() {
        let mut pool = PortPool::new(PortRange { lo: 10, hi: 30 }, 4, &[0, 1]);
        let heavy = pool.take(want(1, 3, &[1])).unwrap();
        assert_eq!(heavy.gpus, [1]);
        assert_eq!(
            pool.take(want(1, 2, &[])),
            Err(Short::Slots {
                free: 1,
                max: 4,
                weight: 2
            })
        );
        assert_eq!(pool.take(want(1, 1, &[1])), Err(Short::GpuTaken(1)));
        assert_eq!(pool.take(want(1, 1, &[2])), Err(Short::NoSuchGpu(2)));
        assert_eq!(pool.take(want(1, 1, &[0, 0])), Err(Short::GpuTaken(0)));
        let light = pool.take(want(1, 1, &[0])).unwrap();
        assert_eq!(
            pool.take(want(1, 1, &[])).map(|_| ()),
            Err(Short::Slots {
                free: 0,
                max: 4,
                weight: 1
            })
        );
        pool.release(&heavy);
        assert_eq!(pool.take(want(1, 3, &[1])).unwrap().gpus, [1]);
        pool.release(&light);
        assert!(pool.take(want(1, 1, &[0])).is_ok());
    }
}
