//! TLS client settings: a registry's CA, client identity and `insecureSkipVerify`, and a
//! verifier that accepts any server (for nodes in maintenance mode, and for registries the
//! config says not to verify).

use std::sync::Arc;

use machinery::cri::Tls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ConfigBuilder, DigitallySignedStruct, SignatureScheme};

/// Accepts any server certificate, or only those whose public key has one of the pinned
/// fingerprints (`machinery::pki::spki_fingerprint`); signatures are checked either way.
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>, Vec<String>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.1.is_empty() {
            return Ok(ServerCertVerified::assertion());
        }
        let got = machinery::pki::spki_fingerprint(end_entity)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        match self.1.contains(&got) {
            true => Ok(ServerCertVerified::assertion()),
            false => Err(rustls::Error::General(format!(
                "the server's certificate fingerprint {got} is not one of --cert-fingerprint"
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config builder that trusts any server; the caller picks the client identity.
pub fn any_server() -> ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
    pinned_server(Vec::new())
}

/// A client config builder that trusts a server whose certificate's public key has one of
/// `fingerprints` (any server when there are none).
pub fn pinned_server(
    fingerprints: Vec<String>,
) -> ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
    let p = provider();
    ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(p, fingerprints)))
}

fn certs(pem_text: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let all = pem::parse_many(pem_text).map_err(|e| format!("certificate: {e}"))?;
    Ok(all
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect())
}

/// The TLS settings for a registry: the public roots plus its CA, its client identity, or no
/// verification at all.
pub fn client_config(tls: Option<&Tls>) -> Result<ClientConfig, String> {
    let tls = tls.cloned().unwrap_or_default();
    let builder = if tls.insecure_skip_verify {
        any_server()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca) = &tls.ca {
            for c in certs(ca)? {
                roots.add(c).map_err(|e| format!("registry CA: {e}"))?;
            }
        }
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
    };
    match &tls.client {
        None => Ok(builder.with_no_client_auth()),
        Some((crt, key)) => {
            let key = pem::parse(key).map_err(|e| format!("client key: {e}"))?;
            let key = PrivateKeyDer::try_from(key.into_contents())
                .map_err(|e| format!("client key: {e}"))?;
            builder
                .with_client_auth_cert(certs(crt)?, key)
                .map_err(|e| format!("client identity: {e}"))
        }
    }
}
