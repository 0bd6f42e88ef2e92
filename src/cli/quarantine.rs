//! `cargohold quarantine ...`: the `.crate` files taken out of the crate cache because their
//! upstream index no longer lists them (see `cache::quarantine`). `list` asks the running
//! daemon's admin API (`--server`, with CARGOHOLD_ADMIN_TOKEN), or, with `--data-dir` or
//! `--config`, reads the data directory's records directly (safe beside a running daemon:
//! it only reads). `release` and `purge` go through the daemon, which owns the cache.

use clap::Subcommand;
use serde_json::Value;

use super::{AdminClient, CliError, ConfigArgs, EXIT_FAILURE};
use crate::cache::quarantine;
use crate::registry::takedown::quarantine_rows;

/// `cargohold quarantine ...`
#[derive(Debug, Subcommand)]
pub enum QuarantineCmd {
    /// List the quarantined `.crate` files: one line per removal (registry, crate, version,
    /// reason, when, size, SHA-256).
    List {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print the list as JSON (`{"quarantine": [...]}`, as the admin API answers).
        #[arg(long)]
        json: bool,
    },
    /// Put a quarantined file back into the crate cache (served again wherever an upstream
    /// index lists its checksum).
    Release { sha256: String },
    /// Delete a quarantined file and its record.
    Purge { sha256: String },
}

/// The rows of a data directory's quarantine (`<data_dir>/cache/crates/quarantine/`).
pub fn rows_of_data_dir(data_dir: &std::path::Path) -> Result<Vec<Value>, CliError> {
    let dir = data_dir.join("cache").join("crates").join(quarantine::DIR);
    let records = quarantine::read_records(&dir).map_err(|e| CliError {
        code: EXIT_FAILURE,
        message: format!("cannot read {}: {e}", dir.display()),
    })?;
    Ok(quarantine_rows(&records))
}

/// Prints rows as a table, or as JSON.
pub fn print_rows(rows: &[Value], json: bool) {
    if json {
        let v = serde_json::json!({ "quarantine": rows });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    if rows.is_empty() {
        println!("nothing is quarantined");
        return;
    }
    for r in rows {
        let when = r["removed_at"].as_u64().map(super::format_unix).unwrap_or_default();
        println!(
            "{}  {} {}  {}  removed {}  {} bytes  {}",
            r["registry"].as_str().unwrap_or(""),
            r["crate"].as_str().unwrap_or(""),
            r["version"].as_str().unwrap_or(""),
            r["reason"].as_str().unwrap_or(""),
            when,
            r["size"],
            r["cksum"].as_str().unwrap_or(""),
        );
    }
}

/// Runs a quarantine command through the admin API.
pub async fn run(client: &AdminClient, cmd: QuarantineCmd) -> Result<(), CliError> {
    use reqwest::Method as M;
    match cmd {
        QuarantineCmd::List { json, .. } => {
            let r = client.call(M::GET, "quarantine", None).await?;
            let rows = r["quarantine"].as_array().cloned().unwrap_or_default();
            print_rows(&rows, json);
        }
        QuarantineCmd::Release { sha256 } => {
            let r = client
                .call(M::POST, &format!("quarantine/{sha256}/release"), None)
                .await?;
            println!("{}", r["msg"].as_str().unwrap_or("released"));
        }
        QuarantineCmd::Purge { sha256 } => {
            let r = client.call(M::DELETE, &format!("quarantine/{sha256}"), None).await?;
            println!("{}", r["msg"].as_str().unwrap_or("purged"));
        }
    }
    Ok(())
}
