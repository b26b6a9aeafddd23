//! The GraphiQL playground on `/` (and on `/graphql` for browsers).
//!
//! With `--playground-assets DIR` (filled by
//! `scripts/fetch-playground-assets.sh`) the page loads its scripts and
//! styles from this server under `/playground-assets/`, and a
//! Content-Security-Policy stops it from reaching any other host: it works
//! with no internet access. Without the flag it loads the same pinned
//! versions from a CDN. No third-party JavaScript lives in the repository.

use std::path::Path;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeader;

use crate::server::AppState;

/// Versions the page loads; `scripts/fetch-playground-assets.sh` pins the
/// same (a test checks that they agree).
pub const GRAPHIQL: &str = "graphiql@3.9.0";
pub const REACT: &str = "react@18.3.1";
pub const REACT_DOM: &str = "react-dom@18.3.1";

/// Where the offline assets are served.
pub const ASSETS_PATH: &str = "/playground-assets";
/// Where they come from without `--playground-assets`: a CDN that serves npm
/// packages by `name@version/path`, the layout the script writes.
const CDN: &str = "https://unpkg.com";

/// The offline page may load only from this server (and inline data).
const OFFLINE_CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     connect-src 'self'";

pub fn routes(assets: Option<&Path>) -> Router<AppState> {
    let router = Router::new().route("/", get(page));
    match assets {
        // File names carry their package version: they never change.
        Some(dir) => router.nest_service(
            ASSETS_PATH,
            SetResponseHeader::if_not_present(
                ServeDir::new(dir),
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ),
        None => router,
    }
}

/// Checks at start-up that `dir` holds what the page loads, so a wrong path
/// fails with a hint instead of a blank page.
pub fn check_assets(dir: &Path) -> anyhow::Result<()> {
    for file in asset_files() {
        if !dir.join(&file).is_file() {
            anyhow::bail!(
                "CATALYNX_PLAYGROUND_ASSETS / --playground-assets: {} has no {file}; \
                 fill it with scripts/fetch-playground-assets.sh {}",
                dir.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// The files the page loads, relative to the assets directory.
fn asset_files() -> [String; 4] {
    [
        format!("{REACT}/umd/react.production.min.js"),
        format!("{REACT_DOM}/umd/react-dom.production.min.js"),
        format!("{GRAPHIQL}/graphiql.min.js"),
        format!("{GRAPHIQL}/graphiql.min.css"),
    ]
}

pub async fn page(State(state): State<AppState>) -> Response {
    let offline = state.http().playground_assets.is_some();
    let base = if offline { ASSETS_PATH } else { CDN };
    let [react, react_dom, graphiql_js, graphiql_css] = asset_files();
    let html = PAGE
        .replace("{REACT}", &format!("{base}/{react}"))
        .replace("{REACT_DOM}", &format!("{base}/{react_dom}"))
        .replace("{GRAPHIQL_JS}", &format!("{base}/{graphiql_js}"))
        .replace("{GRAPHIQL_CSS}", &format!("{base}/{graphiql_css}"));
    let mut response = Html(html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if offline {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(OFFLINE_CSP),
        );
    }
    response
}

const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="robots" content="noindex">
  <title>Catalynx API</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="{GRAPHIQL_CSS}">
  <style>body { margin: 0; } #graphiql { height: 100vh; }</style>
</head>
<body>
  <div id="graphiql">Loading…</div>
  <script src="{REACT}"></script>
  <script src="{REACT_DOM}"></script>
  <script src="{GRAPHIQL_JS}"></script>
  <script>
    const defaultQuery = `{
  profiles(first: 5) {
    totalCount
    nodes {
      name
      opportunitiesCount
      opportunities(first: 5) { nodes { organizationName overallScore currentStage } }
    }
  }
}
`;
    const fetcher = GraphiQL.createFetcher({ url: new URL("/graphql", window.location.href).href });
    ReactDOM.createRoot(document.getElementById("graphiql")).render(
      React.createElement(GraphiQL, { fetcher, defaultQuery, defaultEditorToolsVisibility: true })
    );
  </script>
</body>
</html>
"#;
