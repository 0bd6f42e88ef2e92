//! `cargohold advisories import DIR|FILE` and `cargohold advisories status`.
//!
//! The import reads a RustSec advisory-db checkout (`crates/<name>/RUSTSEC-YYYY-NNNN.md`) or an
//! archive of one (`.tar.gz`/`.tgz`, `.tar.zst`, `.tar`: what an air-gapped site carries
//! across), parses every advisory with the `rustsec` crate, leaves out withdrawn ones, and sends
//! the rest as one compact JSON list. The daemon checks it all again
//! (`registry::advisories::check_import`) and replaces its whole database in one transaction.
//! Like `export`/`import`, it goes through the running daemon by default (`--server`, with
//! `CARGOHOLD_ADMIN_TOKEN`); with `--data-dir` or `--config` it writes the store directly
//! (a stopped daemon's, or a shared PostgreSQL store, whose nodes reload on the announcement).

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde_json::{json, Value};

use super::{AdminClient, CliError};
use crate::config::{Config, RegistryKind};
use crate::registry::advisories::{check_import, AdvisoryIndex};
use crate::store::advisories::{AdvisoryDb, AdvisoryRecord};

/// Most bytes of one advisory file.
const MAX_FILE: u64 = 1 << 20;
/// Most files an archive or checkout may hold that look like advisories.
const MAX_FILES: usize = 100_000;
/// Most bytes read out of an archive in all.
const MAX_ARCHIVE_BYTES: u64 = 1 << 30;

/// What an import read.
#[derive(Debug, Default)]
pub struct Parsed {
    pub advisories: Vec<AdvisoryRecord>,
    /// Withdrawn advisories left out.
    pub withdrawn: usize,
}

/// Reads the advisories of a checkout or an archive. Every file must parse: a malformed one
/// fails the whole import (with its path), so a half-read database never replaces a whole one.
pub fn read_source(path: &Path) -> Result<Parsed, CliError> {
    let meta = std::fs::metadata(path).map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
    let mut files: Vec<(String, String)> = Vec::new();
    if meta.is_dir() {
        read_dir(path, &mut files)?;
    } else {
        read_archive(path, &mut files)?;
    }
    if files.is_empty() {
        return Err(CliError::usage(format!(
            "{} holds no advisories (`crates/<name>/RUSTSEC-*.md`): is it an advisory-db checkout, or an archive of one?",
            path.display()
        )));
    }
    files.sort();
    let mut out = Parsed::default();
    let mut problems = Vec::new();
    for (name, text) in &files {
        match parse_one(text) {
            Ok(Some(a)) => out.advisories.push(a),
            Ok(None) => out.withdrawn += 1,
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    if !problems.is_empty() {
        let n = problems.len();
        problems.truncate(10);
        return Err(CliError::usage(format!(
            "{n} advisory file(s) cannot be read, nothing was imported:\n  {}",
            problems.join("\n  ")
        )));
    }
    Ok(out)
}

/// One advisory file: `None` if withdrawn.
fn parse_one(text: &str) -> Result<Option<AdvisoryRecord>, String> {
    // rustsec 0.32 slices the first 20 bytes of a file that does not start so for its error
    // message, which panics inside a multi-byte character: refuse such a file here.
    if !text.starts_with("```toml") {
        return Err("an advisory starts with its front matter, a ```toml block".into());
    }
    let a = rustsec::Advisory::from_str(text).map_err(|e| e.to_string())?;
    if a.metadata.withdrawn.is_some() {
        return Ok(None);
    }
    let informational = a.metadata.informational.as_ref().map(|i| {
        i.as_str()
            .chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(32)
            .collect::<String>()
    });
    Ok(Some(AdvisoryRecord {
        id: a.metadata.id.as_str().to_owned(),
        krate: a.metadata.package.as_str().to_owned(),
        title: a.metadata.title.clone(),
        date: a.metadata.date.as_str().to_owned(),
        informational,
        patched: a.versions.patched().iter().map(ToString::to_string).collect(),
        unaffected: a.versions.unaffected().iter().map(ToString::to_string).collect(),
        url: a.metadata.url.as_ref().map(ToString::to_string),
    }))
}

/// Whether the path inside a checkout or archive is an advisory: `…/crates/<name>/<file>.md`
/// (the `rust/` collection, about the toolchain, is not for a registry).
fn advisory_path(components: &[&str]) -> bool {
    matches!(components, [.., "crates", name, file]
        if !name.starts_with('.') && !file.starts_with('.') && file.ends_with(".md"))
}

fn read_dir(root: &Path, files: &mut Vec<(String, String)>) -> Result<(), CliError> {
    let crates = root.join("crates");
    let dirs = std::fs::read_dir(&crates).map_err(|e| {
        CliError::usage(format!(
            "cannot read {}: {e}; DIR must be an advisory-db checkout (with `crates/<name>/RUSTSEC-*.md`)",
            crates.display()
        ))
    })?;
    for d in dirs {
        let d = d.map_err(|e| CliError::failure(format!("cannot read {}: {e}", crates.display())))?;
        if !d.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let entries = std::fs::read_dir(d.path())
            .map_err(|e| CliError::failure(format!("cannot read {}: {e}", d.path().display())))?;
        for f in entries {
            let f = f.map_err(|e| CliError::failure(format!("cannot read {}: {e}", d.path().display())))?;
            let p = f.path();
            let (Some(dir), Some(file)) = (
                d.file_name().to_str().map(str::to_owned),
                f.file_name().to_str().map(str::to_owned),
            ) else {
                continue;
            };
            if !advisory_path(&["crates", &dir, &file]) || !f.file_type().map(|t| t.is_file()).unwrap_or(false) {
                continue;
            }
            if files.len() >= MAX_FILES {
                return Err(CliError::usage(format!("more than {MAX_FILES} advisory files")));
            }
            files.push((
                format!("crates/{dir}/{file}"),
                read_capped(std::fs::File::open(&p), &p)?,
            ));
        }
    }
    Ok(())
}

fn read_capped(f: std::io::Result<std::fs::File>, p: &Path) -> Result<String, CliError> {
    let f = f.map_err(|e| CliError::failure(format!("cannot open {}: {e}", p.display())))?;
    let mut text = String::new();
    f.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| CliError::usage(format!("cannot read {} as UTF-8 text: {e}", p.display())))?;
    if text.len() as u64 > MAX_FILE {
        return Err(CliError::usage(format!(
            "{} is larger than {MAX_FILE} bytes",
            p.display()
        )));
    }
    Ok(text)
}

/// How an archive is compressed, from its name, else from its first bytes.
fn open_archive(path: &Path) -> Result<Box<dyn Read>, CliError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut f =
        std::fs::File::open(path).map_err(|e| CliError::usage(format!("cannot open {}: {e}", path.display())))?;
    let mut magic = [0u8; 4];
    let n = f
        .read(&mut magic)
        .map_err(|e| CliError::failure(format!("cannot read {}: {e}", path.display())))?;
    let f = std::fs::File::open(path).map_err(|e| CliError::usage(format!("cannot open {}: {e}", path.display())))?;
    let gz = name.ends_with(".tar.gz") || name.ends_with(".tgz") || magic[..n].starts_with(&[0x1f, 0x8b]);
    let zst =
        name.ends_with(".tar.zst") || name.ends_with(".tzst") || magic[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    Ok(if gz {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)))
    } else if zst {
        Box::new(
            zstd::stream::read::Decoder::new(f)
                .map_err(|e| CliError::failure(format!("cannot read {}: {e}", path.display())))?,
        )
    } else {
        Box::new(std::io::BufReader::new(f))
    })
}

fn read_archive(path: &Path, files: &mut Vec<(String, String)>) -> Result<(), CliError> {
    read_archive_capped(path, files, MAX_ARCHIVE_BYTES)
}

/// [`read_archive`] reading at most `cap` bytes out of the (decompressed) archive.
fn read_archive_capped(path: &Path, files: &mut Vec<(String, String)>, cap: u64) -> Result<(), CliError> {
    let bad = |e: std::io::Error| {
        CliError::usage(format!(
            "{} is not a readable archive (.tar.gz, .tgz, .tar.zst or .tar of an advisory-db checkout): {e}",
            path.display()
        ))
    };
    let mut archive = tar::Archive::new(open_archive(path)?.take(cap));
    for entry in archive.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let p: PathBuf = entry.path().map_err(bad)?.into_owned();
        let parts: Option<Vec<&str>> = p
            .components()
            .map(|c| match c {
                Component::Normal(s) => s.to_str(),
                _ => None,
            })
            .collect();
        let Some(parts) = parts else { continue };
        if !advisory_path(&parts) {
            continue;
        }
        if files.len() >= MAX_FILES {
            return Err(CliError::usage(format!("more than {MAX_FILES} advisory files")));
        }
        let shown = parts[parts.len() - 3..].join("/");
        if entry.header().size().unwrap_or(0) > MAX_FILE {
            return Err(CliError::usage(format!("{shown} is larger than {MAX_FILE} bytes")));
        }
        let mut text = String::new();
        entry
            .take(MAX_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| CliError::usage(format!("cannot read {shown} as UTF-8 text: {e}")))?;
        files.push((shown, text));
    }
    // `tar` takes a stream cut on a header block for the archive's end: a cap that was
    // reached means the rest is unread, so nothing is imported.
    if archive.into_inner().limit() == 0 {
        return Err(CliError::usage(format!(
            "{} is larger than {cap} bytes once decompressed; nothing was imported (an advisory-db archive is a few MB)",
            path.display()
        )));
    }
    Ok(())
}

fn summary(parsed: &Parsed) -> String {
    format!(
        "{} advisories ({} withdrawn left out)",
        parsed.advisories.len(),
        parsed.withdrawn
    )
}

/// Imports through the running daemon.
pub async fn import_via(server: &str, source: &Path) -> Result<Value, CliError> {
    let parsed = read_source(source)?;
    eprintln!("read {} from {}", summary(&parsed), source.display());
    let client = AdminClient::from_env(server)?;
    client
        .call(
            reqwest::Method::PUT,
            "advisories",
            Some(json!({ "advisories": parsed.advisories })),
        )
        .await
}

/// Imports into the store of a data directory (or the shared store the config names).
pub async fn import(config: &Config, source: &Path) -> Result<Value, CliError> {
    let parsed = read_source(source)?;
    eprintln!("read {} from {}", summary(&parsed), source.display());
    check_import(&parsed.advisories).map_err(|e| CliError::usage(e.to_string()))?;
    let store = crate::app::open_store(config)
        .await
        .map_err(|e| CliError::failure(format!("{e:#}")))?;
    let db = AdvisoryDb {
        advisories: parsed.advisories,
        imported: Some(crate::store::now_secs()),
    };
    let done = store.meta.replace_advisories(&db).await;
    let _ = store.meta.close().await;
    done.map_err(|e| CliError::failure(format!("cannot store the advisories: {e}")))?;
    status(config).await
}

/// The status of a data directory's store (or the shared store the config names).
pub async fn status(config: &Config) -> Result<Value, CliError> {
    let store = crate::app::open_store(config)
        .await
        .map_err(|e| CliError::failure(format!("{e:#}")))?;
    let db = store.meta.advisories().await;
    let stored = store.meta.registries().await;
    let _ = store.meta.close().await;
    let db = db.map_err(|e| CliError::failure(e.to_string()))?;
    let mut regs = config.registries.clone();
    for s in stored.map_err(|e| CliError::failure(e.to_string()))? {
        regs.entry(s.name.clone()).or_insert(s);
    }
    let ix = AdvisoryIndex::build(&db);
    Ok(json!({
        "imported": ix.imported.map(|t| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t)).to_string()),
        "newest_advisory": ix.newest,
        "advisories": ix.count,
        "informational": ix.informational,
        "registries": regs.values()
            .filter(|r| r.kind == RegistryKind::Proxy || !r.upstreams.is_empty())
            .map(|r| json!({"name": r.name, "kind": r.kind, "advisories": r.advisories, "advisories_allow": r.advisories_allow}))
            .collect::<Vec<_>>(),
    }))
}

/// Through the running daemon.
pub async fn status_via(server: &str) -> Result<Value, CliError> {
    AdminClient::from_env(server)?
        .call(reqwest::Method::GET, "advisories", None)
        .await
}

/// Prints a status (or an import's result) for people.
pub fn print_status(s: &Value) {
    match s["imported"].as_str() {
        Some(t) => println!(
            "advisory database: {} advisories ({} informational), newest {}, imported {t}",
            s["advisories"],
            s["informational"],
            s["newest_advisory"].as_str().unwrap_or("-")
        ),
        None => println!("advisory database: none imported (`cargohold advisories import DIR|FILE`)"),
    }
    if let Some(regs) = s["registries"].as_array() {
        for r in regs {
            let allow = r["advisories_allow"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            println!(
                "  {:<20} {:<7} advisories={:<5} allow=[{allow}]",
                r["name"].as_str().unwrap_or(""),
                r["kind"].as_str().unwrap_or(""),
                r["advisories"].as_str().unwrap_or("")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Any file text is read or refused, never a panic (the parser is rustsec's).
        #[test]
        fn any_advisory_file_is_read_or_refused(
            text in proptest::prelude::any::<String>(),
            front in "```toml\n\\[advisory\\]\n(id = \"[ -~]{0,20}\"\n)?(package = \"[a-z]{0,6}\"\n)?(date = \"[0-9-]{0,10}\"\n)?(informational = \"[a-z]{0,8}\"\n)?\n(\\[versions\\]\npatched = \\[(\"[<>=0-9. ]{0,8}\")?\\]\n)?```\n\n(# [ -~]{0,20}\n)?",
        ) {
            let _ = parse_one(&text);
            let _ = parse_one(&front);
        }
    }

    #[test]
    fn a_good_file_is_read_and_a_withdrawn_one_left_out() {
        let file = |extra: &str| {
            format!("```toml\n[advisory]\nid = \"RUSTSEC-2024-0001\"\npackage = \"foo\"\ndate = \"2024-01-02\"\n{extra}\n[versions]\npatched = [\">= 1.2.0\"]\n```\n\n# Bad things\n\nText.\n")
        };
        let a = parse_one(&file("informational = \"unsound\"")).unwrap().unwrap();
        assert_eq!(
            (a.id.as_str(), a.krate.as_str(), a.title.as_str()),
            ("RUSTSEC-2024-0001", "foo", "Bad things")
        );
        assert_eq!(
            (a.date.as_str(), a.informational.as_deref()),
            ("2024-01-02", Some("unsound"))
        );
        assert_eq!(a.patched, [">=1.2.0"]);
        assert!(check_import(&[a]).is_ok(), "what the CLI reads, the server accepts");
        assert!(parse_one(&file("withdrawn = \"2024-02-01\"")).unwrap().is_none());
        assert!(parse_one("# no front matter\n").is_err());
    }

    /// An archive larger than the cap is refused, never read in part: a cut that falls on a
    /// header block looks like the archive's end to `tar`, which would import the advisories
    /// before it as if they were the whole database.
    #[test]
    fn an_archive_over_the_cap_is_refused_not_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let text = |id: &str| {
            format!("```toml\n[advisory]\nid = \"{id}\"\npackage = \"foo\"\ndate = \"2024-01-02\"\n\n[versions]\npatched = []\n```\n\n# T\n")
        };
        let path = dir.path().join("db.tar");
        let mut tar = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for id in ["RUSTSEC-2024-0001", "RUSTSEC-2024-0002"] {
            let body = text(id);
            assert!(body.len() <= 512);
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, format!("crates/foo/{id}.md"), body.as_bytes())
                .unwrap();
        }
        tar.into_inner().unwrap();
        let mut files = Vec::new();
        read_archive_capped(&path, &mut files, 1 << 20).unwrap();
        assert_eq!(files.len(), 2, "the whole archive under a cap it fits in");
        // The first entry is one header and one data block: a cap there ends on a header.
        let mut files = Vec::new();
        let e = read_archive_capped(&path, &mut files, 1024).unwrap_err();
        assert!(e.message.contains("larger than"), "{}", e.message);
    }

    #[test]
    fn only_crate_advisories_are_advisory_paths() {
        assert!(advisory_path(&["crates", "foo", "RUSTSEC-2024-0001.md"]));
        assert!(advisory_path(&[
            "advisory-db-main",
            "crates",
            "foo",
            "RUSTSEC-2024-0001.md"
        ]));
        assert!(!advisory_path(&["rust", "std", "CVE-2018-1000657.md"]));
        assert!(!advisory_path(&["crates", "foo", ".hidden.md"]));
        assert!(!advisory_path(&["crates", "foo", "notes.txt"]));
        assert!(!advisory_path(&["crates", "RUSTSEC-2024-0001.md"]));
    }
}
