//! What the web interface shows of a crate: its versions (newest first), owners and
//! description, from the store for a local crate, or from the index file a proxy (or a merged
//! view's upstream) serves; and the README of a local version, from its `.crate`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use semver::Version;

use super::{Download, IndexBody, Reads};
use crate::cache::{registry_key as cache_key, CacheStatus};
use crate::config::{RegistryKind, RegistrySpec};
use crate::index::canonical_name;
use crate::index::line::lines;
use crate::index::IndexLine;
use crate::registry::error::RegistryResult;
use crate::registry::readme::readme_of;
use crate::registry::{check_name_and_version, MEMORY_CRATE_MAX};

/// One version of a crate as the crate page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionView {
    pub line: IndexLine,
    /// Login of the publisher (local crates).
    pub published_by: Option<String>,
}

/// A crate as the crate page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrateView {
    /// As published.
    pub name: String,
    pub description: Option<String>,
    pub keywords: Vec<String>,
    /// Logins (local crates).
    pub owners: Vec<String>,
    /// Newest first (semver order; unparsable versions last).
    pub versions: Vec<VersionView>,
    /// Published here (`true`) or served from an upstream.
    pub local: bool,
}

impl CrateView {
    /// About the bytes it holds (for the cache's bound).
    pub fn weight(&self) -> usize {
        let lines: usize = self
            .versions
            .iter()
            .map(|v| {
                256 + v.line.vers.len()
                    + v.line.deps.len() * 160
                    + v.line
                        .features
                        .iter()
                        .map(|(k, f)| k.len() + f.iter().map(|x| x.len() + 24).sum::<usize>() + 48)
                        .sum::<usize>()
            })
            .sum();
        256 + self.name.len() + self.description.as_ref().map_or(0, String::len) + lines
    }

    /// Sorts the versions newest first.
    pub fn sort_versions(&mut self) {
        self.versions
            .sort_by_cached_key(|v| std::cmp::Reverse(Version::parse(&v.line.vers).ok()));
    }

    /// The version a page shows by default: the newest not yanked, else the newest.
    pub fn default_version(&self) -> Option<&VersionView> {
        self.versions
            .iter()
            .find(|v| !v.line.yanked)
            .or_else(|| self.versions.first())
    }
}

/// The index lines of a file that parse as a whole line (others are skipped, as everywhere).
fn parse_lines(body: &[u8]) -> Vec<VersionView> {
    lines(body)
        .filter_map(|l| serde_json::from_slice::<IndexLine>(l).ok())
        .map(|line| VersionView {
            line,
            published_by: None,
        })
        .collect()
}

impl Reads {
    /// The crate `name` of `reg`, or `None`. Read access is the caller's to check. A proxied
    /// crate may cost an upstream request, as its index file would.
    pub async fn crate_view(&self, reg: &RegistrySpec, name: &str) -> RegistryResult<Option<Arc<CrateView>>> {
        check_name_and_version(name, None)?;
        if reg.kind == RegistryKind::Hosted {
            if let Some(view) = self.local_view(reg, name).await? {
                return Ok(Some(view));
            }
            if reg.upstreams.is_empty() {
                return Ok(None);
            }
        }
        Ok(self.upstream_view(reg, name).await?.map(Arc::new))
    }

    /// A local crate's view, from the cache or the store (as `local_index_file` does, a copy
    /// read before a concurrent change is dropped rather than cached).
    async fn local_view(&self, reg: &RegistrySpec, name: &str) -> RegistryResult<Option<Arc<CrateView>>> {
        let key = cache_key(&reg.name, &canonical_name(name));
        if let Some(hit) = self.views.get(&key) {
            return Ok(Some(hit));
        }
        let seen = self.index_writes.load(Ordering::SeqCst);
        let Some(view) = self.local_view_uncached(reg, name).await? else {
            return Ok(None);
        };
        let view = Arc::new(view);
        self.views.insert(key.clone(), view.clone());
        if self.index_writes.load(Ordering::SeqCst) != seen {
            self.views.invalidate(&key);
        }
        Ok(Some(view))
    }

    async fn local_view_uncached(&self, reg: &RegistrySpec, name: &str) -> RegistryResult<Option<CrateView>> {
        {
            if let Some(rec) = self.load_crate(&reg.name, name).await? {
                if !rec.versions.is_empty() {
                    let mut view = CrateView {
                        name: rec.name,
                        description: rec.description,
                        keywords: rec.keywords,
                        owners: rec.owners,
                        versions: rec
                            .versions
                            .into_iter()
                            .map(|v| VersionView {
                                line: v.line,
                                published_by: Some(v.published_by),
                            })
                            .collect(),
                        local: true,
                    };
                    view.sort_versions();
                    return Ok(Some(view));
                }
            }
        }
        Ok(None)
    }

    /// A crate served by the upstream (a proxy, or the upstreams of a merged view).
    async fn upstream_view(&self, reg: &RegistrySpec, name: &str) -> RegistryResult<Option<CrateView>> {
        let answer = self.index_file(reg, &name.to_ascii_lowercase(), true).await?;
        let Some(file) = answer.file else { return Ok(None) };
        let body = match &file {
            IndexBody::Local(f) => &f.body,
            IndexBody::Upstream(e) => &e.body,
        };
        let versions = parse_lines(body);
        let Some(first) = versions.first() else { return Ok(None) };
        let mut view = CrateView {
            name: first.line.name.clone(),
            description: None,
            keywords: Vec::new(),
            owners: Vec::new(),
            versions,
            local: matches!(file, IndexBody::Local(_)),
        };
        view.sort_versions();
        Ok(Some(view))
    }

    /// The README (Markdown, unrendered) of a version whose `.crate` has SHA-256 `cksum`:
    /// a local one from the stored blob, a proxied one only if its `.crate` is cached already
    /// (a page view never fetches from the upstream). `None` without one. The archive is
    /// hostile input (see [`readme_of`]); it is read on the blocking pool.
    pub async fn readme(&self, name: &str, vers: &str, cksum: &str, local: bool) -> RegistryResult<Option<String>> {
        let bytes = if local {
            match self.hosted_blob(cksum, CacheStatus::Bypass).await? {
                Some(Download::Bytes { bytes, .. }) => bytes,
                // Larger than the memory tier: not unpacked for a page.
                _ => return Ok(None),
            }
        } else if let Some(bytes) = self.crate_bytes.get(cksum) {
            bytes
        } else {
            match self.catalog.cached_crate_file(cksum) {
                Some((path, len)) if len <= MEMORY_CRATE_MAX => match tokio::fs::read(&path).await {
                    Ok(b) => b.into(),
                    // Evicted meanwhile.
                    Err(_) => return Ok(None),
                },
                _ => return Ok(None),
            }
        };
        let max_unpacked = self.catalog.limits().max_unpacked_bytes;
        let (name, vers) = (name.to_owned(), vers.to_owned());
        Ok(
            tokio::task::spawn_blocking(move || readme_of(&bytes, &name, &vers, max_unpacked))
                .await
                .unwrap_or(None),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as crates.io writes them: spaces after the colons, `pubtime`, no `v` (format 1)
    /// and no `links`, a dependency without `kind`'s siblings that cargo defaults.
    #[test]
    fn upstream_lines_without_optional_fields_are_shown() {
        let body = concat!(
            r#"{"name": "itoa", "vers": "0.1.0", "deps": [], "cksum": "8fe390286ad3ad1b175ad07a638c83463c86cbdb5e38075c2ef44e10c694702b", "features": {}, "yanked": false, "pubtime": "2016-06-25T21:50:33Z"}"#,
            "\n",
            r#"{"name":"itoa","vers":"1.0.19","deps":[{"name":"no-panic","req":"^0.1","features":[],"optional":true,"default_features":true,"target":null,"kind":"normal"},{"name":"serde","req":"1"}],"cksum":"ae3088ea4baeceb0284ee9eea42f591226e6beaecf65373e41b38d95a1b8e7a1","features":{},"yanked":false,"rust_version":"1.36"}"#,
            "\n"
        );
        let views = parse_lines(body.as_bytes());
        let vers: Vec<_> = views.iter().map(|v| v.line.vers.as_str()).collect();
        assert_eq!(vers, ["0.1.0", "1.0.19"]);
        assert_eq!(views[0].line.v, 1);
        let serde = &views[1].line.deps[1];
        assert_eq!(
            (serde.kind.as_str(), serde.default_features, serde.optional),
            ("normal", true, false)
        );
    }
}
