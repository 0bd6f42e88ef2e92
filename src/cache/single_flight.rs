//! One in-flight computation per key. The first caller's future is spawned as a task (so it
//! completes even if that caller goes away) and every concurrent caller for the same key
//! awaits the same result. The key is released when the task ends.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures_util::future::{BoxFuture, FutureExt, Shared};

type Flight<V> = Shared<BoxFuture<'static, Result<V, String>>>;

/// Coalesces concurrent work per key.
pub struct SingleFlight<K, V> {
    inflight: Arc<Mutex<HashMap<K, Flight<V>>>>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            inflight: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Runs `work` for `key` unless a run is in flight, then returns that run's result.
    /// `Err` only if the task panicked.
    pub async fn run<F, Fut>(&self, key: K, work: F) -> Result<V, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let flight = {
            let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(f) = map.get(&key) {
                f.clone()
            } else {
                let registry = self.inflight.clone();
                let k = key.clone();
                let fut = work();
                let task = tokio::spawn(async move {
                    let v = fut.await;
                    registry.lock().unwrap_or_else(|e| e.into_inner()).remove(&k);
                    v
                });
                let f: Flight<V> = async move { task.await.map_err(|e| format!("background fetch failed: {e}")) }
                    .boxed()
                    .shared();
                map.insert(key, f.clone());
                f
            }
        };
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

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
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }
}
