//! Which certificates the upstream client trusts: the platform's trust store (read once per
//! process with `rustls-native-certs`, which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`), plus
//! a registry's own `ca_file`. When the platform has no root at all (a minimal container
//! without a CA bundle), the built-in Mozilla list stands in, with a warning.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// Where the trusted roots came from (logged once at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// The platform's store (or `SSL_CERT_FILE` / `SSL_CERT_DIR`): this many roots.
    Platform(usize),
    /// The platform had none: the built-in list.
    BuiltIn,
}

struct PlatformRoots {
    store: Arc<RootCertStore>,
    source: RootSource,
}

fn platform() -> &'static PlatformRoots {
    static ROOTS: OnceLock<PlatformRoots> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for e in &loaded.errors {
            tracing::warn!(error = %e, "problem reading the platform's trust store");
        }
        let mut store = RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(loaded.certs);
        if ignored > 0 {
            tracing::debug!(
                ignored,
                "unusable certificates in the platform's trust store were skipped"
            );
        }
        if added > 0 {
            tracing::info!(roots = added, "upstream TLS trusts the platform's trust store");
            return PlatformRoots {
                store: Arc::new(store),
                source: RootSource::Platform(added),
            };
        }
        tracing::warn!(
            "the platform's trust store has no usable root certificate (no CA bundle installed, or SSL_CERT_FILE / \
             SSL_CERT_DIR point at none); upstream TLS falls back to the built-in list of public roots"
        );
        let mut store = RootCertStore::empty();
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        PlatformRoots {
            store: Arc::new(store),
            source: RootSource::BuiltIn,
        }
    })
}

/// Where the platform roots came from (loads them on first use).
pub fn root_source() -> RootSource {
    platform().source.clone()
}

/// The certificates of a PEM file; an error names the file (unreadable, not PEM, or empty).
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read the CA file `{}`: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the CA file `{}` is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("the CA file `{}` holds no certificate", path.display()));
    }
    Ok(certs)
}

/// A rustls client configuration trusting the platform's roots plus those of `ca_file`, with
/// ALPN `h2` and `http/1.1`.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, String> {
    let roots = match ca_file {
        None => platform().store.clone(),
        Some(path) => {
            let mut store = (*platform().store).clone();
            for cert in read_pem_certs(path)? {
                store
                    .add(cert)
                    .map_err(|e| format!("the CA file `{}` holds an unusable certificate: {e}", path.display()))?;
            }
            Arc::new(store)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(read_pem_certs(&missing).unwrap_err().contains("missing.pem"));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(read_pem_certs(&empty).unwrap_err().contains("holds no certificate"));
        assert!(client_config(Some(&empty)).is_err());
    }
}
