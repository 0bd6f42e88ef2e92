//! [`Blobs`] in an S3-compatible bucket, for several nodes sharing one store.
//!
//! Layout under the configured prefix: `crates/<sha256>` holds each blob, `quarantine/<sha256>`
//! what `gc` holds out of sight. Blobs are immutable and named by their content, so plain PUT
//! and GET suffice: two nodes writing the same blob write the same bytes, and no conditional
//! request (`If-None-Match`, `If-Match`) is ever sent, since several engines ignore or
//! mishandle them. A streamed upload is spooled to a local temp file while it is hashed and
//! only then sent under its final key, so a key never names bytes that do not hash to it.
//! Modification times are kept to whole seconds: a listing reports milliseconds where a HEAD
//! reports seconds, and both must agree.
//!
//! Built on `object_store` (the Apache Arrow project's object-store client): it signs with
//! SigV4, retries with backoff, streams reads and does multipart uploads, and trusts the
//! platform's CA store for https endpoints.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;
use object_store::{ClientOptions, ObjectMeta, ObjectStore, PutPayload, RetryConfig, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use super::{is_blob_name, BlobInfo, BlobReader, Blobs, StoreError, StoreResult};
use crate::config::env::EnvSource;
use crate::config::store::S3Config;

/// Uploads up to this size go in one PUT; larger ones in parts of this size.
const PART_BYTES: u64 = 16 << 20;

/// S3 credentials, from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and
/// `AWS_SESSION_TOKEN` if set). Never printed.
#[derive(Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Credentials({}, ***)", self.access_key_id)
    }
}

impl S3Credentials {
    /// The credentials in `env`; an error naming the variables if they are not both set.
    pub fn from_env(env: &dyn EnvSource) -> StoreResult<Self> {
        let get = |v: &str| env.get(v).filter(|s| !s.trim().is_empty());
        match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(S3Credentials {
                access_key_id,
                secret_access_key,
                session_token: get("AWS_SESSION_TOKEN"),
            }),
            _ => Err(StoreError::Io(
                "blobs in S3 need AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment".into(),
            )),
        }
    }
}

/// Blobs in an S3 bucket.
#[derive(Clone)]
pub struct S3Blobs {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// Where streamed uploads are spooled (local to the node).
    spool: Arc<PathBuf>,
    url: Arc<String>,
}

fn s3_err(what: &str, e: object_store::Error) -> StoreError {
    StoreError::Io(format!("S3 {what}: {e}"))
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

/// `t` cut to whole seconds.
fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn info_of(sha256: String, meta: &ObjectMeta) -> BlobInfo {
    BlobInfo {
        sha256,
        len: meta.size,
        modified: whole_seconds(SystemTime::from(meta.last_modified)),
    }
}

impl S3Blobs {
    /// Connects to the bucket of `config` and checks that it answers (a listing under the
    /// prefix), so a wrong endpoint, bucket or key fails the start, not the first publish.
    /// Streamed uploads are spooled under `spool`.
    pub async fn open(config: &S3Config, creds: &S3Credentials, spool: PathBuf) -> StoreResult<Self> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&creds.access_key_id)
            .with_secret_access_key(&creds.secret_access_key)
            .with_allow_http(config.allow_http)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(config.allow_http)
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(60)),
            )
            .with_retry(RetryConfig {
                max_retries: 4,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            });
        if let Some(token) = &creds.session_token {
            builder = builder.with_token(token);
        }
        if let Some(endpoint) = &config.endpoint {
            // Path-style requests (`endpoint/bucket/key`): what self-hosted engines expect.
            builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
        }
        let store = builder
            .build()
            .map_err(|e| StoreError::Io(format!("cannot set up S3 for {}: {e}", config.url())))?;
        std::fs::create_dir_all(&spool)?;
        let blobs = S3Blobs {
            store: Arc::new(store),
            prefix: config.prefix.clone(),
            spool: Arc::new(spool),
            url: Arc::new(config.url()),
        };
        blobs
            .store
            .list_with_delimiter(Some(&blobs.key("quarantine", "")))
            .await
            .map_err(|e| {
                StoreError::Io(format!(
                    "cannot list the bucket {} (check endpoint, bucket and credentials): {e}",
                    blobs.url
                ))
            })?;
        Ok(blobs)
    }

    /// The key `<prefix>/<dir>/<name>`.
    fn key(&self, dir: &str, name: &str) -> ObjPath {
        let mut k = String::new();
        if !self.prefix.is_empty() {
            k.push_str(&self.prefix);
            k.push('/');
        }
        k.push_str(dir);
        if !name.is_empty() {
            k.push('/');
            k.push_str(name);
        }
        ObjPath::from(k)
    }

    fn blob_key(&self, sha256: &str) -> ObjPath {
        self.key("crates", sha256)
    }

    fn held_key(&self, sha256: &str) -> ObjPath {
        self.key("quarantine", sha256)
    }

    async fn head(&self, key: &ObjPath) -> StoreResult<Option<ObjectMeta>> {
        match self.store.head(key).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(s3_err("head", e)),
        }
    }

    /// Sends the spooled file at `path` (`len` bytes) under `sha`'s key.
    async fn upload_file(&self, path: &std::path::Path, sha: &str, len: u64) -> StoreResult<()> {
        let key = self.blob_key(sha);
        if len <= PART_BYTES {
            let bytes = tokio::fs::read(path).await?;
            self.store
                .put(&key, PutPayload::from(bytes))
                .await
                .map_err(|e| s3_err("put", e))?;
            return Ok(());
        }
        let upload = self
            .store
            .put_multipart(&key)
            .await
            .map_err(|e| s3_err("multipart upload", e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES as usize);
        let mut file = tokio::fs::File::open(path).await?;
        let mut buf = vec![0u8; 1 << 20];
        let sent: StoreResult<()> = async {
            loop {
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                writer
                    .wait_for_capacity(4)
                    .await
                    .map_err(|e| s3_err("multipart upload", e))?;
                writer.write(&buf[..n]);
            }
        }
        .await;
        match sent {
            Ok(()) => {
                writer.finish().await.map_err(|e| s3_err("multipart upload", e))?;
                Ok(())
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }
}

/// A reader that is `Sync` because it is only ever used through `&mut` (a stream of the
/// object-store client is `Send` only).
struct SyncReader<R>(std::sync::Mutex<R>);

impl<R: AsyncRead + Unpin> AsyncRead for SyncReader<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let inner = match self.get_mut().0.get_mut() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        Pin::new(inner).poll_read(cx, buf)
    }
}

#[async_trait]
impl Blobs for S3Blobs {
    async fn put(&self, bytes: bytes::Bytes) -> StoreResult<String> {
        let sha = hex::encode(Sha256::digest(&bytes));
        // Always a PUT, also when the blob exists: it renews the modification time that gc's
        // grace period looks at, and the bytes are the same by construction.
        self.store
            .put(&self.blob_key(&sha), PutPayload::from(bytes))
            .await
            .map_err(|e| s3_err("put", e))?;
        Ok(sha)
    }

    async fn put_stream(&self, reader: &mut (dyn AsyncRead + Send + Unpin)) -> StoreResult<(String, u64)> {
        let path = self.spool.join(format!("s3-{:016x}", rand::random::<u64>()));
        let mut file = tokio::fs::File::create(&path).await?;
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        let mut buf = vec![0u8; 64 << 10];
        let spooled: std::io::Result<()> = async {
            loop {
                let n = reader.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n]).await?;
                len += n as u64;
            }
            file.flush().await
        }
        .await;
        drop(file);
        let result = match spooled {
            Ok(()) => {
                let sha = hex::encode(hasher.finalize());
                self.upload_file(&path, &sha, len).await.map(|()| (sha, len))
            }
            Err(e) => Err(e.into()),
        };
        let _ = tokio::fs::remove_file(&path).await;
        result
    }

    async fn get(&self, sha256: &str) -> StoreResult<Option<BlobReader>> {
        if !is_blob_name(sha256) {
            return Ok(None);
        }
        match self.store.get(&self.blob_key(sha256)).await {
            Ok(got) => {
                let len = got.meta.size;
                let stream = got.into_stream().map_err(std::io::Error::other).boxed();
                let reader = tokio_util::io::StreamReader::new(stream);
                Ok(Some(BlobReader {
                    len,
                    reader: Box::pin(SyncReader(std::sync::Mutex::new(reader))),
                }))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(s3_err("get", e)),
        }
    }

    async fn exists(&self, sha256: &str) -> StoreResult<bool> {
        Ok(self.info(sha256).await?.is_some())
    }

    async fn info(&self, sha256: &str) -> StoreResult<Option<BlobInfo>> {
        if !is_blob_name(sha256) {
            return Ok(None);
        }
        Ok(self
            .head(&self.blob_key(sha256))
            .await?
            .map(|m| info_of(sha256.to_owned(), &m)))
    }

    async fn delete(&self, sha256: &str) -> StoreResult<bool> {
        if !is_blob_name(sha256) {
            return Ok(false);
        }
        // S3 answers a DELETE of a missing key with success: ask first.
        let key = self.blob_key(sha256);
        if self.head(&key).await?.is_none() {
            return Ok(false);
        }
        self.store.delete(&key).await.map_err(|e| s3_err("delete", e))?;
        Ok(true)
    }

    async fn quarantine(&self, sha256: &str) -> StoreResult<bool> {
        if !is_blob_name(sha256) {
            return Ok(false);
        }
        // Copy, then delete: S3 has no rename. A publish that writes the blob between the two
        // loses it to the delete, and finds it gone after its commit (and writes it again) or
        // gc finds the new reference and restores it; see `gc`.
        match self.store.copy(&self.blob_key(sha256), &self.held_key(sha256)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(false),
            Err(e) => return Err(s3_err("copy to quarantine", e)),
        }
        self.store
            .delete(&self.blob_key(sha256))
            .await
            .map_err(|e| s3_err("delete", e))?;
        Ok(true)
    }

    async fn restore(&self, sha256: &str) -> StoreResult<()> {
        if !is_blob_name(sha256) {
            return Ok(());
        }
        let held = self.held_key(sha256);
        if self.head(&self.blob_key(sha256)).await?.is_none() {
            match self.store.copy(&held, &self.blob_key(sha256)).await {
                Ok(()) => {}
                // Nothing held (purged, or restored already).
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) => return Err(s3_err("copy from quarantine", e)),
            }
        }
        // Written again meanwhile, or copied back: the held copy goes.
        self.store.delete(&held).await.map_err(|e| s3_err("delete", e))
    }

    async fn purge(&self, sha256: &str) -> StoreResult<()> {
        if !is_blob_name(sha256) {
            return Ok(());
        }
        self.store
            .delete(&self.held_key(sha256))
            .await
            .map_err(|e| s3_err("delete", e))
    }

    async fn list(&self) -> StoreResult<Vec<BlobInfo>> {
        let dir = self.key("crates", "");
        let mut listing = self.store.list(Some(&dir));
        let mut out = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| s3_err("list", e))?;
            // Only `crates/<sha256>` directly: anything else under the prefix is not a blob.
            let mut parts = meta.location.prefix_match(&dir).into_iter().flatten();
            let (Some(name), None) = (parts.next(), parts.next()) else {
                continue;
            };
            let name = name.as_ref().to_owned();
            if is_blob_name(&name) {
                out.push(info_of(name, &meta));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A bucket for tests, named by `CARGOHOLD_TEST_S3_ENDPOINT`, `CARGOHOLD_TEST_S3_BUCKET`,
    /// `CARGOHOLD_TEST_S3_ACCESS_KEY` and `CARGOHOLD_TEST_S3_SECRET_KEY` (`.ci/run` starts
    /// Ceph RGW and sets them), with a fresh random prefix so every test starts empty; `None`
    /// (the test prints that it was skipped) when they are not set.
    pub(crate) fn test_bucket(test: &str) -> Option<(S3Config, S3Credentials)> {
        let var = |v: &str| std::env::var(v).ok().filter(|s| !s.is_empty());
        let (Some(endpoint), Some(bucket), Some(ak), Some(sk)) = (
            var("CARGOHOLD_TEST_S3_ENDPOINT"),
            var("CARGOHOLD_TEST_S3_BUCKET"),
            var("CARGOHOLD_TEST_S3_ACCESS_KEY"),
            var("CARGOHOLD_TEST_S3_SECRET_KEY"),
        ) else {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("skipped {test} on S3: CARGOHOLD_TEST_S3_ENDPOINT (and _BUCKET, _ACCESS_KEY, _SECRET_KEY) is not set (.ci/run starts Ceph RGW)\n")
                    .as_bytes(),
            );
            return None;
        };
        let config = S3Config {
            bucket,
            prefix: format!("test-{:016x}", rand::random::<u64>()),
            allow_http: endpoint.starts_with("http://"),
            endpoint: Some(endpoint),
            region: crate::config::store::DEFAULT_S3_REGION.to_owned(),
        };
        let creds = S3Credentials {
            access_key_id: ak,
            secret_access_key: sk,
            session_token: None,
        };
        Some((config, creds))
    }

    #[test]
    fn credentials_come_from_the_environment_and_are_never_printed() {
        let env: BTreeMap<String, String> = [
            ("AWS_ACCESS_KEY_ID".to_owned(), "AKIDEXAMPLE".to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), "wJalrXUtnFEMI".to_owned()),
        ]
        .into();
        let c = S3Credentials::from_env(&env).unwrap();
        assert!(c.session_token.is_none());
        assert!(!format!("{c:?}").contains("wJalrXUtnFEMI"));
        let partial: BTreeMap<String, String> = [("AWS_ACCESS_KEY_ID".to_owned(), "AKID".to_owned())].into();
        let e = S3Credentials::from_env(&partial).unwrap_err().to_string();
        assert!(e.contains("AWS_SECRET_ACCESS_KEY"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_blobs_pass_the_conformance_suite() {
        let Some((config, creds)) = test_bucket("the blob conformance suite") else {
            return;
        };
        let spool = tempfile::tempdir().unwrap();
        let blobs = S3Blobs::open(&config, &creds, spool.path().to_owned()).await.unwrap();
        crate::store::conformance::blobs(&blobs).await;
        // A stray key under the prefix is not a blob.
        blobs
            .store
            .put(&blobs.key("crates", "notes.txt"), PutPayload::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(blobs.list().await.unwrap().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_streamed_blobs_go_up_in_parts_and_read_back() {
        let Some((config, creds)) = test_bucket("the multipart upload") else {
            return;
        };
        let spool = tempfile::tempdir().unwrap();
        let blobs = S3Blobs::open(&config, &creds, spool.path().to_owned()).await.unwrap();
        let data: Vec<u8> = (0..(PART_BYTES as usize * 2 + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut reader: &[u8] = &data;
        let (sha, len) = blobs.put_stream(&mut reader).await.unwrap();
        assert_eq!(len, data.len() as u64);
        assert_eq!(sha, hex::encode(Sha256::digest(&data)));
        let mut got = blobs.get(&sha).await.unwrap().unwrap();
        assert_eq!(got.len, len);
        let mut back = Vec::new();
        got.reader.read_to_end(&mut back).await.unwrap();
        assert!(back == data, "the bytes read back differ");
        assert!(
            std::fs::read_dir(spool.path()).unwrap().next().is_none(),
            "the spool is emptied"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upload_cut_short_leaves_nothing_in_the_bucket_or_the_spool() {
        let Some((config, creds)) = test_bucket("the cut upload") else {
            return;
        };
        let spool = tempfile::tempdir().unwrap();
        let blobs = S3Blobs::open(&config, &creds, spool.path().to_owned()).await.unwrap();
        let (mut w, mut r) = tokio::io::duplex(1024);
        let writer = tokio::spawn(async move {
            w.write_all(&[5u8; 4000]).await.unwrap();
            // Dropped without a clean end: the reader sees an error, as from a cut connection.
        });
        struct Failing<R>(R, usize);
        impl<R: AsyncRead + Unpin> AsyncRead for Failing<R> {
            fn poll_read(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                let before = buf.filled().len();
                let res = Pin::new(&mut self.0).poll_read(cx, buf);
                if let Poll::Ready(Ok(())) = &res {
                    let n = buf.filled().len() - before;
                    if n == 0 {
                        return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut")));
                    }
                    self.1 += n;
                }
                res
            }
        }
        let mut failing = Failing(&mut r, 0);
        assert!(blobs.put_stream(&mut failing).await.is_err());
        writer.await.unwrap();
        assert!(blobs.list().await.unwrap().is_empty(), "nothing under a final key");
        assert!(
            std::fs::read_dir(spool.path()).unwrap().next().is_none(),
            "the spool is emptied"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gc_passes_the_conformance_suite_on_s3() {
        use crate::store::{sql::SqlMetadata, Metadata, PrivateStore};
        let Some((config, creds)) = test_bucket("the gc conformance suite") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let blobs = Arc::new(S3Blobs::open(&config, &creds, dir.path().join("spool")).await.unwrap());
        // PostgreSQL + S3 when both are there (as in CI), else SQLite + S3.
        let meta: Arc<dyn Metadata> =
            match crate::store::sql::tests::fresh_postgres("gc on PostgreSQL + S3 (SQLite + S3 instead)").await {
                Some(url) => Arc::new(SqlMetadata::open_postgres(&url).await.unwrap()),
                None => Arc::new(SqlMetadata::open_sqlite(&dir.path().join("registry.db")).await.unwrap()),
            };
        crate::store::conformance::gc(&PrivateStore { meta, blobs }).await;
    }

    #[tokio::test]
    async fn a_wrong_bucket_or_key_fails_on_opening() {
        let Some((mut config, creds)) = test_bucket("the wrong-bucket check") else {
            return;
        };
        let spool = tempfile::tempdir().unwrap();
        let wrong_key = S3Credentials {
            secret_access_key: "not-the-secret".into(),
            ..creds.clone()
        };
        let e = S3Blobs::open(&config, &wrong_key, spool.path().to_owned())
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cannot list the bucket"), "{e}");
        assert!(!e.contains("not-the-secret"), "{e}");
        config.bucket = format!("no-such-bucket-{:08x}", rand::random::<u32>());
        assert!(S3Blobs::open(&config, &creds, spool.path().to_owned()).await.is_err());
    }
}
