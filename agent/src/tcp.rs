//! Which local TCP ports have a player connected: read from the host's TCP tables
//! (`/proc/net/tcp` and `/proc/net/tcp6`, the agent's network namespace, which its games
//! share). This is how a session nobody is connected to is told apart (catalog
//! `idle_timeout_s`) without capturing a packet.
//!
//! A connection to a game's port shows as a row whose local address has that port and whose
//! state is `01` (established); a listening socket (`0A`) is not a connection.

use std::collections::HashSet;
use std::io;

/// The host's TCP tables, IPv4 and IPv6.
const TABLES: [&str; 2] = ["/proc/net/tcp", "/proc/net/tcp6"];

/// The state of an established connection in the tables.
const ESTABLISHED: &str = "01";

/// The local ports of every established TCP connection. A table that does not exist (no
/// IPv6) counts as empty; one that cannot be read is an error. Blocking: call it off the
/// async threads.
pub fn established_ports() -> io::Result<HashSet<u16>> {
    let mut ports = HashSet::new();
    for table in TABLES {
        match std::fs::read_to_string(table) {
            Ok(text) => established_in(&text, &mut ports),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ports)
}

/// Adds the local ports of the established connections of one table's text to `ports`.
fn established_in(table: &str, ports: &mut HashSet<u16>) {
    // "  sl  local_address rem_address   st ...": the first line is the header.
    for row in table.lines().skip(1) {
        let mut fields = row.split_whitespace();
        let (Some(_), Some(local), Some(_), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if state != ESTABLISHED {
            continue;
        }
        let port = local
            .rsplit_once(':')
            .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
        if let Some(port) = port {
            ports.insert(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_established_rows_count_by_their_local_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:4E20 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:4E20 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 0100007F:D431 0100007F:4E20 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
   3: 0100007F:4E21 0100007F:D432 06 00000000:00000000 00:00000000 00000000     0        0 0 3 0 0 0 0 0 0
   garbage";
        let six =
            "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:4E22 00000000000000000000000001000000:C000 01 0";
        let mut ports = HashSet::new();
        established_in(table, &mut ports);
        established_in(six, &mut ports);
        // 20000 has a client, whose own end (54321) is a local port too; 20001 is in
        // TIME_WAIT, not a connection.
        assert_eq!(ports, HashSet::from([20000, 54321, 20002]));
    }

    #[test]
    fn a_live_connection_shows_and_a_listener_alone_does_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!established_ports().unwrap().contains(&port));
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _served = listener.accept().unwrap();
        assert!(established_ports().unwrap().contains(&port));
    }
}
