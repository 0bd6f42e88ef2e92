//! The HTTP edge: accept loop (plain TCP or TLS), HTTP/1.1 and HTTP/2 on one port (h2c prior
//! knowledge in the clear, ALPN with TLS) via hyper-util's auto builder; connection cap,
//! header-read timeout (slowloris), per-request timeout; one access-log line and the metrics
//! of every request; graceful shutdown bounded by a grace period.

pub mod edge;
pub mod prefixed;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::http::body::Body;
use crate::http::{self, ApiError, HttpState};
use crate::telemetry::METRICS;

/// Edge settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub grace: Duration,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

async fn serve_request(state: HttpState, settings: Arc<ServerSettings>, req: Request<Incoming>) -> Response<Body> {
    let _in_flight = METRICS.request_started();
    let start = Instant::now();
    let method = req.method().clone();
    // Most requests (cache hits, 304s) complete on their first poll: only the others get a
    // timer, which saves a timer-wheel insert and removal per hit.
    let unbounded = http::unbounded(&req);
    let mut handled = std::pin::pin!(http::handle(&state, req));
    let first = std::future::poll_fn(|cx| Poll::Ready(handled.as_mut().poll(cx))).await;
    let outcome = match first {
        Poll::Ready(x) => Ok(x),
        Poll::Pending if unbounded => Ok(handled.await),
        Poll::Pending => tokio::time::timeout(settings.request_timeout, handled).await,
    };
    let (resp, route, registry) = match outcome {
        Ok(x) => x,
        Err(_) => {
            let e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the request took longer than {:?}; try again", settings.request_timeout),
            );
            (e.into_response(), "timeout", "-")
        }
    };
    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    let x_cache = resp.headers().get(http::X_CACHE).map(|v| match v.as_bytes() {
        b"HIT" => "HIT",
        b"MISS" => "MISS",
        b"REVALIDATED" => "REVALIDATED",
        b"STALE" => "STALE",
        _ => "BYPASS",
    });
    let bytes = hyper::body::Body::size_hint(resp.body()).exact();
    let tier = if route.ends_with("/download") { "crate" } else { "index" };
    METRICS.record_request(
        registry,
        route,
        status,
        elapsed.as_secs_f64(),
        bytes,
        x_cache.map(|x| (tier, x)),
    );
    if route.ends_with("/crates/new") {
        let outcome = if resp.status().is_success() { "ok" } else { "refused" };
        METRICS.add(
            "cargohold_publishes_total",
            &[("registry", registry), ("outcome", outcome)],
            1,
        );
    }
    let x_cache = x_cache.unwrap_or("-");
    crate::telemetry::access::request(&crate::telemetry::access::Line {
        method: method.as_str(),
        route,
        registry,
        status,
        duration: elapsed,
        cache: x_cache,
        size: bytes,
    });
    resp
}

/// Serves connections from `listener` on the `edge` workers until `shutdown` completes, then
/// lets in-flight requests finish for at most the grace period and stops the workers.
pub async fn run(
    listener: TcpListener,
    edge: edge::Edge,
    tls: Option<TlsAcceptor>,
    state: HttpState,
    shutdown: impl Future<Output = ()>,
    settings: ServerSettings,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(256);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let settings = Arc::new(settings);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
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
        let settings2 = settings.clone();
        // Requests in progress on this connection: the idle timer runs only while it is zero.
        let busy = prefixed::Busy::default();
        let busy2 = busy.clone();
        let service = service_fn(move |req| {
            let (state, settings, busy) = (state.clone(), settings2.clone(), busy2.clone());
            async move {
                busy.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                let resp = serve_request(state, settings, req).await;
                busy.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                Ok::<_, Infallible>(resp)
            }
        });
        METRICS.add_gauge("cargohold_connections_open", 1);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let first_bytes_timeout = settings.header_read_timeout;
        let idle_timeout = settings.idle_timeout;
        // Leave the main runtime's reactor: the worker registers the socket with its own.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot hand the connection to a worker");
                METRICS.add_gauge("cargohold_connections_open", -1);
                continue;
            }
        };
        edge.dispatch(move |open| {
            Box::new(move || {
                Box::pin(async move {
                    let _open = open;
                    let outcome = match tokio::net::TcpStream::from_std(stream) {
                        Ok(stream) => {
                            serve_connection(
                                stream,
                                tls,
                                builder,
                                service,
                                watcher,
                                busy,
                                first_bytes_timeout,
                                idle_timeout,
                            )
                            .await
                        }
                        Err(e) => Err(e.into()),
                    };
                    if let Err(e) = outcome {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    METRICS.add_gauge("cargohold_connections_open", -1);
                    drop(permit);
                })
            })
        });
    }
    drop(listener);
    if tokio::time::timeout(settings.grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            grace_secs = settings.grace.as_secs(),
            "grace period over; closing remaining connections"
        );
    }
    let _ = tokio::task::spawn_blocking(move || edge.stop()).await;
}

type ConnResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Serves one accepted connection (on an edge worker): TLS handshake if configured, then
/// HTTP/1.1 or HTTP/2 until the peer or the graceful shutdown ends it. Both branches read the
/// connection's first bytes under the header-read timeout, so a peer that connects and stays
/// silent cannot hold a connection slot.
#[allow(clippy::too_many_arguments)]
async fn serve_connection<S>(
    stream: tokio::net::TcpStream,
    tls: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
    busy: prefixed::Busy,
    first_bytes_timeout: Duration,
    idle_timeout: Duration,
) -> ConnResult
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    match tls {
        None => match prefixed::first_bytes(stream, first_bytes_timeout).await {
            Ok(Some(io)) => {
                let io = io.with_idle_timeout(idle_timeout, busy);
                watcher
                    .watch(
                        builder
                            .serve_connection_with_upgrades(TokioIo::new(io), service)
                            .into_owned(),
                    )
                    .await
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e.into()),
        },
        Some(acceptor) => match tokio::time::timeout(first_bytes_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls_stream)) => match prefixed::first_bytes(tls_stream, first_bytes_timeout).await {
                Ok(Some(io)) => {
                    let io = io.with_idle_timeout(idle_timeout, busy);
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(io), service)
                        .into_owned();
                    watcher.watch(conn).await
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e.into()),
            },
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Ok(()),
        },
    }
}
