//! trustd: signs a joining node's certificate request when it presents the machine token.

use api::security::security_service_server::{SecurityService, SecurityServiceServer};
use api::security::{CertificateRequest, CertificateResponse};
use machinery::pki::{self, CertAndKey};
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

struct Trustd {
    ca: CertAndKey,
    token: String,
}

#[tonic::async_trait]
impl SecurityService for Trustd {
    async fn certificate(
        &self,
        req: Request<CertificateRequest>,
    ) -> Result<Response<CertificateResponse>, Status> {
        let presented = req
            .metadata()
            .get("token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if self.token.is_empty() || presented != self.token {
            return Err(Status::permission_denied("not authorized"));
        }
        let csr = String::from_utf8(req.into_inner().csr)
            .map_err(|_| Status::invalid_argument("the CSR is not PEM text"))?;
        let crt = pki::sign_csr(&self.ca, &csr, pki::CLIENT_VALIDITY)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(CertificateResponse {
            ca: self.ca.crt.clone().into_bytes(),
            crt: crt.into_bytes(),
        }))
    }
}

/// Serve trustd until `shutdown`: TLS with a server certificate from the machine CA, callers
/// authenticated by the machine token.
pub async fn serve(
    cfg: &machinery::Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), String> {
    let ca = machinery::secrets::machine_ca(cfg).map_err(|e| e.to_string())?;
    let token = cfg
        .pointer("/machine/token")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let mut ips = vec![listener.local_addr().map_err(|e| e.to_string())?.ip()];
    ips.extend(crate::interface_ips());
    ips.extend(["127.0.0.1".parse::<std::net::IpAddr>().expect("ip")]);
    let cert = crate::apid::issue_local(
        cfg,
        "trustd",
        &["localhost".to_string(), "trustd".to_string()],
        &ips,
        pki::CLIENT_VALIDITY,
    )?;
    let incoming = crate::apid::incoming(listener);
    Server::builder()
        .tls_config(
            ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(cert.crt, cert.key)),
        )
        .map_err(|e| e.to_string())?
        .add_service(SecurityServiceServer::new(Trustd { ca, token }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| e.to_string())
}
