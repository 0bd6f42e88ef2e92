//! Webhooks: the hooks' administration (with the private-address guard) and the delivery
//! worker. Events come from the store's outbox, written in the transaction of each change
//! ([`Metadata::change_crate_as`]); the worker, off every request's path, turns them into one
//! delivery per matching hook and POSTs each, signed, at least once, with retries.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::{Notify, Semaphore};

use super::error::{RegistryError, RegistryResult};
use super::{Principal, RegistryService};
use crate::config::WebhooksConfig;
use crate::store::hooks::{new_id, now_millis, AttemptRecord, DueDelivery, HookEvent, HookRecord, EVENTS};
use crate::store::Metadata;

/// Longest the worker sleeps without being woken or a delivery falling due: how soon it finds
/// events another node committed and died before fanning out, and claims that ran out.
const IDLE: Duration = Duration::from_secs(5);
/// Shortest sleep between two looks.
const MIN_SLEEP: Duration = Duration::from_millis(20);
/// How often ended deliveries and old events are pruned (or `retention`, if shorter).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Outbox events read at once, and most batches fanned out in one look (the worker looks
/// again at once when more remain).
const FAN_OUT_BATCH: u64 = 100;
const FAN_OUT_BATCHES: usize = 100;
/// Deliveries sent at once by one node.
const CONCURRENCY: usize = 16;
/// Longest delay between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Longest secret taken.
const MAX_SECRET: usize = 1024;
/// Deliveries shown per hook.
const DELIVERIES_SHOWN: u64 = 100;

/// The `X-Cargohold-Signature-256` value: `sha256=` and the hex HMAC-SHA256, under `secret`,
/// of `"<timestamp>.<body>"`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether a hook may not target `ip` without `allow_private`: loopback, private, link-local,
/// unspecified, CGNAT, unique-local, and IPv4 mapped into IPv6 of those.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback() || v6.is_unspecified() || (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Checks a hook's URL: http(s), a host, and — unless `allow_private` — every address the
/// host resolves to is public.
pub async fn check_url(url: &str, allow_private: bool) -> RegistryResult<reqwest::Url> {
    let bad = |why: String| RegistryError::BadRequest(format!("hook URL `{url}`: {why}"));
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("only http and https URLs are taken".into()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "credentials in the URL are refused (the signature authenticates)".into()
        ));
    }
    let host = parsed.host_str().ok_or_else(|| bad("no host".into()))?.to_owned();
    let port = parsed.port_or_known_default().unwrap_or(80);
    if allow_private {
        return Ok(parsed);
    }
    let host_only = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let addrs: Vec<IpAddr> = match host_only.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host_only.as_str(), port))
            .await
            .map_err(|e| bad(format!("cannot resolve `{host}`: {e}")))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err(bad(format!("`{host}` resolves to no address")));
    }
    if let Some(ip) = addrs.into_iter().find(|ip| is_private(*ip)) {
        return Err(bad(format!(
            "`{host}` resolves to {ip}, a loopback, private or link-local address; hooks may target those only with `[webhooks] allow_private = true`"
        )));
    }
    Ok(parsed)
}

/// Every event a hook may ask for.
pub const HOOK_EVENTS: &[&str] = EVENTS;

/// Body of `POST /-/api/v1/hooks`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewHook {
    pub url: String,
    pub secret: String,
    pub registry: Option<String>,
    #[serde(default)]
    pub events: Vec<String>,
}

/// The delivery worker of this node.
pub struct Webhooks {
    meta: Arc<dyn Metadata>,
    config: WebhooksConfig,
    client: reqwest::Client,
    /// This node's name in claims.
    node: String,
    wake: Arc<Notify>,
    slots: Arc<Semaphore>,
    /// When ended deliveries were last pruned.
    pruned: std::sync::Mutex<Option<Instant>>,
}

impl Webhooks {
    /// A worker woken by `wake` (notified whenever this node writes to the outbox).
    pub fn new(meta: Arc<dyn Metadata>, config: WebhooksConfig, wake: Arc<Notify>) -> RegistryResult<Self> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cargohold/", env!("CARGO_PKG_VERSION"), " webhooks"))
            .build()
            .map_err(|e| RegistryError::Store(crate::store::StoreError::Io(format!("webhook client: {e}"))))?;
        Ok(Webhooks {
            meta,
            config,
            client,
            node: new_id(),
            wake,
            slots: Arc::new(Semaphore::new(CONCURRENCY)),
            pruned: std::sync::Mutex::new(None),
        })
    }

    /// Runs the worker until the runtime stops. It looks at the outbox and the due
    /// deliveries when woken ([`Self::wake`]: this node wrote an event, or an attempt ended),
    /// when the next pending delivery falls due, and at least every [`IDLE`] (so events
    /// committed before a crash, on any node, are delivered after all).
    pub fn spawn(self: Arc<Self>) {
        tokio::spawn(async move {
            loop {
                let sleep = match self.tick().await {
                    Ok(sleep) => sleep,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook worker: the store failed; trying again");
                        Duration::from_secs(1)
                    }
                };
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(sleep) => {}
                }
            }
        });
    }

    /// Makes the worker look now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// One look: fans out new events, sends what is due, prunes now and then. Returns how
    /// long to sleep unless woken.
    async fn tick(self: &Arc<Self>) -> Result<Duration, crate::store::StoreError> {
        if let Err(e) = self.prune().await {
            // Housekeeping: it is tried again at the next interval; deliveries go on.
            tracing::warn!(error = %e, "webhooks: cannot prune what is older than the retention");
        }
        // Every pending event, batch by batch: a burst (once-only findings about many
        // versions) must not leave later events waiting an idle sleep per batch. Bounded, so
        // one look never runs forever while another node keeps writing.
        let mut more = false;
        for _ in 0..FAN_OUT_BATCHES {
            let batch = self.meta.outbox_pending(FAN_OUT_BATCH).await?;
            more = batch.len() as u64 == FAN_OUT_BATCH;
            for (id, _) in batch {
                self.meta.fan_out(&id).await?;
            }
            if !more {
                break;
            }
        }
        self.claim_and_send().await?;
        if more {
            return Ok(MIN_SLEEP);
        }
        if self.slots.available_permits() == 0 {
            // Every slot is sending: each one that ends wakes the worker.
            return Ok(IDLE);
        }
        let now = now_millis();
        Ok(match self.meta.next_delivery_due().await? {
            Some(due) => Duration::from_millis(due.saturating_sub(now)).clamp(MIN_SLEEP, IDLE),
            None => IDLE,
        })
    }

    /// Deletes ended deliveries and fanned-out events older than `retention`, at most every
    /// [`PRUNE_EVERY`] (any node may; the deletes are idempotent).
    async fn prune(&self) -> Result<(), crate::store::StoreError> {
        let every = PRUNE_EVERY.min(self.config.retention);
        {
            let last = self.pruned.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < every) {
                return Ok(());
            }
        }
        // Tried once per interval, whether it works or not (a failing delete is not repeated
        // at every look).
        *self.pruned.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let retention = u64::try_from(self.config.retention.as_millis()).unwrap_or(u64::MAX);
        let (events, deliveries) = self.meta.prune_webhooks(now_millis().saturating_sub(retention)).await?;
        if events + deliveries > 0 {
            tracing::info!(events, deliveries, "webhooks: pruned what is older than the retention");
        }
        Ok(())
    }

    async fn claim_and_send(self: &Arc<Self>) -> Result<(), crate::store::StoreError> {
        let free = self.slots.available_permits() as u64;
        if free == 0 {
            return Ok(());
        }
        let lease = (self.config.timeout + Duration::from_secs(30)).as_millis() as u64;
        for due in self
            .meta
            .claim_deliveries(&self.node, now_millis(), lease, free)
            .await?
        {
            let Ok(permit) = self.slots.clone().acquire_owned().await else {
                return Ok(());
            };
            let me = self.clone();
            tokio::spawn(async move {
                me.send(due).await;
                drop(permit);
                // The delivery's next state is recorded: look again (a retry may be due soon).
                me.wake();
            });
        }
        Ok(())
    }

    /// One attempt of a claimed delivery, recorded with the delivery's next state.
    async fn send(&self, due: DueDelivery) {
        let d = &due.delivery;
        let n = d.attempts + 1;
        let started = Instant::now();
        let at = now_millis();
        let (status, error) = match self.post(&due).await {
            Ok(s) if (200..300).contains(&s) => (Some(s), None),
            Ok(s) => (Some(s), Some(format!("the receiver answered {s}"))),
            Err(e) => (None, Some(e)),
        };
        let ok = error.is_none();
        let (state, next) = if ok {
            ("delivered", 0)
        } else if n >= u64::from(self.config.max_attempts) {
            ("failed", 0)
        } else {
            (
                "pending",
                now_millis() + backoff(self.config.retry_base, n).as_millis() as u64,
            )
        };
        let attempt = AttemptRecord {
            n,
            at,
            status,
            error: error.clone(),
            millis: started.elapsed().as_millis() as u64,
        };
        if let Some(e) = &error {
            tracing::warn!(hook = %d.hook, delivery = %d.id, event = %d.event, attempt = n, state, error = %e, "webhook delivery failed");
        } else {
            tracing::info!(hook = %d.hook, delivery = %d.id, event = %d.event, attempt = n, "webhook delivered");
        }
        if let Err(e) = self.meta.record_attempt(&d.id, &attempt, state, next).await {
            // The claim runs out and the delivery is tried again: at least once.
            tracing::warn!(delivery = %d.id, error = %e, "cannot record a webhook attempt");
        }
    }

    async fn post(&self, due: &DueDelivery) -> Result<u16, String> {
        // Checked again at each attempt: the name may resolve elsewhere than at creation.
        check_url(&due.url, self.config.allow_private)
            .await
            .map_err(|e| e.to_string())?;
        let d = &due.delivery;
        let timestamp = now_millis() / 1000;
        let body = d.payload.clone().into_bytes();
        let signature = sign(due.secret.as_bytes(), timestamp, &body);
        let answer = self
            .client
            .post(&due.url)
            .header("content-type", "application/json")
            .header("x-cargohold-event", &d.event)
            .header("x-cargohold-delivery", &d.id)
            .header("x-cargohold-timestamp", timestamp.to_string())
            .header("x-cargohold-signature-256", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{e}{}", source_chain(&e)))?;
        Ok(answer.status().as_u16())
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(&format!(": {s}"));
        cur = s.source();
    }
    out
}

/// Delay before attempt `n + 1` after `n` failed: `base * 2^(n-1)`, capped, times a random
/// factor in [0.5, 1) (jitter: receivers coming back are not hit by every node at once).
pub fn backoff(base: Duration, n: u64) -> Duration {
    let exp = base
        .saturating_mul(1u32 << (n.saturating_sub(1)).min(20))
        .min(MAX_BACKOFF);
    exp.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

/// The hooks' administration on the service.
impl RegistryService {
    /// Starts this node's delivery worker (the daemon does, once).
    pub fn start_webhooks(&self, config: WebhooksConfig) -> RegistryResult<()> {
        let worker = Arc::new(Webhooks::new(self.store.meta.clone(), config, self.outbox.clone())?);
        if self.webhooks.set(worker.clone()).is_ok() {
            worker.spawn();
        }
        Ok(())
    }

    /// Reports a finding (`advisory.matched`, `upstream.removed`) to the hooks, at most once
    /// per `key` across nodes and restarts, and wakes this node's worker. Never fails the
    /// caller: a store error is logged (the finding is logged by its caller anyway) and
    /// `false` returned, so the caller may report it again later.
    pub async fn report_once(&self, key: &str, event: HookEvent) -> bool {
        match self.store.meta.record_event_once(&event.once_id(key), &event).await {
            Ok(true) => {
                self.outbox.notify_one();
                true
            }
            Ok(false) => true,
            Err(e) => {
                tracing::warn!(event = %event.event, registry = %event.registry, error = %e, "cannot record a webhook event");
                false
            }
        }
    }

    fn webhook_config(&self) -> WebhooksConfig {
        self.webhooks.get().map(|w| w.config.clone()).unwrap_or_default()
    }

    /// Creates a hook for `who`.
    pub async fn create_hook(&self, who: &Principal, new: NewHook) -> RegistryResult<Value> {
        let url = check_url(&new.url, self.webhook_config().allow_private).await?;
        if new.secret.trim().is_empty() {
            return Err(RegistryError::BadRequest("a hook needs a non-empty `secret`".into()));
        }
        if new.secret.len() > MAX_SECRET {
            return Err(RegistryError::BadRequest(format!(
                "a hook's `secret` is at most {MAX_SECRET} bytes"
            )));
        }
        if let Some(r) = &new.registry {
            self.registry(r)?;
        }
        for e in &new.events {
            if !EVENTS.contains(&e.as_str()) {
                return Err(RegistryError::BadRequest(format!(
                    "unknown event `{e}`; events are {}",
                    EVENTS.join(", ")
                )));
            }
        }
        let mut events = new.events;
        events.sort();
        events.dedup();
        let hook = HookRecord {
            id: new_id(),
            url: url.to_string(),
            secret: new.secret,
            registry: new.registry,
            events,
            created: now_millis(),
            created_by: who.user.clone(),
        };
        self.store.meta.put_hook(&hook).await?;
        tracing::info!(hook = %hook.id, url = %hook.url, "webhook created");
        Ok(serde_json::to_value(&hook).unwrap_or_default())
    }

    /// Every hook (no secrets).
    pub async fn list_hooks(&self) -> RegistryResult<Value> {
        Ok(json!({ "hooks": self.store.meta.hooks().await? }))
    }

    /// Deletes a hook and its deliveries.
    pub async fn delete_hook(&self, id: &str) -> RegistryResult<()> {
        if !self.store.meta.delete_hook(id).await? {
            return Err(RegistryError::NotFound(format!("there is no hook `{id}`")));
        }
        Ok(())
    }

    /// The latest deliveries of a hook, with their attempts.
    pub async fn hook_deliveries(&self, id: &str) -> RegistryResult<Value> {
        if !self.store.meta.hooks().await?.iter().any(|h| h.id == id) {
            return Err(RegistryError::NotFound(format!("there is no hook `{id}`")));
        }
        Ok(json!({ "deliveries": self.store.meta.deliveries(id, DELIVERIES_SHOWN).await? }))
    }

    /// Sends a delivery again (same delivery id: receivers deduplicate on it).
    pub async fn redeliver(&self, id: &str) -> RegistryResult<()> {
        if !self.store.meta.redeliver(id).await? {
            return Err(RegistryError::NotFound(format!("there is no delivery `{id}`")));
        }
        self.outbox.notify_one();
        Ok(())
    }
}

/// Where the service keeps its worker.
pub(super) type WorkerSlot = OnceLock<Arc<Webhooks>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // RFC 4231 test case 2 key and data, split as "<timestamp>.<body>" would be.
        let sig = sign(b"Jefe", 1, b"what do ya want for nothing?");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1.what do ya want for nothing?");
        assert_eq!(sig, format!("sha256={}", hex::encode(mac.finalize().into_bytes())));
        assert_ne!(sig, sign(b"Jefe", 2, b"what do ya want for nothing?"));
    }

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["192.0.2.1", "8.8.8.8", "2001:db8::1", "::ffff:192.0.2.1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    /// A burst of events larger than one batch (a crate with hundreds of versions taken down
    /// upstream, with no hook asking for `upstream.removed`) is fanned out in one look, so an
    /// event written after it is not left waiting an idle sleep per batch.
    #[tokio::test]
    async fn a_backlog_larger_than_a_batch_is_fanned_out_in_one_look() {
        let dir = tempfile::tempdir().unwrap();
        let meta: Arc<dyn Metadata> = Arc::new(
            crate::store::sql::SqlMetadata::open_sqlite(&dir.path().join("registry.db"))
                .await
                .unwrap(),
        );
        for i in 0..250 {
            let event = HookEvent::upstream_removed(
                "p",
                "foo",
                &format!("1.0.{i}"),
                &"a".repeat(64),
                "crate_removed",
                false,
                0,
            );
            assert!(meta
                .record_event_once(&event.once_id(&i.to_string()), &event)
                .await
                .unwrap());
        }
        let worker = Arc::new(Webhooks::new(meta.clone(), WebhooksConfig::default(), Arc::new(Notify::new())).unwrap());
        worker.tick().await.unwrap();
        assert!(
            meta.outbox_pending(1).await.unwrap().is_empty(),
            "events left in the outbox after one look"
        );
    }

    /// Pruning is housekeeping: when it fails, events are still fanned out and deliveries
    /// sent (a failing prune used to fail every look, so nothing was ever delivered again).
    #[tokio::test]
    async fn a_failing_prune_does_not_stop_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::testing::TestMeta::sqlite(&dir.path().join("registry.db")).await;
        store.prune_fails.store(true, std::sync::atomic::Ordering::SeqCst);
        let meta: Arc<dyn Metadata> = Arc::new(store);
        let event = HookEvent::upstream_removed("p", "foo", "1.0.0", &"a".repeat(64), "crate_removed", false, 0);
        assert!(meta.record_event_once(&event.once_id("k"), &event).await.unwrap());
        let worker = Arc::new(Webhooks::new(meta.clone(), WebhooksConfig::default(), Arc::new(Notify::new())).unwrap());
        worker.tick().await.expect("a look despite the failing prune");
        assert!(meta.outbox_pending(1).await.unwrap().is_empty());
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_millis(100);
        for n in 1..=6u64 {
            let d = backoff(base, n);
            let full = base * (1 << (n - 1));
            assert!(d >= full / 2 && d <= full, "attempt {n}: {d:?}");
        }
        assert!(backoff(base, 1000) <= MAX_BACKOFF);
    }
}
