//! What the publish benchmarks send: a `.crate` as cargo writes it and cargo's publish body.
//! Included by `publish_latency` and `webhook_latency` (`#[path]`), so both measure the same
//! request.

use anyhow::Result;
use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::json;

/// Deterministic filler (splitmix64) so each `.crate` is distinct and not trivially compressible.
pub fn filler(seed: u64, n: usize) -> String {
    let mut s = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut out = String::with_capacity(n + 32);
    while out.len() < n {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.push_str(&format!("pub const C{:016x}: u64 = {};\n", z, z >> 7));
    }
    out
}

pub fn seed_of(name: &str, vers: &str) -> u64 {
    name.bytes().chain(vers.bytes()).fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A `.crate` as cargo writes it: `name-vers/Cargo.toml` and `src/lib.rs` (about 8 KiB of source,
/// about 3 KiB gzipped).
pub fn crate_tarball(name: &str, vers: &str) -> Result<Vec<u8>> {
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"{vers}\"\nedition = \"2021\"\n\
         description = \"publish benchmark crate\"\nlicense = \"MIT\"\n"
    );
    let lib = format!("//! {name} {vers}\n{}", filler(seed_of(name, vers), 8 * 1024));
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    tar.mode(tar::HeaderMode::Deterministic);
    for (path, data) in [("Cargo.toml", manifest.as_bytes()), ("src/lib.rs", lib.as_bytes())] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, format!("{name}-{vers}/{path}"), data)?;
    }
    Ok(tar.into_inner()?.finish()?)
}

/// Cargo's publish body: `u32 LE json length | json | u32 LE crate length | crate`.
pub fn publish_body(name: &str, vers: &str) -> Result<Bytes> {
    let meta = json!({
        "name": name, "vers": vers, "deps": [], "features": {"default": [], "extra": []},
        "authors": [], "description": "publish benchmark crate", "documentation": null,
        "homepage": null, "readme": null, "readme_file": null, "keywords": ["bench"],
        "categories": [], "license": "MIT", "license_file": null, "repository": null,
        "badges": {}, "links": null, "rust_version": null,
    });
    let json = serde_json::to_vec(&meta)?;
    let krate = crate_tarball(name, vers)?;
    let mut out = Vec::with_capacity(8 + json.len() + krate.len());
    out.extend_from_slice(&u32::try_from(json.len())?.to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&u32::try_from(krate.len())?.to_le_bytes());
    out.extend_from_slice(&krate);
    Ok(Bytes::from(out))
}
