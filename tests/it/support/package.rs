//! Hand-built `.crate` files and publish bodies, for tests that talk HTTP directly.

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};

/// A gzip-compressed tar whose entries are `{name}-{vers}/{path}` for every `(path, contents)`
/// in `files`, written the way cargo writes them (GNU headers, mode 0644, fixed mtime), so the
/// result is deterministic. `files` is used as given: pass a `Cargo.toml` yourself or use
/// [`simple_crate`].
pub fn crate_tarball(name: &str, vers: &str, files: &[(&str, &str)]) -> Vec<u8> {
    let gz = GzEncoder::new(Vec::new(), Compression::best());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for (path, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_153_704_088);
        header.set_entry_type(tar::EntryType::Regular);
        let full = format!("{name}-{vers}/{path}");
        tar.append_data(&mut header, &full, contents.as_bytes())
            .unwrap_or_else(|e| panic!("append {full} to tarball: {e}"));
    }
    let gz = tar.into_inner().expect("finish tar");
    gz.finish().expect("finish gzip")
}

/// A minimal `Cargo.toml` for `name`/`vers`.
pub fn manifest(name: &str, vers: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"{vers}\"\nedition = \"2021\"\n\
         description = \"test crate {name}\"\nlicense = \"MIT\"\n"
    )
}

/// A `.crate` with `Cargo.toml` ([`manifest`]) and `src/lib.rs`.
pub fn simple_crate(name: &str, vers: &str) -> Vec<u8> {
    let toml = manifest(name, vers);
    let lib = format!("//! {name} {vers}\npub fn version() -> &'static str {{ \"{vers}\" }}\n");
    crate_tarball(name, vers, &[("Cargo.toml", &toml), ("src/lib.rs", &lib)])
}

/// Publish metadata (`NewCrate`) with every top-level key cargo always sends; `deps` and
/// `features` empty.
pub fn metadata(name: &str, vers: &str) -> Value {
    json!({
        "name": name,
        "vers": vers,
        "deps": [],
        "features": {},
        "authors": [],
        "description": format!("test crate {name}"),
        "documentation": null,
        "homepage": null,
        "readme": null,
        "readme_file": null,
        "keywords": [],
        "categories": [],
        "license": "MIT",
        "license_file": null,
        "repository": null,
        "badges": {},
        "links": null,
        "rust_version": null,
    })
}

/// A dependency object as cargo puts it into publish metadata (`registry` and
/// `explicit_name_in_toml` omitted, i.e. a same-registry, non-renamed normal dependency).
pub fn metadata_dep(name: &str, version_req: &str) -> Value {
    json!({
        "name": name,
        "version_req": version_req,
        "features": [],
        "optional": false,
        "default_features": true,
        "target": null,
        "kind": "normal",
    })
}

/// The publish body: `u32 LE json length | json | u32 LE crate length | crate`.
pub fn publish_body(meta_json: &Value, krate: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(meta_json).expect("serialize metadata");
    let mut out = Vec::with_capacity(8 + json.len() + krate.len());
    out.extend_from_slice(&u32::try_from(json.len()).expect("json fits u32").to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&u32::try_from(krate.len()).expect("crate fits u32").to_le_bytes());
    out.extend_from_slice(krate);
    out
}

/// A complete publish body for [`simple_crate`]`(name, vers)` with [`metadata`]; also returns
/// the `.crate` bytes (whose SHA-256 the index `cksum` must equal).
pub fn simple_publish(name: &str, vers: &str) -> (Vec<u8>, Vec<u8>) {
    let krate = simple_crate(name, vers);
    (publish_body(&metadata(name, vers), &krate), krate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn tarball_round_trip() {
        let bytes = simple_crate("demo", "1.2.3+meta");
        assert_eq!(bytes, simple_crate("demo", "1.2.3+meta"), "deterministic");
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            if p.ends_with("Cargo.toml") {
                assert!(s.contains("version = \"1.2.3+meta\""));
            }
            names.push(p);
        }
        assert_eq!(names, ["demo-1.2.3+meta/Cargo.toml", "demo-1.2.3+meta/src/lib.rs"]);
    }

    #[test]
    fn body_framing() {
        let meta = metadata("x", "1.0.0");
        let body = publish_body(&meta, b"abc");
        let j = u32::from_le_bytes(body[..4].try_into().unwrap()) as usize;
        let parsed: Value = serde_json::from_slice(&body[4..4 + j]).unwrap();
        assert_eq!(parsed, meta);
        let c = u32::from_le_bytes(body[4 + j..8 + j].try_into().unwrap()) as usize;
        assert_eq!(c, 3);
        assert_eq!(&body[8 + j..], b"abc");
        for key in [
            "name",
            "vers",
            "deps",
            "features",
            "authors",
            "description",
            "documentation",
            "homepage",
            "readme",
            "readme_file",
            "keywords",
            "categories",
            "license",
            "license_file",
            "repository",
            "badges",
            "links",
            "rust_version",
        ] {
            assert!(parsed.get(key).is_some(), "metadata lacks {key}");
        }
    }
}
