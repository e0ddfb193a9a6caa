//! Certificates the node issues itself (from the machine CA) or gets from trustd, and
//! their validity.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use machinery::pki::{self, Key, KeyKind, LeafSpec};
use machinery::secrets::unb64;
use machinery::Config;
use tonic::transport::Certificate;
use tonic::Request;

/// A server certificate and key (PEM), and the CAs client certificates must chain to (none:
/// no client certificates asked for).
pub struct ServerCert {
    pub crt: String,
    pub key: String,
    pub client_ca: Option<String>,
}

/// The CAs a node accepts client certificates from: the machine CA and `machine.acceptedCAs`.
pub fn client_cas(cfg: &Config) -> Result<String, String> {
    let mut pem = cfg
        .pointer("/machine/ca/crt")
        .and_then(|v| v.as_str())
        .ok_or("the machine config has no machine.ca.crt")
        .and_then(|s| unb64(s).map_err(|_| "machine.ca.crt is not base64"))?;
    for accepted in cfg
        .pointer("/machine/acceptedCAs")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/crt").and_then(|c| c.as_str()))
    {
        pem.push_str(&unb64(accepted).map_err(|e| e.to_string())?);
    }
    Ok(pem)
}

/// A server certificate for this node signed by the config's machine CA.
pub fn issue_local(
    cfg: &Config,
    hostname: &str,
    dns_names: &[String],
    ips: &[IpAddr],
    ttl: std::time::Duration,
) -> Result<ServerCert, String> {
    let ca = machinery::secrets::machine_ca(cfg).map_err(|e| e.to_string())?;
    let key = Key::generate(KeyKind::Ed25519).map_err(|e| e.to_string())?;
    let spec = LeafSpec {
        common_name: hostname.into(),
        dns_names: dns_names.to_vec(),
        ip_addresses: ips.to_vec(),
        server: true,
        ttl: Some(ttl),
        ..Default::default()
    };
    let crt = pki::sign_leaf(&ca, &key, &spec).map_err(|e| e.to_string())?;
    Ok(ServerCert {
        crt,
        key: key.to_pkcs8_pem(),
        client_ca: Some(client_cas(cfg)?),
    })
}

/// A server certificate for a node without the machine CA key (a worker): trustd on a control
/// plane signs it when the node presents the machine token.
pub async fn issue_via_trustd(
    cfg: &Config,
    hostname: &str,
    dns_names: &[String],
    ips: &[IpAddr],
) -> Result<ServerCert, String> {
    use api::security::security_service_client::SecurityServiceClient;
    let client_ca = client_cas(cfg)?;
    let token = cfg
        .pointer("/machine/token")
        .and_then(|v| v.as_str())
        .ok_or("the machine config has no machine.token")?
        .to_string();
    let endpoint = cfg
        .control_plane_endpoint()
        .ok_or("the machine config has no control plane endpoint")?;
    let host = machinery::generate::endpoint_host(endpoint).map_err(|e| e.to_string())?;
    let host = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => host,
    };
    let key = Key::generate(KeyKind::Ed25519).map_err(|e| e.to_string())?;
    let csr = pki::new_server_csr(&key, hostname, dns_names, ips).map_err(|e| e.to_string())?;
    let channel = tonic::transport::Channel::from_shared(format!("https://{host}:50001"))
        .map_err(|e| e.to_string())?
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&client_ca)),
        )
        .map_err(|e| e.to_string())?
        .connect_timeout(std::time::Duration::from_secs(3))
        .connect_lazy();
    let mut req = Request::new(api::security::CertificateRequest {
        csr: csr.into_bytes(),
    });
    req.metadata_mut().insert(
        "token",
        token
            .parse()
            .map_err(|_| "machine.token is not valid metadata")?,
    );
    let r = SecurityServiceClient::new(channel)
        .certificate(req)
        .await
        .map_err(|s| format!("trustd at {host}:50001: {}", s.message()))?;
    Ok(ServerCert {
        crt: String::from_utf8(r.into_inner().crt).map_err(|e| e.to_string())?,
        key: key.to_pkcs8_pem(),
        client_ca: Some(client_ca),
    })
}

pub fn two_thirds(from: u64, to: u64) -> u64 {
    from + to.saturating_sub(from) * 2 / 3
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A certificate's validity, seconds since the epoch.
pub fn validity(crt_pem: &str) -> Result<(u64, u64), String> {
    let block = pem::parse(crt_pem).map_err(|e| e.to_string())?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(block.contents()).map_err(|e| e.to_string())?;
    let v = cert.validity();
    Ok((
        v.not_before.timestamp().max(0) as u64,
        v.not_after.timestamp().max(0) as u64,
    ))
}

/// When a certificate should be renewed: two thirds into its validity.
pub fn renew_at(crt_pem: &str) -> Result<u64, String> {
    let (from, to) = validity(crt_pem)?;
    Ok(two_thirds(from, to))
}
