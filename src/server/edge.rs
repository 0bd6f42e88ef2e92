//! Edge workers: one thread per core (`workers`), each running a single-threaded tokio runtime
//! that owns the connections handed to it (nginx's worker model). A connection's reads, request
//! handling and writes stay on one thread: no work stealing, no cross-thread wake-ups on the hot
//! path. The accept loop (on the main runtime) hands each accepted socket to the worker with the
//! fewest open connections, so a few long downloads do not pile onto one core.
//!
//! Work a request spawns (an upstream fill that outlives its first caller, a background write to
//! the disk cache) runs on the worker that spawned it, and blocking store and cache I/O on that
//! worker's blocking pool; waiters on other workers are woken through tokio's runtime-agnostic
//! channels. The workers stop after the graceful-shutdown wait: dropping a runtime cancels its
//! remaining tasks but waits for blocking store writes already running, so an acknowledged
//! publish is never cut short.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// A connection to serve: builds its future on the worker (inside the worker's runtime).
pub type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

struct Worker {
    tx: mpsc::UnboundedSender<Job>,
    open: Arc<AtomicUsize>,
}

/// The pool of edge workers. Dropping it stops the workers: their runtimes end, cancelling
/// whatever connections they still hold (call it after the graceful-shutdown wait).
pub struct Edge {
    workers: Vec<Worker>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Decrements a worker's open-connection count when the connection's task ends.
pub struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Edge {
    /// Starts `n` workers (at least one).
    pub fn start(n: usize) -> std::io::Result<Edge> {
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let thread = std::thread::Builder::new()
                .name(format!("cargohold-edge-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        while let Some(job) = rx.recv().await {
                            tokio::spawn(job());
                        }
                    });
                })?;
            workers.push(Worker {
                tx,
                open: Arc::new(AtomicUsize::new(0)),
            });
            threads.push(thread);
        }
        Ok(Edge { workers, threads })
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether there are no workers (never, once started).
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Hands `job` to the least-loaded worker; `make` receives the guard that keeps that
    /// worker's count until the connection ends.
    pub fn dispatch(&self, make: impl FnOnce(OpenGuard) -> Job) {
        let Some(w) = self.workers.iter().min_by_key(|w| w.open.load(Ordering::Relaxed)) else {
            return;
        };
        w.open.fetch_add(1, Ordering::Relaxed);
        let job = make(OpenGuard(w.open.clone()));
        // A send fails only if the worker thread died (it panicked); the job is then dropped,
        // which closes the socket and releases its guard.
        let _ = w.tx.send(job);
    }

    /// Stops the workers and waits for their threads.
    pub fn stop(mut self) {
        self.workers.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn open_counts(edge: &Edge) -> Vec<usize> {
        edge.workers.iter().map(|w| w.open.load(Ordering::Relaxed)).collect()
    }

    #[test]
    fn spreads_connections_and_survives_a_panicking_task() {
        let edge = Edge::start(2).unwrap();
        assert_eq!(edge.len(), 2);
        let (release, held) = tokio::sync::watch::channel(false);
        let (done_tx, done_rx) = std::sync::mpsc::channel::<std::thread::ThreadId>();
        for _ in 0..4 {
            let mut held = held.clone();
            let done = done_tx.clone();
            edge.dispatch(move |guard| {
                Box::new(move || {
                    Box::pin(async move {
                        let _guard = guard;
                        let _ = held.wait_for(|r| *r).await;
                        let _ = done.send(std::thread::current().id());
                    })
                })
            });
        }
        assert_eq!(open_counts(&edge), vec![2, 2], "least-loaded dispatch");
        // A task that panics takes down neither its worker nor the others.
        edge.dispatch(|guard| {
            Box::new(move || {
                Box::pin(async move {
                    let _guard = guard;
                    panic!("handler bug");
                })
            })
        });
        release.send(true).unwrap();
        let threads: std::collections::HashSet<_> = (0..4)
            .map(|_| done_rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        assert_eq!(threads.len(), 2, "both workers served");
        for _ in 0..500 {
            if open_counts(&edge) == vec![0, 0] {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(open_counts(&edge), vec![0, 0], "guards released when tasks end");
        edge.stop();
    }
}
