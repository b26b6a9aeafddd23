//! Content negotiation on `Accept` (GraphQL over HTTP, current draft).
//!
//! Clients that accept `application/graphql-response+json` get it, with 4xx
//! statuses for requests that never ran; clients that only accept
//! `application/json` get that, with 200 for every well-formed request, as
//! the spec asks for legacy clients. A bare `*/*` counts as a legacy client.

use axum::http::{HeaderMap, header};

use crate::error::AppError;

pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
pub const APPLICATION_JSON: &str = "application/json";

/// The media type a GraphQL response is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFormat {
    /// `application/graphql-response+json`: request errors are 4xx and carry no `data`.
    GraphqlResponseJson,
    /// `application/json`: every well-formed request is answered 200.
    Json,
}

impl ResponseFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::GraphqlResponseJson => "application/graphql-response+json; charset=utf-8",
            Self::Json => "application/json; charset=utf-8",
        }
    }
}

/// One entry of an `Accept` header.
struct MediaRange<'a> {
    kind: &'a str,
    subtype: &'a str,
    q: f32,
}

fn media_ranges(headers: &HeaderMap) -> Vec<MediaRange<'_>> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let (kind, subtype) = parts.next()?.trim().split_once('/')?;
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            Some(MediaRange {
                kind: kind.trim(),
                subtype: subtype.trim(),
                q,
            })
        })
        .collect()
}

/// The quality the client gives `kind/subtype`: that of the most specific
/// range that matches it, with how specific that range is (2 exact, 1
/// `type/*`, 0 `*/*`); `None` when nothing matches.
fn quality(ranges: &[MediaRange<'_>], kind: &str, subtype: &str) -> Option<(f32, u8)> {
    ranges
        .iter()
        .filter_map(|r| {
            let specificity = match (r.kind, r.subtype) {
                ("*", "*") => 0,
                (k, "*") if k.eq_ignore_ascii_case(kind) => 1,
                (k, s) if k.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(subtype) => 2,
                _ => return None,
            };
            Some((r.q, specificity))
        })
        .max_by_key(|&(_, specificity)| specificity)
}

/// The format to answer a GraphQL request in; 406 when the client accepts neither.
pub fn response_format(headers: &HeaderMap) -> Result<ResponseFormat, AppError> {
    let ranges = media_ranges(headers);
    if ranges.is_empty() {
        // The spec's default since 2025 for clients that send no Accept.
        return Ok(ResponseFormat::GraphqlResponseJson);
    }
    let modern = quality(&ranges, "application", "graphql-response+json").filter(|q| q.0 > 0.0);
    let legacy = quality(&ranges, "application", "json").filter(|q| q.0 > 0.0);
    match (modern, legacy) {
        (None, None) => Err(AppError::NotAcceptable(format!(
            "the Accept header allows neither {GRAPHQL_RESPONSE_JSON} nor {APPLICATION_JSON}"
        ))),
        (Some(_), None) => Ok(ResponseFormat::GraphqlResponseJson),
        (None, Some(_)) => Ok(ResponseFormat::Json),
        // Named explicitly and liked at least as much: the modern type. Reached
        // only through a wildcard: a legacy client, which expects plain JSON.
        (Some((mq, ms)), Some((lq, ls))) => {
            if ms == 2 && (mq, ms) >= (lq, ls) {
                Ok(ResponseFormat::GraphqlResponseJson)
            } else {
                Ok(ResponseFormat::Json)
            }
        }
    }
}

/// True when a browser asks for a page (`text/html` accepted explicitly).
pub fn wants_html(headers: &HeaderMap) -> bool {
    quality(&media_ranges(headers), "text", "html").is_some_and(|(q, s)| q > 0.0 && s == 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(accept: Option<&str>) -> Option<ResponseFormat> {
        let mut headers = HeaderMap::new();
        if let Some(a) = accept {
            headers.insert(header::ACCEPT, a.parse().unwrap());
        }
        response_format(&headers).ok()
    }

    #[test]
    fn picks_the_format_the_client_prefers() {
        use ResponseFormat::*;
        assert_eq!(format(None), Some(GraphqlResponseJson));
        assert_eq!(format(Some("application/json")), Some(Json));
        assert_eq!(format(Some("*/*")), Some(Json));
        assert_eq!(format(Some("application/*")), Some(Json));
        assert_eq!(
            format(Some("application/graphql-response+json")),
            Some(GraphqlResponseJson)
        );
        assert_eq!(
            format(Some(
                "application/graphql-response+json, application/json;q=0.9"
            )),
            Some(GraphqlResponseJson)
        );
        assert_eq!(
            format(Some(
                "application/graphql-response+json;q=0.5, application/json"
            )),
            Some(Json)
        );
        assert_eq!(
            format(Some(
                "application/graphql-response+json; charset=utf-8, */*"
            )),
            Some(GraphqlResponseJson)
        );
        assert_eq!(
            format(Some("application/json;q=0, */*;q=0.1")),
            Some(GraphqlResponseJson)
        );
        assert_eq!(format(Some("text/html")), None);
        assert_eq!(format(Some("application/xml")), None);
        assert_eq!(format(Some("application/json;q=0")), None);
    }

    #[test]
    fn html_only_when_named() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            "text/html,application/xhtml+xml,*/*;q=0.8".parse().unwrap(),
        );
        assert!(wants_html(&headers));
        headers.insert(header::ACCEPT, "*/*".parse().unwrap());
        assert!(!wants_html(&headers));
    }
}
