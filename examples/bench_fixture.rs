//! Writes the static sparse registry that `benches/load.sh` serves with nginx (the baseline and
//! the daemon's fake upstream at once).
//!
//! ```text
//! cargo run --release --example bench_fixture -- OUT_DIR PORT [INDEX_DIR]
//! ```
//!
//! Layout of OUT_DIR:
//! - `index/config.json`: `{"dl":"http://127.0.0.1:PORT/dl/{crate}/{version}/download"}`;
//! - `index/<sparse path>`: every file listed in `INDEX_DIR/paths.txt` (default
//!   `../shared/data/index` next to this package), copied byte for byte;
//! - synthetic crates with their index files and `.crate` files at
//!   `dl/<name>/<version>/download`: `bench-1kb`, `bench-100kb`, `bench-1mb`, `bench-10mb`
//!   (incompressible padding, so the `.crate` is about that size) and `bench-dep-000` ..
//!   `bench-dep-149` (small crates, some depending on lower-numbered ones);
//! - `project/`: a package depending on every `bench-dep-NNN` (the `cargo fetch` scenario);
//! - `manifest.tsv`: `kind<TAB>name<TAB>version<TAB>index path<TAB>bytes` for the synthetic crates;
//! - `publish/`: cargo publish bodies of `bench-private` (16 versions, each depending on two
//!   `bench-dep` crates), which `load.sh` publishes into the daemon's hosted registry for the
//!   `private` scenario, and `publish/list.txt` naming them in order. Not in the index: the
//!   crate exists only once published.
//!
//! Everything is deterministic: the same inputs give the same bytes (fixed tar headers, gzip
//! mtime 0, a seeded generator for the padding).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The crate `load.sh` publishes into the daemon's hosted registry, and its version count.
const PRIVATE: &str = "bench-private";
const PRIVATE_VERSIONS: usize = 16;

/// Number of `bench-dep-NNN` crates (the size of the `cargo fetch` project).
const DEPS: usize = 150;

/// Sized crates: name and target `.crate` size in bytes.
const SIZED: &[(&str, usize)] = &[
    ("bench-1kb", 1_000),
    ("bench-100kb", 100_000),
    ("bench-1mb", 1_000_000),
    // Decimal 10 MB stays below the daemon's default 10 MiB crate limit.
    ("bench-10mb", 10_000_000),
];

/// splitmix64: deterministic, dependency-free, good enough for incompressible padding.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

/// Cargo's sparse index path of a crate name.
fn index_path(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    match lower.len() {
        0 => panic!("empty crate name"),
        1 => format!("1/{lower}"),
        2 => format!("2/{lower}"),
        3 => format!("3/{}/{lower}", &lower[..1]),
        _ => format!("{}/{}/{lower}", &lower[..2], &lower[2..4]),
    }
}

/// A dependency of a synthetic crate: name and version requirement.
struct Dep {
    name: String,
    req: String,
}

/// A gzipped tarball `{name}-{vers}/{Cargo.toml, src/lib.rs[, padding.bin]}` with fixed headers.
fn build_crate(name: &str, vers: &str, deps: &[Dep], padding: &[u8]) -> Result<Vec<u8>> {
    let mut manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"{vers}\"\nedition = \"2021\"\n\
         description = \"cargohold load-benchmark fixture\"\nlicense = \"MIT\"\n"
    );
    if !padding.is_empty() {
        manifest.push_str("include = [\"src/**\", \"padding.bin\"]\n");
    }
    if !deps.is_empty() {
        manifest.push_str("\n[dependencies]\n");
        for d in deps {
            writeln!(manifest, "{} = \"{}\"", d.name, d.req)?;
        }
    }
    let lib = format!("//! {name} {vers}: benchmark fixture.\n\npub const NAME: &str = \"{name}\";\n");
    let mut files: Vec<(String, &[u8])> = vec![
        (format!("{name}-{vers}/Cargo.toml"), manifest.as_bytes()),
        (format!("{name}-{vers}/src/lib.rs"), lib.as_bytes()),
    ];
    if !padding.is_empty() {
        files.push((format!("{name}-{vers}/padding.bin"), padding));
    }
    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, &path, data)
            .with_context(|| format!("adding {path}"))?;
    }
    let gz: GzEncoder<Vec<u8>> = tar.into_inner()?;
    Ok(gz.finish()?)
}

/// A crate whose `.crate` is about `target` bytes: the padding length is corrected until the
/// archive is within 0.5 % (bounded number of tries).
fn build_sized_crate(name: &str, vers: &str, target: usize) -> Result<Vec<u8>> {
    let mut pad_len = target.saturating_sub(700);
    let mut best = build_crate(name, vers, &[], &SplitMix(0xC0FFEE).bytes(pad_len))?;
    for _ in 0..12 {
        let diff = target as i64 - best.len() as i64;
        if diff.unsigned_abs() as usize <= target / 200 {
            break;
        }
        pad_len = (pad_len as i64 + diff).max(1) as usize;
        best = build_crate(name, vers, &[], &SplitMix(0xC0FFEE).bytes(pad_len))?;
    }
    Ok(best)
}

/// One index line with every field cargo and the daemon read, in the public index's field order.
fn index_line(name: &str, vers: &str, deps: &[Dep], cksum: &str) -> Value {
    let deps: Vec<Value> = deps
        .iter()
        .map(|d| {
            json!({
                "name": d.name,
                "req": d.req,
                "features": [],
                "optional": false,
                "default_features": true,
                "target": null,
                "kind": "normal",
                "registry": null,
                "package": null,
            })
        })
        .collect();
    json!({
        "name": name,
        "vers": vers,
        "deps": deps,
        "cksum": cksum,
        "features": {},
        "yanked": false,
        "links": null,
        "v": 1,
    })
}

/// Cargo's publish body for a crate built by [`build_crate`]: `u32 LE json length | json |
/// u32 LE crate length | crate`, the metadata with every key cargo sends.
fn publish_body(name: &str, vers: &str, deps: &[Dep], krate: &[u8]) -> Result<Vec<u8>> {
    let deps: Vec<Value> = deps
        .iter()
        .map(|d| {
            json!({
                "name": d.name, "version_req": d.req, "features": [], "optional": false,
                "default_features": true, "target": null, "kind": "normal",
            })
        })
        .collect();
    let meta = json!({
        "name": name, "vers": vers, "deps": deps,
        "features": {"default": ["std"], "std": [], "serde": []},
        "authors": [], "description": "cargohold load-benchmark fixture", "documentation": null,
        "homepage": null, "readme": null, "readme_file": null, "keywords": ["bench"],
        "categories": [], "license": "MIT", "license_file": null, "repository": null,
        "badges": {}, "links": null, "rust_version": "1.70",
    });
    let json = serde_json::to_vec(&meta)?;
    let mut out = Vec::with_capacity(8 + json.len() + krate.len());
    out.extend_from_slice(&u32::try_from(json.len())?.to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&u32::try_from(krate.len())?.to_le_bytes());
    out.extend_from_slice(krate);
    Ok(out)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

struct Fixture {
    out: PathBuf,
    manifest: String,
    crates: usize,
    crate_bytes: u64,
}

impl Fixture {
    /// Writes the `.crate` files and the index file of one crate (all its versions).
    fn add_crate(&mut self, kind: &str, name: &str, versions: &[(&str, Vec<u8>, Vec<Dep>)]) -> Result<()> {
        let ipath = index_path(name);
        let mut file = String::new();
        for (vers, bytes, deps) in versions {
            let cksum = hex::encode(Sha256::digest(bytes));
            file.push_str(&serde_json::to_string(&index_line(name, vers, deps, &cksum))?);
            file.push('\n');
            write(&self.out.join(format!("dl/{name}/{vers}/download")), bytes)?;
            writeln!(self.manifest, "{kind}\t{name}\t{vers}\t{ipath}\t{}", bytes.len())?;
            self.crates += 1;
            self.crate_bytes += bytes.len() as u64;
        }
        write(&self.out.join("index").join(&ipath), file.as_bytes())
    }
}

fn dep_name(i: usize) -> String {
    format!("bench-dep-{i:03}")
}

/// Deterministic dependency edges among the `bench-dep` crates: every 10th crate depends on
/// two lower-numbered ones, so the resolver walks a small graph, not a flat list.
fn dep_edges(i: usize) -> Vec<Dep> {
    if i >= 10 && i % 10 == 0 {
        [i / 2, i / 3]
            .into_iter()
            .map(|j| Dep {
                name: dep_name(j),
                req: "^1.0".into(),
            })
            .collect()
    } else {
        Vec::new()
    }
}

fn run(out: PathBuf, port: u16, index_dir: PathBuf) -> Result<()> {
    let list = index_dir.join("paths.txt");
    let paths = std::fs::read_to_string(&list).with_context(|| format!("reading {}", list.display()))?;
    std::fs::create_dir_all(out.join("index"))?;
    write(
        &out.join("index/config.json"),
        format!("{{\"dl\":\"http://127.0.0.1:{port}/dl/{{crate}}/{{version}}/download\"}}").as_bytes(),
    )?;

    // The real index files, byte for byte, at their sparse paths.
    let mut copied = 0usize;
    let mut copied_bytes = 0u64;
    let mut real = std::collections::BTreeSet::new();
    for p in paths.lines().map(str::trim).filter(|p| !p.is_empty()) {
        if p.starts_with('/') || p.split('/').any(|s| s == "..") {
            bail!("unexpected path `{p}` in {}", list.display());
        }
        let bytes = std::fs::read(index_dir.join(p)).with_context(|| format!("reading {p}"))?;
        write(&out.join("index").join(p), &bytes)?;
        copied += 1;
        copied_bytes += bytes.len() as u64;
        real.insert(p.to_owned());
    }

    let mut fx = Fixture {
        out: out.clone(),
        manifest: String::from("kind\tname\tversion\tindex_path\tbytes\n"),
        crates: 0,
        crate_bytes: 0,
    };
    for &(name, target) in SIZED {
        if real.contains(&index_path(name)) {
            bail!("synthetic crate {name} collides with a real index file");
        }
        let bytes = build_sized_crate(name, "1.0.0", target)?;
        fx.add_crate("sized", name, &[("1.0.0", bytes, Vec::new())])?;
    }
    for i in 0..DEPS {
        let name = dep_name(i);
        if real.contains(&index_path(&name)) {
            bail!("synthetic crate {name} collides with a real index file");
        }
        // Two versions so the resolver has a choice; it picks 1.0.1.
        let mut versions = Vec::new();
        for vers in ["1.0.0", "1.0.1"] {
            let deps = dep_edges(i);
            let bytes = build_crate(&name, vers, &deps, &[])?;
            versions.push((vers, bytes, deps));
        }
        fx.add_crate("dep", &name, &versions)?;
    }
    write(&out.join("manifest.tsv"), fx.manifest.as_bytes())?;

    // Publish bodies of the private crate (load.sh's `private` scenario).
    if real.contains(&index_path(PRIVATE)) {
        bail!("synthetic crate {PRIVATE} collides with a real index file");
    }
    let mut list = String::new();
    for k in 0..PRIVATE_VERSIONS {
        let vers = format!("1.{}.{}", k / 4, k % 4);
        let deps = [dep_name(2 * k), dep_name(2 * k + 1)]
            .into_iter()
            .map(|name| Dep {
                name,
                req: "^1.0".into(),
            })
            .collect::<Vec<_>>();
        let krate = build_crate(PRIVATE, &vers, &deps, &[])?;
        let file = format!("{PRIVATE}-{vers}.body");
        write(
            &out.join("publish").join(&file),
            &publish_body(PRIVATE, &vers, &deps, &krate)?,
        )?;
        writeln!(list, "{file}")?;
    }
    write(&out.join("publish/list.txt"), list.as_bytes())?;

    // The `cargo fetch` project: depends on every bench-dep crate.
    let mut manifest = String::from(
        "[package]\nname = \"bench-fetch-project\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\n",
    );
    for i in 0..DEPS {
        writeln!(manifest, "{} = \"1\"", dep_name(i))?;
    }
    // An empty [workspace] keeps cargo from looking for a parent workspace above OUT_DIR.
    manifest.push_str("\n[workspace]\n");
    write(&out.join("project/Cargo.toml"), manifest.as_bytes())?;
    write(&out.join("project/src/lib.rs"), b"//! cargo fetch benchmark project.\n")?;

    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "bench_fixture: {copied} real index files ({copied_bytes} bytes), {} synthetic .crate files \
         ({} bytes), dl port {port}, in {}",
        fx.crates,
        fx.crate_bytes,
        out.display()
    )?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 || args.len() > 3 || args.iter().any(|a| a == "-h" || a == "--help") {
        bail!("usage: bench_fixture OUT_DIR PORT [INDEX_DIR]   (INDEX_DIR defaults to ../shared/data/index)");
    }
    let out = PathBuf::from(&args[0]);
    let port: u16 = args[1]
        .parse()
        .with_context(|| format!("PORT `{}` is not a port number", args[1]))?;
    let index_dir = match args.get(2) {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/index"),
    };
    run(out, port, index_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_paths() {
        assert_eq!(index_path("a"), "1/a");
        assert_eq!(index_path("ab"), "2/ab");
        assert_eq!(index_path("abc"), "3/a/abc");
        assert_eq!(index_path("bench-1mb"), "be/nc/bench-1mb");
    }

    #[test]
    fn crates_are_deterministic() {
        let a = build_crate("x-y", "1.0.0", &[], b"pad").unwrap();
        let b = build_crate("x-y", "1.0.0", &[], b"pad").unwrap();
        assert_eq!(a, b);
    }
}
