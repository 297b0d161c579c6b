//! What a session holds on its host besides a slot of `max_sessions`: its ports, from the
//! host's `--port-range`, and its slot number, a small integer unique among the host's live
//! games (for display numbers and device indices).

use std::collections::BTreeSet;

use protocol::wire::PortRange;

/// A session's ports (the first is `{port}`, the next `{port1}`, ...) and its slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// One or more ports, the first the session's `port`.
    pub ports: Vec<u16>,
    /// 0 to `max_sessions - 1`, unique among the host's live games.
    pub slot: u32,
}

impl Lease {
    /// The session's first port.
    pub fn port(&self) -> u16 {
        self.ports[0]
    }
}

/// Free ports of the `--port-range`, and free slot numbers. Takes the lowest free ones, so a
/// quiet host hands out predictable ports; they come back when their session's processes are
/// all gone.
#[derive(Debug)]
pub struct PortPool {
    range: PortRange,
    in_use: BTreeSet<u16>,
    slots: BTreeSet<u32>,
}

impl PortPool {
    /// A pool over `range`, all free.
    pub fn new(range: PortRange) -> Self {
        Self {
            range,
            in_use: BTreeSet::new(),
            slots: BTreeSet::new(),
        }
    }

    /// Takes `n` free ports (at least one) and the lowest free slot, or `None` when fewer
    /// than `n` ports are free.
    pub fn take(&mut self, n: usize) -> Option<Lease> {
        let ports: Vec<u16> = (self.range.lo..=self.range.hi)
            .filter(|p| !self.in_use.contains(p))
            .take(n.max(1))
            .collect();
        if ports.len() < n.max(1) {
            return None;
        }
        self.in_use.extend(&ports);
        let slot = self.free_slot();
        self.slots.insert(slot);
        Some(Lease { ports, slot })
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
        fresh
    }

    /// Gives a lease back.
    pub fn release(&mut self, lease: &Lease) {
        for p in &lease.ports {
            self.in_use.remove(p);
        }
        self.slots.remove(&lease.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_each_port_and_slot_once_and_takes_them_back() {
        let mut pool = PortPool::new(PortRange { lo: 10, hi: 14 });
        let a = pool.take(1).unwrap();
        assert_eq!((a.ports.as_slice(), a.slot), (&[10][..], 0));
        let b = pool.take(2).unwrap();
        assert_eq!((b.ports.as_slice(), b.slot), (&[11, 12][..], 1));
        assert_eq!(pool.take(3), None, "only 13 and 14 are left");
        pool.release(&a);
        let c = pool.take(3).unwrap();
        assert_eq!((c.ports.as_slice(), c.slot), (&[10, 13, 14][..], 0));
        assert!(!pool.claim(&b));
        pool.release(&b);
        assert!(pool.claim(&b));
    }
}
