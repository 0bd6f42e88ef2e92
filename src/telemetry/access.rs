//! The access log: one line per request. Each line is formatted straight into a shared buffer
//! (no `tracing` event, no field visitor, no `fmt` machinery) and a background thread writes the
//! buffer out in batches: the general `fmt` layer's per-event cost was more than the rest of a hot
//! index hit. `RUST_LOG` still decides, through an ordinary callsite on target [`TARGET`]
//! (`RUST_LOG=cargohold::telemetry::access=off` turns the access log off). Lines are never
//! dropped: when the writer falls far behind, producers write the backlog themselves. Text and
//! JSON lines have the same shape as the `fmt` layer's. Without [`install`] (a library user's own
//! subscriber), each line is an ordinary `tracing` event instead.

use std::cell::Cell;
use std::io::Write as _;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The target of access lines (this module's path).
pub const TARGET: &str = module_path!();

/// One served request.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub method: &'a str,
    pub route: &'a str,
    pub registry: &'a str,
    pub status: u16,
    pub duration: Duration,
    pub cache: &'a str,
    pub size: Option<u64>,
}

struct Sink {
    json: bool,
    shared: Arc<Shared>,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Logs one served request (if `RUST_LOG` lets access lines through).
pub fn request(line: &Line<'_>) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    match SINK.get() {
        Some(sink) => {
            let mut guard = sink.shared.buf.lock().unwrap_or_else(|e| e.into_inner());
            format(sink.json, line, SystemTime::now(), &mut guard.0);
            if guard.0.len() > MAX_BACKLOG {
                Shared::drain_to_stderr(&mut guard.0);
            }
        }
        // This module's path is the default target, i.e. TARGET.
        None => tracing::info!(
            http.method = line.method,
            http.route = line.route,
            registry = line.registry,
            http.status = line.status,
            duration_ms = line.duration.as_secs_f64() * 1000.0,
            cache.status = line.cache,
            size_bytes = line.size,
            "request"
        ),
    }
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

/// Starts the access-log writer (text or JSON lines to stderr) and routes access lines to it;
/// the guard flushes it. A second call returns a guard for a writer nothing uses.
pub fn install(json: bool) -> AccessGuard {
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
    let _ = SINK.set(Sink {
        json,
        shared: shared.clone(),
    });
    AccessGuard { shared, thread }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b if b < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
            b => out.push(b),
        }
    }
    out.push(b'"');
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Milliseconds with three decimals (`0.123`), from whole microseconds.
fn push_millis(out: &mut Vec<u8>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    push_u64(out, us / 1000);
    let frac = us % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

thread_local! {
    /// The formatted `YYYY-MM-DDTHH:MM:SS` of the last second this thread logged in.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// RFC 3339 with microseconds (`2026-11-24T09:10:11.123456Z`); the date and time part is
/// formatted once a second per thread.
fn push_timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        let full = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string();
        if let Some(prefix) = full.as_bytes().get(..19) {
            text.copy_from_slice(prefix);
        }
        SECOND.set((secs, text));
    }
    out.extend_from_slice(&text);
    out.push(b'.');
    let us = since.subsec_micros();
    let mut digits = [b'0'; 6];
    let mut n = us;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits);
    out.push(b'Z');
}

/// Appends one access line (ending in a newline) to `out`.
fn format(json: bool, l: &Line<'_>, now: SystemTime, out: &mut Vec<u8>) {
    if json {
        out.extend_from_slice(b"{\"timestamp\":\"");
        push_timestamp(out, now);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\"");
        for (k, v) in [
            (&b",\"http.method\":"[..], l.method),
            (b",\"http.route\":", l.route),
            (b",\"registry\":", l.registry),
            (b",\"cache.status\":", l.cache),
        ] {
            out.extend_from_slice(k);
            json_str(out, v);
        }
        out.extend_from_slice(b",\"http.status\":");
        push_u64(out, u64::from(l.status));
        out.extend_from_slice(b",\"duration_ms\":");
        push_millis(out, l.duration);
        if let Some(s) = l.size {
            out.extend_from_slice(b",\"size_bytes\":");
            push_u64(out, s);
        }
        out.extend_from_slice(b"},\"target\":\"");
        out.extend_from_slice(TARGET.as_bytes());
        out.extend_from_slice(b"\"}\n");
    } else {
        push_timestamp(out, now);
        out.extend_from_slice(b"  INFO ");
        out.extend_from_slice(TARGET.as_bytes());
        out.extend_from_slice(b": request http.method=");
        out.extend_from_slice(l.method.as_bytes());
        out.extend_from_slice(b" http.route=");
        out.extend_from_slice(l.route.as_bytes());
        out.extend_from_slice(b" registry=");
        out.extend_from_slice(l.registry.as_bytes());
        out.extend_from_slice(b" http.status=");
        push_u64(out, u64::from(l.status));
        out.extend_from_slice(b" duration_ms=");
        push_millis(out, l.duration);
        out.extend_from_slice(b" cache.status=");
        out.extend_from_slice(l.cache.as_bytes());
        if let Some(s) = l.size {
            out.extend_from_slice(b" size_bytes=");
            push_u64(out, s);
        }
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> Line<'static> {
        Line {
            method: "GET",
            route: "/{reg}/index/{path}",
            registry: "lo\"cal",
            status: 200,
            duration: Duration::from_micros(250),
            cache: "HIT",
            size: Some(10),
        }
    }

    #[test]
    fn json_lines_have_the_fmt_shape() {
        let now = UNIX_EPOCH + Duration::from_micros(1_795_000_000_000_042);
        let mut out = Vec::new();
        format(true, &line(), now, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["fields"]["message"], "request");
        assert_eq!(v["fields"]["http.status"], 200);
        assert_eq!(v["fields"]["registry"], "lo\"cal");
        assert_eq!(v["fields"]["duration_ms"], 0.25);
        assert_eq!(v["fields"]["size_bytes"], 10);
        assert_eq!(v["target"], TARGET);
        let ts = v["timestamp"].as_str().unwrap();
        assert_eq!(
            ts,
            humantime::format_rfc3339_micros(now).to_string(),
            "same timestamp as the fmt layer's"
        );
    }

    #[test]
    fn text_lines_carry_every_field() {
        let l = Line {
            method: "PUT",
            status: 401,
            size: None,
            duration: Duration::from_micros(12_345_678),
            ..line()
        };
        let mut out = Vec::new();
        format(false, &l, SystemTime::now(), &mut out);
        let text = String::from_utf8(out).unwrap();
        for part in [
            "http.method=PUT",
            "http.status=401",
            "duration_ms=12345.678",
            "cache.status=HIT",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        assert!(!text.contains("size_bytes") && text.ends_with('\n'));
    }

    #[test]
    fn timestamps_follow_the_clock_across_seconds() {
        for us in [0u64, 999_999, 1_000_000, 1_795_000_000_999_999, 1_795_000_001_000_000] {
            let now = UNIX_EPOCH + Duration::from_micros(us);
            let mut out = Vec::new();
            push_timestamp(&mut out, now);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                humantime::format_rfc3339_micros(now).to_string()
            );
        }
    }

    #[test]
    fn control_bytes_are_escaped_in_json() {
        let mut out = Vec::new();
        json_str(&mut out, "a\u{1}\\");
        assert_eq!(out, b"\"a\\u0001\\\\\"");
    }
}
