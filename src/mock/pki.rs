//! A throwaway public-key infrastructure for TLS tests: a CA and a server certificate it
//! signed, valid for `localhost`, `127.0.0.1` and `::1`, written as PEM files.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let dir = std::env::temp_dir().join("abgate-pki-example");
//! std::fs::create_dir_all(&dir)?;
//! let pki = abgate::mock::TestPki::generate(&dir)?;
//! let mock = abgate::mock::MockServer::builder().tls(pki.tls_files()).start()?;
//! // A client trusting `pki.ca` (and only it) can now reach https://localhost:{port}.
//! # drop(mock);
//! # Ok(())
//! # }
//! ```

use super::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::io;
use std::path::{Path, PathBuf};

/// The names the server certificate is valid for (DNS and IP subject alternative names).
pub const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A CA and a server certificate it signed, as files in one directory.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA certificate (PEM): the root a client must trust.
    pub ca: PathBuf,
    /// The server certificate (PEM, the leaf alone).
    pub cert: PathBuf,
    /// The server's private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// Contents of `ca`.
    pub ca_pem: String,
    /// Contents of `cert`.
    pub cert_pem: String,
    /// Contents of `key`.
    pub key_pem: String,
}

impl TestPki {
    /// A new CA and server certificate written to `dir` as `ca.pem`, `server.crt` and
    /// `server.key` (overwriting them).
    pub fn generate(dir: &Path) -> io::Result<TestPki> {
        Self::generate_as(dir, "", "abgate test CA")
    }

    /// Another, independent CA and server certificate (same names), written to `dir` as
    /// `other-ca.pem`, `other-server.crt` and `other-server.key`: a server that a client
    /// trusting only [`TestPki::generate`]'s CA must refuse. Both can share a directory.
    pub fn generate_other_ca(dir: &Path) -> io::Result<TestPki> {
        Self::generate_as(dir, "other-", "abgate other test CA")
    }

    /// The server certificate and key, for [`super::MockOptions::tls`].
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }

    fn generate_as(dir: &Path, prefix: &str, ca_name: &str) -> io::Result<TestPki> {
        let err = |e: rcgen::Error| io::Error::other(format!("test PKI: {e}"));
        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let names: Vec<String> = SERVER_NAMES.iter().map(|s| s.to_string()).collect();
        let mut leaf = CertificateParams::new(names).map_err(err)?;
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().map_err(err)?;
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(err)?;

        let pki = TestPki {
            ca: dir.join(format!("{prefix}ca.pem")),
            cert: dir.join(format!("{prefix}server.crt")),
            key: dir.join(format!("{prefix}server.key")),
            ca_pem: ca_cert.pem(),
            cert_pem: leaf_cert.pem(),
            key_pem: leaf_key.serialize_pem(),
        };
        std::fs::write(&pki.ca, &pki.ca_pem)?;
        std::fs::write(&pki.cert, &pki.cert_pem)?;
        std::fs::write(&pki.key, &pki.key_pem)?;
        Ok(pki)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_hold_a_ca_and_a_leaf_that_load_as_a_server_identity() {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::generate(dir.path()).unwrap();
        let other = TestPki::generate_other_ca(dir.path()).unwrap();
        assert_ne!(pki.ca_pem, other.ca_pem);
        assert_ne!(pki.ca, other.ca);
        for p in [
            &pki.ca,
            &pki.cert,
            &pki.key,
            &other.ca,
            &other.cert,
            &other.key,
        ] {
            assert!(p.exists(), "{}", p.display());
        }
        let ca = rustls_pemfile::certs(&mut pki.ca_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(ca.len(), 1);
        // The key belongs to the certificate (rustls checks when building the config).
        super::super::tls_acceptor(&pki.tls_files()).unwrap();
        super::super::tls_acceptor(&other.tls_files()).unwrap();
    }
}
