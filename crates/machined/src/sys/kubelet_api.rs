//! A client of the local kubelet's API (`https://127.0.0.1:10250`): the pods it runs, asked
//! with the API server's kubelet client certificate; the kubelet's serving certificate is
//! checked against the CAs given (its own self-signed one, the cluster's) for the node's name.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

/// Where the kubelet serves its API.
pub const KUBELET_API: &str = "127.0.0.1:10250";

/// Who asks and whom to trust.
pub struct Credentials<'a> {
    /// The name on the kubelet's serving certificate (the node's name).
    pub server_name: &'a str,
    /// PEM: the client certificate and its key.
    pub crt: &'a str,
    pub key: &'a str,
    /// PEM: the certificates the kubelet's serving certificate may chain to.
    pub roots: &'a [String],
}

fn tls(c: &Credentials) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for pem_text in c.roots {
        for cert in CertificateDer::pem_slice_iter(pem_text.as_bytes()) {
            let cert = cert.map_err(|e| format!("a trusted certificate: {e}"))?;
            roots.add(cert).map_err(|e| e.to_string())?;
        }
    }
    let chain = CertificateDer::pem_slice_iter(c.crt.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the client certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(c.key.as_bytes())
        .map_err(|e| format!("the client key: {e}"))?;
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| e.to_string())
}

/// GET `path` of the kubelet at `addr`: its JSON.
pub async fn get(addr: &str, path: &str, c: &Credentials<'_>) -> Result<Value, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls(c)?));
    let name = ServerName::try_from(c.server_name.to_string()).map_err(|e| e.to_string())?;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header(http::header::HOST, c.server_name)
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let res = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = res.status();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status != http::StatusCode::OK {
            return Err(format!("{path}: {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{path}: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("{addr}{path}: no answer in 10s"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use machinery::pki::{self, Key, KeyKind, LeafSpec};

    /// A fake of the kubelet's API (no kubelet can run here): TLS for `node-1`, client
    /// certificates of `ca` required, `/pods` answered with `pods`.
    async fn fake_kubelet(ca: &pki::CertAndKey, pods: Value) -> String {
        let key = Key::generate(KeyKind::EcdsaP256).unwrap();
        let crt = pki::sign_leaf(
            ca,
            &key,
            &LeafSpec {
                common_name: "node-1".into(),
                dns_names: vec!["node-1".into()],
                server: true,
                ..Default::default()
            },
        )
        .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.crt.as_bytes()).unwrap())
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(crt.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.to_pem().as_bytes()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, pods) = (acceptor.clone(), pods.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let body = match req.uri().path() {
                                "/pods" => serde_json::to_vec(&pods).unwrap(),
                                _ => Vec::new(),
                            };
                            async move {
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from(body)),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn the_kubelets_pods_with_a_client_certificate_of_the_cluster() {
        let ca = pki::new_ca("kubernetes", KeyKind::EcdsaP256).unwrap();
        let pods = serde_json::json!({"kind": "PodList", "items": [{"metadata": {"name": "a"}}]});
        let addr = fake_kubelet(&ca, pods.clone()).await;
        let key = Key::generate(KeyKind::EcdsaP256).unwrap();
        let crt = pki::sign_leaf(
            &ca,
            &key,
            &LeafSpec {
                common_name: "apiserver-kubelet-client".into(),
                organizations: vec!["system:masters".into()],
                client: true,
                ..Default::default()
            },
        )
        .unwrap();
        let (key, roots) = (key.to_pem(), vec![ca.crt.clone()]);
        let creds = |name| Credentials {
            server_name: name,
            crt: &crt,
            key: &key,
            roots: &roots,
        };
        assert_eq!(get(&addr, "/pods", &creds("node-1")).await.unwrap(), pods);
        // Another name than the kubelet's certificate's: refused.
        let wrong = get(&addr, "/pods", &creds("node-2")).await.unwrap_err();
        assert!(wrong.contains("certificate"), "{wrong}");
    }
}
