//! `arcade events`: following the event stream, one line per event, reconnecting after a
//! break with the last event's id, so nothing is missed or printed twice.

use std::io::Write;
use std::time::Duration;

use protocol::api::{Event, EventType};
use protocol::{HostId, SessionId};

use crate::cli::error::CliError;
use crate::client::{Client, ClientError};

/// The wait before reconnecting to a broken stream.
const RECONNECT: Duration = Duration::from_secs(1);

/// What `arcade events` follows.
#[derive(Debug, Default)]
pub struct Follow {
    /// Only these types.
    pub types: Vec<EventType>,
    /// Only this session's.
    pub session: Option<SessionId>,
    /// Only this host's.
    pub host: Option<HostId>,
    /// From the event after this id; `None`: from now on.
    pub after: Option<u64>,
    /// Stop after this many events.
    pub count: Option<u64>,
}

/// One event as a line for people:
/// `12 2026-11-29T20:40:00Z session.running 0194… running by agent`.
pub fn line(e: &Event) -> String {
    let at =
        e.at.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
    let what = match (&e.session, &e.host) {
        (Some(s), _) => {
            let pid = s.pid.map(|p| format!(" pid {p}")).unwrap_or_default();
            format!("{} {}{pid} on {}", s.session_id, s.status, s.host_id)
        }
        (None, Some(h)) => format!("{} {}", h.host_id, crate::serde_name(&h.status)),
        (None, None) => String::new(),
    };
    format!("{} {at} {} {what} by {}", e.id, e.kind, e.actor)
}

/// Prints events to `out` as they come (JSON lines with `json`), until `f.count` have been
/// printed (forever without one). An answer of the API's (a bad filter, a wrong key) ends
/// it; a broken connection is reconnected from the last event printed.
pub async fn follow(
    client: &Client,
    mut f: Follow,
    json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut printed = 0u64;
    let done = |printed: u64| f.count.is_some_and(|n| printed >= n);
    let mut last = f.after.take();
    while !done(printed) {
        let mut stream = match client
            .events(&f.types, f.session.as_ref(), f.host.as_ref(), last)
            .await
        {
            Ok(s) => s,
            Err(e @ ClientError::Api { .. }) => return Err(e.into()),
            Err(_) => {
                tokio::time::sleep(RECONNECT).await;
                continue;
            }
        };
        while !done(printed) {
            match stream.next().await {
                Some(Ok(e)) => {
                    let text = if json {
                        serde_json::to_string(&e).map_err(CliError::Json)?
                    } else {
                        line(&e)
                    };
                    writeln!(out, "{text}").map_err(CliError::Output)?;
                    out.flush().map_err(CliError::Output)?;
                    printed += 1;
                }
                Some(Err(_)) | None => break,
            }
        }
        // From the last event received, or where it started if none came.
        last = stream.last_event_id().or(last);
        if !done(printed) {
            tokio::time::sleep(RECONNECT).await;
        }
    }
    Ok(())
}
