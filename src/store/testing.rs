//! A [`Metadata`] for unit tests: SQLite underneath, every call passed through, with the
//! faults and pauses a test switches on. One wrapper for every test that needs a store to
//! misbehave, so a new trait method is delegated in one place.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use async_trait::async_trait;
use tokio::sync::{Notify, Semaphore};

use super::hooks::{AttemptRecord, DeliveryRecord, DueDelivery, HookEvent, HookRecord};
use super::sql::SqlMetadata;
use super::{
    advisories::AdvisoryDb, Counts, CrateChange, CrateRecord, Metadata, Snapshot, StoreError, StoreEvent, StoreResult,
    TokenRecord, UserRecord,
};
use crate::config::RegistrySpec;

/// SQLite metadata with switches. Nothing misbehaves until a test says so.
pub struct TestMeta {
    inner: SqlMetadata,
    /// The next `get_crate` is held after it has read: [`read_done`](Self::read_done) is
    /// notified, then it waits for a permit of [`release`](Self::release).
    pub hold_crate_read: AtomicBool,
    /// The same for the next `token_by_hash`.
    pub hold_token_read: AtomicBool,
    /// The same for the next `registries`.
    pub hold_registries_read: AtomicBool,
    /// Notified when a held read has read.
    pub read_done: Notify,
    /// One permit lets one held read return.
    pub release: Semaphore,
    /// `prune_webhooks` fails (a lock or statement timeout on a huge delete).
    pub prune_fails: AtomicBool,
    /// How many more `record_event_once` calls fail (the store is down).
    pub record_failures: AtomicU32,
}

impl TestMeta {
    /// A fresh SQLite store at `path`.
    pub async fn sqlite(path: &Path) -> TestMeta {
        TestMeta {
            inner: SqlMetadata::open_sqlite(path).await.expect("open the test store"),
            hold_crate_read: false.into(),
            hold_token_read: false.into(),
            hold_registries_read: false.into(),
            read_done: Notify::new(),
            release: Semaphore::new(0),
            prune_fails: false.into(),
            record_failures: 0.into(),
        }
    }

    /// Holds the caller if `switch` was on (turning it off).
    async fn maybe_hold(&self, switch: &AtomicBool) {
        if switch.swap(false, Ordering::SeqCst) {
            self.read_done.notify_one();
            let _permit = self.release.acquire().await;
        }
    }

    fn down(what: &str) -> StoreError {
        StoreError::Io(format!("{what}: the test store is failing"))
    }
}

#[async_trait]
impl Metadata for TestMeta {
    async fn registries(&self) -> StoreResult<Vec<RegistrySpec>> {
        let specs = self.inner.registries().await;
        self.maybe_hold(&self.hold_registries_read).await;
        specs
    }
    async fn put_registry(&self, spec: &RegistrySpec) -> StoreResult<()> {
        self.inner.put_registry(spec).await
    }
    async fn delete_registry(&self, name: &str) -> StoreResult<()> {
        self.inner.delete_registry(name).await
    }
    async fn get_crate(&self, registry: &str, canonical: &str) -> StoreResult<Option<CrateRecord>> {
        let rec = self.inner.get_crate(registry, canonical).await;
        self.maybe_hold(&self.hold_crate_read).await;
        rec
    }
    async fn crates(&self, registry: &str) -> StoreResult<Vec<CrateRecord>> {
        self.inner.crates(registry).await
    }
    async fn crate_count(&self, registry: &str) -> StoreResult<u64> {
        self.inner.crate_count(registry).await
    }
    async fn change_crate(
        &self,
        registry: &str,
        canonical: &str,
        expected: Option<u64>,
        change: &CrateChange,
    ) -> StoreResult<u64> {
        self.inner.change_crate(registry, canonical, expected, change).await
    }
    async fn change_crate_as(
        &self,
        registry: &str,
        canonical: &str,
        expected: Option<u64>,
        change: &CrateChange,
        actor: &str,
    ) -> StoreResult<u64> {
        self.inner
            .change_crate_as(registry, canonical, expected, change, actor)
            .await
    }
    async fn put_registry_as(&self, spec: &RegistrySpec, actor: Option<&str>) -> StoreResult<()> {
        self.inner.put_registry_as(spec, actor).await
    }
    async fn delete_registry_as(&self, name: &str, actor: Option<&str>) -> StoreResult<()> {
        self.inner.delete_registry_as(name, actor).await
    }
    async fn record_event_once(&self, id: &str, event: &HookEvent) -> StoreResult<bool> {
        let failing = self
            .record_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(Self::down("record_event_once"));
        }
        self.inner.record_event_once(id, event).await
    }
    async fn has_event(&self, id: &str) -> StoreResult<bool> {
        self.inner.has_event(id).await
    }
    async fn outbox_pending(&self, limit: u64) -> StoreResult<Vec<(String, HookEvent)>> {
        self.inner.outbox_pending(limit).await
    }
    async fn fan_out(&self, id: &str) -> StoreResult<Option<u64>> {
        self.inner.fan_out(id).await
    }
    async fn put_hook(&self, hook: &HookRecord) -> StoreResult<()> {
        self.inner.put_hook(hook).await
    }
    async fn hooks(&self) -> StoreResult<Vec<HookRecord>> {
        self.inner.hooks().await
    }
    async fn delete_hook(&self, id: &str) -> StoreResult<bool> {
        self.inner.delete_hook(id).await
    }
    async fn deliveries(&self, hook: &str, limit: u64) -> StoreResult<Vec<DeliveryRecord>> {
        self.inner.deliveries(hook, limit).await
    }
    async fn claim_deliveries(&self, node: &str, now: u64, lease: u64, limit: u64) -> StoreResult<Vec<DueDelivery>> {
        self.inner.claim_deliveries(node, now, lease, limit).await
    }
    async fn record_attempt(
        &self,
        delivery: &str,
        attempt: &AttemptRecord,
        state: &str,
        next_attempt: u64,
    ) -> StoreResult<()> {
        self.inner.record_attempt(delivery, attempt, state, next_attempt).await
    }
    async fn prune_webhooks(&self, before: u64) -> StoreResult<(u64, u64)> {
        if self.prune_fails.load(Ordering::SeqCst) {
            return Err(Self::down("prune_webhooks"));
        }
        self.inner.prune_webhooks(before).await
    }
    async fn next_delivery_due(&self) -> StoreResult<Option<u64>> {
        self.inner.next_delivery_due().await
    }
    async fn redeliver(&self, id: &str) -> StoreResult<bool> {
        self.inner.redeliver(id).await
    }
    async fn replace_advisories(&self, db: &AdvisoryDb) -> StoreResult<()> {
        self.inner.replace_advisories(db).await
    }
    async fn advisories(&self) -> StoreResult<AdvisoryDb> {
        self.inner.advisories().await
    }
    async fn referenced_blobs(&self) -> StoreResult<HashSet<String>> {
        self.inner.referenced_blobs().await
    }
    async fn get_user(&self, login: &str) -> StoreResult<Option<UserRecord>> {
        self.inner.get_user(login).await
    }
    async fn create_user(&self, login: &str, name: Option<String>) -> StoreResult<Option<UserRecord>> {
        self.inner.create_user(login, name).await
    }
    async fn users(&self) -> StoreResult<Vec<UserRecord>> {
        self.inner.users().await
    }
    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        let t = self.inner.token_by_hash(hash).await;
        self.maybe_hold(&self.hold_token_read).await;
        t
    }
    async fn put_token(&self, token: &TokenRecord) -> StoreResult<()> {
        self.inner.put_token(token).await
    }
    async fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.inner.tokens().await
    }
    async fn delete_token(&self, id: &str) -> StoreResult<bool> {
        self.inner.delete_token(id).await
    }
    async fn snapshot(&self) -> StoreResult<Snapshot> {
        self.inner.snapshot().await
    }
    async fn import(&self, snapshot: &Snapshot, marker: &str) -> StoreResult<bool> {
        self.inner.import(snapshot, marker).await
    }
    async fn counts(&self) -> StoreResult<Counts> {
        self.inner.counts().await
    }
    async fn has_marker(&self, marker: &str) -> StoreResult<bool> {
        self.inner.has_marker(marker).await
    }
    async fn restore_crates(
        &self,
        registry: &str,
        crates: &[CrateRecord],
        users: &[UserRecord],
        marker: &str,
    ) -> StoreResult<bool> {
        self.inner.restore_crates(registry, crates, users, marker).await
    }
    fn shared(&self) -> bool {
        self.inner.shared()
    }
    async fn watch(&self) -> StoreResult<Option<tokio::sync::mpsc::Receiver<StoreEvent>>> {
        self.inner.watch().await
    }
    async fn check(&self) -> StoreResult<()> {
        self.inner.check().await
    }
    async fn close(&self) -> StoreResult<()> {
        self.inner.close().await
    }
}
