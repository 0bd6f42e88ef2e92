//! Search: the crates of a hosted registry from the store, and the upstream crates a proxy
//! (or a merged view's proxies) has cached, never asking the upstream.

use std::collections::HashSet;
use std::sync::Arc;

use semver::Version;
use serde_json::{json, Value};

use super::Reads;
use crate::config::{RegistryKind, RegistrySpec};
use crate::index::canonical_name;
use crate::index::line::{line_key, lines};
use crate::registry::error::{RegistryError, RegistryResult};
use crate::store::CrateRecord;
use crate::upstream::cached::CachedUpstream;

/// Longest search query accepted, in bytes.
pub const MAX_QUERY_LEN: usize = 256;

enum SearchHit {
    Local(CrateRecord),
    Upstream(Arc<CachedUpstream>, String),
}

/// The published name and highest non-yanked version in an upstream index file, and how many
/// unusable lines were skipped.
fn upstream_summary(body: &[u8]) -> (Option<(String, Option<String>)>, usize) {
    let mut name = None;
    let mut best: Option<(Version, String)> = None;
    let mut skipped = 0;
    for line in lines(body) {
        let Some(l) = line_key(line) else {
            skipped += 1;
            continue;
        };
        name.get_or_insert_with(|| l.name.into_owned());
        if !l.yanked && best.as_ref().is_none_or(|(b, _)| l.version > *b) {
            best = Some((l.version, l.vers.into_owned()));
        }
    }
    (name.map(|n| (n, best.map(|(_, s)| s))), skipped)
}

/// The version search shows: the highest non-yanked one (or the highest if all are yanked).
fn max_version(rec: &CrateRecord) -> Option<String> {
    let parsed = |yanked_ok: bool| {
        rec.versions
            .iter()
            .filter(|v| yanked_ok || !v.line.yanked)
            .filter_map(|v| Version::parse(&v.line.vers).ok().map(|p| (p, v.line.vers.clone())))
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, s)| s)
    };
    parsed(false).or_else(|| parsed(true))
}

impl Reads {
    /// Crates of `reg` whose name, description or keywords contain the query
    /// (case-insensitive, `-`/`_` alike in names), exact name first. Proxy and merged
    /// registries also list the upstream crates they have cached (never asking the
    /// upstream); local crates hide upstream ones of the same name. Read access is the
    /// caller's to check.
    pub async fn search(&self, reg: &RegistrySpec, q: &str, per_page: usize, page: usize) -> RegistryResult<Value> {
        if q.len() > MAX_QUERY_LEN {
            return Err(RegistryError::BadRequest(format!(
                "the search query is longer than {MAX_QUERY_LEN} bytes"
            )));
        }
        let per_page = per_page.clamp(1, 100);
        let q_lower = q.trim().to_lowercase();
        let q_canon = canonical_name(q.trim());
        // (exact match, canonical name, source)
        let mut hits: Vec<(bool, String, SearchHit)> = Vec::new();
        if reg.kind == RegistryKind::Hosted {
            for r in self.meta.crates(&reg.name).await? {
                let matches = canonical_name(&r.name).contains(&q_canon)
                    || r.description
                        .as_ref()
                        .is_some_and(|d| d.to_lowercase().contains(&q_lower))
                    || r.keywords.iter().any(|k| k.to_lowercase() == q_lower);
                if !r.versions.is_empty() && (q_lower.is_empty() || matches) {
                    let canon = canonical_name(&r.name);
                    hits.push((canon == q_canon, canon, SearchHit::Local(r)));
                }
            }
        }
        let proxies: Vec<String> = if reg.kind == RegistryKind::Proxy {
            vec![reg.name.clone()]
        } else {
            reg.upstreams.clone()
        };
        let mut seen: HashSet<String> = hits.iter().map(|h| h.1.clone()).collect();
        for up in proxies {
            let Ok(proxy) = self.catalog.proxy(&up) else { continue };
            for name in proxy.cached_names().await {
                // A cache written by an older version may hold names never checked.
                if !crate::index::name::is_lookup_name(&name) {
                    continue;
                }
                let canon = canonical_name(&name);
                if (q_lower.is_empty() || canon.contains(&q_canon)) && seen.insert(canon.clone()) {
                    hits.push((canon == q_canon, canon, SearchHit::Upstream(proxy.clone(), name)));
                }
            }
        }
        hits.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let total = hits.len();
        let mut crates = Vec::new();
        let skip = page.saturating_sub(1).saturating_mul(per_page);
        for (_, _, hit) in hits.into_iter().skip(skip).take(per_page) {
            crates.push(match hit {
                SearchHit::Local(r) => {
                    json!({"name": r.name, "max_version": max_version(&r), "description": r.description})
                }
                SearchHit::Upstream(proxy, lower) => {
                    let (name, max) = match proxy.cached(&lower).await {
                        Some(e) => {
                            // Parsing a whole index file (up to megabytes) happens on the
                            // blocking pool, not on the edge worker serving other requests.
                            let (registry, name) = (proxy.settings().registry.clone(), lower.clone());
                            let summary = tokio::task::spawn_blocking(move || {
                                let (summary, skipped) = upstream_summary(&e.body);
                                crate::upstream::garbage::report(&registry, &name, &e.etag, skipped, "search");
                                summary
                            })
                            .await
                            .ok()
                            .flatten();
                            summary.unwrap_or((lower.clone(), None))
                        }
                        None => (lower.clone(), None),
                    };
                    json!({"name": name, "max_version": max.unwrap_or_else(|| "0.0.0".into()), "description": null})
                }
            });
        }
        Ok(json!({"crates": crates, "meta": {"total": total}}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::changes::tests::record;

    #[test]
    fn max_version_skips_yanked() {
        assert_eq!(
            max_version(&record(&[("1.0.0", false), ("1.1.0", true)])).as_deref(),
            Some("1.0.0")
        );
        assert_eq!(
            max_version(&record(&[("1.0.0", true), ("0.9.0", true)])).as_deref(),
            Some("1.0.0")
        );
        assert_eq!(
            max_version(&record(&[("1.10.0", false), ("1.9.0", false)])).as_deref(),
            Some("1.10.0")
        );
    }
}
