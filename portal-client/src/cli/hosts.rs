//! `arcade hosts`, `drain` and `resume`: the calls, and what they print.

use protocol::api::{Host, HostStatus};
use protocol::{GameId, HostId};
use time::OffsetDateTime;

use super::output::{age, render, Table};
use super::CliError;
use crate::client::Client;
use crate::serde_name;

/// `arcade hosts [--label K=V]...`: the hosts (with those labels), their load and their
/// games.
pub(super) async fn list(
    client: &Client,
    labels: &protocol::labels::Labels,
    json: bool,
) -> Result<String, CliError> {
    let list = client.hosts_labelled(labels).await?;
    let now = OffsetDateTime::now_utc();
    render(json, &list, |l| hosts_table(&l.hosts, now))
}

/// `arcade drain`: no new sessions on the host.
pub(super) async fn drain(client: &Client, id: &HostId, json: bool) -> Result<String, CliError> {
    let host = client.drain_host(id).await?;
    render(json, &host, host_text)
}

/// `arcade resume`: new sessions on the host again.
pub(super) async fn resume(client: &Client, id: &HostId, json: bool) -> Result<String, CliError> {
    let host = client.resume_host(id).await?;
    render(json, &host, host_text)
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Bytes as GiB with one decimal.
fn gib(bytes: u64) -> String {
    // Precision loss above 2^53 bytes does not show at one decimal of a GiB.
    format!("{:.1}", bytes as f64 / GIB)
}

/// What `arcade hosts` prints; `now` for the LAST SEEN column.
fn hosts_table(hosts: &[Host], now: OffsetDateTime) -> String {
    if hosts.is_empty() {
        return "no hosts\n".to_owned();
    }
    let mut table = Table::new(&[
        "HOST",
        "IP",
        "STATUS",
        "SESSIONS",
        "SLOTS",
        "GPUS",
        "CPU%",
        "MEM",
        "LABELS",
        "GAMES",
        "LAST SEEN",
    ])
    .right(&[3, 4, 5, 6, 7]);
    for h in hosts {
        let games: Vec<&str> = h.games.iter().map(GameId::as_str).collect();
        let labels: Vec<String> = h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        table.row(vec![
            h.host_id.to_string(),
            h.ip.to_string(),
            serde_name(&h.status),
            h.sessions.to_string(),
            format!("{}/{}", h.slots_used, h.max_sessions),
            if h.gpus.is_empty() {
                "-".to_owned()
            } else {
                format!("{}/{}", h.gpus_used, h.gpus.len())
            },
            format!("{:.1}", h.cpu_percent),
            format!("{}/{} GiB", gib(h.mem_used_bytes), gib(h.mem_total_bytes)),
            if labels.is_empty() {
                "-".to_owned()
            } else {
                labels.join(",")
            },
            games.join(","),
            age(h.last_seen, now),
        ]);
    }
    table.render()
}

/// What `arcade drain` and `arcade resume` print.
fn host_text(h: &Host) -> String {
    match h.status {
        HostStatus::Draining => format!(
            "host {} is draining: it gets no new sessions; its {} running go on\n",
            h.host_id, h.sessions
        ),
        HostStatus::Online => format!("host {} is online and gets new sessions\n", h.host_id),
        HostStatus::Offline => format!("host {} is offline\n", h.host_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn hosts_table_shows_load() {
        let host = Host {
            host_id: HostId::new("host-a").unwrap(),
            ip: "10.0.0.5".parse().unwrap(),
            status: HostStatus::Draining,
            max_sessions: 8,
            sessions: 2,
            cpu_percent: 12.34,
            mem_used_bytes: 3 * 1024 * 1024 * 1024 / 2,
            mem_total_bytes: 16 * 1024 * 1024 * 1024,
            games: vec![
                GameId::new("sleeper").unwrap(),
                GameId::new("neverball").unwrap(),
            ],
            last_seen: datetime!(2026-11-23 10:00:00 UTC),
            broker_id: Some("b1".into()),
            labels: [("region".to_owned(), "eu".to_owned())].into(),
            gpus: vec![0, 1],
            gpus_used: 1,
            slots_used: 3,
        };
        let text = hosts_table(&[host], datetime!(2026-11-23 10:00:03 UTC));
        assert_eq!(
            text,
            "HOST    IP        STATUS    SESSIONS  SLOTS  GPUS  CPU%           MEM  LABELS     GAMES              LAST SEEN\n\
             host-a  10.0.0.5  draining         2    3/8   1/2  12.3  1.5/16.0 GiB  region=eu  sleeper,neverball  3s ago\n"
        );
    }
}
