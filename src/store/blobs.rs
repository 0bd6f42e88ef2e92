//! Content-addressed blob files: `<root>/<aa>/<bb>/<sha256>`. Writes go to a temp file in
//! `<root>/tmp`, are fsynced, renamed into place, and the directory is fsynced, so a blob is
//! either complete under its name or absent.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A directory of content-addressed files.
#[derive(Debug, Clone)]
pub struct BlobDir {
    root: PathBuf,
}

impl BlobDir {
    /// Opens (creating) the directory and removes temp files left by a crash.
    pub fn open(root: PathBuf) -> std::io::Result<Self> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(BlobDir { root })
    }

    /// Path of the blob named `sha256` (which must be 64 lowercase hex chars).
    pub fn path_of(&self, sha256: &str) -> Option<PathBuf> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        Some(self.root.join(&sha256[..2]).join(&sha256[2..4]).join(sha256))
    }

    /// Writes `bytes` durably; returns the hex SHA-256. Blocking.
    pub fn put(&self, bytes: &[u8]) -> std::io::Result<String> {
        let sha = hex::encode(Sha256::digest(bytes));
        let Some(dest) = self.path_of(&sha) else {
            unreachable_hex()
        };
        if dest.exists() {
            return Ok(sha);
        }
        let dir = dest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        create_dirs_durably(&self.root, &dir)?;
        let tmp_path = self.root.join("tmp").join(format!("{sha}.{}", rand::random::<u64>()));
        let mut f = std::fs::File::create(&tmp_path)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp_path, &dest)?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(sha)
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

    #[test]
    fn put_is_idempotent_and_content_addressed() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(dir.path().to_owned()).unwrap();
        let a = blobs.put(b"hello").unwrap();
        assert_eq!(a, blobs.put(b"hello").unwrap());
        assert_eq!(std::fs::read(blobs.path_of(&a).unwrap()).unwrap(), b"hello");
        assert!(blobs.path_of("../etc/passwd").is_none());
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
    fn leftover_temp_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("tmp/half"), b"x").unwrap();
        BlobDir::open(dir.path().to_owned()).unwrap();
        assert!(!dir.path().join("tmp/half").exists());
    }
}
