//! Validation of an uploaded `.crate` file (gzip-compressed tar) for `cargo publish`.
//!
//! The archive is streamed once in memory, never unpacked to disk, and checked
//! with the rules public registries apply, so that a stored crate extracts
//! safely with `cargo` and matches its publish metadata:
//! valid gzip and tar (corrupt input is an error, never a panic); a limit on
//! the decompressed size, counted on the bytes actually decoded so a lying tar
//! header cannot bypass it (gzip bombs); entry paths that are UTF-8, relative,
//! free of `..` and inside `{name}-{vers}/`, so extraction cannot escape its
//! directory; only regular files and directories (no links or devices);
//! exactly one root `Cargo.toml` and no entry differing from it only in case
//! (a clash on case-insensitive file systems); a normalized manifest (no
//! `[patch]`, no unresolved `workspace = true`) whose name and version equal
//! the metadata; and entries that hold exactly the bytes their headers declare.

use std::cell::{Cell, RefCell};
use std::io::{self, Read};
use std::path::{Component, Path};

use flate2::read::GzDecoder;
use semver::Version;
use tar::{Archive, EntryType};
use toml::{Table, Value};

/// Largest root `Cargo.toml` accepted, in bytes. It is the only entry read into memory (and
/// parsed as TOML); every other entry is streamed past and only counted. Real manifests are
/// far smaller (a normalized one with hundreds of features is some tens of KiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// Resource limits applied while inspecting a tarball.
#[derive(Debug, Clone, Copy)]
pub struct TarballLimits {
    /// Maximum number of decompressed bytes (headers included) to accept.
    pub max_unpacked_bytes: u64,
    /// Maximum size of the root `Cargo.toml` (read into memory); see [`MAX_MANIFEST_BYTES`].
    pub max_manifest_bytes: u64,
}

impl TarballLimits {
    /// Limits with the given unpacked size and the default manifest cap.
    pub fn new(max_unpacked_bytes: u64) -> Self {
        TarballLimits {
            max_unpacked_bytes,
            max_manifest_bytes: MAX_MANIFEST_BYTES,
        }
    }
}

/// What was learned from a tarball that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct TarballInfo {
    /// `package.name` from the root Cargo.toml
    pub manifest_name: String,
    /// `package.version` from the root Cargo.toml (parsed)
    pub manifest_version: semver::Version,
    /// `package.links`, `package.rust-version` if present (strings)
    pub links: Option<String>,
    pub rust_version: Option<String>,
    /// total unpacked bytes of regular files
    pub unpacked_bytes: u64,
    pub files: usize,
}

/// Why a tarball was rejected. Messages are shown to the publishing user.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum TarballError {
    #[error("the uploaded crate file is not valid gzip data: {0}")]
    InvalidGzip(String),
    #[error("the uploaded crate file is not a valid tar archive: {0}")]
    InvalidTar(String),
    #[error("the uploaded crate file unpacks to more than the allowed {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("tarball entry path `{path}` is not valid UTF-8")]
    NonUtf8Path { path: String },
    #[error("tarball entry `{path}` is an absolute path; paths must be relative")]
    AbsolutePath { path: String },
    #[error("tarball entry `{path}` contains `..`")]
    ParentDirComponent { path: String },
    #[error("tarball entry `{path}` is not inside the top-level directory `{prefix}`")]
    OutsidePrefix { path: String, prefix: String },
    #[error("tarball entry `{path}` is a {kind}; only regular files and directories are allowed")]
    UnsupportedEntryType { path: String, kind: String },
    #[error("tarball entry `{path}` declares {declared} bytes but {actual} bytes could be read")]
    SizeMismatch { path: String, declared: u64, actual: u64 },
    #[error("`{path}` is {size} bytes; a crate's Cargo.toml may be at most {limit} bytes")]
    ManifestTooLarge { path: String, size: u64, limit: u64 },
    #[error("the tarball has no `{expected}` manifest")]
    MissingManifest { expected: String },
    #[error("the tarball contains more than one root manifest `{path}`")]
    DuplicateManifest { path: String },
    #[error("tarball entry `{path}` clashes with the root `Cargo.toml` (same name ignoring case)")]
    ManifestCaseConflict { path: String },
    #[error("`{path}` is not a valid TOML manifest: {message}")]
    ManifestParse { path: String, message: String },
    #[error("`{path}` has no `[package]` table")]
    MissingPackageTable { path: String },
    #[error("the root Cargo.toml is missing the string field `{field}`")]
    ManifestMissingField { field: String },
    #[error("the root Cargo.toml field `{field}` must be a string")]
    ManifestFieldNotString { field: String },
    #[error("the root Cargo.toml has a `[patch]` table, which published crates may not have")]
    PatchSection,
    #[error("the root Cargo.toml has unresolved `workspace = true` inheritance at `{key}`")]
    WorkspaceInheritance { key: String },
    #[error("the crate name `{metadata}` does not match `{manifest}` in the root Cargo.toml")]
    NameMismatch { manifest: String, metadata: String },
    #[error("the root Cargo.toml version `{version}` is not valid semver: {reason}")]
    InvalidManifestVersion { version: String, reason: String },
    #[error("the publish metadata version `{version}` is not valid semver: {reason}")]
    InvalidMetadataVersion { version: String, reason: String },
    #[error("the version `{metadata}` does not match `{manifest}` in the root Cargo.toml")]
    VersionMismatch { manifest: String, metadata: String },
}

/// Counts decompressed bytes, fails once they exceed the limit (having read
/// at most one byte past it), and records errors coming from the gzip layer.
struct LimitReader<'a, R> {
    inner: R,
    limit: u64,
    read: &'a Cell<u64>,
    gzip_error: &'a RefCell<Option<String>>,
}

impl<R: Read> Read for LimitReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let so_far = self.read.get();
        let room = self.limit.saturating_sub(so_far).saturating_add(1);
        let max = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = if so_far > self.limit {
            0
        } else {
            self.inner.read(&mut buf[..max]).inspect_err(|e| {
                *self.gzip_error.borrow_mut() = Some(e.to_string());
            })?
        };
        self.read.set(so_far + n as u64);
        if so_far + n as u64 > self.limit {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "size limit exceeded"));
        }
        Ok(n)
    }
}

/// Validates an uploaded `.crate` file against the publish metadata.
///
/// `name` and `vers` are the publish metadata's name and normalized version string.
pub fn inspect(crate_bytes: &[u8], name: &str, vers: &str, limits: TarballLimits) -> Result<TarballInfo, TarballError> {
    let meta_version = Version::parse(vers).map_err(|e| TarballError::InvalidMetadataVersion {
        version: vers.to_owned(),
        reason: e.to_string(),
    })?;
    let prefix = format!("{name}-{vers}");
    let manifest_path = format!("{prefix}/Cargo.toml");
    let limit = limits.max_unpacked_bytes;
    let (read, gzip_error) = (Cell::new(0), RefCell::new(None));
    let map_io = |e: io::Error| {
        if read.get() > limit {
            TarballError::TooLarge { limit }
        } else if let Some(msg) = gzip_error.borrow().clone() {
            TarballError::InvalidGzip(msg)
        } else {
            TarballError::InvalidTar(e.to_string())
        }
    };
    let mut archive = Archive::new(LimitReader {
        inner: GzDecoder::new(crate_bytes),
        limit,
        read: &read,
        gzip_error: &gzip_error,
    });
    let (mut unpacked_bytes, mut files, mut manifest) = (0u64, 0usize, None::<Vec<u8>>);
    for entry in archive.entries().map_err(map_io)? {
        let mut entry = entry.map_err(map_io)?;
        let kind = entry.header().entry_type();
        let raw = entry.path_bytes().into_owned();
        let path = String::from_utf8(raw).map_err(|e| TarballError::NonUtf8Path {
            path: String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })?;
        let std_path = entry
            .path()
            .map_err(|_| TarballError::NonUtf8Path { path: path.clone() })?;
        let rel = check_path(&path, &std_path, &prefix, kind.is_dir())?;
        if !kind.is_file() && !kind.is_dir() {
            let kind = describe(kind);
            return Err(TarballError::UnsupportedEntryType { path, kind });
        }
        let declared = entry.size();
        if declared > limit {
            return Err(TarballError::TooLarge { limit });
        }
        let is_manifest = kind.is_file() && rel == "Cargo.toml";
        if is_manifest && manifest.is_some() {
            return Err(TarballError::DuplicateManifest { path });
        }
        let first = rel.split('/').next().unwrap_or_default();
        if !is_manifest && first.eq_ignore_ascii_case("Cargo.toml") {
            return Err(TarballError::ManifestCaseConflict { path });
        }
        let actual = if is_manifest {
            // Refused on its header when it says so; read through a bounded reader anyway, so
            // a header that lies cannot make it grow past the cap.
            let cap = limits.max_manifest_bytes;
            let too_large = |size| TarballError::ManifestTooLarge {
                path: path.clone(),
                size,
                limit: cap,
            };
            if declared > cap {
                return Err(too_large(declared));
            }
            let mut buf = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
            let n = (&mut entry).take(cap + 1).read_to_end(&mut buf).map_err(map_io)? as u64;
            if n > cap {
                return Err(too_large(n));
            }
            manifest = Some(buf);
            n
        } else {
            io::copy(&mut entry, &mut io::sink()).map_err(map_io)?
        };
        if actual != declared {
            return Err(TarballError::SizeMismatch { path, declared, actual });
        }
        if kind.is_file() {
            unpacked_bytes += actual;
            files += 1;
        }
    }
    // Drain the rest of the gzip stream so its checksum is verified and any
    // trailing data counts towards the limit.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(map_io)?;

    let manifest = manifest.ok_or_else(|| TarballError::MissingManifest {
        expected: manifest_path.clone(),
    })?;
    let doc = parse_manifest(&manifest, &manifest_path)?;
    let package = doc.get("package").and_then(Value::as_table);
    let package = package.ok_or_else(|| TarballError::MissingPackageTable {
        path: manifest_path.clone(),
    })?;
    if doc.contains_key("patch") {
        return Err(TarballError::PatchSection);
    }
    if let Some(key) = find_inherited(&doc, package) {
        return Err(TarballError::WorkspaceInheritance { key });
    }
    let manifest_name = string_field(package, "name")?.ok_or(missing("package.name"))?;
    let version_str = string_field(package, "version")?.ok_or(missing("package.version"))?;
    if manifest_name != name {
        return Err(TarballError::NameMismatch {
            manifest: manifest_name,
            metadata: name.to_owned(),
        });
    }
    let manifest_version = Version::parse(&version_str).map_err(|e| TarballError::InvalidManifestVersion {
        version: version_str.clone(),
        reason: e.to_string(),
    })?;
    if manifest_version != meta_version {
        return Err(TarballError::VersionMismatch {
            manifest: version_str,
            metadata: vers.to_owned(),
        });
    }
    Ok(TarballInfo {
        manifest_name,
        manifest_version,
        links: string_field(package, "links")?,
        rust_version: string_field(package, "rust-version")?,
        unpacked_bytes,
        files,
    })
}

/// Checks one entry path and returns it relative to the prefix directory,
/// normalized (no empty or `.` components, `/`-separated).
fn check_path(path: &str, std_path: &Path, prefix: &str, is_dir: bool) -> Result<String, TarballError> {
    let root = std_path
        .components()
        .any(|c| matches!(c, Component::Prefix(_) | Component::RootDir));
    if root || path.starts_with(['/', '\\']) {
        return Err(TarballError::AbsolutePath { path: path.into() });
    }
    // Also split on `\`, which is a separator when extracted on Windows.
    let parent = std_path.components().any(|c| c == Component::ParentDir);
    if parent || path.split(['/', '\\']).any(|c| c == "..") {
        return Err(TarballError::ParentDirComponent { path: path.into() });
    }
    let rest = match path.strip_prefix(prefix) {
        Some("") if is_dir => Some(""),
        Some(rest) => rest.strip_prefix('/'),
        None => None,
    };
    let rel: Vec<&str> = rest
        .map(|r| r.split('/').filter(|c| !c.is_empty() && *c != ".").collect())
        .unwrap_or_default();
    if rest.is_none() || (rel.is_empty() && !is_dir) {
        return Err(TarballError::OutsidePrefix {
            path: path.into(),
            prefix: format!("{prefix}/"),
        });
    }
    Ok(rel.join("/"))
}

fn describe(kind: EntryType) -> String {
    match kind {
        EntryType::Symlink => "symbolic link".into(),
        EntryType::Link => "hard link".into(),
        EntryType::Char => "character device".into(),
        EntryType::Block => "block device".into(),
        EntryType::Fifo => "FIFO (named pipe)".into(),
        other => format!("entry of unsupported type {:?}", other.as_byte() as char),
    }
}

fn parse_manifest(bytes: &[u8], path: &str) -> Result<Table, TarballError> {
    let parse_err = |message: String| TarballError::ManifestParse {
        path: path.to_owned(),
        message,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| parse_err(e.to_string()))?;
    toml::from_str::<Table>(text).map_err(|e| parse_err(e.to_string()))
}

fn missing(field: &str) -> TarballError {
    TarballError::ManifestMissingField {
        field: field.to_owned(),
    }
}

fn string_field(package: &Table, key: &str) -> Result<Option<String>, TarballError> {
    match package.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TarballError::ManifestFieldNotString {
            field: format!("package.{key}"),
        }),
    }
}

/// Finds the first value still using `workspace = true` inheritance.
fn find_inherited(doc: &Table, package: &Table) -> Option<String> {
    let inherited = |v: &Value| v.as_table().is_some_and(|t| t.contains_key("workspace"));
    // `package.metadata` is free-form and may legitimately hold such keys.
    if let Some((k, _)) = package.iter().find(|(k, v)| k.as_str() != "metadata" && inherited(v)) {
        return Some(format!("package.{k}"));
    }
    if doc.get("lints").is_some_and(inherited) {
        return Some("lints".into());
    }
    let targets = doc.get("target").and_then(Value::as_table).into_iter().flatten();
    let targets = targets.filter_map(|(cfg, t)| Some((format!("target.{cfg}."), t.as_table()?)));
    let dep_kinds = ["dependencies", "dev-dependencies", "build-dependencies"];
    for (scope, table) in std::iter::once((String::new(), doc)).chain(targets) {
        for (kind, deps) in table.iter().filter_map(|(k, v)| Some((k, v.as_table()?))) {
            // Old manifests may spell the tables with `_`.
            if !dep_kinds.contains(&kind.replace('_', "-").as_str()) {
                continue;
            }
            if let Some((dep, _)) = deps.iter().find(|(_, v)| inherited(v)) {
                return Some(format!("{scope}{kind}.{dep}"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};
    use proptest::prelude::*;
    use std::io::Write;
    use tar::{Builder, Header};
    use EntryType::{Directory as Dir, Regular as Reg};

    const LIMITS: TarballLimits = TarballLimits {
        max_unpacked_bytes: 1 << 20,
        max_manifest_bytes: 64 << 10,
    };
    const SMALL: TarballLimits = TarballLimits {
        max_unpacked_bytes: 4096,
        max_manifest_bytes: 4096,
    };
    const MANIFEST: &str = "[package]\nname = \"foo\"\nversion = \"0.1.0\"\n";
    const ROOT: &str = "foo-0.1.0/Cargo.toml";

    /// An archive member; `Raw` and `LongName` bypass `tar::Builder`'s path checks.
    enum E<'a> {
        File(&'a str, &'a [u8]),
        Raw(&'a [u8], EntryType),
        LongName(&'a [u8]),
        Pax(&'a [u8]),
    }

    fn raw_header(name: &[u8], kind: EntryType, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h
    }

    fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = Builder::new(Vec::new());
        for e in entries {
            match *e {
                E::File(path, data) => {
                    let mut h = Header::new_gnu();
                    h.set_size(data.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, path, data).unwrap();
                }
                E::Raw(name, kind) => b.append(&raw_header(name, kind, 0), io::empty()).unwrap(),
                E::LongName(name) => {
                    let h = raw_header(b"././@LongLink", EntryType::GNULongName, name.len() as u64);
                    b.append(&h, name).unwrap();
                }
                E::Pax(path) => b.append_pax_extensions([("path", path)]).unwrap(),
            }
        }
        b.into_inner().unwrap()
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn run(bytes: &[u8]) -> Result<TarballInfo, TarballError> {
        inspect(bytes, "foo", "0.1.0", LIMITS)
    }

    fn check(entries: &[E<'_>]) -> Result<TarballInfo, TarballError> {
        run(&gz(&tar_of(entries)))
    }

    /// A valid manifest followed by `extra`.
    fn with(extra: E<'_>) -> Result<TarballInfo, TarballError> {
        check(&[E::File(ROOT, MANIFEST.as_bytes()), extra])
    }

    fn manifest(toml: &str) -> Result<TarballInfo, TarballError> {
        check(&[E::File(ROOT, toml.as_bytes())])
    }

    /// `bad! { result => Variant, ... }` asserts each result is that error variant.
    macro_rules! bad {
        ($($res:expr => $variant:ident),+ $(,)?) => {$(
            match $res {
                Err(TarballError::$variant { .. }) => {}
                other => panic!("expected {}, got {other:?}", stringify!($variant)),
            }
        )+};
    }

    #[test]
    fn good_crate_passes() {
        let m = format!("{MANIFEST}links = \"z\"\nrust-version = \"1.70\"\n");
        let long = format!("foo-0.1.0/{}/lib.rs", "d".repeat(120));
        let info = check(&[
            E::Raw(b"foo-0.1.0", Dir),
            E::Raw(b"foo-0.1.0/", Dir),
            E::File(ROOT, m.as_bytes()),
            E::File("foo-0.1.0/src/lib.rs", b"pub fn f() {}"),
            E::File(&long, b"x"),
        ]);
        let expected = TarballInfo {
            manifest_name: "foo".into(),
            manifest_version: Version::new(0, 1, 0),
            links: Some("z".into()),
            rust_version: Some("1.70".into()),
            unpacked_bytes: (m.len() + 13 + 1) as u64,
            files: 3,
        };
        assert_eq!(info, Ok(expected));
    }

    #[test]
    fn rule1_corrupt_gzip_and_tar() {
        let good = gz(&tar_of(&[E::File(ROOT, MANIFEST.as_bytes())]));
        let mut bad_crc = good.clone();
        let n = bad_crc.len();
        bad_crc[n - 6] ^= 0xff;
        bad! {
            run(b"") => InvalidGzip,
            run(b"not gzip") => InvalidGzip,
            run(&good[..good.len() / 2]) => InvalidGzip,
            run(&bad_crc) => InvalidGzip,
            run(&gz(&[7u8; 1024])) => InvalidTar,
        }
    }

    #[test]
    fn rule2_size_limit_counts_decoded_bytes() {
        let big = gz(&tar_of(&[E::File("foo-0.1.0/big", &[0u8; 100_000])]));
        // Headers claiming little cannot hide a huge stream behind them...
        let mut padded = tar_of(&[E::File(ROOT, MANIFEST.as_bytes())]);
        padded.resize(padded.len() + 100_000, 0);
        // ...and a header claiming a huge size is rejected before reading on.
        let lying = gz(raw_header(b"foo-0.1.0/x", Reg, 1 << 40).as_bytes());
        bad! {
            inspect(&big, "foo", "0.1.0", SMALL) => TooLarge,
            inspect(&gz(&padded), "foo", "0.1.0", SMALL) => TooLarge,
            inspect(&lying, "foo", "0.1.0", SMALL) => TooLarge,
        }
        let err = inspect(&big, "foo", "0.1.0", SMALL).unwrap_err();
        assert_eq!(err, TarballError::TooLarge { limit: 4096 });
    }

    #[test]
    fn rule3_paths() {
        let ok = || E::Raw(b"foo-0.1.0/ok", Reg);
        bad! {
            with(E::Raw(b"foo-0.1.0/\xff.rs", Reg)) => NonUtf8Path,
            with(E::Raw(b"/foo-0.1.0/x", Reg)) => AbsolutePath,
            with(E::Raw(b"foo-0.1.0/../x", Reg)) => ParentDirComponent,
            with(E::Raw(b"foo-0.1.0\\..\\x", Reg)) => ParentDirComponent,
            with(E::File("bar-0.1.0/x", b"")) => OutsidePrefix,
            with(E::File("foo-0.1.0x/y", b"")) => OutsidePrefix,
            with(E::File("foo-0.1.0", b"")) => OutsidePrefix,
            with(E::Raw(b"foo-0.1.0/", Reg)) => OutsidePrefix,
            // GNU long names and pax `path` records override the header name.
            check(&[E::LongName(b"foo-0.1.0/../../evil\0"), ok()]) => ParentDirComponent,
            check(&[E::Pax(b"foo-0.1.0/../x"), ok()]) => ParentDirComponent,
            check(&[E::Pax(b"/etc/evil"), ok()]) => AbsolutePath,
        }
        let err = with(E::Raw(b"foo-0.1.0/../x", Reg)).unwrap_err();
        assert_eq!(err.to_string(), "tarball entry `foo-0.1.0/../x` contains `..`");
    }

    #[test]
    fn rule4_only_files_and_dirs() {
        use EntryType::*;
        for kind in [Symlink, Link, Char, Block, Fifo, XGlobalHeader] {
            bad! { with(E::Raw(b"foo-0.1.0/l", kind)) => UnsupportedEntryType }
        }
        let err = with(E::Raw(b"foo-0.1.0/l", Symlink)).unwrap_err().to_string();
        assert!(err.contains("`foo-0.1.0/l` is a symbolic link"), "{err}");
    }

    #[test]
    fn rule5_single_root_manifest() {
        bad! {
            check(&[E::File("foo-0.1.0/sub/Cargo.toml", MANIFEST.as_bytes())]) => MissingManifest,
            with(E::Raw(b"foo-0.1.0/./Cargo.toml", Reg)) => DuplicateManifest,
            with(E::File("foo-0.1.0/cargo.toml", b"")) => ManifestCaseConflict,
            with(E::File("foo-0.1.0/CARGO.TOML", b"")) => ManifestCaseConflict,
            with(E::File("foo-0.1.0/Cargo.TOML/x", b"")) => ManifestCaseConflict,
        }
    }

    #[test]
    fn rule6_manifest_contents() {
        let version = |v: &str| format!("[package]\nname = \"foo\"\nversion = {v}\n");
        bad! {
            manifest("[package") => ManifestParse,
            check(&[E::File(ROOT, b"\xff")]) => ManifestParse,
            manifest("[lib]\n") => MissingPackageTable,
            manifest("[package]\nname = \"foo\"\n") => ManifestMissingField,
            manifest(&version("1")) => ManifestFieldNotString,
            manifest(&version("\"01.0\"")) => InvalidManifestVersion,
            manifest(&format!("{MANIFEST}[patch.x]\ny = {{ path = \"y\" }}\n")) => PatchSection,
            manifest("[package]\nname = \"Foo\"\nversion = \"0.1.0\"\n") => NameMismatch,
        }
        let err = manifest("[package]\nname = \"Foo\"\nversion = \"0.1.0\"\n").unwrap_err();
        assert!(err.to_string().contains("`foo`") && err.to_string().contains("`Foo`"));
    }

    #[test]
    fn rule6_workspace_inheritance() {
        let m = |extra: &str| manifest(&format!("{MANIFEST}{extra}"));
        bad! {
            manifest("[package]\nname = \"foo\"\nversion.workspace = true") => WorkspaceInheritance,
            m("edition.workspace = true\n") => WorkspaceInheritance,
            m("[dependencies]\nserde = { workspace = true }\n") => WorkspaceInheritance,
            m("[dev_dependencies]\nserde = { workspace = true }\n") => WorkspaceInheritance,
            m("[target.'cfg(a)'.build-dependencies]\nc.workspace = true") => WorkspaceInheritance,
            m("[lints]\nworkspace = true\n") => WorkspaceInheritance,
        }
        assert!(m("[package.metadata.workspace]\nx = 1\n").is_ok());
    }

    #[test]
    fn rule6_version_must_match_including_build_metadata() {
        let m = "[package]\nname = \"foo\"\nversion = \"0.1.0+build.5\"\n";
        let bytes = gz(&tar_of(&[E::File("foo-0.1.0+build.5/Cargo.toml", m.as_bytes())]));
        let info = inspect(&bytes, "foo", "0.1.0+build.5", LIMITS).unwrap();
        assert_eq!(info.manifest_version.build.as_str(), "build.5");
        bad! {
            manifest(m) => VersionMismatch,
            inspect(&bytes, "foo", "one", LIMITS) => InvalidMetadataVersion,
        }
        let err = manifest(m).unwrap_err().to_string();
        assert!(err.contains("`0.1.0`") && err.contains("`0.1.0+build.5`"), "{err}");
    }

    #[test]
    fn rule7_entry_size_must_match_header() {
        let data = E::File("foo-0.1.0/d", &[1; 2000]);
        let t = tar_of(&[E::File(ROOT, MANIFEST.as_bytes()), data]);
        // Cut the tar inside the last member's data; the gzip layer stays valid.
        let res = run(&gz(&t[..t.len() - 1024 - 2048 + 100]));
        let (path, declared, actual) = ("foo-0.1.0/d".into(), 2000, 100);
        assert_eq!(res, Err(TarballError::SizeMismatch { path, declared, actual }));
    }

    #[test]
    fn manifest_is_capped() {
        let big = format!("{MANIFEST}# {}\n", "x".repeat(100 << 10));
        bad! { manifest(&big) => ManifestTooLarge }
        let err = manifest(&big).unwrap_err().to_string();
        assert!(
            err.contains("foo-0.1.0/Cargo.toml") && err.contains("at most 65536 bytes"),
            "{err}"
        );
        let fits = format!("{MANIFEST}# {}\n", "x".repeat(60 << 10));
        assert!(manifest(&fits).is_ok());
        assert_eq!(TarballLimits::new(1).max_manifest_bytes, MAX_MANIFEST_BYTES);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any text as the root manifest (TOML or not) is checked without panicking.
        #[test]
        fn arbitrary_manifests_never_panic(
            text in prop_oneof![
                any::<String>(),
                "\\[package\\]\nname = \"foo\"\nversion = \"0\\.1\\.0\"\n[a-z\\[\\]=\". \n{}0-9-]{0,60}",
            ],
        ) {
            let _ = manifest(&text);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = run(&bytes);
            let _ = run(&gz(&bytes));
        }

        #[test]
        fn mutated_crates_never_panic(pos in any::<usize>(), byte in any::<u8>()) {
            let mut t = tar_of(&[E::File(ROOT, MANIFEST.as_bytes())]);
            let i = pos % t.len();
            t[i] = byte;
            let _ = run(&gz(&t));
        }
    }
}
