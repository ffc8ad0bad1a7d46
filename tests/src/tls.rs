//! Test certificates for TLS listeners: a CA, a broker certificate for 127.0.0.1 and
//! localhost, a client certificate, and a second, unrelated CA with its own broker
//! certificate, written as PEM files into a directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// PEM files of one test PKI; see the module docs.
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Signed by `ca`; subject `CN=alice,OU=eng,O=sluice`.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed none of the above.
    pub other_ca: PathBuf,
    /// A broker certificate (for 127.0.0.1 and localhost) signed by `other_ca`.
    pub other_server_cert: PathBuf,
    pub other_server_key: PathBuf,
}

/// The principal Kafka gives the client certificate of [`TestPki`].
pub const CLIENT_PRINCIPAL: &str = "User:CN=alice,OU=eng,O=sluice";

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(p, KeyPair::generate().expect("CA key")).expect("CA certificate")
}

/// A certificate signed by `issuer`: for `names` (DNS names or IP addresses), subject `dn`.
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    dn: &[(DnType, &str)],
) -> (String, String) {
    let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("certificate params");
    for (t, v) in dn {
        p.distinguished_name.push(t.clone(), *v);
    }
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, issuer).expect("certificate");
    (cert.pem(), key.serialize_pem())
}

impl TestPki {
    /// Generates a fresh PKI into `dir`.
    pub fn generate(dir: &Path) -> TestPki {
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            path
        };
        let ca1 = ca("sluice test CA");
        let ca2 = ca("another CA");
        let server_names = ["127.0.0.1", "localhost"];
        let (sc, sk) = leaf(&ca1, &server_names, &[(DnType::CommonName, "broker")]);
        let (cc, ck) = leaf(
            &ca1,
            &[],
            &[
                (DnType::OrganizationName, "sluice"),
                (DnType::OrganizationalUnitName, "eng"),
                (DnType::CommonName, "alice"),
            ],
        );
        let (oc, ok) = leaf(&ca2, &server_names, &[(DnType::CommonName, "broker")]);
        TestPki {
            ca: write("ca.pem", &ca1.pem()),
            server_cert: write("server.pem", &sc),
            server_key: write("server.key", &sk),
            client_cert: write("client.pem", &cc),
            client_key: write("client.key", &ck),
            other_ca: write("other-ca.pem", &ca2.pem()),
            other_server_cert: write("other-server.pem", &oc),
            other_server_key: write("other-server.key", &ok),
        }
    }
}
