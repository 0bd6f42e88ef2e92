//! The ceiling of our HTTP stack, for profiling the hot path: a bare hyper server (a
//! single-threaded runtime per worker, on `SO_REUSEPORT` listeners) that answers every request on
//! 127.0.0.1 with a constant 304 and does nothing else.
//!
//!     cargo run --release --example hyper_floor -- [PORT=34556] [WORKERS=2]
//!
//! Drive it with the same wrk command as the daemon and nginx (benches/load/README.md, "Profiling
//! the hot path"): the daemon's distance to this server is the daemon's own per-request work; this
//! server's distance to nginx is hyper's.

use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;

fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(34556);
    let workers: usize = std::env::args().nth(2).and_then(|p| p.parse().ok()).unwrap_or(2);
    let mut threads = vec![];
    for _ in 0..workers {
        threads.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let sock = tokio::net::TcpSocket::new_v4().unwrap();
                sock.set_reuseport(true).unwrap();
                sock.set_reuseaddr(true).unwrap();
                let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
                sock.bind(addr).unwrap();
                let l = sock.listen(1024).unwrap();
                loop {
                    let (s, _) = l.accept().await.unwrap();
                    s.set_nodelay(true).unwrap();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(|_req| async {
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(StatusCode::NOT_MODIFIED)
                                    .header("etag", "\"abcdef0123456789\"")
                                    .header("cache-control", "max-age=0")
                                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                                    .unwrap(),
                            )
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(s), svc)
                            .await;
                    });
                }
            });
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
}
