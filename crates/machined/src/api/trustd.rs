//! trustd: signs a joining node's certificate request when it presents the machine token.

use api::security::security_service_server::{SecurityService, SecurityServiceServer};
use api::security::{CertificateRequest, CertificateResponse};
use machinery::pki::{self, CertAndKey};
use tonic::transport::Server;
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

fn certificate(
    cfg: &machinery::Config,
    bound: std::net::IpAddr,
    ips: &[std::net::IpAddr],
) -> Result<std::sync::Arc<rustls::sign::CertifiedKey>, String> {
    let mut all = vec![bound, "127.0.0.1".parse().expect("ip")];
    all.extend_from_slice(ips);
    let cert = crate::sys::pki::issue_local(
        cfg,
        "trustd",
        &["localhost".to_string(), "trustd".to_string()],
        &all,
        pki::CLIENT_VALIDITY,
    )?;
    crate::api::gateway::certified(&cert)
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
    // Its certificate names the node's addresses: issued once the node has one, and again
    // whenever they change.
    let bound = listener.local_addr().map_err(|e| e.to_string())?.ip();
    let ips = || {
        let mut ips = crate::sys::interface_ips();
        ips.sort();
        ips
    };
    let mut have = ips();
    while have.is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        have = ips();
    }
    let resolver = std::sync::Arc::new(crate::api::gateway::Reloadable(std::sync::RwLock::new(
        certificate(cfg, bound, &have)?,
    )));
    let config = crate::api::gateway::server_config(resolver.clone(), None)?;
    let cfg_owned = cfg.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let now = ips();
            if now != have {
                match certificate(&cfg_owned, bound, &now) {
                    Ok(k) => {
                        *resolver.0.write().expect("certificate") = k;
                        have = now;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot re-issue trustd's certificate"),
                }
            }
        }
    });
    let incoming = crate::api::gateway::tls_incoming(
        vec![listener],
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
    );
    Server::builder()
        .add_service(SecurityServiceServer::new(Trustd { ca, token }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| e.to_string())
}
