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

/// The level of both codings: brotli's default (11) costs ~100x the CPU of
/// level 4 for a few percent smaller JSON; 4 is also a sound gzip level.
pub const COMPRESSION_LEVEL: u32 = 4;

/// Bodies smaller than this go uncompressed: the compression layer's
/// default threshold (tower-http's `SizeAbove::DEFAULT_MIN_SIZE`), which a
/// stored response's coding follows too.
pub const MIN_COMPRESSED_BYTES: usize = 32;

/// A content coding the compression layer may apply; its name is also the
/// ETag suffix of a body sent in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Br,
    Gzip,
}

impl Coding {
    /// Every coding, in `Coding as usize` order.
    pub const ALL: [Coding; 2] = [Coding::Br, Coding::Gzip];

    pub fn name(self) -> &'static str {
        match self {
            Self::Br => "br",
            Self::Gzip => "gzip",
        }
    }

    /// The coding called `name` (case-insensitive).
    fn named(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| name.eq_ignore_ascii_case(c.name()))
    }

    /// The coding to answer `request` in, as the compression layer picks
    /// it: the one its `Accept-Encoding` gives the highest quality above 0,
    /// brotli on a tie; `None` for identity. Wildcards (`*`) are not taken
    /// as a request for compression.
    pub fn preferred(request: &HeaderMap) -> Option<Self> {
        let mut best: Option<(Self, f32)> = None;
        let items = request
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        for item in items {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let Some(coding) = Self::named(name) else {
                continue;
            };
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let better = match best {
                None => true,
                Some((held, held_q)) => {
                    q > held_q || (q == held_q && coding == Self::Br && held != Self::Br)
                }
            };
            if q > 0.0 && better {
                best = Some((coding, q));
            }
        }
        best.map(|(coding, _)| coding)
    }

    /// `body` in this coding, as the compression layer would send it.
    pub fn encode(self, body: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(body.len() / 4);
        match self {
            Self::Br => {
                let params = brotli::enc::BrotliEncoderParams {
                    quality: COMPRESSION_LEVEL as i32,
                    ..Default::default()
                };
                brotli::BrotliCompress(&mut &body[..], &mut out, &params)
                    .expect("writing to memory does not fail");
            }
            Self::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(out, flate2::Compression::new(COMPRESSION_LEVEL));
                std::io::Write::write_all(&mut encoder, body)
                    .expect("writing to memory does not fail");
                out = encoder.finish().expect("writing to memory does not fail");
            }
        }
        Bytes::from(out)
    }
}

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
                || Coding::ALL.iter().any(|c| {
                    opaque
                        .strip_suffix(c.name())
                        .and_then(|o| o.strip_suffix('-'))
                        == Some(base)
                })
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
    respond_tagged(request, content_type, body, None, cacheability, tag)
}

/// `respond` with the body's ETag already known (the ETag of the body before
/// any coding), as a stored response keeps it: hashing the body again on
/// every hit cost a tenth of the hit. A body already in `coding` is sent
/// as it is; the compression layer leaves it alone.
pub fn respond_tagged(
    request: &HeaderMap,
    content_type: &'static str,
    body: Bytes,
    coding: Option<Coding>,
    cacheability: Cacheability,
    tag: Option<String>,
) -> Response {
    let cache_control = cache_control(cacheability, authenticated(request));
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, cache_control);
    if coding.is_some() {
        builder = builder.header(header::VARY, "accept-encoding");
    }
    if let (Cacheability::Read(_), Some(tag)) = (cacheability, tag) {
        if let Some(matched) = matching_tag(request, &tag) {
            // Echo the client's tag: it names the coding it holds.
            let echoed = if matched == "*" {
                tag.as_str()
            } else {
                matched
            };
            // A 304 carries the `Vary` its 200 would (RFC 9110, 15.4.5):
            // the compression layer adds it to bodies it may code, and
            // leaves an empty body alone.
            if coding.is_none() && body.len() >= MIN_COMPRESSED_BYTES {
                builder = builder.header(header::VARY, "accept-encoding");
            }
            return builder
                .status(StatusCode::NOT_MODIFIED)
                .header(header::ETAG, echoed)
                .body(Body::empty())
                .expect("valid response");
        }
        builder = builder.header(header::ETAG, tag);
    }
    if let Some(coding) = coding {
        builder = builder.header(header::CONTENT_ENCODING, coding.name());
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
        .and_then(Coding::named);
    let tagged = match (coding, response.headers().get(header::ETAG)) {
        (Some(coding), Some(tag)) => {
            tag.to_str()
                .ok()
                .filter(|t| t.starts_with('"'))
                .and_then(|t| {
                    HeaderValue::from_str(&format!(
                        "{}-{}\"",
                        t.trim_end_matches('"'),
                        coding.name()
                    ))
                    .ok()
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
    fn the_coding_is_the_one_accepted_most() {
        for (sent, expected) in [
            ("", None),
            ("identity", None),
            ("*", None),
            ("gzip", Some(Coding::Gzip)),
            ("gzip, deflate, br, zstd", Some(Coding::Br)),
            ("br, gzip", Some(Coding::Br)),
            ("BR;q=0.5, gzip;q=0.8", Some(Coding::Gzip)),
            ("br;q=0, gzip", Some(Coding::Gzip)),
            ("br;q=0, gzip;q=0", None),
            ("deflate, gzip;q=0.1", Some(Coding::Gzip)),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, sent.parse().unwrap());
            assert_eq!(Coding::preferred(&headers), expected, "{sent}");
        }
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
