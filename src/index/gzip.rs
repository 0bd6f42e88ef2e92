//! gzip for index responses, computed at most once per cached file. `.crate` files are never
//! compressed (they already are, and cargo verifies their bytes).

use std::io::Write;
use std::sync::OnceLock;

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;

/// Bodies smaller than this are sent as they are.
pub const MIN_GZIP_BYTES: usize = 1024;

/// Bodies at least this large are first compressed on the blocking pool, not on the edge
/// worker that serves them (a 12 MB file takes a good fraction of a second).
pub const GZIP_OFFLOAD_BYTES: usize = 128 << 10;

/// A lazily computed gzip copy of a body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GzipCell(OnceLock<Bytes>);

impl GzipCell {
    /// The gzip of `body`, computed on first use.
    pub fn get(&self, body: &[u8]) -> &Bytes {
        self.0.get_or_init(|| {
            let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::new(6));
            // Writing to a Vec cannot fail.
            let _ = enc.write_all(body);
            Bytes::from(enc.finish().unwrap_or_default())
        })
    }

    /// Whether the gzip copy has been computed.
    pub fn is_ready(&self) -> bool {
        self.0.get().is_some()
    }
}

/// Whether an `Accept-Encoding` value accepts gzip (`gzip` or `*`, unless `q=0`).
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("");
        let q_zero = parts.any(|p| {
            p.strip_prefix("q=")
                .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q == 0.0))
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q_zero
    })
}

/// The ETag of the gzip representation of a body whose ETag is `etag` (`"x"` -> `"x-gz"`).
pub fn gzip_etag(etag: &str) -> String {
    match etag.strip_suffix('"') {
        Some(open) => format!("{open}-gz\""),
        None => format!("{etag}-gz"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn round_trip_and_computed_once() {
        let body = b"{\"name\":\"x\"}\n".repeat(200);
        let cell = GzipCell::default();
        let gz = cell.get(&body).clone();
        assert!(gz.len() < body.len());
        assert_eq!(cell.get(b"ignored").as_ptr(), gz.as_ptr(), "computed once");
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, body);
    }

    #[test]
    fn accept_encoding() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("deflate, gzip;q=0.5, br"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("br, deflate"));
        assert!(!accepts_gzip(""));
    }

    #[test]
    fn etags() {
        assert_eq!(gzip_etag("\"abc\""), "\"abc-gz\"");
    }
}
