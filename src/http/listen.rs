//! Accepting connections and serving the router on them.
//!
//! hyper's connections run with a timer here, which `axum::serve` leaves
//! out: without it no timeout applies before a request's head has arrived,
//! so a client could hold a connection for ever by sending its head a line
//! at a time, or nothing at all. Idle sockets then piled up until the
//! process ran out of file descriptors, and a shutdown waited on each
//! half-sent head for good.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting and waits for the requests in flight. A connection that has
/// not sent a whole request head within `head_timeout` is closed: one idle
/// between keep-alive requests too.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    head_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most often: accepting again at
                    // once would only spin until some are closed.
                    tracing::error!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = connections.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that resets or times out its connection is not the
            // server's error.
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
}
