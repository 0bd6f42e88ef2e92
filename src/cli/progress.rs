//! Progress of a long command (`warm`, and bundle export/import): a bar with items, bytes, rate
//! and ETA when stderr is a terminal (indicatif), otherwise plain lines without any control code
//! (every tenth of the items or every [`PLAIN_EVERY`], whichever comes first, and one at the end),
//! so a log or a CI job gets a readable, bounded record.
//!
//! ```no_run
//! # use cargohold::cli::progress::Progress;
//! let p = Progress::new("warm", Some(3), None);
//! for len in [10, 20, 30] {
//!     p.item(len);
//! }
//! let done = p.finish();
//! assert_eq!((done.items, done.bytes), (3, 60));
//! ```
//!
//! Every method takes `&self`: a `Progress` can be shared by concurrent tasks (behind an `Arc`
//! or a reference).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Longest time between two plain progress lines while items keep completing.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Where progress goes.
pub enum Output {
    /// A bar redrawn in place on stderr (a terminal).
    Bar,
    /// Plain lines on this writer.
    Lines(Box<dyn Write + Send>),
    /// Nothing (quiet runs).
    Hidden,
}

impl Output {
    /// A bar when stderr is a terminal, plain lines on stderr otherwise.
    pub fn for_stderr() -> Output {
        if std::io::stderr().is_terminal() {
            Output::Bar
        } else {
            Output::Lines(Box::new(std::io::stderr()))
        }
    }
}

enum Sink {
    Bar(ProgressBar),
    Lines(Mutex<Lines>),
    Hidden,
}

struct Lines {
    out: Box<dyn Write + Send>,
    last_at: Instant,
    last_items: u64,
}

/// What a finished run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub items: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Progress of one run: items done (with their bytes) against optional totals.
pub struct Progress {
    label: String,
    total_items: Option<u64>,
    total_bytes: Option<u64>,
    items: AtomicU64,
    bytes: AtomicU64,
    started: Instant,
    sink: Sink,
}

impl Progress {
    /// Progress on stderr: a bar on a terminal, plain lines otherwise.
    pub fn new(label: &str, total_items: Option<u64>, total_bytes: Option<u64>) -> Progress {
        Progress::with_output(label, total_items, total_bytes, Output::for_stderr())
    }

    /// Progress to a chosen output.
    pub fn with_output(label: &str, total_items: Option<u64>, total_bytes: Option<u64>, output: Output) -> Progress {
        let sink = match output {
            Output::Bar => Sink::Bar(bar(label, total_items, total_bytes)),
            Output::Lines(out) => Sink::Lines(Mutex::new(Lines {
                out,
                last_at: Instant::now(),
                last_items: 0,
            })),
            Output::Hidden => Sink::Hidden,
        };
        let p = Progress {
            label: label.to_owned(),
            total_items,
            total_bytes,
            items: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            started: Instant::now(),
            sink,
        };
        if let Sink::Bar(b) = &p.sink {
            p.update(0, 0, false);
            b.set_draw_target(ProgressDrawTarget::stderr());
            b.enable_steady_tick(Duration::from_millis(200));
        }
        p
    }

    /// One item done, with the bytes it moved.
    pub fn item(&self, bytes: u64) {
        let items = self.items.fetch_add(1, Ordering::Relaxed) + 1;
        let total = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.update(items, total, false);
    }

    /// Bytes moved within an item still in progress (a long transfer); the item itself is
    /// counted by `item(0)` when it ends.
    pub fn bytes(&self, bytes: u64) {
        let total = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let items = self.items.load(Ordering::Relaxed);
        self.update(items, total, false);
    }

    /// Prints a message (a failure, say) without breaking the bar.
    pub fn println(&self, msg: &str) {
        match &self.sink {
            Sink::Bar(b) => b.println(msg),
            Sink::Lines(l) => {
                let mut l = l.lock().unwrap_or_else(|e| e.into_inner());
                let _ = writeln!(l.out, "{msg}");
            }
            Sink::Hidden => {}
        }
    }

    /// Ends the run: the bar is cleared, plain output gets its last line. Returns the counts.
    pub fn finish(self) -> Done {
        let items = self.items.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        match &self.sink {
            Sink::Bar(b) => b.finish_and_clear(),
            Sink::Lines(_) => self.update(items, bytes, true),
            Sink::Hidden => {}
        }
        Done {
            items,
            bytes,
            elapsed: self.started.elapsed(),
        }
    }

    /// Ends a run that failed as a whole (its error says why): the bar is cleared, and plain
    /// output gets no summary line.
    pub fn abandon(self) {
        if let Sink::Bar(b) = &self.sink {
            b.finish_and_clear();
        }
    }

    fn update(&self, items: u64, bytes: u64, last: bool) {
        match &self.sink {
            Sink::Bar(b) => {
                // The message first: setting the position may draw.
                if self.total_bytes.is_some() {
                    b.set_message(self.items_text(items));
                    b.set_position(bytes);
                } else {
                    b.set_message(format!("{} ({}/s)", HumanBytes(bytes), HumanBytes(self.rate(bytes))));
                    b.set_position(items);
                }
            }
            Sink::Lines(l) => {
                let mut l = l.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let step = self.total_items.map_or(u64::MAX, |t| (t / 10).max(1));
                let due = last
                    || items.saturating_sub(l.last_items) >= step
                    || (items > l.last_items && now.duration_since(l.last_at) >= PLAIN_EVERY);
                if !due {
                    return;
                }
                l.last_at = now;
                l.last_items = items;
                let line = self.plain_line(items, bytes, last);
                let _ = writeln!(l.out, "{line}");
                let _ = l.out.flush();
            }
            Sink::Hidden => {}
        }
    }

    fn items_text(&self, items: u64) -> String {
        match self.total_items {
            Some(t) => format!("{items}/{t} items"),
            None => format!("{items} items"),
        }
    }

    /// Bytes per second since the start.
    fn rate(&self, bytes: u64) -> u64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs <= 0.0 {
            return 0;
        }
        (bytes as f64 / secs) as u64
    }

    /// `label: 12/40 items, 3.20 MiB, 1.10 MiB/s, ETA 5s` (no control codes).
    fn plain_line(&self, items: u64, bytes: u64, last: bool) -> String {
        let mut line = format!("{}: {}, {}", self.label, self.items_text(items), HumanBytes(bytes));
        if let Some(t) = self.total_bytes {
            line.push_str(&format!(" of {}", HumanBytes(t)));
        }
        line.push_str(&format!(", {}/s", HumanBytes(self.rate(bytes))));
        let elapsed = self.started.elapsed();
        if last {
            line.push_str(&format!(", done in {}", HumanDuration(elapsed)));
        } else if let Some(eta) = eta(elapsed, items, self.total_items, bytes, self.total_bytes) {
            line.push_str(&format!(", ETA {}", HumanDuration(eta)));
        }
        line
    }
}

/// Time left, from the share done so far (by bytes when their total is known, else by items).
fn eta(
    elapsed: Duration,
    items: u64,
    total_items: Option<u64>,
    bytes: u64,
    total_bytes: Option<u64>,
) -> Option<Duration> {
    let (done, total) = match (total_bytes, total_items) {
        (Some(t), _) if bytes > 0 => (bytes, t),
        (_, Some(t)) if items > 0 => (items, t),
        _ => return None,
    };
    let left = total.saturating_sub(done) as f64 / done as f64;
    Some(Duration::from_secs_f64((elapsed.as_secs_f64() * left).min(1e9)))
}

fn bar(label: &str, total_items: Option<u64>, total_bytes: Option<u64>) -> ProgressBar {
    let (len, template) = match (total_bytes, total_items) {
        (Some(b), _) => (
            Some(b),
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}, {msg}, ETA {eta}",
        ),
        (None, Some(n)) => (Some(n), "{prefix} [{bar:30}] {pos}/{len} items, {msg}, ETA {eta}"),
        (None, None) => (None, "{prefix} {spinner} {pos} items, {msg}, {elapsed}"),
    };
    // Hidden until styled and given its first message, so no half-filled line is drawn.
    let b = ProgressBar::with_draw_target(len, ProgressDrawTarget::hidden());
    if let Ok(style) = ProgressStyle::with_template(template) {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_prefix(label.to_owned());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn plain_lines_are_few_and_free_of_control_codes() {
        let out = Shared::default();
        let p = Progress::with_output("warm", Some(100), None, Output::Lines(Box::new(out.clone())));
        for _ in 0..100 {
            p.item(1024);
        }
        p.println("failed: x@1.0.0: the download answered 404");
        let done = p.finish();
        assert_eq!((done.items, done.bytes), (100, 102_400));
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        // One line per tenth of the items, the message, and the last line.
        assert_eq!(lines.len(), 12, "{text}");
        assert!(lines[0].starts_with("warm: 10/100 items, "), "{text}");
        assert!(lines[0].contains("ETA"), "{text}");
        assert!(lines[11].starts_with("warm: 100/100 items, 100.00 KiB"), "{text}");
        assert!(lines[11].contains("done in"), "{text}");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "no control codes in plain output: {text:?}"
        );
    }

    #[test]
    fn unknown_totals_and_byte_totals() {
        let out = Shared::default();
        let p = Progress::with_output("export", None, Some(4096), Output::Lines(Box::new(out.clone())));
        p.bytes(1024);
        p.item(0);
        p.item(3072);
        p.finish();
        let text = out.text();
        // No item total: only the last line (and none for a mere 5 s, which has not passed).
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with("export: 2 items, 4.00 KiB of 4.00 KiB"), "{text}");
        let hidden = Progress::with_output("x", None, None, Output::Hidden);
        hidden.item(5);
        assert_eq!(hidden.finish().bytes, 5);
    }

    #[test]
    fn eta_from_the_share_done() {
        let s = Duration::from_secs(10);
        assert_eq!(eta(s, 1, Some(4), 0, None), Some(Duration::from_secs(30)));
        assert_eq!(eta(s, 1, Some(4), 50, Some(100)), Some(Duration::from_secs(10)));
        assert_eq!(eta(s, 0, Some(4), 0, None), None);
        assert_eq!(eta(s, 3, None, 3, None), None);
    }
}
