//! The GraphiQL playground: the CDN page by default, the offline page with
//! `--playground-assets`, and the offline page in a real headless browser.

use std::path::{Path, PathBuf};
use std::time::Duration;

use catalynx::config::HttpConfig;
use catalynx::http::playground::{GRAPHIQL, REACT, REACT_DOM};
use reqwest::StatusCode;

use crate::helpers::{spawn_app, spawn_http_app};

const ASSETS_ENV: &str = "CATALYNX_TEST_PLAYGROUND_ASSETS";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A stand-in assets directory with the files the page loads.
fn fake_assets() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in [
        format!("{REACT}/umd/react.production.min.js"),
        format!("{REACT_DOM}/umd/react-dom.production.min.js"),
        format!("{GRAPHIQL}/graphiql.min.js"),
        format!("{GRAPHIQL}/graphiql.min.css"),
    ] {
        let path = dir.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "/* stand-in */").unwrap();
    }
    dir
}

#[tokio::test]
async fn without_assets_the_page_loads_the_pinned_versions_from_a_cdn() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!response.headers().contains_key("content-security-policy"));
    let html = response.text().await.unwrap();
    for pinned in [GRAPHIQL, REACT, REACT_DOM] {
        assert!(
            html.contains(&format!("https://unpkg.com/{pinned}/")),
            "{pinned}"
        );
    }
    assert!(!html.contains("/playground-assets/"));
    app.finish().await;
}

#[tokio::test]
async fn with_assets_the_page_loads_nothing_from_other_hosts() {
    let assets = fake_assets();
    let app = spawn_http_app(HttpConfig {
        playground_assets: Some(assets.path().to_owned()),
        ..HttpConfig::default()
    })
    .await;
    // On `/`, and on `/graphql` for a browser.
    for (path, accept) in [
        ("/", "*/*"),
        ("/graphql", "text/html,application/xhtml+xml,*/*;q=0.8"),
    ] {
        let response = app
            .client
            .get(app.url(path))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(
            response.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .starts_with("default-src 'self'")
        );
        let html = response.text().await.unwrap();
        assert!(
            !html.contains("://"),
            "{path}: a URL to another host:\n{html}"
        );
        assert!(html.contains(&format!("/playground-assets/{GRAPHIQL}/graphiql.min.js")));
    }
    let response = app
        .client
        .get(app.url(&format!("/playground-assets/{GRAPHIQL}/graphiql.min.js")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(response.text().await.unwrap(), "/* stand-in */");
    app.finish().await;
}

#[tokio::test]
async fn an_assets_directory_without_the_files_stops_the_start() {
    let empty = tempfile::tempdir().unwrap();
    let test_db = crate::helpers::TestDb::new(crate::helpers::Backend::Sqlite)
        .await
        .unwrap();
    let config = catalynx::config::ServeConfig {
        http: HttpConfig {
            playground_assets: Some(empty.path().to_owned()),
            ..HttpConfig::default()
        },
        ..crate::helpers::serve_config()
    };
    let error = catalynx::server::RunningServer::start(test_db.connect().await, &config)
        .await
        .err()
        .expect("refused");
    assert!(
        error
            .to_string()
            .contains("scripts/fetch-playground-assets.sh"),
        "{error}"
    );
}

#[test]
fn the_fetch_script_pins_the_versions_the_page_loads() {
    let script =
        std::fs::read_to_string(repo().join("scripts/fetch-playground-assets.sh")).unwrap();
    for pinned in [GRAPHIQL, REACT, REACT_DOM] {
        assert!(script.contains(&format!("\"{pinned} sha512-")), "{pinned}");
    }
}

/// What the browser test needs, or why it cannot run here.
fn browser_prerequisites() -> Result<(PathBuf, PathBuf), String> {
    let chromium = PathBuf::from(std::env::var("CHROMIUM").unwrap_or("/usr/bin/chromium".into()));
    if !chromium.exists() {
        return Err(format!(
            "no Chromium at {} (apt-get install chromium)",
            chromium.display()
        ));
    }
    if !repo()
        .join("tests/browser/node_modules/playwright-core")
        .exists()
    {
        return Err("no playwright-core (npm ci --prefix tests/browser)".into());
    }
    let assets = std::env::var(ASSETS_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("playground-assets"));
    if !assets.join(GRAPHIQL).exists() {
        return Err(format!(
            "no playground assets in {} (scripts/fetch-playground-assets.sh, or set {ASSETS_ENV})",
            assets.display()
        ));
    }
    Ok((chromium, assets))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_playground_runs_a_typed_query_in_headless_chromium() {
    let (chromium, assets) = match browser_prerequisites() {
        Ok(found) => found,
        // CI installs everything (.ci/run); a developer machine may not have it.
        Err(missing) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: browser test of the playground: {missing}");
            return;
        }
        Err(missing) => panic!("browser test of the playground cannot run in CI: {missing}"),
    };
    let app = spawn_http_app(HttpConfig {
        playground_assets: Some(assets),
        ..HttpConfig::default()
    })
    .await;
    catalynx::seed::seed_demo_if_empty(&app.db).await.unwrap();

    let mut command = tokio::process::Command::new("node");
    command
        .arg(repo().join("tests/browser/playground.mjs"))
        .arg(format!("http://{}", app.addr))
        .env("CHROMIUM", chromium)
        .kill_on_drop(true);
    if let Ok(path) = std::env::var("CATALYNX_TEST_SCREENSHOT") {
        command.arg(path);
    }
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the browser test finishes within 2 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    eprintln!("{}", stdout.trim());
    app.finish().await;
}
