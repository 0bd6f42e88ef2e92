//! What the web interface shows of a crate: its versions (newest first), owners and
//! description, from the store for a local crate, or from the index file a proxy (or a merged
//! view's upstream) serves; and the README of a local version, from its `.crate`.

use semver::Version;

use super::{Download, IndexBody, Reads};
use crate::cache::CacheStatus;
use crate::config::{RegistryKind, RegistrySpec};
use crate::index::line::lines;
use crate::index::IndexLine;
use crate::registry::check_name_and_version;
use crate::registry::error::RegistryResult;
use crate::registry::readme::readme_of;

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
    pub async fn crate_view(&self, reg: &RegistrySpec, name: &str) -> RegistryResult<Option<CrateView>> {
        check_name_and_version(name, None)?;
        if reg.kind == RegistryKind::Hosted {
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
            if reg.upstreams.is_empty() {
                return Ok(None);
            }
        }
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

    /// The README (Markdown, unrendered) of a local version whose `.crate` has SHA-256
    /// `cksum`, read from the stored blob; `None` without one. The archive is hostile input
    /// (see [`readme_of`]); it is read on the blocking pool.
    pub async fn readme(&self, name: &str, vers: &str, cksum: &str) -> RegistryResult<Option<String>> {
        let bytes = match self.hosted_blob(cksum, CacheStatus::Bypass).await? {
            Some(Download::Bytes { bytes, .. }) => bytes,
            // Larger than the memory tier: not unpacked for a page.
            _ => return Ok(None),
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
