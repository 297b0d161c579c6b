//! The pool of ports handed to games, one per session.

use std::collections::BTreeSet;

use protocol::wire::PortRange;

/// Free ports of the `--port-range`. Takes the lowest free port, so a quiet host hands out
/// predictable ports; a port comes back when its session's processes are all gone.
#[derive(Debug)]
pub struct PortPool {
    range: PortRange,
    in_use: BTreeSet<u16>,
}

impl PortPool {
    /// A pool over `range`, all free.
    pub fn new(range: PortRange) -> Self {
        Self {
            range,
            in_use: BTreeSet::new(),
        }
    }

    /// Takes a free port, or `None` when every port is in use.
    pub fn take(&mut self) -> Option<u16> {
        let port = (self.range.lo..=self.range.hi).find(|p| !self.in_use.contains(p))?;
        self.in_use.insert(port);
        Some(port)
    }

    /// Marks `port` used (a game found again after a restart). False if it already was.
    pub fn claim(&mut self, port: u16) -> bool {
        self.in_use.insert(port)
    }

    /// Gives `port` back.
    pub fn release(&mut self, port: u16) {
        self.in_use.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_each_port_once_and_takes_it_back() {
        let mut pool = PortPool::new(PortRange { lo: 10, hi: 12 });
        assert_eq!(pool.take(), Some(10));
        assert_eq!(pool.take(), Some(11));
        assert_eq!(pool.take(), Some(12));
        assert_eq!(pool.take(), None);
        pool.release(11);
        assert_eq!(pool.take(), Some(11));
        assert!(!pool.claim(10));
    }
}
