//! TLS for `ssl` and `sasl_ssl` listeners: rustls server configurations built from PEM files,
//! rebuilt when the files change, and the principal a client certificate maps to.
//!
//! Protocols are TLS 1.2 and 1.3 with rustls's default (modern, AEAD-only) suites on ring.
//! `--tls-ca` makes `ssl` listeners require a client certificate signed by that CA (Kafka's
//! `ssl.client.auth=required`); `sasl_ssl` listeners never ask for one, since SASL names
//! the principal there. A configuration that fails to load never replaces a working one:
//! the broker keeps serving with the last good files and says why the new ones were refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::der_parser::asn1_rs::ToDer;

/// Certificate files of `--tls-cert`, `--tls-key` and `--tls-ca`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the node's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that sign client certificates (mTLS on `ssl` listeners).
    pub ca: Option<PathBuf>,
}

/// The configurations one set of files gives: one per TLS listener kind.
#[derive(Clone, Debug)]
pub struct TlsConfigs {
    /// For `ssl` listeners: client certificates required when a CA is configured.
    pub ssl: Arc<ServerConfig>,
    /// For `sasl_ssl` listeners: never asks for a client certificate.
    pub sasl_ssl: Arc<ServerConfig>,
    /// For dialing other nodes (`--rpc-tls`, with a CA): presents this node's certificate
    /// and checks the peer's against the CA. (Their listener uses `ssl`, which then
    /// requires a client certificate.)
    pub node_client: Option<Arc<ClientConfig>>,
}

/// rustls's ring provider. rustls deprecates it for its lack of post-quantum key exchange
/// (aws-lc-rs has it); ring builds with nothing but a C compiler, and Kafka clients
/// (OpenSSL in librdkafka, the JDK) negotiate X25519 or P-256 today.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads `files` into server configurations, or says which file is wrong and why.
pub fn load(files: &TlsFiles) -> Result<TlsConfigs, String> {
    let certs = read_certs(&files.cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        format!(
            "--tls-key {}: no usable private key ({e})",
            files.key.display()
        )
    })?;
    let builder = || {
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS protocol versions: {e}"))
    };
    let plain = builder()?
        .with_no_client_auth()
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    let (ssl, node_client) = match &files.ca {
        None => (plain.clone(), None),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca, "--tls-ca")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
            }
            let roots = Arc::new(roots);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
            let ssl = builder()?
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs.clone(), key.clone_key())
                .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
            let client = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS protocol versions: {e}"))?
                .with_root_certificates(roots)
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("--tls-cert/--tls-key as a client certificate: {e}"))?;
            (ssl, Some(Arc::new(client)))
        }
    };
    Ok(TlsConfigs {
        ssl: Arc::new(ssl),
        sasl_ssl: Arc::new(plain),
        node_client,
    })
}

/// A client configuration trusting the CAs in `ca`, presenting `identity` (certificate
/// chain and key) when given: how the `sluice` CLI connects to `ssl` and `sasl_ssl`
/// listeners.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca, "--tls-ca")? {
        roots
            .add(cert)
            .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = read_certs(cert, "--tls-cert")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("--tls-key {}: no usable private key ({e})", key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?
        }
    };
    Ok(Arc::new(config))
}

fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{flag} {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{flag} {}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// What identifies a file's content without reading it: a replaced or rewritten file
/// changes its modification time, size or inode.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp(Option<(SystemTime, u64, u64)>);

impl Stamp {
    fn of(path: &Path) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp(
            std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino()))),
        )
    }
}

/// Watches the files of one [`TlsFiles`] and rebuilds the configurations when they change
/// (or when asked, on SIGHUP).
pub struct Reloader {
    files: TlsFiles,
    stamps: Vec<Stamp>,
}

impl Reloader {
    /// Starts from the files as they are now (already loaded by the caller).
    pub fn new(files: TlsFiles) -> Reloader {
        let stamps = Reloader::stamps_of(&files);
        Reloader { files, stamps }
    }

    fn stamps_of(files: &TlsFiles) -> Vec<Stamp> {
        [Some(&files.cert), Some(&files.key), files.ca.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| Stamp::of(p))
            .collect()
    }

    /// New configurations when a file changed since the last call (or `force`), `None`
    /// when nothing changed. A failed load is reported once per change of the files.
    pub fn poll(&mut self, force: bool) -> Option<Result<TlsConfigs, String>> {
        let stamps = Reloader::stamps_of(&self.files);
        if stamps == self.stamps && !force {
            return None;
        }
        self.stamps = stamps;
        Some(load(&self.files))
    }
}

/// The principal of a client certificate (DER): `User:` and the certificate's subject as
/// Kafka's default `ssl.principal.mapping.rules` gives it, Java's RFC 2253 form of the
/// distinguished name (`CN=alice,OU=eng,O=Acme,C=US`: most specific RDN first, `,` between
/// RDNs, `+` inside a multi-valued one, special characters escaped with `\`).
pub fn certificate_principal(der: &[u8]) -> Result<String, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("client certificate: {e}"))?;
    Ok(format!("User:{}", rfc2253(cert.subject())))
}

fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let short = match oid.as_str() {
                        "2.5.4.3" => Some("CN"),
                        "2.5.4.6" => Some("C"),
                        "2.5.4.7" => Some("L"),
                        "2.5.4.8" => Some("ST"),
                        "2.5.4.9" => Some("STREET"),
                        "2.5.4.10" => Some("O"),
                        "2.5.4.11" => Some("OU"),
                        "0.9.2342.19200300.100.1.25" => Some("DC"),
                        "0.9.2342.19200300.100.1.1" => Some("UID"),
                        _ => None,
                    };
                    match (short, atv.as_str()) {
                        (Some(short), Ok(value)) => format!("{short}={}", escape(value)),
                        // Java writes attributes it has no name for, or whose value is not
                        // a string, as the dotted OID and `#` with the value's DER in hex.
                        _ => {
                            let hex: String = atv
                                .attr_value()
                                .to_der_vec()
                                .unwrap_or_default()
                                .iter()
                                .map(|b| format!("{b:02x}"))
                                .collect();
                            format!("{oid}=#{hex}")
                        }
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    // The certificate lists RDNs from the root of the name down; RFC 2253 the other way.
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// RFC 2253 escaping of an attribute value.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn cert_with(dn: &[(DnType, &str)]) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["localhost".into()]).unwrap();
        let mut name = DistinguishedName::new();
        for (t, v) in dn {
            name.push(t.clone(), *v);
        }
        params.distinguished_name = name;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn principals_are_the_subject_in_rfc2253_order() {
        let der = cert_with(&[
            (DnType::CountryName, "US"),
            (DnType::OrganizationName, "Acme, Inc."),
            (DnType::OrganizationalUnitName, "eng"),
            (DnType::CommonName, "alice"),
        ]);
        assert_eq!(
            certificate_principal(&der).unwrap(),
            "User:CN=alice,OU=eng,O=Acme\\, Inc.,C=US"
        );
        assert!(certificate_principal(b"not a certificate").is_err());
        assert_eq!(escape(" #a+b "), "\\ #a\\+b\\ ");
    }

    #[test]
    fn configurations_load_and_reload_only_when_files_change() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = TlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            ca: Some(dir.path().join("ca.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        std::fs::write(files.ca.as_ref().unwrap(), cert.pem()).unwrap();
        load(&files).unwrap();
        let mut r = Reloader::new(files.clone());
        assert!(r.poll(false).is_none());
        assert!(r.poll(true).unwrap().is_ok());
        // A broken key is refused (the caller keeps the old configuration), once.
        std::fs::write(&files.key, "garbage that is longer than before").unwrap();
        assert!(r.poll(false).unwrap().unwrap_err().contains("--tls-key"));
        assert!(r.poll(false).is_none());
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        assert!(r.poll(false).unwrap().is_ok());
        std::fs::write(&files.cert, "").unwrap();
        assert!(load(&files).unwrap_err().contains("no certificate"));
    }
}
