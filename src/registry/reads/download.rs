//! Downloads: hosted blobs from the private store, proxied `.crate` files from the upstream
//! cache, both through the memory tier of crate files.

use std::path::PathBuf;

use bytes::Bytes;

use super::Reads;
use crate::cache::crate_files::FillReader;
use crate::cache::CacheStatus;
use crate::config::{RegistryKind, RegistrySpec, Shadow};
use crate::registry::changes::find_version;
use crate::registry::error::{RegistryError, RegistryResult};
use crate::registry::{check_name_and_version, MEMORY_CRATE_MAX};
use crate::store::BlobReader;
use crate::upstream::cached::{DownloadError, ProxyDownload};

/// Where a download's bytes are.
pub enum Download {
    /// In memory (the crate-bytes tier).
    Bytes { bytes: Bytes, status: CacheStatus },
    /// A cached upstream crate on disk too large for the memory tier.
    File { path: PathBuf, status: CacheStatus },
    /// A hosted blob too large for the memory tier, streamed from the private store.
    Blob { blob: BlobReader, status: CacheStatus },
    /// A streamed fill from upstream.
    Stream(FillReader),
}

impl Reads {
    /// Where the `.crate` of `name@version` is: a hosted blob, or (proxy and merged
    /// registries) the upstream's file, cached or streaming in.
    pub async fn download(&self, reg: &RegistrySpec, name: &str, version: &str) -> RegistryResult<Download> {
        check_name_and_version(name, None)?;
        let not_found = || {
            RegistryError::NotFound(format!(
                "crate `{name}` version `{version}` does not exist in registry `{}`",
                reg.name
            ))
        };
        // Memory hits first: these caches only ever receive versions that passed the full
        // check below, so a hit needs no semver parse (this is the download hot path).
        let hosted_key = (reg.kind == RegistryKind::Hosted)
            .then(|| format!("{}\0{}\0{version}", reg.name, name.to_ascii_lowercase()));
        if let Some(key) = &hosted_key {
            if let Some(cksum) = self.hosted_cksums.get(key) {
                return self
                    .hosted_blob(&cksum, CacheStatus::Bypass)
                    .await?
                    .ok_or_else(not_found);
            }
        } else if let Some(bytes) = self
            .catalog
            .proxy(&reg.name)?
            .cached_cksum(name, version)
            .and_then(|(_, cksum)| self.crate_bytes.get(&cksum))
        {
            return Ok(Download::Bytes {
                bytes,
                status: CacheStatus::Hit,
            });
        }
        check_name_and_version(name, Some(version))?;
        let upstreams: &[String] = match (reg.kind, hosted_key) {
            (RegistryKind::Hosted, Some(key)) => {
                let rec = self
                    .load_crate(&reg.name, name)
                    .await?
                    .filter(|r| r.name.eq_ignore_ascii_case(name));
                if let Some(rec) = &rec {
                    if let Some(v) = find_version(rec, version) {
                        let cksum = rec.versions[v].line.cksum.clone();
                        let found = self
                            .hosted_blob(&cksum, CacheStatus::Bypass)
                            .await?
                            .ok_or_else(not_found)?;
                        self.hosted_cksums.insert(key, cksum);
                        return Ok(found);
                    }
                    if reg.shadow == Shadow::Crate {
                        return Err(not_found());
                    }
                }
                &reg.upstreams
            }
            _ => std::slice::from_ref(&reg.name),
        };
        let mut last = None;
        // Whether the last failure was the index not listing the version (then a takedown
        // explains it better than "not in the upstream index").
        let mut unlisted = false;
        for up in upstreams {
            let proxy = self.catalog.proxy(up)?;
            // A failed lookup is final for this upstream: `download` would only repeat it (and
            // its upstream requests, retries and deadline) to fail the same way.
            match proxy.locate(name, version).await {
                Ok((_, cksum)) => {
                    if let Some(bytes) = self.crate_bytes.get(&cksum) {
                        return Ok(Download::Bytes {
                            bytes,
                            status: CacheStatus::Hit,
                        });
                    }
                }
                Err(DownloadError::NotFound(m)) => {
                    last = Some(RegistryError::NotFound(m));
                    unlisted = true;
                    continue;
                }
                Err(DownloadError::Upstream(e)) => {
                    last = Some(e.into());
                    unlisted = false;
                    continue;
                }
            }
            unlisted = false;
            match proxy.download(name, version).await {
                Ok((ProxyDownload::File { path, len }, status)) => {
                    let cksum = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
                    return self.file_download(&cksum, path, Some(len), status).await;
                }
                Ok((ProxyDownload::Stream(reader), _)) => return Ok(Download::Stream(reader)),
                Err(DownloadError::NotFound(m)) => last = Some(RegistryError::NotFound(m)),
                Err(DownloadError::Upstream(e)) => last = Some(e.into()),
            }
        }
        let err = last.unwrap_or_else(not_found);
        if unlisted {
            if let Some(removed) = self.removed_upstream(upstreams, name, version) {
                return Err(RegistryError::NotFound(removed));
            }
        }
        Err(err)
    }

    /// Why `name@version` is not found, if an upstream took it down and its `.crate` is in
    /// quarantine (only asked once the version was not found).
    fn removed_upstream(&self, upstreams: &[String], name: &str, version: &str) -> Option<String> {
        upstreams.iter().find_map(|up| {
            let rec = self.catalog.quarantined(up, name, version)?;
            let reason = rec
                .removals
                .iter()
                .find(|r| &r.registry == up && r.version == version)
                .map_or("removed", |r| r.reason.as_str());
            Some(format!(
                "crate `{name}` version `{version}` was removed from the upstream index of registry `{up}` \
                 ({reason}); its cached copy is quarantined and is not served. It is served again when the \
                 upstream lists it again, or once an administrator runs `cargohold quarantine release {}`",
                rec.sha256
            ))
        })
    }

    /// A hosted blob, from memory or the private store; `None` if the blob is missing.
    /// Blobs that fit the memory tier are read once and cached by SHA-256; larger ones stream.
    pub(super) async fn hosted_blob(&self, cksum: &str, status: CacheStatus) -> RegistryResult<Option<Download>> {
        if let Some(bytes) = self.crate_bytes.get(cksum) {
            return Ok(Some(Download::Bytes { bytes, status }));
        }
        let Some(mut blob) = self.blobs.get(cksum).await? else {
            return Ok(None);
        };
        if blob.len > MEMORY_CRATE_MAX {
            return Ok(Some(Download::Blob { blob, status }));
        }
        let mut data = Vec::with_capacity(usize::try_from(blob.len).unwrap_or(0));
        tokio::io::AsyncReadExt::read_to_end(&mut blob.reader, &mut data)
            .await
            .map_err(|e| RegistryError::Store(e.into()))?;
        let bytes = Bytes::from(data);
        self.crate_bytes.insert(cksum.to_owned(), bytes.clone());
        Ok(Some(Download::Bytes { bytes, status }))
    }

    /// Serves a crate file: files that fit the memory tier are read once (one blocking call)
    /// and cached by SHA-256; larger ones are streamed. `len` is the size if known (`Some(0)`
    /// means "known to be small enough").
    async fn file_download(
        &self,
        cksum: &str,
        path: PathBuf,
        len: Option<u64>,
        status: CacheStatus,
    ) -> RegistryResult<Download> {
        if len.is_some_and(|l| l <= MEMORY_CRATE_MAX) {
            match tokio::fs::read(&path).await {
                Ok(data) => {
                    let bytes = Bytes::from(data);
                    if !cksum.is_empty() {
                        self.crate_bytes.insert(cksum.to_owned(), bytes.clone());
                    }
                    return Ok(Download::Bytes { bytes, status });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(RegistryError::NotFound(format!(
                        "crate file {cksum} is gone from the cache; try again"
                    )))
                }
                Err(e) => return Err(RegistryError::Store(crate::store::StoreError::Io(e.to_string()))),
            }
        }
        Ok(Download::File { path, status })
    }
}
