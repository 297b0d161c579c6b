//! `arcade start`, `sessions`, `session` and `end`: the calls, and what they print.

use std::net::SocketAddr;

use protocol::api::{Session, SessionQuery, StartSession, StartedSession};
use protocol::SessionId;

use super::output::{fields, or_none, render, timestamp, Table, NONE};
use super::CliError;
use crate::client::Client;
use crate::serde_name;

/// `arcade start`: starts a game, and prints where to connect to it.
pub(super) async fn start(
    client: &Client,
    request: &StartSession,
    json: bool,
) -> Result<String, CliError> {
    let started = client.start_joinable(request, None).await?;
    render(json, &started, started_text)
}

/// `arcade end`: ends a session, and prints it as it ended.
pub(super) async fn end(client: &Client, id: &SessionId, json: bool) -> Result<String, CliError> {
    let session = client.end_session(id).await?;
    render(json, &session, session_text)
}

/// `arcade sessions`: a page of sessions, and the cursor of the next.
pub(super) async fn list(
    client: &Client,
    query: &SessionQuery,
    json: bool,
) -> Result<String, CliError> {
    let list = client.list_sessions(query).await?;
    render(json, &list, |l| {
        let mut table = sessions_table(&l.sessions);
        if let Some(next) = &l.next_cursor {
            table.push_str(&format!("(more: --cursor {next})\n"));
        }
        table
    })
}

/// `arcade session`: one session in full.
pub(super) async fn show(client: &Client, id: &SessionId, json: bool) -> Result<String, CliError> {
    let session = client.get_session(id).await?;
    render(json, &session, session_text)
}

/// `ip:port` (IPv6 in brackets), the IP alone, or `-`.
fn address(session: &Session) -> String {
    match (session.ip, session.port) {
        (Some(ip), Some(port)) => SocketAddr::new(ip, port).to_string(),
        (Some(ip), None) => ip.to_string(),
        _ => NONE.to_owned(),
    }
}

/// What `arcade start` prints: where to connect.
fn started_text(started: &StartedSession) -> String {
    let s = &started.session;
    let mut pairs = vec![
        ("session", s.session_id.to_string()),
        ("status", s.status.to_string()),
        ("connect", address(s)),
        ("pid", or_none(s.pid)),
        ("game", format!("{} (mode {})", s.game_id, s.mode)),
        ("host", s.host_id.to_string()),
    ];
    if let (Some(token), Some(until)) = (&started.join_token, started.join_expires_at) {
        pairs.push((
            "join token",
            format!("{token} (once, until {})", timestamp(until)),
        ));
    }
    fields(&pairs)
}

/// What `arcade session` and `arcade end` print: the whole session.
fn session_text(s: &Session) -> String {
    let mut pairs = vec![
        ("session", s.session_id.to_string()),
        ("status", s.status.to_string()),
        ("game", s.game_id.to_string()),
        ("mode", s.mode.clone()),
    ];
    if let Some(config) = &s.config {
        pairs.push(("config", config.clone()));
    }
    pairs.extend([
        ("host", s.host_id.to_string()),
        ("address", address(s)),
        ("pid", or_none(s.pid)),
        ("created", timestamp(s.created_at)),
        ("started", or_none(s.started_at.map(timestamp))),
    ]);
    if let Some(ended) = s.ended_at {
        pairs.push(("ended", timestamp(ended)));
    }
    if let Some(reason) = &s.end_reason {
        pairs.push(("end reason", serde_name(reason)));
    }
    if let Some(code) = s.exit_code {
        pairs.push(("exit code", code.to_string()));
    }
    fields(&pairs)
}

/// What `arcade sessions` prints.
fn sessions_table(sessions: &[Session]) -> String {
    if sessions.is_empty() {
        return "no sessions\n".to_owned();
    }
    let mut table = Table::new(&[
        "SESSION", "GAME", "MODE", "STATUS", "HOST", "ADDRESS", "PID", "CREATED",
    ])
    .right(&[6]);
    for s in sessions {
        table.row(vec![
            s.session_id.to_string(),
            s.game_id.to_string(),
            s.mode.clone(),
            s.status.to_string(),
            s.host_id.to_string(),
            address(s),
            or_none(s.pid),
            timestamp(s.created_at),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::api::{EndReason, SessionStatus};
    use protocol::{GameId, HostId};
    use time::macros::datetime;

    fn session() -> Session {
        Session {
            session_id: SessionId::new("0190c3c8-7d2e").unwrap(),
            game_id: GameId::new("sleeper").unwrap(),
            mode: "default".into(),
            config: None,
            status: SessionStatus::Running,
            host_id: HostId::new("host-a").unwrap(),
            ip: Some("127.0.0.1".parse().unwrap()),
            port: Some(20000),
            pid: Some(4242),
            created_at: datetime!(2026-11-23 10:00:00 UTC),
            started_at: Some(datetime!(2026-11-23 10:00:01 UTC)),
            ended_at: None,
            end_reason: None,
            exit_code: None,
            pool_id: None,
            ports: vec![20000],
            settings: Default::default(),
            user_id: None,
            max_duration_s: None,
            expires_at: None,
            build: None,
            gpus: Vec::new(),
            labels: Default::default(),
            slots: 1,
        }
    }

    #[test]
    fn sessions_table_shows_address_and_times() {
        let mut ended = session();
        ended.session_id = SessionId::new("s2").unwrap();
        ended.status = SessionStatus::Failed;
        ended.ip = None;
        ended.port = None;
        ended.pid = None;
        let text = sessions_table(&[session(), ended]);
        assert_eq!(
            text,
            "SESSION        GAME     MODE     STATUS   HOST    ADDRESS           PID  CREATED\n\
             0190c3c8-7d2e  sleeper  default  running  host-a  127.0.0.1:20000  4242  2026-11-23 10:00:00Z\n\
             s2             sleeper  default  failed   host-a  -                   -  2026-11-23 10:00:00Z\n"
        );
        assert_eq!(sessions_table(&[]), "no sessions\n");
    }

    #[test]
    fn session_block_shows_what_is_known() {
        let mut s = session();
        s.status = SessionStatus::Ended;
        s.ended_at = Some(datetime!(2026-11-23 10:05:00 UTC));
        s.end_reason = Some(EndReason::GameExited);
        s.exit_code = Some(3);
        let text = session_text(&s);
        assert!(text.contains("status      ended\n"), "{text}");
        assert!(text.contains("address     127.0.0.1:20000\n"), "{text}");
        assert!(text.contains("end reason  game_exited\n"), "{text}");
        assert!(text.contains("exit code   3\n"), "{text}");
        assert!(!text.contains("config"), "{text}");
        let mut started = StartedSession {
            session: session(),
            join_token: None,
            join_expires_at: None,
        };
        let short = started_text(&started);
        assert!(short.starts_with("session  0190c3c8-7d2e\nstatus   running\nconnect  127.0.0.1:20000\npid      4242\n"), "{short}");
        assert!(!short.contains("join"), "{short}");
        started.join_token = Some("AAAAAAAAAAAAAAAAAAAAAA".into());
        started.join_expires_at = Some(datetime!(2026-11-23 10:02:00 UTC));
        let short = started_text(&started);
        assert!(
            short.contains("join token  AAAAAAAAAAAAAAAAAAAAAA (once, until 2026-11-23"),
            "{short}"
        );
    }
}
