//! Each request's identity: an id, a tracing span, and the `X-Request-Id` header.
//!
//! The outermost middleware gives every request an id (the caller's `X-Request-Id` when it is a
//! short visible-ASCII string, else a new one), runs the rest of the request inside a span that
//! carries it (so the handler, the service, the agent link and the store log under it), and
//! answers it in `X-Request-Id`. A 500's body names the same id.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;

use crate::metrics::Metrics;

/// The request id header, read and answered.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The longest caller-chosen request id kept; a longer one is replaced.
const MAX_LEN: usize = 128;

/// One request's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

tokio::task_local! {
    static CURRENT: RequestId;
}

impl RequestId {
    /// A new id: this process's random prefix and a counter, unique without a system call
    /// per request.
    fn new() -> Self {
        static PREFIX: OnceLock<String> = OnceLock::new();
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let prefix = PREFIX.get_or_init(|| {
            let random = uuid::Uuid::now_v7().simple().to_string();
            random[random.len() - 12..].to_owned()
        });
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self(format!("{prefix}-{n:x}").into())
    }

    /// The caller's id when it is fit to log and echo, else a new one.
    fn from_header(value: Option<&HeaderValue>) -> Self {
        value
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= MAX_LEN)
            .filter(|v| v.bytes().all(|b| b.is_ascii_graphic()))
            .map_or_else(Self::new, |v| Self(v.into()))
    }

    /// The id of the request being served on this task; `-` outside one.
    pub fn current() -> Self {
        CURRENT
            .try_with(Clone::clone)
            .unwrap_or_else(|_| Self("-".into()))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The outermost middleware: the request's id, span and header.
pub async fn identify(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = RequestId::from_header(req.headers().get(REQUEST_ID));
    // Counted by the route's pattern (not the path: ids would make a label per session).
    let counted = req.app_data::<actix_web::web::Data<Metrics>>().map(|m| {
        let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
        (m.clone(), route, req.method().to_string())
    });
    let span = tracing::info_span!(
        "http",
        request_id = %id,
        method = %req.method(),
        route = tracing::field::Empty,
    );
    let header = HeaderValue::from_str(&id.0).ok();
    let mut res = match CURRENT.scope(id, next.call(req)).instrument(span).await {
        Ok(res) => res,
        // An error from within (a CORS refusal) is answered as its own response, with the id.
        Err(e) => {
            let mut response = e.error_response();
            if let Some(v) = header {
                response.headers_mut().insert(REQUEST_ID, v);
            }
            return Err(actix_web::error::InternalError::from_response(e, response).into());
        }
    };
    if let Some(v) = header {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    if let Some((m, route, method)) = counted {
        m.http_request(&route, &method, res.status().as_u16());
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_id_is_kept_only_when_fit_to_echo() {
        let keep = HeaderValue::from_static("portal-7f3a");
        assert_eq!(
            RequestId::from_header(Some(&keep)).to_string(),
            "portal-7f3a"
        );
        let spaced = HeaderValue::from_static("a b");
        assert_ne!(RequestId::from_header(Some(&spaced)).to_string(), "a b");
        let long = HeaderValue::from_str(&"x".repeat(MAX_LEN + 1)).unwrap();
        assert_ne!(
            RequestId::from_header(Some(&long)).to_string(),
            "x".repeat(MAX_LEN + 1)
        );
        assert_ne!(RequestId::new(), RequestId::new(), "ids are unique");
        assert_eq!(RequestId::current().to_string(), "-");
    }
}
