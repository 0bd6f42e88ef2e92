//! Fills a data directory with a proxy registry's cache as if it had fetched N crates, for
//! `benches/bundle.sh`: N index files (one version each) and N `.crate` files of sizes spread
//! like real ones (1 KiB .. 1 MiB, most around 20-100 KiB) and incompressible like gzip output.
//!
//!   bundle_fixture DATA_DIR REGISTRY N
//!
//! Writes through the cache's own import path (`IndexCache::import_bundle`,
//! `CrateFiles::adopt`), so the layout is exactly the daemon's. No network.

use std::io::Write;

use cargohold::cache::crate_files::CrateFiles;
use cargohold::cache::index_cache::{IndexCache, IndexEntry};
use sha2::{Digest, Sha256};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, data, registry, n] = args.as_slice() else {
        eprintln!("usage: bundle_fixture DATA_DIR REGISTRY N");
        std::process::exit(64);
    };
    let n: usize = n.parse()?;
    let cache = std::path::Path::new(data).join("cache");
    let index = IndexCache::open(&cache, 64 << 20, 10 << 30).map_err(|e| e.0)?;
    let crates = CrateFiles::open(&cache.join("crates"), 100 << 30)?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        // xorshift64*: deterministic, fast, incompressible enough.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut entries = Vec::with_capacity(n);
    let mut total = 0u64;
    for i in 0..n {
        let name = format!("fixture-crate-{i:05}");
        // Log-spread sizes: 1 KiB .. 1 MiB.
        let size = 1024usize << (next() % 11);
        let size = size + (next() as usize % size);
        let size = size.min(1 << 20);
        let mut bytes = Vec::with_capacity(size + 8);
        while bytes.len() < size {
            bytes.extend_from_slice(&next().to_le_bytes());
        }
        bytes.truncate(size);
        total += size as u64;
        let sha = hex::encode(Sha256::digest(&bytes));
        let staged = crates.staging_dir().join(format!("fixture-{i}"));
        std::fs::File::create(&staged)?.write_all(&bytes)?;
        crates.adopt(&sha, &staged)?;
        let line = format!(
            "{{\"name\":\"{name}\",\"vers\":\"1.0.{i}\",\"deps\":[],\"cksum\":\"{sha}\",\"features\":{{}},\"yanked\":false,\"v\":2}}\n"
        );
        entries.push((
            name,
            IndexEntry::found(
                bytes::Bytes::from(line),
                Some(format!("\"fixture-{i}\"")),
                None,
                cargohold::cache::now_ms(),
            ),
        ));
    }
    index.import_bundle(registry, &entries, "fixture").map_err(|e| e.0)?;
    println!("{n} crates, {total} bytes of .crate files");
    Ok(())
}
