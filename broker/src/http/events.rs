//! `GET /v1/events`: the event stream as Server-Sent Events.
//!
//! Each event is `id:` (its number), `event:` (its type) and `data:` (the event as JSON). A
//! client that reconnects with `Last-Event-ID` (or `?after=`) gets every event after that
//! number, then live ones. A comment every [`KEEP_ALIVE`] keeps proxies from closing an idle
//! stream.

use std::time::Duration;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use protocol::api::{ErrorBody, Event, EventType};
use protocol::{HostId, SessionId};
use serde::Deserialize;

use super::errors::ApiError;
use super::extract;
use crate::events::Fed;
use crate::service::{EventQuery, Service};

/// How often an idle stream gets a comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The query of `GET /v1/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Params {
    /// Only these types, comma-separated (`session.ended,host.offline`).
    types: Option<String>,
    /// Only this session's events.
    #[param(value_type = Option<SessionId>)]
    session_id: Option<String>,
    /// Only this host's events.
    #[param(value_type = Option<HostId>)]
    host_id: Option<String>,
    /// Events after this id (as `Last-Event-ID`, which wins).
    #[param(maximum = 18446744073709551615.0, format = Int64)]
    after: Option<u64>,
}

/// The filters and starting point of a request.
fn query(req: &HttpRequest, p: Params) -> Result<EventQuery, ApiError> {
    let types = p
        .types
        .map(|t| {
            t.split(',')
                .filter(|t| !t.is_empty())
                .map(|t| {
                    EventType::parse(t).ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "unknown event type {:?}; types: {}",
                            t.chars().take(64).collect::<String>(),
                            EventType::ALL.map(EventType::as_str).join(", ")
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let last_event_id = req
        .headers()
        .get("Last-Event-ID")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::BadRequest("Last-Event-ID must be an event's id".into()))
        })
        .transpose()?;
    Ok(EventQuery {
        types,
        session_id: p
            .session_id
            .as_deref()
            .map(extract::session_id)
            .transpose()?,
        host_id: p.host_id.as_deref().map(extract::host_id).transpose()?,
        after: last_event_id.or(p.after),
    })
}

/// One event as Server-Sent Events lines, made once for all the streams that send it.
fn frame(f: &Fed) -> Bytes {
    f.written
        .get_or_init(|| {
            // JSON has no raw newline, so `data:` is one line.
            let e = &f.event;
            Bytes::from(format!(
                "id: {}\nevent: {}\ndata: {}\n\n",
                e.id, e.kind, f.json
            ))
        })
        .clone()
}

/// `GET /v1/events[?types=T,...][&session_id=][&host_id=][&after=ID]`.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    operation_id = "event_stream",
    summary = "Every change of sessions and hosts, as Server-Sent Events",
    description = "Each event has `id:` (increasing, gapless in delivery order), `event:` (its type) and `data:` (an Event as JSON). A client reconnecting with `Last-Event-ID` (or `?after=`) gets every later event once. A comment every 15 s keeps idle connections open.",
    params(
        Params,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event (wins over `after`)."),
    ),
    responses(
        (status = 200, description = "The stream; each `data:` is an Event.", body = Event, content_type = "text/event-stream"),
        (status = 400, description = "`bad_request`: an unknown event type, or an id that is not a number", body = ErrorBody),
        (status = 503, description = "`too_many_streams` (this broker serves as many as it can) or `store_unavailable`; retry", body = ErrorBody),
    )
)]
pub async fn stream(
    svc: web::Data<Service>,
    req: HttpRequest,
    params: web::Query<Params>,
) -> Result<HttpResponse, ApiError> {
    let q = query(&req, params.into_inner())?;
    let events = svc.into_inner().event_stream(q).await?;
    let start = tokio::time::Instant::now() + KEEP_ALIVE;
    // First, how long a client waits before it reconnects (with its Last-Event-ID).
    let retry = futures::stream::once(async {
        Ok::<_, std::convert::Infallible>(Bytes::from_static(b"retry: 1000\n\n"))
    });
    let events = futures::stream::unfold(
        (events, tokio::time::interval_at(start, KEEP_ALIVE)),
        |(mut events, mut tick)| async move {
            let chunk = tokio::select! {
                f = events.next() => {
                    let first = frame(f?.as_ref());
                    // With whatever else is ready: one write for several events.
                    match events.try_next() {
                        None => first,
                        Some(next) => {
                            let mut chunk = first.to_vec();
                            chunk.extend_from_slice(&frame(&next));
                            while let Some(f) = events.try_next() {
                                chunk.extend_from_slice(&frame(&f));
                            }
                            Bytes::from(chunk)
                        }
                    }
                }
                _ = tick.tick() => Bytes::from_static(b": keep-alive\n\n"),
            };
            Some((Ok::<_, std::convert::Infallible>(chunk), (events, tick)))
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(futures::StreamExt::chain(retry, events)))
}
