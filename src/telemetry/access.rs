//! The access log: one line per request, as a `tracing` event on target
//! [`TARGET`] (so `RUST_LOG` filters it like any other, e.g. `cargohold::telemetry::access=off`), written
//! by a dedicated layer that formats the few known fields directly into a shared buffer; a
//! background thread writes the buffer out in batches. The general `fmt` layer's per-event
//! formatting cost more than the rest of a hot index hit, so access events skip it. Lines are
//! never dropped: when the writer falls far behind, producers write the backlog themselves.
//! Text and JSON lines have the same shape as the `fmt` layer's.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The target of access events (this module's path): `RUST_LOG=cargohold::telemetry::access=off`
/// turns the access log off.
pub const TARGET: &str = module_path!();

/// Logs one served request.
pub fn request(
    method: &str,
    route: &str,
    registry: &str,
    status: u16,
    duration_ms: f64,
    cache: &str,
    size: Option<u64>,
) {
    tracing::info!(
        http.method = method,
        http.route = route,
        registry,
        http.status = status,
        duration_ms,
        cache.status = cache,
        size_bytes = size,
        "request"
    );
}

/// Backlog above which producers write synchronously.
const MAX_BACKLOG: usize = 8 << 20;

#[derive(Default)]
struct Shared {
    buf: Mutex<(Vec<u8>, bool)>,
    ready: Condvar,
}

impl Shared {
    fn drain_to_stderr(buf: &mut Vec<u8>) {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(buf);
        let _ = err.flush();
        buf.clear();
    }
}

/// Flushes and stops the writer thread when dropped.
pub struct AccessGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for AccessGuard {
    fn drop(&mut self) {
        self.shared.buf.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.shared.ready.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The access-log layer.
pub struct AccessLayer {
    json: bool,
    shared: Arc<Shared>,
}

/// A layer writing access lines (text or JSON) and the guard that flushes it.
pub fn layer(json: bool) -> (AccessLayer, AccessGuard) {
    let shared = Arc::new(Shared::default());
    let s2 = shared.clone();
    let thread = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || {
            let mut out = Vec::new();
            loop {
                let stop = {
                    let mut guard = s2.buf.lock().unwrap_or_else(|e| e.into_inner());
                    if guard.0.is_empty() && !guard.1 {
                        guard = s2
                            .ready
                            .wait_timeout(guard, Duration::from_millis(50))
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    std::mem::swap(&mut out, &mut guard.0);
                    guard.1
                };
                if !out.is_empty() {
                    Shared::drain_to_stderr(&mut out);
                }
                if stop {
                    let mut guard = s2.buf.lock().unwrap_or_else(|e| e.into_inner());
                    Shared::drain_to_stderr(&mut guard.0);
                    return;
                }
            }
        })
        .ok();
    (
        AccessLayer {
            json,
            shared: shared.clone(),
        },
        AccessGuard { shared, thread },
    )
}

#[derive(Default)]
struct Fields {
    message: String,
    method: String,
    route: String,
    registry: String,
    cache: String,
    status: u64,
    duration_ms: f64,
    size: Option<u64>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        let slot = match field.name() {
            "http.method" => &mut self.method,
            "http.route" => &mut self.route,
            "registry" => &mut self.registry,
            "cache.status" => &mut self.cache,
            "message" => &mut self.message,
            _ => return,
        };
        slot.push_str(value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "http.status" => self.status = value,
            "size_bytes" => self.size = Some(value),
            _ => {}
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "duration_ms" {
            self.duration_ms = value;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        }
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl AccessLayer {
    fn format(&self, f: &Fields, line: &mut String) {
        let ts = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        if self.json {
            let _ = write!(
                line,
                "{{\"timestamp\":\"{ts}\",\"level\":\"INFO\",\"fields\":{{\"message\":"
            );
            json_str(line, &f.message);
            for (k, v) in [
                ("http.method", &f.method),
                ("http.route", &f.route),
                ("registry", &f.registry),
                ("cache.status", &f.cache),
            ] {
                let _ = write!(line, ",\"{k}\":");
                json_str(line, v);
            }
            let _ = write!(line, ",\"http.status\":{},\"duration_ms\":{}", f.status, f.duration_ms);
            if let Some(s) = f.size {
                let _ = write!(line, ",\"size_bytes\":{s}");
            }
            let _ = writeln!(line, "}},\"target\":\"{TARGET}\"}}");
        } else {
            let _ = write!(
                line,
                "{ts}  INFO {TARGET}: {} http.method={} http.route={} registry={} http.status={} duration_ms={:.3} cache.status={}",
                f.message, f.method, f.route, f.registry, f.status, f.duration_ms, f.cache
            );
            if let Some(s) = f.size {
                let _ = write!(line, " size_bytes={s}");
            }
            line.push('\n');
        }
    }
}

impl<S: Subscriber> Layer<S> for AccessLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut line = String::with_capacity(256);
        self.format(&fields, &mut line);
        let mut guard = self.shared.buf.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.extend_from_slice(line.as_bytes());
        if guard.0.len() > MAX_BACKLOG {
            Shared::drain_to_stderr(&mut guard.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_have_the_fmt_shape() {
        let (layer, _guard) = layer(true);
        let f = Fields {
            message: "request".into(),
            method: "GET".into(),
            route: "/{reg}/index/{path}".into(),
            registry: "lo\"cal".into(),
            cache: "HIT".into(),
            status: 200,
            duration_ms: 0.25,
            size: Some(10),
        };
        let mut line = String::new();
        layer.format(&f, &mut line);
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["fields"]["message"], "request");
        assert_eq!(v["fields"]["http.status"], 200);
        assert_eq!(v["fields"]["registry"], "lo\"cal");
        assert_eq!(v["fields"]["duration_ms"], 0.25);
        assert_eq!(v["target"], TARGET);
    }

    #[test]
    fn text_lines_carry_every_field() {
        let (layer, _guard) = layer(false);
        let f = Fields {
            message: "request".into(),
            method: "PUT".into(),
            status: 401,
            ..Default::default()
        };
        let mut line = String::new();
        layer.format(&f, &mut line);
        assert!(line.contains("http.method=PUT") && line.contains("http.status=401") && line.ends_with('\n'));
    }
}
