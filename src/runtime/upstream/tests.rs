//! Unit tests of the upstream pools: peer options, SNI per entry, health-check hosts.

use super::test_support::{a, backend, http_check, spec};
use super::*;
use pingora::protocols::ALPN;

fn versions(p: &HttpPeer) -> (u8, u8) {
    (
        p.options.alpn.get_max_http_version(),
        p.options.alpn.get_min_http_version(),
    )
}

#[test]
fn peer_options_follow_protocol_tls_and_timeouts() {
    let p = Pool::new(&spec(
        &["127.0.0.1:9001"],
        &["127.0.0.1:9001"],
        Protocol::Http1,
        false,
    ))
    .unwrap()
    .peer();
    assert_eq!(p._address, PeerAddr::Inet(a("127.0.0.1:9001")));
    assert!(!p.is_tls());
    assert_eq!(p.sni, "");
    assert_eq!(p.options.alpn, ALPN::H1);
    assert_eq!(versions(&p), (1, 1));
    assert_eq!(
        p.options.connection_timeout,
        Some(Duration::from_millis(700))
    );
    // The per-read timeout is the longer of read and idle timeouts (30 s, 45 s).
    assert_eq!(p.options.read_timeout, Some(Duration::from_secs(45)));
    assert_eq!(p.options.idle_timeout, None);
    assert!(p.options.ca.is_none());

    // h2c: HTTP/2 only, without TLS (prior knowledge).
    let p = Pool::new(&spec(
        &["127.0.0.1:9002"],
        &["127.0.0.1:9002"],
        Protocol::H2c,
        false,
    ))
    .unwrap()
    .peer();
    assert!(!p.is_tls());
    assert_eq!((p.options.alpn.clone(), versions(&p)), (ALPN::H2, (2, 2)));

    // h2: HTTP/2 over TLS, SNI from the host name, certificates verified.
    let p = Pool::new(&spec(
        &["model.internal:443"],
        &["10.0.0.1:443"],
        Protocol::H2,
        true,
    ))
    .unwrap()
    .peer();
    assert!(p.is_tls());
    assert_eq!(p.sni, "model.internal");
    assert_eq!((p.options.alpn.clone(), versions(&p)), (ALPN::H2, (2, 2)));
    assert!(p.options.verify_cert && p.options.verify_hostname);

    // HTTP/1.1 over TLS to an IP literal: the SNI is the IP (never empty, which
    // would turn verification off).
    let p = Pool::new(&spec(
        &["127.0.0.1:8443"],
        &["127.0.0.1:8443"],
        Protocol::Http1,
        true,
    ))
    .unwrap()
    .peer();
    assert!(p.is_tls());
    assert_eq!(p.sni, "127.0.0.1");
    assert_eq!(versions(&p), (1, 1));
    let p = Pool::new(&spec(
        &["[::1]:8443"],
        &["[::1]:8443"],
        Protocol::Http1,
        true,
    ))
    .unwrap()
    .peer();
    assert_eq!(p.sni, "::1");

    // A configured SNI wins; verify = false turns both checks off; the CA is passed.
    let ca = test_pki::Pki::new().ca_der;
    let mut s = spec(&["127.0.0.1:8443"], &["127.0.0.1:8443"], Protocol::H2, true);
    s.sni = Some("m.example".into());
    s.verify = false;
    s.ca = Some(Arc::new(vec![ca.clone()]));
    let p = Pool::new(&s).unwrap().peer();
    assert_eq!(p.sni, "m.example");
    assert!(!p.options.verify_cert && !p.options.verify_hostname);
    let cas = p.options.ca.as_ref().unwrap();
    assert_eq!(cas.len(), 1);
    assert_eq!(cas[0].borrow_raw_cert(), &ca);
}

#[test]
fn each_address_gets_the_sni_of_its_entry() {
    let s = spec(
        &["a.internal:8443", "b.internal:9443", "10.0.0.9:9443"],
        &["10.0.0.1:8443", "10.0.0.2:9443", "10.0.0.9:9443"],
        Protocol::Http1,
        true,
    );
    let pool = Pool::new(&s).unwrap();
    assert!(!pool.resolve_at_start);
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let p = pool.peer();
        seen.insert((p._address.as_inet().unwrap().to_string(), p.sni.clone()));
    }
    let want: BTreeSet<(String, String)> = [
        ("10.0.0.1:8443", "a.internal"),
        ("10.0.0.2:9443", "b.internal"),
        ("10.0.0.9:9443", "10.0.0.9"),
    ]
    .iter()
    .map(|(x, y)| (x.to_string(), y.to_string()))
    .collect();
    assert_eq!(seen, want);
    // Two names on one port: which address is whose is a guess until resolved again.
    let s = spec(
        &["a.internal:443", "b.internal:443"],
        &["10.0.0.1:443", "10.0.0.2:443"],
        Protocol::Http1,
        true,
    );
    assert!(Pool::new(&s).unwrap().resolve_at_start);
}

#[test]
fn health_check_host_is_the_entry_without_a_default_port() {
    let e = HostEntry::parse("model.internal:443", true);
    assert_eq!(
        (e.authority.as_str(), e.name.as_str()),
        ("model.internal", "model.internal")
    );
    let e = HostEntry::parse("model.internal:8000", false);
    assert_eq!(e.authority, "model.internal:8000");
    let e = HostEntry::parse("[::1]:80", false);
    assert_eq!((e.authority.as_str(), e.name.as_str()), ("[::1]", "::1"));
    assert_eq!(e.literal, Some(a("[::1]:80")));
}

#[tokio::test]
async fn tls_peers_verify_the_certificate_of_an_ip_address() {
    let pki = test_pki::Pki::new();
    let other = test_pki::Pki::new();
    let b = backend(Some(pki.acceptor())).await;
    let addr = b.addr.to_string();
    let connector = pingora::connectors::TransportConnector::new(None);
    let tls_spec = |ca: &[u8], verify: bool, protocol: Protocol| {
        let mut s = spec(&[&addr], &[&addr], protocol, true);
        s.ca = Some(Arc::new(vec![ca.to_vec()]));
        s.verify = verify;
        s.health_check = http_check(1);
        s
    };

    // The right CA: the IP SAN matches the SNI 127.0.0.1; HTTP/1.1 and h2 checks pass.
    for protocol in [Protocol::Http1, Protocol::H2] {
        let pool = Pool::new(&tls_spec(&pki.ca_der, true, protocol)).unwrap();
        let peer = pool.peer();
        assert_eq!(peer.sni, "127.0.0.1");
        connector.new_stream(&*peer).await.unwrap();
        pool.check_now().await;
        assert!(pool.health()[0].healthy, "{protocol:?}");
        let want = match protocol {
            Protocol::H2 => http::Version::HTTP_2,
            _ => http::Version::HTTP_11,
        };
        assert_eq!(b.seen.lock().unwrap().last().unwrap().0, want);
    }

    // Another CA: refused, and the check fails.
    let pool = Pool::new(&tls_spec(&other.ca_der, true, Protocol::Http1)).unwrap();
    let err = connector.new_stream(&*pool.peer()).await.unwrap_err();
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
    pool.check_now().await;
    assert!(!pool.health()[0].healthy);

    // A name the certificate does not hold: refused.
    let mut s = tls_spec(&pki.ca_der, true, Protocol::Http1);
    s.sni = Some("wrong.example".into());
    let pool = Pool::new(&s).unwrap();
    assert!(connector.new_stream(&*pool.peer()).await.is_err());

    // verify = false accepts both.
    let pool = Pool::new(&tls_spec(&other.ca_der, false, Protocol::Http1)).unwrap();
    connector.new_stream(&*pool.peer()).await.unwrap();
    let mut s = tls_spec(&other.ca_der, false, Protocol::Http1);
    s.sni = Some("wrong.example".into());
    let pool = Pool::new(&s).unwrap();
    connector.new_stream(&*pool.peer()).await.unwrap();
    pool.check_now().await;
    assert!(pool.health()[0].healthy);
}

mod test_pki {
    use std::sync::Arc;
    use tokio_rustls::rustls;

    /// A CA and a server certificate it signed for 127.0.0.1 and localhost.
    pub struct Pki {
        pub ca_der: Vec<u8>,
        leaf_der: Vec<u8>,
        leaf_key: Vec<u8>,
    }

    impl Pki {
        pub fn new() -> Pki {
            use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
            let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.distinguished_name
                .push(rcgen::DnType::CommonName, "abgate test CA");
            let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
            let key = KeyPair::generate().unwrap();
            let leaf = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            Pki {
                ca_der: ca.der().to_vec(),
                leaf_der: leaf.der().to_vec(),
                leaf_key: key.serialize_der(),
            }
        }

        pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![self.leaf_der.clone().into()],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(self.leaf_key.clone().into()),
                )
                .unwrap();
            cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
        }
    }
}
