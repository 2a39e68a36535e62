//! The HTTP/1.1 server: hyper's, with a bound on how long a client may take
//! to send a request's headers (and how long a connection may sit idle
//! between requests), which `axum::serve` cannot be given.

use std::{io::ErrorKind, time::Duration};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Pause after a failed accept (out of file descriptors, say), so that the
/// loop does not spin while the cause lasts.
const ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// How long a shutdown waits for the requests in flight, within the 30 s
/// that ECS and Kubernetes allow a stopping process by default.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops
/// accepting, closes idle connections and waits for the requests in flight
/// (at most [`SHUTDOWN_GRACE`]).
/// A connection that takes longer than `idle` to send a request's
/// headers, or sits that long between requests, is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    idle: Duration,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(idle);
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // The client gave up on this connection; the next may come.
                Err(error) if matches!(
                    error.kind(),
                    ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
                ) => continue,
                Err(error) => {
                    tracing::error!(%error, "cannot accept connections");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?SHUTDOWN_GRACE,
            "requests still in flight at shutdown are cut off"
        );
    }
}
