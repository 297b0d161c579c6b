//! `/v1/builds`: upload a build (streamed), read, list and remove builds, and download a
//! build's bytes (with `Range`, so an agent resumes an interrupted download).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use protocol::api::{Build, BuildList, ErrorBody};
use protocol::BuildId;

use super::errors::ApiError;
use super::extract;
use crate::builds::Span;
use crate::service::Service;

/// `PUT /v1/builds/{sha256}`: the body, streamed to storage while hashed.
#[utoipa::path(
    put,
    path = "/v1/builds/{id}",
    tag = "builds",
    operation_id = "put_build",
    summary = "Upload a build",
    description = "The body is a `.tar.gz` of a game's directory or one executable, streamed (never held whole in memory). It is kept only if its sha256 is the path's and, for an archive, every entry is safe to unpack (no absolute path, no `..`, no link leaving the archive, no device, not more than four times --max-build-size unpacked); nothing partial is ever visible.",
    params(("id" = BuildId, Path, description = "The build's sha256.")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Stored.", body = Build),
        (status = 200, description = "Stored before: nothing was read.", body = Build),
        (status = 400, description = "`bad_request`: the body's sha256 is not the path's, an archive entry may not be unpacked (named), or the upload broke off; nothing was kept", body = ErrorBody),
        (status = 404, description = "`not_found`: the path is not a sha256", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: larger than --max-build-size", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the store cannot be reached; `too_many_uploads`: this broker receives as many uploads as it takes at once (4); retry after `Retry-After`", body = ErrorBody),
    )
)]
pub async fn put(
    svc: web::Data<Service>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = extract::build_id(&id)?;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > svc.max_build_size()) {
        return Err(crate::error::Error::BuildTooLarge(svc.max_build_size()).into());
    }
    let (build, new) = svc.put_build(&id, payload).await?;
    Ok(if new {
        HttpResponse::Created().json(build)
    } else {
        HttpResponse::Ok().json(build)
    })
}

/// `GET /v1/builds/{sha256}`.
#[utoipa::path(
    get,
    path = "/v1/builds/{id}",
    tag = "builds",
    operation_id = "get_build",
    summary = "One build",
    params(("id" = BuildId, Path, description = "The build's sha256.")),
    responses(
        (status = 200, description = "The build.", body = Build),
        (status = 404, description = "`not_found`: no such build", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn get(svc: web::Data<Service>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(svc.build(&extract::build_id(&id)?).await?))
}

/// `GET /v1/builds`.
#[utoipa::path(
    get,
    path = "/v1/builds",
    tag = "builds",
    operation_id = "list_builds",
    summary = "The builds, newest first",
    responses(
        (status = 200, description = "The builds (at most 1,000).", body = BuildList),
        (status = 503, description = "`store_unavailable`: the store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn list(svc: web::Data<Service>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(BuildList {
        builds: svc.builds().await?,
    }))
}

/// `DELETE /v1/builds/{sha256}`.
#[utoipa::path(
    delete,
    path = "/v1/builds/{id}",
    tag = "builds",
    operation_id = "delete_build",
    summary = "Remove a build",
    params(("id" = BuildId, Path, description = "The build's sha256.")),
    responses(
        (status = 200, description = "Removed: the build as it was.", body = Build),
        (status = 404, description = "`not_found`: no such build", body = ErrorBody),
        (status = 409, description = "`conflict`: a game or a live session uses it", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn delete(
    svc: web::Data<Service>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(svc.delete_build(&extract::build_id(&id)?).await?))
}

/// The one range of a `Range: bytes=…` header, given the build's `size`; `None` (the whole
/// build) for no header, another unit, or several ranges.
fn range(req: &HttpRequest, size: u64) -> Option<Span> {
    let v = req.headers().get(header::RANGE)?.to_str().ok()?;
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // The last `b` bytes (none: unsatisfiable, 416).
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return Some(Span {
                start: size,
                end: size,
            });
        }
        return Some(Span {
            start: size.saturating_sub(n),
            end: size.saturating_sub(1),
        });
    }
    let start: u64 = a.parse().ok()?;
    let end = if b.is_empty() {
        u64::MAX
    } else {
        b.parse().ok()?
    };
    // An end before the start is no valid range: the header is ignored (RFC 9110 14.2).
    (end >= start).then_some(Span { start, end })
}

/// `GET /v1/builds/{sha256}/content`: the bytes, or one range of them.
#[utoipa::path(
    get,
    path = "/v1/builds/{id}/content",
    tag = "builds",
    operation_id = "build_content",
    summary = "A build's bytes (admins, and agents with their agent token)",
    description = "One `Range: bytes=START-END` (or `START-`, or `-LAST`) answers 206 with that part, so a download that broke off resumes where it stopped.",
    params(
        ("id" = BuildId, Path, description = "The build's sha256."),
        ("Range" = Option<String>, Header, description = "`bytes=START-END`, `bytes=START-` or `bytes=-LAST`."),
    ),
    responses(
        (status = 200, description = "The whole build.", content_type = "application/octet-stream"),
        (status = 206, description = "The range asked for, with `Content-Range`.", content_type = "application/octet-stream"),
        (status = 404, description = "`not_found`: no such build", body = ErrorBody),
        (status = 416, description = "`bad_request`: the range starts at or past the build's end (`Content-Range: bytes */SIZE`)", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the store cannot be reached; retry", body = ErrorBody),
    )
)]
pub async fn content(
    svc: web::Data<Service>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = extract::build_id(&id)?;
    let size = svc.build_size(&id).await?;
    let span = range(&req, size);
    let (size, bytes) = svc.build_content(&id, span).await?;
    let mut res = match span {
        None => HttpResponse::Ok(),
        Some(_) => HttpResponse::PartialContent(),
    };
    res.content_type("application/octet-stream")
        .insert_header((header::ACCEPT_RANGES, "bytes"));
    let len = match span {
        None => size,
        Some(s) => {
            let end = s.end.min(size - 1);
            res.insert_header((
                header::CONTENT_RANGE,
                format!("bytes {}-{end}/{size}", s.start),
            ));
            end - s.start + 1
        }
    };
    Ok(res.no_chunking(len).streaming(bytes))
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        let span = |v: &str| {
            range(
                &TestRequest::default()
                    .insert_header((header::RANGE, v))
                    .to_http_request(),
                100,
            )
        };
        assert_eq!(span("bytes=0-9"), Some(Span { start: 0, end: 9 }));
        assert_eq!(
            span("bytes=90-"),
            Some(Span {
                start: 90,
                end: u64::MAX
            })
        );
        assert_eq!(span("bytes=-10"), Some(Span { start: 90, end: 99 }));
        assert_eq!(span("bytes=0-1,5-6"), None);
        assert_eq!(span("bytes=10-5"), None);
        assert_eq!(
            span("bytes=-0"),
            Some(Span {
                start: 100,
                end: 100
            })
        );
        assert_eq!(span("items=0-9"), None);
        assert_eq!(span("bytes=x-9"), None);
        assert_eq!(range(&TestRequest::default().to_http_request(), 100), None);
    }
}
