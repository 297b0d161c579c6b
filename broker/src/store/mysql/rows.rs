//! Sessions to and from MySQL rows and statement parameters, and the driver's errors in the
//! store's terms.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mysql_async::prelude::FromValue;
use mysql_async::{Params, Row, Value};
use protocol::api::{EndReason, Session, SessionStatus};
use protocol::{GameId, HostId, SessionId};
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::session::Actor;
use crate::store::StoreError;

/// The statuses of a session that is not over: it holds its host's slot, its game runs or
/// is about to (a pool's `ready` game included). For SQL: `status IN {LIVE_STATUSES}`.
pub const LIVE_STATUSES: &str = "('starting', 'ready', 'running', 'stopping')";

/// The columns of `sessions`, in the order [`session_row`] reads them.
pub(super) const SESSION_COLUMNS: &str =
    "seq, session_id, game_id, mode, config, status, host_id, ip, port, pid, \
     created_at, started_at, ended_at, end_reason, exit_code, pool_id, settings, ports, user_id, \
     max_duration_s, build, slots, gpus, labels";

/// MySQL's error for a transaction rolled back by a deadlock, which Galera also answers for
/// one that lost certification to a commit on another node.
const DEADLOCK: u16 = 1213;
/// A lock waited for past `innodb_lock_wait_timeout`; on Galera also what a local
/// transaction gets when a node's replication stalls behind it (seen with a node hung by
/// `SIGSTOP`). Every store transaction is then rolled back as a whole: a procedure's handler
/// rolls back, and a transaction of ours is dropped, which rolls it back.
const LOCK_WAIT_TIMEOUT: u16 = 1205;
/// What a Galera node outside the primary component (or still joining) answers to every
/// statement: "WSREP has not yet prepared node for application use".
const NODE_NOT_READY: u16 = 1047;

/// The driver's error in the store's terms: the server unreachable or not serving is
/// [`StoreError::Unavailable`], a transaction that lost a race [`StoreError::Conflict`],
/// any other answer of the server a fault of ours ([`StoreError::Backend`]).
pub(super) fn unavailable(e: mysql_async::Error) -> StoreError {
    match e {
        mysql_async::Error::Server(s) if s.code == DEADLOCK || s.code == LOCK_WAIT_TIMEOUT => {
            StoreError::Conflict(format!("{} ({})", s.message, s.code))
        }
        mysql_async::Error::Server(s) if s.code == NODE_NOT_READY => {
            StoreError::Unavailable(format!("{} ({})", s.message, s.code))
        }
        mysql_async::Error::Server(s) => StoreError::Backend(format!("{} ({})", s.message, s.code)),
        other => StoreError::Unavailable(other.to_string()),
    }
}

pub(super) fn utc(t: OffsetDateTime) -> PrimitiveDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    PrimitiveDateTime::new(t.date(), t.time())
}

pub(super) fn opt_utc(t: Option<OffsetDateTime>) -> Value {
    t.map_or(Value::NULL, |t| utc(t).into())
}

pub(super) fn take<T: FromValue>(row: &mut Row, idx: usize) -> Result<T, StoreError> {
    row.take_opt::<T, usize>(idx)
        .ok_or_else(|| StoreError::Backend(format!("missing column {idx}")))?
        .map_err(|e| StoreError::Backend(format!("column {idx}: {e}")))
}

pub(super) fn parse<T: std::str::FromStr>(what: &str, v: &str) -> Result<T, StoreError> {
    v.parse()
        .map_err(|_| StoreError::Backend(format!("bad {what} {v:?} in the database")))
}

pub(super) fn end_reason_str(r: EndReason) -> &'static str {
    match r {
        EndReason::EndedByRequest => "ended_by_request",
        EndReason::GameExited => "game_exited",
        EndReason::LaunchFailed => "launch_failed",
        EndReason::LaunchTimeout => "launch_timeout",
        EndReason::HostLost => "host_lost",
        EndReason::Expired => "expired",
        EndReason::Idle => "idle",
    }
}

pub(super) fn end_reason_parse(s: &str) -> Result<EndReason, StoreError> {
    Ok(match s {
        "ended_by_request" => EndReason::EndedByRequest,
        "game_exited" => EndReason::GameExited,
        "launch_failed" => EndReason::LaunchFailed,
        "launch_timeout" => EndReason::LaunchTimeout,
        "host_lost" => EndReason::HostLost,
        "expired" => EndReason::Expired,
        "idle" => EndReason::Idle,
        other => {
            return Err(StoreError::Backend(format!(
                "bad end_reason {other:?} in the database"
            )))
        }
    })
}

/// Decodes a row of [`SESSION_COLUMNS`] into its sequence number and session.
pub(super) fn session_row(mut row: Row) -> Result<(u64, Session), StoreError> {
    let seq: u64 = take(&mut row, 0)?;
    let session_id: String = take(&mut row, 1)?;
    let game_id: String = take(&mut row, 2)?;
    let status: String = take(&mut row, 5)?;
    let host_id: String = take(&mut row, 6)?;
    let ip: Option<String> = take(&mut row, 7)?;
    let end_reason: Option<String> = take(&mut row, 13)?;
    let port: Option<u32> = take(&mut row, 8)?;
    let pool_id: Option<String> = take(&mut row, 15)?;
    let settings: Option<String> = take(&mut row, 16)?;
    let ports: Option<String> = take(&mut row, 17)?;
    let user_id: Option<String> = take(&mut row, 18)?;
    let build: Option<String> = take(&mut row, 20)?;
    let slots: Option<u32> = take(&mut row, 21)?;
    let gpus: Option<String> = take(&mut row, 22)?;
    let labels: Option<String> = take(&mut row, 23)?;
    let mut s = Session {
        session_id: parse("session id", &session_id)?,
        game_id: parse::<GameId>("game id", &game_id)?,
        mode: take(&mut row, 3)?,
        config: take(&mut row, 4)?,
        status: parse::<SessionStatus>("status", &status)?,
        host_id: parse::<HostId>("host id", &host_id)?,
        ip: ip
            .as_deref()
            .map(|ip| parse::<IpAddr>("ip", ip))
            .transpose()?,
        port: port
            .map(|p| u16::try_from(p).map_err(|_| StoreError::Backend(format!("bad port {p}"))))
            .transpose()?,
        pid: take(&mut row, 9)?,
        created_at: take::<PrimitiveDateTime>(&mut row, 10)?.assume_utc(),
        started_at: take::<Option<PrimitiveDateTime>>(&mut row, 11)?
            .map(PrimitiveDateTime::assume_utc),
        ended_at: take::<Option<PrimitiveDateTime>>(&mut row, 12)?
            .map(PrimitiveDateTime::assume_utc),
        end_reason: end_reason.as_deref().map(end_reason_parse).transpose()?,
        exit_code: take(&mut row, 14)?,
        pool_id: pool_id
            .as_deref()
            .map(|p| parse("pool id", p))
            .transpose()?,
        ports: ports_parse(ports.as_deref())?,
        user_id,
        settings: settings_parse(settings.as_deref())?,
        max_duration_s: take(&mut row, 19)?,
        expires_at: None,
        build: build.as_deref().map(|b| parse("build", b)).transpose()?,
        gpus: json_or_default("gpus", gpus.as_deref())?,
        labels: json_or_default("labels", labels.as_deref())?,
        slots: slots.unwrap_or(1),
    };
    s.expires_at = crate::session::expires_at(&s);
    Ok((seq, s))
}

pub(super) fn event_params(
    id: &SessionId,
    s: &Session,
    event: &str,
    actor: Actor,
    at: OffsetDateTime,
) -> Params {
    Params::Positional(vec![
        id.as_str().into(),
        utc(at).into(),
        event.into(),
        s.status.as_str().into(),
        actor.as_str().into(),
    ])
}

/// A session's columns in `INSERT INTO sessions` order (as `arcade_insert_session` takes them).
pub(super) fn session_values(s: &Session) -> Vec<Value> {
    let mut v = vec![
        s.session_id.as_str().into(),
        s.game_id.as_str().into(),
        s.mode.as_str().into(),
        s.config.clone().into(),
        s.status.as_str().into(),
        s.host_id.as_str().into(),
        s.ip.map(|ip| ip.to_string()).into(),
        s.port.map(u32::from).into(),
        s.pid.into(),
        utc(s.created_at).into(),
    ];
    v.extend(ended_values(s));
    v.extend([
        s.pool_id.as_ref().map(|p| p.as_str()).into(),
        settings_value(s),
        ports_value(s),
        s.user_id.clone().into(),
        s.max_duration_s.into(),
        s.build.as_ref().map(|b| b.as_str()).into(),
    ]);
    v.extend(placement_values(s));
    v
}

/// `slots, gpus, gpu_count, labels, unclaimed`: what a session holds of its host, and where;
/// and whether it is a pool's game no player has claimed yet (its time is nobody's usage).
pub(super) fn placement_values(s: &Session) -> [Value; 5] {
    let json = |empty: bool, v: String| if empty { Value::NULL } else { v.into() };
    [
        s.slots.into(),
        json(
            s.gpus.is_empty(),
            serde_json::to_string(&s.gpus).unwrap_or_default(),
        ),
        u32::try_from(s.gpus.len()).unwrap_or(u32::MAX).into(),
        json(
            s.labels.is_empty(),
            serde_json::to_string(&s.labels).unwrap_or_default(),
        ),
        (s.pool_id.is_some() && matches!(s.status, SessionStatus::Starting | SessionStatus::Ready))
            .into(),
    ]
}

/// A JSON column as read back (NULL: the type's default).
fn json_or_default<T: serde::de::DeserializeOwned + Default>(
    what: &str,
    v: Option<&str>,
) -> Result<T, StoreError> {
    match v {
        None | Some("") => Ok(T::default()),
        Some(json) => serde_json::from_str(json)
            .map_err(|e| StoreError::Backend(format!("bad {what} in the database: {e}"))),
    }
}

/// A session's settings as stored: JSON, NULL when it has none.
pub(super) fn settings_value(s: &Session) -> Value {
    settings_json(&s.settings).into()
}

/// Settings as stored: JSON, `None` (NULL) when there are none.
pub(super) fn settings_json(settings: &BTreeMap<String, String>) -> Option<String> {
    if settings.is_empty() {
        return None;
    }
    serde_json::to_string(settings).ok()
}

/// Settings as read back (NULL: none).
pub(super) fn settings_parse(v: Option<&str>) -> Result<BTreeMap<String, String>, StoreError> {
    match v {
        None | Some("") => Ok(BTreeMap::new()),
        Some(json) => serde_json::from_str(json)
            .map_err(|e| StoreError::Backend(format!("bad settings in the database: {e}"))),
    }
}

/// A session's ports as stored: `20000,20001`, NULL before it runs.
pub(super) fn ports_value(s: &Session) -> Value {
    if s.ports.is_empty() {
        return Value::NULL;
    }
    let ports: Vec<String> = s.ports.iter().map(u16::to_string).collect();
    ports.join(",").into()
}

fn ports_parse(v: Option<&str>) -> Result<Vec<u16>, StoreError> {
    match v {
        None | Some("") => Ok(Vec::new()),
        Some(list) => list.split(',').map(|p| parse("port", p)).collect(),
    }
}

/// The columns a transition may change, in `arcade_transition` order.
pub(super) fn changed_values(s: &Session) -> Vec<Value> {
    let mut v = vec![
        s.status.as_str().into(),
        s.ip.map(|ip| ip.to_string()).into(),
        s.port.map(u32::from).into(),
        s.pid.into(),
        ports_value(s),
    ];
    v.extend(ended_values(s));
    v
}

/// `started_at, ended_at, end_reason, exit_code`.
pub(super) fn ended_values(s: &Session) -> [Value; 4] {
    [
        opt_utc(s.started_at),
        opt_utc(s.ended_at),
        s.end_reason.map(end_reason_str).into(),
        s.exit_code.into(),
    ]
}

/// A session insert's outcome: a duplicate id is the caller's to handle.
pub(super) fn insert_result<T>(
    s: &Session,
    r: Result<T, mysql_async::Error>,
) -> Result<T, StoreError> {
    match r {
        Err(mysql_async::Error::Server(e)) if e.code == 1062 => {
            Err(StoreError::Duplicate(s.session_id.clone()))
        }
        other => other.map_err(unavailable),
    }
}
