//! Metrics in Prometheus text format. A process-wide registry of counters, gauges and
//! histograms with bounded label sets (registry names, route templates, status codes, cache
//! statuses — never crate names). A leaf: anyone may record; `/-/metrics` renders.
//! `access` is the fast per-request log layer.

pub mod access;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, RwLock};

/// The per-request series maps: seeded foldhash, several times cheaper than SipHash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Latency buckets, seconds.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// A histogram of seconds.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in nanoseconds.
    sum_ns: AtomicU64,
}

impl Histogram {
    fn observe(&self, secs: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add((secs * 1e9) as u64, Ordering::Relaxed);
    }
}

type Labels = Vec<(&'static str, String)>;

/// Per-request series keyed by static labels: lookups take a shared read lock and bump
/// atomics, with no allocation (the hot path).
#[derive(Default)]
struct RequestSeries {
    /// (registry, route, status) -> count
    requests: RwLock<FastMap<(&'static str, &'static str, u16), AtomicU64>>,
    /// route -> latency histogram
    durations: RwLock<FastMap<&'static str, Histogram>>,
    /// route -> bytes
    bytes: RwLock<FastMap<&'static str, AtomicU64>>,
    /// (registry, tier, cache status) -> count
    cache: RwLock<FastMap<(&'static str, &'static str, &'static str), AtomicU64>>,
}

fn bump<K: std::hash::Hash + Eq + Copy>(map: &RwLock<FastMap<K, AtomicU64>>, key: K, n: u64) {
    if let Some(c) = map.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
        c.fetch_add(n, Ordering::Relaxed);
        return;
    }
    map.write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default()
        .fetch_add(n, Ordering::Relaxed);
}

/// Interns a label value (registry names: a small, bounded set) so series keys are `Copy`.
pub fn intern(value: &str) -> &'static str {
    static INTERNED: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Default::default);
    let mut set = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = set.get(value) {
        return v;
    }
    let leaked: &'static str = Box::leak(value.to_owned().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// All metrics of the process.
#[derive(Default)]
pub struct Metrics {
    series: RequestSeries,
    counters: Mutex<BTreeMap<(&'static str, Labels), u64>>,
    histograms: Mutex<BTreeMap<(&'static str, Labels), &'static Histogram>>,
    in_flight: AtomicI64,
    gauges: Mutex<BTreeMap<&'static str, i64>>,
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// Help texts of every metric.
const HELP: &[(&str, &str, &str)] = &[
    (
        "cargohold_http_requests_total",
        "counter",
        "HTTP requests by registry, route template and status.",
    ),
    (
        "cargohold_http_request_duration_seconds",
        "histogram",
        "Time to produce the response head, by route template.",
    ),
    (
        "cargohold_http_response_bytes_total",
        "counter",
        "Response body bytes with a known length, by route template.",
    ),
    (
        "cargohold_http_requests_in_flight",
        "gauge",
        "Requests being handled now.",
    ),
    (
        "cargohold_cache_lookups_total",
        "counter",
        "Cache outcomes (HIT, MISS, REVALIDATED, STALE, BYPASS) by registry and tier.",
    ),
    (
        "cargohold_upstream_requests_total",
        "counter",
        "Requests to upstream registries by registry, kind and outcome.",
    ),
    (
        "cargohold_upstream_request_duration_seconds",
        "histogram",
        "Upstream request latency by registry and kind.",
    ),
    (
        "cargohold_advisory_matches_total",
        "counter",
        "Downloads of proxied crate versions a security advisory affects, by registry and action (flagged, denied).",
    ),
    (
        "cargohold_publishes_total",
        "counter",
        "Publish attempts by registry and outcome.",
    ),
    (
        "cargohold_upstream_removed_total",
        "counter",
        "Cached versions the upstream index no longer lists (takedowns), by registry and reason (crate_removed, version_removed).",
    ),
    (
        "cargohold_upstream_relisted_total",
        "counter",
        "Quarantined versions the upstream index lists again with the same checksum (their removal dropped), by registry.",
    ),
    (
        "cargohold_disk_cache_bytes",
        "gauge",
        "Bytes of proxied crate files on disk.",
    ),
    ("cargohold_disk_cache_files", "gauge", "Proxied crate files on disk."),
    (
        "cargohold_index_disk_cache_bytes",
        "gauge",
        "Bytes of cached upstream index files on disk (bounded by `[cache] index_disk`).",
    ),
    ("cargohold_connections_open", "gauge", "Client connections open now."),
];

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(&self, name: &'static str, labels: &[(&'static str, &str)], n: u64) {
        let key = (name, labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect());
        *self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += n;
    }

    /// Records a duration in seconds.
    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], secs: f64) {
        let key = (
            name,
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect::<Labels>(),
        );
        let h = {
            let mut map = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
            *map.entry(key).or_insert_with(|| Box::leak(Box::default()))
        };
        h.observe(secs);
    }

    /// Sets a gauge.
    pub fn set_gauge(&self, name: &'static str, v: i64) {
        self.gauges.lock().unwrap_or_else(|e| e.into_inner()).insert(name, v);
    }

    /// Adds to a gauge (may be negative).
    pub fn add_gauge(&self, name: &'static str, delta: i64) {
        *self
            .gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name)
            .or_default() += delta;
    }

    /// Records one served request (the hot path: no allocation once a series exists).
    pub fn record_request(
        &self,
        registry: &'static str,
        route: &'static str,
        status: u16,
        secs: f64,
        bytes: Option<u64>,
        cache: Option<(&'static str, &'static str)>,
    ) {
        bump(&self.series.requests, (registry, route, status), 1);
        {
            let read = self.series.durations.read().unwrap_or_else(|e| e.into_inner());
            match read.get(route) {
                Some(h) => h.observe(secs),
                None => {
                    drop(read);
                    self.series
                        .durations
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(route)
                        .or_default()
                        .observe(secs);
                }
            }
        }
        if let Some(b) = bytes {
            bump(&self.series.bytes, route, b);
        }
        if let Some((tier, status)) = cache {
            bump(&self.series.cache, (registry, tier, status), 1);
        }
    }

    /// A request started; the guard ends it.
    pub fn request_started(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Cache lookups of one registry since start, by status (`HIT`, `MISS`, ...), summed over
    /// tiers.
    pub fn cache_lookups(&self, registry: &str) -> Vec<(&'static str, u64)> {
        let mut by_status: Vec<(&'static str, u64)> = Vec::new();
        for ((reg, _tier, status), v) in self.series.cache.read().unwrap_or_else(|e| e.into_inner()).iter() {
            if *reg != registry {
                continue;
            }
            let n = v.load(Ordering::Relaxed);
            match by_status.iter_mut().find(|(s, _)| s == status) {
                Some((_, total)) => *total += n,
                None => by_status.push((status, n)),
            }
        }
        by_status
    }

    /// The value of a counter (tests).
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        let rendered = self.render();
        let want = format!(
            "{name}{} ",
            fmt_labels(&labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(), None)
        );
        if let Some(line) = rendered.lines().find(|l| l.starts_with(&want)) {
            return line[want.len()..].trim().parse().unwrap_or(0);
        }
        let key = (
            name,
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect::<Labels>(),
        );
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    /// Renders every metric in Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let histograms: Vec<_> = self
            .histograms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let gauges = self.gauges.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut counters = counters;
        let s = &self.series;
        for ((reg, route, status), v) in s.requests.read().unwrap_or_else(|e| e.into_inner()).iter() {
            let labels = vec![
                ("registry", (*reg).to_owned()),
                ("route", (*route).to_owned()),
                ("status", status.to_string()),
            ];
            counters.insert(("cargohold_http_requests_total", labels), v.load(Ordering::Relaxed));
        }
        for (route, v) in s.bytes.read().unwrap_or_else(|e| e.into_inner()).iter() {
            counters.insert(
                (
                    "cargohold_http_response_bytes_total",
                    vec![("route", (*route).to_owned())],
                ),
                v.load(Ordering::Relaxed),
            );
        }
        for ((reg, tier, status), v) in s.cache.read().unwrap_or_else(|e| e.into_inner()).iter() {
            let labels = vec![
                ("registry", (*reg).to_owned()),
                ("tier", (*tier).to_owned()),
                ("status", (*status).to_owned()),
            ];
            counters.insert(("cargohold_cache_lookups_total", labels), v.load(Ordering::Relaxed));
        }
        let durations = s.durations.read().unwrap_or_else(|e| e.into_inner());
        let mut histograms = histograms;
        for (route, h) in durations.iter() {
            histograms.push((
                (
                    "cargohold_http_request_duration_seconds",
                    vec![("route", (*route).to_owned())],
                ),
                h,
            ));
        }
        histograms.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            match *kind {
                "counter" => {
                    for ((n, labels), v) in counters.iter().filter(|((n, _), _)| n == name) {
                        let _ = writeln!(out, "{n}{} {v}", fmt_labels(labels, None));
                    }
                }
                "histogram" => {
                    for ((n, labels), h) in histograms.iter().filter(|((n, _), _)| n == name) {
                        let mut cum = 0;
                        for (i, b) in BUCKETS.iter().enumerate() {
                            cum += h.buckets[i].load(Ordering::Relaxed);
                            let _ = writeln!(out, "{n}_bucket{} {cum}", fmt_labels(labels, Some(&b.to_string())));
                        }
                        let count = h.count.load(Ordering::Relaxed);
                        let _ = writeln!(out, "{n}_bucket{} {count}", fmt_labels(labels, Some("+Inf")));
                        let sum = h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
                        let _ = writeln!(out, "{n}_sum{} {sum}", fmt_labels(labels, None));
                        let _ = writeln!(out, "{n}_count{} {count}", fmt_labels(labels, None));
                    }
                }
                _ => {
                    let v = if *name == "cargohold_http_requests_in_flight" {
                        Some(self.in_flight.load(Ordering::Relaxed))
                    } else {
                        gauges.get(name).copied()
                    };
                    if let Some(v) = v {
                        let _ = writeln!(out, "{name} {v}");
                    }
                }
            }
        }
        out
    }
}

/// Decrements the in-flight gauge when dropped.
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn fmt_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.add(
            "cargohold_http_requests_total",
            &[("registry", "local"), ("route", "/x"), ("status", "200")],
            2,
        );
        m.observe("cargohold_http_request_duration_seconds", &[("route", "/x")], 0.0003);
        m.set_gauge("cargohold_disk_cache_bytes", 42);
        let _g = m.request_started();
        let text = m.render();
        assert!(
            text.contains("cargohold_http_requests_total{registry=\"local\",route=\"/x\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("cargohold_http_request_duration_seconds_bucket{route=\"/x\",le=\"0.0005\"} 1"),
            "{text}"
        );
        assert!(text.contains("cargohold_http_request_duration_seconds_count{route=\"/x\"} 1"));
        assert!(text.contains("cargohold_disk_cache_bytes 42"));
        assert!(text.contains("cargohold_http_requests_in_flight 1"));
        assert_eq!(
            m.counter(
                "cargohold_http_requests_total",
                &[("registry", "local"), ("route", "/x"), ("status", "200")]
            ),
            2
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(fmt_labels(&vec![("a", "x\"y".into())], None), "{a=\"x\\\"y\"}");
    }
}
