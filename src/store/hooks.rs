//! Webhook records of the store: the events of the durable outbox (written in the transaction
//! of the change they report), the hooks, and their deliveries with every attempt.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::CrateChange;

/// Version of the payload's JSON shape (`schema`), bumped on an incompatible change.
pub const PAYLOAD_SCHEMA: u64 = 1;

/// Every event a hook may ask for.
pub const EVENTS: &[&str] = &[
    "crate.published",
    "crate.yanked",
    "crate.unyanked",
    "crate.owners_changed",
    "registry.changed",
    "advisory.matched",
    "upstream.removed",
    "upstream.relisted",
];

/// One event of the outbox, independent of the hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEvent {
    pub event: String,
    pub registry: String,
    /// The JSON body sent to receivers.
    pub payload: String,
}

/// The outbox id of the event `event` of `registry` reported at most once for `key` (see
/// [`HookEvent::once_id`]).
pub fn once_id(event: &str, registry: &str, key: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("{event}\0{registry}\0{key}").as_bytes());
    hex::encode(&d[..16])
}

fn rfc3339_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl HookEvent {
    fn new(event: &str, registry: &str, krate: Option<&str>, version: Option<&str>, actor: Option<&str>) -> Self {
        Self::with(event, registry, krate, version, actor, serde_json::Map::new())
    }

    /// An event with `extra` fields besides the common ones (which win on a clash).
    pub fn with(
        event: &str,
        registry: &str,
        krate: Option<&str>,
        version: Option<&str>,
        actor: Option<&str>,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        let mut body = extra;
        body.insert("schema".into(), json!(PAYLOAD_SCHEMA));
        body.insert("event".into(), json!(event));
        body.insert("registry".into(), json!(registry));
        if let Some(k) = krate {
            body.insert("crate".into(), json!(k));
        }
        if let Some(v) = version {
            body.insert("version".into(), json!(v));
        }
        body.insert("actor".into(), json!(actor));
        body.insert("time".into(), json!(rfc3339_now()));
        HookEvent {
            event: event.to_owned(),
            registry: registry.to_owned(),
            payload: serde_json::Value::Object(body).to_string(),
        }
    }

    /// The event of `change` to the crate spelled `name`, made by `actor`.
    pub fn of_change(registry: &str, name: &str, change: &CrateChange, actor: &str) -> Self {
        match change {
            CrateChange::Publish { version, .. } => Self::new(
                "crate.published",
                registry,
                Some(name),
                Some(&version.line.vers),
                Some(actor),
            ),
            CrateChange::SetYanked { vers, yanked } => Self::new(
                if *yanked { "crate.yanked" } else { "crate.unyanked" },
                registry,
                Some(name),
                Some(vers),
                Some(actor),
            ),
            CrateChange::SetOwners(_) => Self::new("crate.owners_changed", registry, Some(name), None, Some(actor)),
        }
    }

    /// `advisory.matched`: a download asked for `krate` `version` of `registry`, which the
    /// advisory `id` affects; `action` is what the registry did (`flagged` or `denied`).
    pub fn advisory_matched(registry: &str, krate: &str, version: &str, id: &str, title: &str, action: &str) -> Self {
        let mut extra = serde_json::Map::new();
        extra.insert("advisory".into(), json!({ "id": id, "title": title }));
        extra.insert("action".into(), json!(action));
        Self::with("advisory.matched", registry, Some(krate), Some(version), None, extra)
    }

    /// `upstream.removed`: the upstream of the proxy `registry` no longer lists `krate`
    /// `version` (`reason`: `crate_removed` when its index file is gone, `version_removed`
    /// when only the line is), whose `.crate` has the SHA-256 `cksum`; `quarantined` says
    /// whether a cached copy was set aside; `episode`: the how-many-th removal of it (from 0).
    pub fn upstream_removed(
        registry: &str,
        krate: &str,
        version: &str,
        cksum: &str,
        reason: &str,
        quarantined: bool,
        episode: u64,
    ) -> Self {
        let mut extra = serde_json::Map::new();
        extra.insert("cksum".into(), json!(cksum));
        extra.insert("reason".into(), json!(reason));
        extra.insert("quarantined".into(), json!(quarantined));
        extra.insert("episode".into(), json!(episode));
        Self::with("upstream.removed", registry, Some(krate), Some(version), None, extra)
    }

    /// `upstream.relisted`: a version whose removal quarantined it is listed again with the
    /// same checksum; `released`: its file is back in the cache; `episode`: the how-many-th
    /// relisting of it (from 0).
    pub fn upstream_relisted(
        registry: &str,
        krate: &str,
        version: &str,
        cksum: &str,
        released: bool,
        episode: u64,
    ) -> Self {
        let mut extra = serde_json::Map::new();
        extra.insert("cksum".into(), json!(cksum));
        extra.insert("released".into(), json!(released));
        extra.insert("episode".into(), json!(episode));
        Self::with("upstream.relisted", registry, Some(krate), Some(version), None, extra)
    }

    /// The outbox id of this event when it is reported at most once for `key` (the same
    /// finding made by several nodes, or again after a restart): 32 hex characters of the
    /// SHA-256 of the event's name and `key`.
    pub fn once_id(&self, key: &str) -> String {
        once_id(&self.event, &self.registry, key)
    }

    /// A registry created, updated or deleted by `actor` (`None`: the config file).
    pub fn registry_changed(registry: &str, actor: Option<&str>) -> Self {
        Self::new("registry.changed", registry, None, None, actor)
    }
}

/// A hook. `secret` signs the deliveries; it is never shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRecord {
    pub id: String,
    pub url: String,
    #[serde(skip_serializing)]
    pub secret: String,
    /// `None`: every registry.
    pub registry: Option<String>,
    /// Empty: every event.
    pub events: Vec<String>,
    /// Unix milliseconds.
    pub created: u64,
    pub created_by: String,
}

impl HookRecord {
    /// Whether `event` of `registry` is for this hook.
    pub fn wants(&self, event: &str, registry: &str) -> bool {
        self.registry.as_deref().is_none_or(|r| r == registry)
            && (self.events.is_empty() || self.events.iter().any(|e| e == event))
    }
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub n: u64,
    /// Unix milliseconds.
    pub at: u64,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub millis: u64,
}

/// One event for one hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub id: String,
    pub hook: String,
    pub event: String,
    #[serde(skip_serializing)]
    pub payload: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: u64,
    /// Unix milliseconds.
    pub next_attempt: u64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created: u64,
    pub last_attempt: Option<u64>,
    pub finished: Option<u64>,
    pub attempt_log: Vec<AttemptRecord>,
}

/// A delivery claimed for sending, with what sending needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub delivery: DeliveryRecord,
    pub url: String,
    pub secret: String,
}

/// Unix milliseconds now.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A fresh random id (32 hex characters).
pub fn new_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
