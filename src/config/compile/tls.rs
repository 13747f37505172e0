//! PEM files named by the config (`[server.tls]` cert and key, an upstream's `ca`): read
//! and parsed once here, so `check` reports a missing file, a file with no certificate
//! or a key that does not match its certificate at its line instead of the listener
//! failing at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls;

/// `p` as written, relative to the config file's directory `base`.
pub(super) fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// The certificates (DER) of a PEM file; at least one.
pub(super) fn load_certs(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let mut certs = Vec::new();
    for c in rustls_pemfile::certs(&mut &bytes[..]) {
        let c = c.map_err(|e| format!("`{}` is not valid PEM: {e}", path.display()))?;
        certs.push(c.as_ref().to_vec());
    }
    if certs.is_empty() {
        return Err(format!(
            "`{}` holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)",
            path.display()
        ));
    }
    Ok(certs)
}

/// Trusted roots for an upstream: every certificate of the file must be usable as one.
pub(super) fn load_ca(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let certs = load_certs(path)?;
    let mut store = rustls::RootCertStore::empty();
    for (i, c) in certs.iter().enumerate() {
        store
            .add(rustls::pki_types::CertificateDer::from(c.clone()))
            .map_err(|e| format!("certificate {i} of `{}`: {e}", path.display()))?;
    }
    Ok(certs)
}

/// A certificate chain and its private key, checked to belong together.
pub(super) fn check_cert_key(cert: &Path, key: &Path) -> Result<(), String> {
    let chain = load_certs(cert)?
        .into_iter()
        .map(rustls::pki_types::CertificateDer::from)
        .collect::<Vec<_>>();
    let bytes = std::fs::read(key).map_err(|e| format!("cannot read `{}`: {e}", key.display()))?;
    let key_der = rustls_pemfile::private_key(&mut &bytes[..])
        .map_err(|e| format!("`{}` is not valid PEM: {e}", key.display()))?
        .ok_or_else(|| format!("`{}` holds no PEM private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            format!(
                "`{}` and `{}` do not make a usable certificate and key: {e}",
                cert.display(),
                key.display()
            )
        })?;
    Ok(())
}
