//! The brokers an agent may connect to: `--broker ADDR[,ADDR...]`, each `host:port`, tried in
//! turn. A name that resolves to several addresses counts as several. The agent holds one link
//! at a time; when it fails (or the broker goes away), the next address is tried, after the
//! usual backoff.

use std::collections::VecDeque;
use std::net::SocketAddr;

/// The host part of `HOST:PORT` (brackets of an IPv6 address removed).
pub fn broker_host(addr: &str) -> String {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// One address to try, and the entry of `--broker` it came from (for messages and the TLS
/// name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The `--broker` entry, as given.
    pub name: String,
}

/// Why a `--broker` list is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerListError {
    /// No entry.
    #[error("--broker needs at least one HOST:PORT")]
    Empty,
    /// An entry is not `host:port`.
    #[error("--broker entry {0:?} is not HOST:PORT")]
    NotHostPort(String),
}

/// Parses `host:port[,host:port...]` (spaces around entries are ignored).
pub fn parse_list(s: &str) -> Result<Vec<String>, BrokerListError> {
    let entries: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    if entries.is_empty() {
        return Err(BrokerListError::Empty);
    }
    for e in &entries {
        let ok = e
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return Err(BrokerListError::NotHostPort(e.clone()));
        }
    }
    Ok(entries)
}

/// The brokers in turn: every address of every entry, in order, then again from the start
/// (names resolved afresh each round, so a replica set that changes its addresses is
/// followed).
#[derive(Debug)]
pub struct Rotation {
    entries: Vec<String>,
    queue: VecDeque<Target>,
}

impl Rotation {
    /// A rotation over `entries` (`host:port` each).
    pub fn new(entries: Vec<String>) -> Self {
        Self {
            entries,
            queue: VecDeque::new(),
        }
    }

    /// The next address to try; `None` when no entry resolves now.
    pub async fn next(&mut self) -> Option<Target> {
        if self.queue.is_empty() {
            for name in &self.entries {
                match tokio::net::lookup_host(name.as_str()).await {
                    Ok(addrs) => {
                        for addr in addrs {
                            let target = Target {
                                addr,
                                name: name.clone(),
                            };
                            if !self.queue.contains(&target) {
                                self.queue.push_back(target);
                            }
                        }
                    }
                    Err(e) => tracing::debug!(broker = %name, error = %e, "cannot resolve"),
                }
            }
        }
        self.queue.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse() {
        assert_eq!(
            parse_list("b1:7070, b2.internal:7070,[::1]:7070").unwrap(),
            ["b1:7070", "b2.internal:7070", "[::1]:7070"]
        );
        assert_eq!(parse_list(" , "), Err(BrokerListError::Empty));
        assert!(matches!(
            parse_list("b1:7070,b2"),
            Err(BrokerListError::NotHostPort(e)) if e == "b2"
        ));
        assert!(parse_list(":7070").is_err());
    }

    #[tokio::test]
    async fn every_address_in_turn_then_again() {
        let mut r = Rotation::new(vec!["127.0.0.1:7001".into(), "127.0.0.2:7002".into()]);
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(r.next().await.unwrap().addr.to_string());
        }
        assert_eq!(
            seen,
            [
                "127.0.0.1:7001",
                "127.0.0.2:7002",
                "127.0.0.1:7001",
                "127.0.0.2:7002",
                "127.0.0.1:7001"
            ]
        );
    }
}
