//! Versions in HTTP: a pool's or a central game's version is its `ETag` (a strong tag), and
//! `If-Match` makes a write conditional on it, so two operators cannot overwrite each other.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};

use super::errors::ApiError;
use crate::store::pools::Precondition;

/// `body` with `version` as its `ETag`.
pub fn tagged<T: serde::Serialize>(
    mut res: HttpResponseBuilder,
    version: u64,
    body: &T,
) -> HttpResponse {
    res.insert_header((header::ETAG, format!("\"{version}\"")))
        .json(body)
}

/// `If-Match`, if sent: `*`, or a list of tags (pools' and central games' versions). A weak
/// tag (`W/"3"`) or one that names no version never matches, as RFC 9110's strong comparison
/// asks.
pub fn if_match(req: &HttpRequest) -> Result<Option<Precondition>, ApiError> {
    let Some(v) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::BadRequest("If-Match must be visible ASCII".into()))?;
    if v.trim() == "*" {
        return Ok(Some(Precondition::Exists));
    }
    let versions = v
        .split(',')
        .filter_map(|t| t.trim().strip_prefix('"')?.strip_suffix('"')?.parse().ok())
        .collect();
    Ok(Some(Precondition::Version(versions)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn if_match_takes_star_or_strong_tags() {
        let cond = |v: &str| {
            if_match(
                &TestRequest::default()
                    .insert_header((header::IF_MATCH, v))
                    .to_http_request(),
            )
            .unwrap()
        };
        assert_eq!(cond("*"), Some(Precondition::Exists));
        assert_eq!(cond("\"3\""), Some(Precondition::Version(vec![3])));
        assert_eq!(
            cond("\"3\", \"5\""),
            Some(Precondition::Version(vec![3, 5]))
        );
        assert_eq!(cond("W/\"3\""), Some(Precondition::Version(vec![])));
        assert_eq!(cond("\"abc\""), Some(Precondition::Version(vec![])));
        assert_eq!(
            if_match(&TestRequest::default().to_http_request()).unwrap(),
            None
        );
    }
}
