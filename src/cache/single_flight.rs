//! One in-flight computation per key. The first caller's future is spawned as a task (so it
//! completes even if that caller goes away) and every concurrent caller for the same key
//! awaits the same result.
//!
//! The key is released by a guard that lives inside the task, so it is released however the
//! task ends: with a value, with a panic (caught, logged once, reported to every waiter as
//! [`FlightError::Panicked`] without its text), or without running to the end (aborted, or
//! dropped with its runtime: every waiter gets [`FlightError::Aborted`]). A key can therefore
//! never stay stuck, and the map holds only flights that are really running.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::oneshot;

/// Why a flight gave no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlightError {
    /// The work panicked (the detail is in the log, not here).
    #[error("the background fetch failed unexpectedly")]
    Panicked,
    /// The task was aborted or its runtime shut down before it finished.
    #[error("the background fetch was interrupted")]
    Aborted,
}

type Flight<V> = Shared<BoxFuture<'static, Result<V, FlightError>>>;

struct Entry<V> {
    id: u64,
    flight: Flight<V>,
}

type Map<K, V> = Arc<Mutex<HashMap<K, Entry<V>>>>;

/// Coalesces concurrent work per key.
pub struct SingleFlight<K, V> {
    inflight: Map<K, V>,
    next_id: AtomicU64,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            inflight: Arc::new(Mutex::new(HashMap::new())),
            next_id: AtomicU64::new(0),
        }
    }
}

/// Removes its flight's key when dropped (only if the key still names that flight).
struct Release<K: Hash + Eq, V> {
    map: Map<K, V>,
    key: Option<K>,
    id: u64,
}

impl<K: Hash + Eq, V> Drop for Release<K, V> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&key).is_some_and(|e| e.id == self.id) {
            map.remove(&key);
        }
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

impl<K, V> SingleFlight<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Runs `work` for `key` unless a run is in flight, then returns that run's result.
    /// `Err` only if the run panicked or was stopped before it finished.
    pub async fn run<F, Fut>(&self, key: K, work: F) -> Result<V, FlightError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let (flight, release, tx) = {
            let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = map.get(&key) {
                (e.flight.clone(), None, None)
            } else {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = oneshot::channel::<Result<V, FlightError>>();
                let flight: Flight<V> = async move { rx.await.unwrap_or(Err(FlightError::Aborted)) }
                    .boxed()
                    .shared();
                map.insert(
                    key.clone(),
                    Entry {
                        id,
                        flight: flight.clone(),
                    },
                );
                let release = Release {
                    map: self.inflight.clone(),
                    key: Some(key),
                    id,
                };
                (flight, Some(release), Some(tx))
            }
        };
        // The leader starts the task outside the lock: a spawn that fails (runtime shutting
        // down) or a panicking `work` drops the guard, which takes the lock.
        if let (Some(release), Some(tx)) = (release, tx) {
            let fut = work();
            tokio::spawn(async move {
                let release = release;
                let result = match AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(v) => Ok(v),
                    Err(payload) => {
                        tracing::error!(panic = panic_text(payload.as_ref()), "a background fetch panicked");
                        Err(FlightError::Panicked)
                    }
                };
                let _ = tx.send(result);
                drop(release);
            });
        }
        flight.await
    }

    /// Number of keys in flight (for tests and metrics).
    pub fn in_flight(&self) -> usize {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Waits (bounded) until nothing is in flight.
    async fn drained<K, V>(sf: &SingleFlight<K, V>) -> usize
    where
        K: Hash + Eq + Clone + Send + 'static,
        V: Clone + Send + Sync + 'static,
    {
        for _ in 0..500 {
            if sf.in_flight() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sf.in_flight()
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let sf = Arc::new(SingleFlight::<String, usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..50 {
            let (sf, runs) = (sf.clone(), runs.clone());
            handles.push(tokio::spawn(async move {
                sf.run("k".to_owned(), || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    7
                })
                .await
            }));
        }
        for h in handles {
            assert_eq!(h.await.unwrap(), Ok(7));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(sf.in_flight(), 0);
    }

    #[tokio::test]
    async fn run_completes_when_the_caller_gives_up() {
        let sf = Arc::new(SingleFlight::<u8, ()>::default());
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        let call = sf.run(1, || async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            d.fetch_add(1, Ordering::SeqCst);
        });
        let _ = tokio::time::timeout(Duration::from_millis(1), call).await;
        assert_eq!(drained(&sf).await, 0);
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

    /// Polls `fut` once (so a waiter has joined its flight), leaving it pending.
    async fn join_flight<F: Future + Unpin>(fut: &mut F) {
        assert!(
            tokio::time::timeout(Duration::from_millis(1), fut).await.is_err(),
            "the flight ended too early"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_leader_fails_its_waiters_and_releases_the_key() {
        let sf = Arc::new(SingleFlight::<&'static str, u32>::default());
        let gate = Arc::new(tokio::sync::Notify::new());
        let g = gate.clone();
        let mut leader = Box::pin(sf.run("k", || async move {
            g.notified().await;
            panic!("secret panic text");
        }));
        join_flight(&mut leader).await;
        let mut waiter = Box::pin(sf.run("k", || async { 1 }));
        join_flight(&mut waiter).await;
        assert_eq!(sf.in_flight(), 1);
        gate.notify_one();
        assert_eq!(leader.await, Err(FlightError::Panicked));
        assert_eq!(waiter.await, Err(FlightError::Panicked));
        assert!(!FlightError::Panicked.to_string().contains("secret"));
        assert_eq!(drained(&sf).await, 0, "the panicked flight left its key");
        // The name works again at once.
        assert_eq!(sf.run("k", || async { 2 }).await, Ok(2));
    }

    #[tokio::test]
    async fn an_error_result_releases_the_key() {
        let sf = SingleFlight::<u8, Result<u8, String>>::default();
        assert_eq!(
            sf.run(1, || async { Err("upstream down".to_owned()) }).await,
            Ok(Err("upstream down".to_owned()))
        );
        assert_eq!(drained(&sf).await, 0);
        assert_eq!(sf.run(1, || async { Ok(3) }).await, Ok(Ok(3)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_whose_runtime_stops_fails_its_waiters_and_releases_the_key() {
        let sf = Arc::new(SingleFlight::<u8, u8>::default());
        // The leader's task runs on a runtime that is shut down mid-flight (an edge worker
        // stopping), which drops the task the way `abort` does.
        let other = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let started = Arc::new(tokio::sync::Notify::new());
        let (proceed, proceed_rx) = oneshot::channel::<()>();
        let (s, sf2) = (started.clone(), sf.clone());
        let leader = std::thread::spawn(move || {
            other.block_on(async move {
                let call = sf2.run(9, || async move {
                    s.notify_one();
                    std::future::pending::<u8>().await
                });
                tokio::select! {
                    _ = call => {},
                    _ = proceed_rx => {},
                }
            });
            drop(other);
        });
        started.notified().await;
        let mut waiter = Box::pin(sf.run(9, || async { 0 }));
        join_flight(&mut waiter).await;
        proceed.send(()).unwrap();
        tokio::task::spawn_blocking(move || leader.join().unwrap())
            .await
            .unwrap();
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(30), waiter).await.unwrap(),
            Err(FlightError::Aborted)
        );
        assert_eq!(drained(&sf).await, 0);
        assert_eq!(sf.run(9, || async { 5 }).await, Ok(5));
    }

    #[test]
    fn a_task_that_cannot_start_releases_the_key() {
        // A spawn on a runtime that has shut down drops the task at once.
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let handle = rt.handle().clone();
        rt.shutdown_background();
        let sf = SingleFlight::<u8, u8>::default();
        let _g = handle.enter();
        let res = futures_util::FutureExt::now_or_never(sf.run(2, || async { 1 }));
        assert_eq!(res, Some(Err(FlightError::Aborted)));
        assert_eq!(sf.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_panicking_work_constructor_releases_the_key() {
        let sf = Arc::new(SingleFlight::<u8, u8>::default());
        let s = sf.clone();
        let r =
            tokio::spawn(async move { s.run(3, || -> std::future::Ready<u8> { panic!("constructor") }).await }).await;
        assert!(r.unwrap_err().is_panic());
        assert_eq!(sf.in_flight(), 0);
        assert_eq!(sf.run(3, || async { 4 }).await, Ok(4));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_keys_leave_an_empty_map() {
        let sf = Arc::new(SingleFlight::<u32, u32>::default());
        let mut handles = Vec::new();
        for i in 0..2_000u32 {
            let sf = sf.clone();
            handles.push(tokio::spawn(async move {
                sf.run(i, move || async move {
                    tokio::task::yield_now().await;
                    if i % 3 == 0 {
                        panic!("boom {i}");
                    }
                    i
                })
                .await
            }));
        }
        let mut panicked = 0;
        for (i, h) in handles.into_iter().enumerate() {
            match h.await.unwrap() {
                Ok(v) => assert_eq!(v as usize, i),
                Err(e) => {
                    assert_eq!(e, FlightError::Panicked);
                    panicked += 1;
                }
            }
        }
        assert_eq!(panicked, 667);
        assert_eq!(drained(&sf).await, 0);
    }
}
