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
        std::fs::create_dir_all(&dir)?;
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
    fn leftover_temp_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("tmp/half"), b"x").unwrap();
        BlobDir::open(dir.path().to_owned()).unwrap();
        assert!(!dir.path().join("tmp/half").exists());
    }
}
