//! The README of a published `.crate`, for the web interface's crate page.
//!
//! The archive is whoever published it: it is read in memory (never unpacked to disk) under
//! a cap on the decompressed bytes, the README's path comes from the package's own
//! `Cargo.toml` (`package.readme`, which `cargo package` rewrites to a file inside the
//! package; `README.md` when absent; none when `false`) and must stay inside
//! `{name}-{vers}/` (no `..`, no absolute path, a regular file), and the text is capped. The
//! Markdown is not rendered here: that, and sanitising it, is the web layer's.

use std::io::Read;

use flate2::read::GzDecoder;
use tar::{Archive, EntryType};

use super::tarball::MAX_MANIFEST_BYTES;

/// Largest README shown, in bytes (a longer one is cut, on a character boundary).
pub const MAX_README_BYTES: u64 = 512 << 10;

/// The README text of a `.crate` (gzip'd tar) of `name` `vers`, or `None` when there is none,
/// it is not where the manifest says, or the archive is broken. `max_unpacked` caps the
/// decompressed bytes read.
pub fn readme_of(crate_bytes: &[u8], name: &str, vers: &str, max_unpacked: u64) -> Option<String> {
    let prefix = format!("{name}-{vers}/");
    let manifest = find_entry(
        crate_bytes,
        &format!("{prefix}Cargo.toml"),
        MAX_MANIFEST_BYTES,
        max_unpacked,
    )?;
    let path = readme_path(&String::from_utf8_lossy(&manifest.0))?;
    let (bytes, _) = find_entry(crate_bytes, &format!("{prefix}{path}"), MAX_README_BYTES, max_unpacked)?;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if bytes.len() as u64 >= MAX_README_BYTES {
        // `from_utf8_lossy` may have cut a character into U+FFFD; keep what is whole.
        let cut = text.len().min(MAX_README_BYTES as usize);
        let mut end = cut;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("\n\n*(README cut at 512 KiB)*\n");
    }
    Some(text)
}

/// The README's path inside the package from its manifest, checked to stay inside it.
fn readme_path(manifest: &str) -> Option<String> {
    let table: toml::Table = manifest.parse().ok()?;
    let declared = match table.get("package").and_then(|p| p.get("readme")) {
        None => "README.md".to_owned(),
        Some(toml::Value::String(s)) => s.clone(),
        Some(_) => return None, // `false` (no README) or something odd
    };
    safe_relative(&declared)
}

/// `path` as a relative path of normal components joined with `/`, or `None` if it is
/// absolute, climbs with `..`, is empty, or holds a backslash or NUL.
pub fn safe_relative(path: &str) -> Option<String> {
    if path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return None;
    }
    let mut parts = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => return None,
            s => parts.push(s),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The bytes (up to `cap`, and whether there were more) of the regular file at `path` in the
/// archive.
fn find_entry(crate_bytes: &[u8], path: &str, cap: u64, max_unpacked: u64) -> Option<(Vec<u8>, bool)> {
    let decoder = GzDecoder::new(crate_bytes).take(max_unpacked);
    let mut archive = Archive::new(decoder);
    for entry in archive.entries().ok()? {
        let entry = entry.ok()?;
        let entry_path = entry.path().ok()?;
        if entry_path.to_str() != Some(path) {
            continue;
        }
        if entry.header().entry_type() != EntryType::Regular {
            return None;
        }
        let mut buf = Vec::new();
        entry.take(cap).read_to_end(&mut buf).ok()?;
        let more = buf.len() as u64 >= cap;
        return Some((buf, more));
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `.crate` of the given files (paths inside the package directory).
    pub(crate) fn crate_file(name: &str, vers: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(EntryType::Regular);
            h.set_cksum();
            tar.append_data(&mut h, format!("{name}-{vers}/{path}"), *data).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    const MANIFEST: &[u8] = b"[package]\nname = \"foo\"\nversion = \"1.0.0\"\n";

    #[test]
    fn default_and_declared_paths() {
        let c = crate_file("foo", "1.0.0", &[("Cargo.toml", MANIFEST), ("README.md", b"# Hi")]);
        assert_eq!(readme_of(&c, "foo", "1.0.0", 1 << 20).as_deref(), Some("# Hi"));
        let m = b"[package]\nname = \"foo\"\nversion = \"1.0.0\"\nreadme = \"docs/INTRO.md\"\n";
        let c = crate_file("foo", "1.0.0", &[("Cargo.toml", m), ("docs/INTRO.md", b"intro")]);
        assert_eq!(readme_of(&c, "foo", "1.0.0", 1 << 20).as_deref(), Some("intro"));
        let m = b"[package]\nname = \"foo\"\nversion = \"1.0.0\"\nreadme = false\n";
        let c = crate_file("foo", "1.0.0", &[("Cargo.toml", m), ("README.md", b"x")]);
        assert_eq!(readme_of(&c, "foo", "1.0.0", 1 << 20), None);
    }

    #[test]
    fn hostile_paths_and_archives() {
        for p in ["../../etc/passwd", "/etc/passwd", "a/../../b", "..", "", "a\\b"] {
            assert_eq!(safe_relative(p), None, "{p}");
        }
        assert_eq!(safe_relative("./docs//R.md").as_deref(), Some("docs/R.md"));
        let m = b"[package]\nname = \"foo\"\nversion = \"1.0.0\"\nreadme = \"../x.md\"\n";
        let c = crate_file("foo", "1.0.0", &[("Cargo.toml", m)]);
        assert_eq!(readme_of(&c, "foo", "1.0.0", 1 << 20), None);
        assert_eq!(readme_of(b"not gzip at all", "foo", "1.0.0", 1 << 20), None);
        assert_eq!(readme_of(&[], "foo", "1.0.0", 1 << 20), None);
        // Not valid TOML: no README rather than an error.
        let c = crate_file("foo", "1.0.0", &[("Cargo.toml", b"[[[")]);
        assert_eq!(readme_of(&c, "foo", "1.0.0", 1 << 20), None);
    }

    #[test]
    fn caps() {
        let big = vec![b'a'; (MAX_README_BYTES + 10) as usize];
        let c = crate_file("foo", "1.0.0", &[("Cargo.toml", MANIFEST), ("README.md", &big)]);
        let text = readme_of(&c, "foo", "1.0.0", 4 << 20).unwrap();
        assert!(text.len() < big.len() + 100 && text.ends_with("512 KiB)*\n"));
        // The decompressed cap stops the scan before the README.
        assert_eq!(readme_of(&c, "foo", "1.0.0", 1024), None);
    }
}
