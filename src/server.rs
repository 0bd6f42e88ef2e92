//! The HTTP edge: accept loop, HTTP/1.1 and HTTP/2 (h2c prior knowledge) on one port via
//! hyper-util's auto builder, one access-log line per request, graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::http::{self, HttpState};

/// Serves connections from `listener` until `shutdown` completes, then lets in-flight
/// requests finish for at most `grace`.
pub async fn run(listener: TcpListener, state: HttpState, shutdown: impl Future<Output = ()>, grace: Duration) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move {
                        let start = Instant::now();
                        let method = req.method().clone();
                        let (resp, route) = http::handle(&state, req).await;
                        tracing::info!(
                            http.method = %method,
                            http.route = route,
                            http.status = resp.status().as_u16(),
                            duration_ms = start.elapsed().as_secs_f64() * 1000.0,
                            cache.status = resp.headers().get("x-cache").and_then(|v| v.to_str().ok()).unwrap_or("-"),
                            "request"
                        );
                        Ok::<_, Infallible>(resp)
                    }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "grace period over; closing remaining connections"
        );
    }
}
