//! Prints every tree of a sled database as JSON, to see what a sled-era store holds.
//!
//! ```text
//! cargo run --example sled_dump -- <data_dir>/store/db > dump.json
//! ```
//!
//! Output: `{"<tree>": [{"key": ..., "value": ...}, ...], ...}`, trees by name, rows in key
//! order. Keys are shown as text when they are UTF-8 (the sled store's crate keys are
//! `{registry}\0{canonical}`), else as `{"hex": "..."}`; values as JSON when they parse, else as
//! `{"hex": "..."}`. It depends on sled and serde_json only, not on the store's code, so it
//! keeps working on old data dirs after the store changes (`tests/fixtures/make-sled-store-v1.sh`
//! made `tests/fixtures/sled-store-v1/sled-dump.json` with it).
//!
//! Opening a sled database may write to it (recovery): run this on a copy, never on the data
//! dir of a running daemon (sled's lock refuses that anyway).

use serde_json::{json, Map, Value};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key_json(k: &[u8]) -> Value {
    match std::str::from_utf8(k) {
        Ok(s) => json!(s),
        Err(_) => json!({ "hex": hex(k) }),
    }
}

fn value_json(v: &[u8]) -> Value {
    serde_json::from_slice(v).unwrap_or_else(|_| json!({ "hex": hex(v) }))
}

/// Every tree of the database at `dir`, as described above.
fn dump(dir: &str) -> sled::Result<Value> {
    let db = sled::Config::new().path(dir).open()?;
    let mut out = Map::new();
    let mut names = db.tree_names();
    names.sort();
    for name in names {
        let tree = db.open_tree(&name)?;
        let mut rows = Vec::new();
        for kv in tree.iter() {
            let (k, v) = kv?;
            rows.push(json!({ "key": key_json(&k), "value": value_json(&v) }));
        }
        out.insert(String::from_utf8_lossy(&name).into_owned(), Value::Array(rows));
    }
    Ok(Value::Object(out))
}

fn main() -> std::process::ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: sled_dump <sled db dir, e.g. <data_dir>/store/db>");
        return std::process::ExitCode::from(64);
    };
    // sled creates a database where there is none: refuse a path that holds none.
    if !std::path::Path::new(&dir).join("conf").is_file() {
        eprintln!("{dir} holds no sled database (no `conf` file)");
        return std::process::ExitCode::FAILURE;
    }
    match dump(&dir) {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot read the sled database in {dir}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
