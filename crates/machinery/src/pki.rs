//! Keys and certificates in the forms Talos uses: Ed25519 for the OS API (PEM header
//! `ED25519 PRIVATE KEY`, PKCS#8 v1 inside), ECDSA P-256 for Kubernetes and etcd (SEC1,
//! `EC PRIVATE KEY`), CAs valid 10 years, leaf certificates signed by a CA.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber, SignatureAlgorithm,
};
use time::OffsetDateTime;

use crate::error::{Error, Result};

pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
pub const CLIENT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

const ED25519_PEM: &str = "ED25519 PRIVATE KEY";
const EC_PEM: &str = "EC PRIVATE KEY";
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Key algorithms Talos uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Ed25519,
    EcdsaP256,
}

impl KeyKind {
    fn alg(self) -> &'static SignatureAlgorithm {
        match self {
            KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
            KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        }
    }
}

/// A private key with its Talos PEM encoding.
pub struct Key {
    pub kind: KeyKind,
    pair: KeyPair,
}

impl Key {
    pub fn generate(kind: KeyKind) -> Result<Key> {
        let pair = KeyPair::generate_for(kind.alg()).map_err(crypto)?;
        Ok(Key { kind, pair })
    }

    /// Read a key in any of the PEM forms Talos writes (or plain PKCS#8).
    pub fn from_pem(text: &str) -> Result<Key> {
        let block = pem::parse(text).map_err(|e| Error::msg(format!("invalid PEM key: {e}")))?;
        let (kind, pkcs8) = match block.tag() {
            ED25519_PEM => (KeyKind::Ed25519, block.contents().to_vec()),
            EC_PEM => (KeyKind::EcdsaP256, sec1_to_pkcs8(block.contents())?),
            "PRIVATE KEY" => {
                let kind = if block
                    .contents()
                    .windows(5)
                    .any(|w| w == [0x06, 0x03, 0x2b, 0x65, 0x70])
                {
                    KeyKind::Ed25519
                } else {
                    KeyKind::EcdsaP256
                };
                (kind, block.contents().to_vec())
            }
            other => return Err(Error::msg(format!("unsupported key type \"{other}\""))),
        };
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8);
        let pair = KeyPair::from_pkcs8_der_and_sign_algo(&der, kind.alg()).map_err(crypto)?;
        Ok(Key { kind, pair })
    }

    /// The Talos PEM form.
    pub fn to_pem(&self) -> String {
        let der = self.pair.serialize_der();
        let (tag, body) = match self.kind {
            KeyKind::Ed25519 => (ED25519_PEM, ed25519_pkcs8_v1(&der)),
            KeyKind::EcdsaP256 => (EC_PEM, pkcs8_to_sec1(&der, self.pair.public_key_raw())),
        };
        pem::encode_config(
            &pem::Pem::new(tag, body),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    }

    /// Standard PKCS#8 PEM (`PRIVATE KEY`), as TLS libraries read it.
    pub fn to_pkcs8_pem(&self) -> String {
        self.pair.serialize_pem()
    }

    /// The public key (`PUBLIC KEY` PEM).
    pub fn public_key_pem(&self) -> String {
        self.pair.public_key_pem()
    }

    pub fn pair(&self) -> &KeyPair {
        &self.pair
    }
}

fn crypto(e: rcgen::Error) -> Error {
    Error::msg(format!("crypto: {e}"))
}

/// PKCS#8 v1 (seed only) from ring's v2 document: the seed is the 32 bytes at offset 16 in both.
fn ed25519_pkcs8_v1(der: &[u8]) -> Vec<u8> {
    let mut out = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    out.extend_from_slice(&der[16..48]);
    out
}

/// The 32-byte private scalar inside a P-256 PKCS#8 or SEC1 document (`04 20 <32 bytes>` after
/// the version `02 01 01`).
fn p256_scalar(der: &[u8]) -> Option<&[u8]> {
    let at = der
        .windows(5)
        .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])?;
    der.get(at + 5..at + 37)
}

/// SEC1 `ECPrivateKey` with the curve named, as Go's `MarshalECPrivateKey` writes it.
fn pkcs8_to_sec1(der: &[u8], public: &[u8]) -> Vec<u8> {
    let scalar = p256_scalar(der).expect("ring P-256 PKCS#8 layout");
    let mut out = vec![0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20];
    out.extend_from_slice(scalar);
    out.extend_from_slice(&[0xa0, 0x0a]);
    out.extend_from_slice(&P256_OID);
    out.extend_from_slice(&[0xa1, 0x44, 0x03, 0x42, 0x00]);
    out.extend_from_slice(public);
    out
}

fn sec1_to_pkcs8(sec1: &[u8]) -> Result<Vec<u8>> {
    let bad = || Error::msg("invalid EC private key: expected a P-256 SEC1 key");
    let scalar = p256_scalar(sec1).ok_or_else(bad)?;
    let at = sec1
        .windows(4)
        .position(|w| w == [0x03, 0x42, 0x00, 0x04])
        .ok_or_else(bad)?;
    let public = sec1.get(at + 3..at + 68).ok_or_else(bad)?;
    let mut inner = vec![0x30, 0x6b, 0x02, 0x01, 0x01, 0x04, 0x20];
    inner.extend_from_slice(scalar);
    inner.extend_from_slice(&[0xa1, 0x44, 0x03, 0x42, 0x00]);
    inner.extend_from_slice(public);
    let mut out = vec![
        0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d,
        0x02, 0x01,
    ];
    out.extend_from_slice(&P256_OID);
    out.extend_from_slice(&[0x04, 0x6d]);
    out.extend_from_slice(&inner);
    Ok(out)
}

/// A certificate and its key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertAndKey {
    pub crt: String,
    pub key: String,
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, ttl: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + ttl;
}

/// A self-signed CA with the given Organization (none when empty), valid 10 years.
pub fn new_ca(organization: &str, kind: KeyKind) -> Result<CertAndKey> {
    self_signed_with(organization, kind, None, CA_VALIDITY)
}

fn self_signed_with(
    organization: &str,
    kind: KeyKind,
    ip: Option<std::net::IpAddr>,
    ttl: Duration,
) -> Result<CertAndKey> {
    let key = Key::generate(kind)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if !organization.is_empty() {
        params
            .distinguished_name
            .push(DnType::OrganizationName, organization);
    }
    if let Some(ip) = ip {
        params.subject_alt_names.push(rcgen::SanType::IpAddress(ip));
    }
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.serial_number = Some(random_serial());
    validity(&mut params, ttl);
    let cert = params.self_signed(key.pair()).map_err(crypto)?;
    Ok(CertAndKey {
        crt: cert.pem(),
        key: key.to_pem(),
    })
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Default)]
pub struct LeafSpec {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<std::net::IpAddr>,
    pub client: bool,
    pub server: bool,
    pub ttl: Option<Duration>,
}

/// Sign a new leaf certificate for `key` with the CA.
pub fn sign_leaf(ca: &CertAndKey, key: &Key, spec: &LeafSpec) -> Result<String> {
    let ca_key = Key::from_pem(&ca.key)?;
    let issuer_params = CertificateParams::from_ca_cert_pem(&ca.crt).map_err(crypto)?;
    let issuer = issuer_params.self_signed(ca_key.pair()).map_err(crypto)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    for o in &spec.organizations {
        params.distinguished_name.push(DnType::OrganizationName, o);
    }
    if !spec.common_name.is_empty() {
        params
            .distinguished_name
            .push(DnType::CommonName, &spec.common_name);
    }
    for d in &spec.dns_names {
        params.subject_alt_names.push(rcgen::SanType::DnsName(
            d.clone().try_into().map_err(crypto)?,
        ));
    }
    for ip in &spec.ip_addresses {
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(*ip));
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if spec.client {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    if spec.server {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    params.serial_number = Some(random_serial());
    validity(&mut params, spec.ttl.unwrap_or(CLIENT_VALIDITY));
    let cert = params
        .signed_by(key.pair(), &issuer, ca_key.pair())
        .map_err(crypto)?;
    Ok(cert.pem())
}

/// A certificate signing request for `key`, with the roles as Organization and an IP SAN.
pub fn new_csr(
    key: &Key,
    ip: Option<std::net::IpAddr>,
    organizations: &[String],
) -> Result<String> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    for o in organizations {
        params.distinguished_name.push(DnType::OrganizationName, o);
    }
    if let Some(ip) = ip {
        params.subject_alt_names.push(rcgen::SanType::IpAddress(ip));
    }
    let csr = params.serialize_request(key.pair()).map_err(crypto)?;
    csr.pem().map_err(crypto)
}

/// A certificate signing request for a server: its name and addresses as SANs.
pub fn new_server_csr(
    key: &Key,
    common_name: &str,
    dns_names: &[String],
    ips: &[std::net::IpAddr],
) -> Result<String> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    for d in dns_names {
        let name = d.clone().try_into().map_err(crypto)?;
        params.subject_alt_names.push(rcgen::SanType::DnsName(name));
    }
    for ip in ips {
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(*ip));
    }
    let csr = params.serialize_request(key.pair()).map_err(crypto)?;
    csr.pem().map_err(crypto)
}

/// Sign a CSR with the CA; the certificate is valid for `ttl` and usable by clients and servers.
pub fn sign_csr(ca: &CertAndKey, csr_pem: &str, ttl: Duration) -> Result<String> {
    let ca_key = Key::from_pem(&ca.key)?;
    let issuer = CertificateParams::from_ca_cert_pem(&ca.crt)
        .map_err(crypto)?
        .self_signed(ca_key.pair())
        .map_err(crypto)?;
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| Error::msg(format!("invalid CSR: {e}")))?;
    csr.params.serial_number = Some(random_serial());
    csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    csr.params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut csr.params, ttl);
    let cert = csr.signed_by(&issuer, ca_key.pair()).map_err(crypto)?;
    Ok(cert.pem())
}

/// A self-signed Ed25519 CA (or, with `ip`, a self-signed certificate for that address).
pub fn self_signed(
    organization: &str,
    ip: Option<std::net::IpAddr>,
    ttl: Duration,
) -> Result<CertAndKey> {
    self_signed_with(organization, KeyKind::Ed25519, ip, ttl)
}

/// The SHA-256 fingerprint of a PEM certificate's DER, as lowercase hex.
pub fn fingerprint_sha256(pem_text: &str) -> Result<String> {
    let block = pem::parse(pem_text).map_err(|e| Error::msg(format!("invalid PEM: {e}")))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, block.contents());
    Ok(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// A certificate's fingerprint as `--cert-fingerprint` takes it: the SHA-256 of its subject
/// public key info, base64 (it stays the same when the certificate is re-issued for the key).
pub fn spki_fingerprint(der: &[u8]) -> Result<String> {
    use base64::Engine;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Error::msg(format!("invalid certificate: {e}")))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    Ok(base64::engine::general_purpose::STANDARD.encode(digest.as_ref()))
}

/// Check that a PEM certificate parses; returns its subject organizations.
pub fn cert_organizations(pem_text: &str) -> Result<Vec<String>> {
    let block = pem::parse(pem_text).map_err(|e| Error::msg(format!("invalid PEM: {e}")))?;
    if block.tag() != "CERTIFICATE" {
        return Err(Error::msg(format!(
            "expected a CERTIFICATE, found {}",
            block.tag()
        )));
    }
    let (_, cert) = x509_parser::parse_x509_certificate(block.contents())
        .map_err(|e| Error::msg(format!("invalid certificate: {e}")))?;
    Ok(cert
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_in_talos_forms() {
        for kind in [KeyKind::Ed25519, KeyKind::EcdsaP256] {
            let k = Key::generate(kind).unwrap();
            let pem_text = k.to_pem();
            let back = Key::from_pem(&pem_text).unwrap();
            assert_eq!(back.to_pem(), pem_text);
            assert_eq!(back.pair().public_key_raw(), k.pair().public_key_raw());
        }
        assert!(Key::generate(KeyKind::EcdsaP256)
            .unwrap()
            .to_pem()
            .starts_with("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE"));
        assert!(Key::generate(KeyKind::Ed25519)
            .unwrap()
            .to_pem()
            .starts_with("-----BEGIN ED25519 PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI"));
    }

    #[test]
    fn leaf_carries_role_as_organization() {
        let ca = new_ca("talos", KeyKind::Ed25519).unwrap();
        assert_eq!(cert_organizations(&ca.crt).unwrap(), ["talos"]);
        let key = Key::generate(KeyKind::Ed25519).unwrap();
        let spec = LeafSpec {
            organizations: vec!["os:admin".into()],
            client: true,
            ..Default::default()
        };
        let crt = sign_leaf(&ca, &key, &spec).unwrap();
        assert_eq!(cert_organizations(&crt).unwrap(), ["os:admin"]);
    }
}

#[cfg(test)]
mod csr_tests {
    use super::*;

    #[test]
    fn csr_signed_by_ca_keeps_roles() {
        let ca = self_signed("talos", None, CA_VALIDITY).unwrap();
        let key = Key::generate(KeyKind::Ed25519).unwrap();
        let csr = new_csr(
            &key,
            Some("10.5.0.2".parse().unwrap()),
            &["os:reader".into()],
        )
        .unwrap();
        let crt = sign_csr(&ca, &csr, Duration::from_secs(24 * 3600)).unwrap();
        assert_eq!(cert_organizations(&crt).unwrap(), ["os:reader"]);
    }
}
