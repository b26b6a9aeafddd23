//! HTTP caching: `Cache-Control` from the schema's cache hints, strong
//! `ETag`s, and `304 Not Modified` on a matching `If-None-Match`.
//!
//! The ETag is a hash of the uncompressed body, so it changes exactly when
//! the data does (a mutation changes the next one) and costs no extra SQL.
//! The body is still built to answer a 304: the saving is the transfer.

use async_graphql::CacheControl;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use sha2::{Digest, Sha256};

/// Content codings the compression layer may apply, as ETag suffixes.
const CODINGS: [&str; 2] = ["gzip", "br"];

/// How a response may be cached.
#[derive(Clone, Copy, Debug)]
pub enum Cacheability {
    /// A successful read, with the schema's hint for what it selected.
    Read(CacheControl),
    /// Mutations and errors: never stored.
    NoStore,
}

/// The `Cache-Control` value of a response. `authenticated` callers get
/// `private` so that shared caches never hand their data to someone else.
pub fn cache_control(cacheability: Cacheability, authenticated: bool) -> HeaderValue {
    let hint = match cacheability {
        Cacheability::NoStore => return HeaderValue::from_static("no-store"),
        Cacheability::Read(hint) => hint,
    };
    let scope = if authenticated || !hint.public {
        "private"
    } else {
        "public"
    };
    // No hint (0) or an explicit "no-cache" (-1): stored, revalidated each time.
    let value = if hint.max_age > 0 {
        format!("{scope}, max-age={}", hint.max_age)
    } else {
        format!("{scope}, no-cache")
    };
    HeaderValue::from_str(&value).expect("ASCII header value")
}

/// Whether the caller is authenticated. The auth layer refuses every
/// request with an unknown or malformed key before its handler runs, so a
/// request that reaches a handler with credentials carries a valid key.
pub fn authenticated(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION)
}

/// A strong ETag of `body`: 128 bits of its SHA-256.
pub fn etag(body: &[u8]) -> String {
    format!("\"{}\"", hex::encode(&Sha256::digest(body)[..16]))
}

/// The tag in `If-None-Match` that names `etag` (in any content coding), if any.
fn matching_tag<'a>(request: &'a HeaderMap, etag: &str) -> Option<&'a str> {
    let base = etag.trim_matches('"');
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|tag| {
            if *tag == "*" {
                return true;
            }
            // If-None-Match compares weakly (RFC 9110 13.1.2).
            let opaque = tag.strip_prefix("W/").unwrap_or(tag).trim_matches('"');
            opaque == base
                || CODINGS
                    .iter()
                    .any(|c| opaque.strip_suffix(c).and_then(|o| o.strip_suffix('-')) == Some(base))
        })
}

/// A 200 response with `body`; for reads, with an ETag, or a 304 when the
/// client's `If-None-Match` already names it.
pub fn respond(
    request: &HeaderMap,
    content_type: &'static str,
    body: Bytes,
    cacheability: Cacheability,
) -> Response {
    let tag = matches!(cacheability, Cacheability::Read(_)).then(|| etag(&body));
    respond_tagged(request, content_type, body, cacheability, tag)
}

/// `respond` with the body's ETag already known (`etag(&body)`), as a stored
/// response keeps it: hashing the body again on every hit cost a tenth of
/// the hit.
pub fn respond_tagged(
    request: &HeaderMap,
    content_type: &'static str,
    body: Bytes,
    cacheability: Cacheability,
    tag: Option<String>,
) -> Response {
    let cache_control = cache_control(cacheability, authenticated(request));
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, cache_control);
    if let (Cacheability::Read(_), Some(tag)) = (cacheability, tag) {
        if let Some(matched) = matching_tag(request, &tag) {
            // Echo the client's tag: it names the coding it holds.
            let echoed = if matched == "*" {
                tag.as_str()
            } else {
                matched
            };
            return builder
                .status(StatusCode::NOT_MODIFIED)
                .header(header::ETAG, echoed)
                .body(Body::empty())
                .expect("valid response");
        }
        builder = builder.header(header::ETAG, tag);
    }
    builder
        .status(StatusCode::OK)
        .body(Body::from(body))
        .expect("valid response")
}

/// Gives a compressed response's ETag the coding as a suffix (`"…-gzip"`):
/// a strong validator must differ between encodings of the same data.
/// Runs outside the compression layer; `respond` strips the suffix again.
pub async fn tag_content_coding(mut response: Response) -> Response {
    let coding = response
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| CODINGS.iter().find(|c| c.eq_ignore_ascii_case(v)));
    let tagged = match (coding, response.headers().get(header::ETAG)) {
        (Some(coding), Some(tag)) => {
            tag.to_str()
                .ok()
                .filter(|t| t.starts_with('"'))
                .and_then(|t| {
                    HeaderValue::from_str(&format!("{}-{coding}\"", t.trim_end_matches('"'))).ok()
                })
        }
        _ => None,
    };
    if let Some(tagged) = tagged {
        response.headers_mut().insert(header::ETAG, tagged);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(max_age: i32, public: bool) -> Cacheability {
        Cacheability::Read(CacheControl { public, max_age })
    }

    #[test]
    fn cache_control_per_case() {
        assert_eq!(cache_control(hint(30, true), false), "public, max-age=30");
        assert_eq!(cache_control(hint(30, true), true), "private, max-age=30");
        assert_eq!(cache_control(hint(30, false), false), "private, max-age=30");
        assert_eq!(cache_control(hint(0, true), false), "public, no-cache");
        assert_eq!(cache_control(hint(-1, true), true), "private, no-cache");
        assert_eq!(cache_control(Cacheability::NoStore, false), "no-store");
    }

    #[test]
    fn if_none_match_matches_any_coding_of_the_tag() {
        let tag = etag(b"{}");
        let mut headers = HeaderMap::new();
        let base = tag.trim_matches('"');
        for (sent, matches) in [
            (tag.clone(), true),
            (format!("W/{tag}"), true),
            (format!("\"{base}-gzip\""), true),
            (format!("\"x\", \"{base}-br\""), true),
            ("*".to_owned(), true),
            ("\"other\"".to_owned(), false),
            (format!("\"{base}-zstd\""), false),
        ] {
            headers.insert(header::IF_NONE_MATCH, sent.parse().unwrap());
            assert_eq!(matching_tag(&headers, &tag).is_some(), matches, "{sent}");
        }
    }
}
