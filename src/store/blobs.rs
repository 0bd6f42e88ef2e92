//! Content-addressed blob files: `<root>/<aa>/<bb>/<sha256>`. Writes go to a temp file in
//! `<root>/tmp`, are fsynced, renamed into place, and the directory is fsynced, so a blob is
//! either complete under its name or absent.
//!
//! This, rather than a generic object-store layer over the local disk, is the embedded
//! default because it fsyncs file and directory: an acknowledged publish survives a power
//! loss, not only a killed process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{is_blob_name, BlobInfo, BlobReader, Blobs, StoreError, StoreResult};

/// A directory of content-addressed files.
#[derive(Debug, Clone)]
pub struct FileBlobs {
    root: Arc<PathBuf>,
}

impl FileBlobs {
    /// Opens (creating) the directory for the daemon that owns it: removes temp files left
    /// by a crash, and puts back blobs a crashed `gc` had quarantined (gc decides again).
    pub fn open(root: PathBuf) -> std::io::Result<Self> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        let blobs = FileBlobs { root: Arc::new(root) };
        for name in read_dir_names(&blobs.quarantine_dir())? {
            if is_blob_name(&name) {
                blobs.restore_blocking(&name)?;
            }
        }
        Ok(blobs)
    }

    /// The directory as it is, beside the daemon that owns it (`gc`): nothing is cleaned up.
    pub fn attach(root: PathBuf) -> Self {
        FileBlobs { root: Arc::new(root) }
    }

    fn quarantine_dir(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    fn restore_blocking(&self, sha: &str) -> std::io::Result<()> {
        let held = self.quarantine_dir().join(sha);
        let Some(dest) = self.path_of(sha) else {
            return Ok(());
        };
        if dest.exists() {
            // Written again meanwhile: that copy (the same bytes) stays.
            return match std::fs::remove_file(&held) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        match std::fs::rename(&held, &dest) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Path of the blob named `sha256` (which must be a blob name).
    fn path_of(&self, sha256: &str) -> Option<PathBuf> {
        is_blob_name(sha256).then(|| self.root.join(&sha256[..2]).join(&sha256[2..4]).join(sha256))
    }

    fn temp_path(&self) -> PathBuf {
        self.root.join("tmp").join(format!("{:016x}", rand::random::<u64>()))
    }

    /// Moves a complete, fsynced temp file into place as `sha` (blocking).
    fn commit(&self, tmp_path: &Path, sha: &str) -> std::io::Result<()> {
        let Some(dest) = self.path_of(sha) else {
            unreachable_hex()
        };
        if dest.exists() {
            let _ = std::fs::remove_file(tmp_path);
            return renew(&dest);
        }
        let dir = dest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| (*self.root).clone());
        create_dirs_durably(&self.root, &dir)?;
        std::fs::rename(tmp_path, &dest)?;
        std::fs::File::open(&dir)?.sync_all()
    }

    /// Writes `bytes` durably; returns the hex SHA-256. Blocking.
    fn put_blocking(&self, bytes: &[u8]) -> std::io::Result<String> {
        let sha = hex::encode(Sha256::digest(bytes));
        if let Some(dest) = self.path_of(&sha).filter(|d| d.exists()) {
            renew(&dest)?;
            return Ok(sha);
        }
        let tmp_path = self.temp_path();
        let mut f = std::fs::File::create(&tmp_path)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        self.commit(&tmp_path, &sha)?;
        Ok(sha)
    }

    fn list_blocking(&self) -> std::io::Result<Vec<BlobInfo>> {
        let mut out = Vec::new();
        for a in read_dir_names(&self.root)? {
            if a.len() != 2 || self.root.join(&a).is_symlink() {
                continue;
            }
            for b in read_dir_names(&self.root.join(&a))? {
                for name in read_dir_names(&self.root.join(&a).join(&b))? {
                    if !is_blob_name(&name) || name[..2] != a || name[2..4] != b {
                        continue;
                    }
                    // Only regular files: a link is never followed (nor deleted through).
                    let meta = match std::fs::symlink_metadata(self.root.join(&a).join(&b).join(&name)) {
                        Ok(m) if m.file_type().is_file() => m,
                        Ok(_) => continue,
                        // Deleted since the directory was read.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    };
                    out.push(BlobInfo {
                        sha256: name,
                        len: meta.len(),
                        modified: meta.modified()?,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&FileBlobs) -> std::io::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| StoreError::Io(format!("blob task failed: {e}")))?
            .map_err(StoreError::from)
    }
}

/// Marks an existing blob as just written (its modification time is what gc's grace period
/// looks at).
fn renew(path: &Path) -> std::io::Result<()> {
    std::fs::File::options()
        .write(true)
        .open(path)?
        .set_modified(SystemTime::now())
}

fn read_dir_names(dir: &Path) -> std::io::Result<Vec<String>> {
    match std::fs::read_dir(dir) {
        Ok(rd) => Ok(rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl Blobs for FileBlobs {
    async fn put(&self, bytes: bytes::Bytes) -> StoreResult<String> {
        self.blocking(move |s| s.put_blocking(&bytes)).await
    }

    async fn put_stream(&self, reader: &mut (dyn AsyncRead + Send + Unpin)) -> StoreResult<(String, u64)> {
        let tmp_path = self.temp_path();
        let mut file = tokio::fs::File::create(&tmp_path).await?;
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        let mut buf = vec![0u8; 64 << 10];
        let copied: std::io::Result<()> = async {
            loop {
                let n = reader.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                tokio::io::AsyncWriteExt::write_all(&mut file, &buf[..n]).await?;
                len += n as u64;
            }
            file.sync_all().await
        }
        .await;
        drop(file);
        if let Err(e) = copied {
            let _ = tokio::fs::remove_file(&tmp_path).await;
            return Err(e.into());
        }
        let sha = hex::encode(hasher.finalize());
        let name = sha.clone();
        self.blocking(move |s| s.commit(&tmp_path, &name)).await?;
        Ok((sha, len))
    }

    async fn get(&self, sha256: &str) -> StoreResult<Option<BlobReader>> {
        let Some(path) = self.path_of(sha256) else {
            return Ok(None);
        };
        match tokio::fs::File::open(&path).await {
            Ok(f) => {
                let len = f.metadata().await?.len();
                Ok(Some(BlobReader {
                    len,
                    reader: Box::pin(f),
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn exists(&self, sha256: &str) -> StoreResult<bool> {
        match self.path_of(sha256) {
            Some(p) => Ok(tokio::fs::try_exists(p).await?),
            None => Ok(false),
        }
    }

    async fn info(&self, sha256: &str) -> StoreResult<Option<BlobInfo>> {
        let Some(path) = self.path_of(sha256) else {
            return Ok(None);
        };
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(BlobInfo {
                sha256: sha256.to_owned(),
                len: m.len(),
                modified: m.modified()?,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, sha256: &str) -> StoreResult<bool> {
        let Some(path) = self.path_of(sha256) else {
            return Ok(false);
        };
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn quarantine(&self, sha256: &str) -> StoreResult<bool> {
        let Some(path) = self.path_of(sha256) else {
            return Ok(false);
        };
        let held = self.quarantine_dir().join(sha256);
        self.blocking(move |s| {
            std::fs::create_dir_all(s.quarantine_dir())?;
            match std::fs::rename(&path, &held) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn restore(&self, sha256: &str) -> StoreResult<()> {
        if !is_blob_name(sha256) {
            return Ok(());
        }
        let sha = sha256.to_owned();
        self.blocking(move |s| s.restore_blocking(&sha)).await
    }

    async fn purge(&self, sha256: &str) -> StoreResult<()> {
        if !is_blob_name(sha256) {
            return Ok(());
        }
        match tokio::fs::remove_file(self.quarantine_dir().join(sha256)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn list(&self) -> StoreResult<Vec<BlobInfo>> {
        self.blocking(|s| s.list_blocking()).await
    }
}

/// Creates `dir` (below `root`, which exists) and each missing parent, fsyncing the parent of
/// every directory it creates: a new `<aa>/<bb>` directory entry is as durable as the blob
/// renamed into it, so an acknowledged blob cannot vanish with its directory after a crash.
fn create_dirs_durably(root: &Path, dir: &Path) -> std::io::Result<()> {
    let Ok(rel) = dir.strip_prefix(root) else {
        return std::fs::create_dir_all(dir);
    };
    let mut parent = root.to_path_buf();
    for part in rel.components() {
        let child = parent.join(part);
        match std::fs::create_dir(&child) {
            Ok(()) => std::fs::File::open(&parent)?.sync_all()?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        parent = child;
    }
    Ok(())
}

fn unreachable_hex() -> ! {
    // hex::encode of a SHA-256 digest is always 64 lowercase hex characters.
    panic!("sha256 hex has an unexpected shape")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_blobs_pass_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FileBlobs::open(dir.path().to_owned()).unwrap();
        crate::store::conformance::blobs(&blobs).await;
    }

    #[test]
    fn nested_directories_are_created_below_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("ab").join("cd");
        create_dirs_durably(dir.path(), &deep).unwrap();
        assert!(deep.is_dir());
        // Existing directories are fine, and so is a second call.
        create_dirs_durably(dir.path(), &deep).unwrap();
    }

    #[test]
    fn leftover_temp_files_are_removed_and_never_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("tmp/half"), b"x").unwrap();
        let blobs = FileBlobs::open(dir.path().to_owned()).unwrap();
        assert!(!dir.path().join("tmp/half").exists());
        // A stray file in the tree is not a blob.
        std::fs::create_dir_all(dir.path().join("ab/cd")).unwrap();
        std::fs::write(dir.path().join("ab/cd/notes.txt"), b"x").unwrap();
        assert!(blobs.list_blocking().unwrap().is_empty());
        assert!(blobs.path_of("../etc/passwd").is_none());
    }
}
