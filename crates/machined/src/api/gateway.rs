//! apid as its own process (`machined --role apid`): it terminates TLS on :50000, checks every
//! call against the role table, forwards calls for other nodes to their apid, and passes the
//! rest to machined over its unix socket with the caller's roles attached. machined started it
//! and handed it the listening sockets, so a restart of apid loses no address.

use resources::ResourceType;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::{Channel, Endpoint, Server};

use super::auth::{AuthLayer, Roles};
use super::proxy;

/// A gRPC service name apid forwards.
pub trait Name: Clone + Send + 'static {
    const NAME: &'static str;
}

#[derive(Clone)]
pub struct MachineName;
impl Name for MachineName {
    const NAME: &'static str = "machine.MachineService";
}
#[derive(Clone)]
pub struct ImageName;
impl Name for ImageName {
    const NAME: &'static str = "machine.ImageService";
}
#[derive(Clone)]
pub struct InspectName;
impl Name for InspectName {
    const NAME: &'static str = "inspect.InspectService";
}
#[derive(Clone)]
pub struct StateName;
impl Name for StateName {
    const NAME: &'static str = "cosi.resource.State";
}
#[derive(Clone)]
pub struct StorageName;
impl Name for StorageName {
    const NAME: &'static str = "machine.StorageService";
}
#[derive(Clone)]
pub struct TimeName;
impl Name for TimeName {
    const NAME: &'static str = "time.TimeService";
}

/// Passes a call to machined with the caller's roles in `talos-role`.
#[derive(Clone)]
pub struct Forward<N> {
    channel: Channel,
    _name: PhantomData<N>,
}

impl<N: Name> NamedService for Forward<N> {
    const NAME: &'static str = N::NAME;
}

impl<N: Name> tower::Service<http::Request<Body>> for Forward<N> {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let roles = req
            .extensions()
            .get::<Roles>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let out = proxy::outgoing(req, &roles);
        let channel = self.channel.clone();
        Box::pin(async move {
            use tower::ServiceExt;
            Ok(channel.oneshot(out).await.unwrap_or_else(|e| {
                tonic::Status::unavailable(format!("machined: {e}")).into_http()
            }))
        })
    }
}

/// A channel to machined's unix socket.
pub fn local_channel(path: PathBuf) -> Result<Channel, String> {
    let connector = tower::service_fn(move |_: http::Uri| {
        let path = path.clone();
        async move {
            let s = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
        }
    });
    Ok(Endpoint::try_from("http://machined.local")
        .map_err(|e| e.to_string())?
        .connect_with_connector_lazy(connector))
}

/// Where apid's server certificate comes from.
pub enum CertSource {
    /// A fixed one (maintenance mode).
    Static(crate::sys::pki::ServerCert),
    /// machined's ApiCertificates resource, followed as it is renewed.
    Machined,
}

/// The current certificate, swapped in place when machined renews it.
#[derive(Debug)]
pub struct Reloadable(pub std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>);

impl rustls::server::ResolvesServerCert for Reloadable {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.read().expect("certificate").clone())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem_text: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    pem::parse_many(pem_text)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| Ok(rustls::pki_types::CertificateDer::from(b.into_contents())))
        .collect()
}

pub fn certified(
    cert: &crate::sys::pki::ServerCert,
) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let key = pem::parse(&cert.key).map_err(|e| e.to_string())?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.into_contents().into());
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        certs(&cert.crt)?,
        signing,
    )))
}

/// TLS 1.3 only; client certificates from `client_ca` required when given.
pub fn server_config(
    resolver: Arc<Reloadable>,
    client_ca: Option<&str>,
) -> Result<rustls::ServerConfig, String> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(pem_text) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(pem_text)? {
                roots.add(c).map_err(|e| e.to_string())?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// A request to machined's own state, as os:admin (machined trusts its local socket).
fn as_admin<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        proxy::ROLE_HEADER,
        super::auth::ADMIN.parse().expect("role"),
    );
    req
}

/// Serve each new API certificate machined issues, as its resource changes.
async fn follow(
    channel: &Channel,
    resolver: &Reloadable,
    current: &mut String,
) -> Result<(), String> {
    let req = as_admin(api::cosi::WatchRequest {
        namespace: types::SECRETS_NS.into(),
        r#type: types::secrets::ApiCertsSpec::TYPE.into(),
        id: Some(crate::controllers::secrets::api::API_ID.into()),
        options: None,
        api_version: 1,
    });
    let mut events = api::cosi::state_client::StateClient::new(channel.clone())
        .watch(req)
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    // Whatever changed before the watch was open.
    let mut next = Some(fetch(channel).await?);
    loop {
        if let Some(c) = next.take().filter(|c| c.crt != *current) {
            if let Ok(k) = certified(&c) {
                *resolver.0.write().expect("certificate") = k;
                *current = c.crt;
                tracing::info!("serving the renewed API certificate");
            }
        }
        let Some(batch) = events
            .message()
            .await
            .map_err(|s| s.message().to_string())?
        else {
            return Ok(());
        };
        // The events carry the resource: the newest created or updated one is the
        // certificate to serve.
        let issued = [api::cosi::EventType::Created, api::cosi::EventType::Updated];
        if let Some(r) = batch
            .event
            .into_iter()
            .rev()
            .filter(|e| issued.iter().any(|t| *t as i32 == e.event_type))
            .find_map(|e| e.resource)
        {
            next = Some(cert_of(r)?);
        }
    }
}

/// machined's current API certificate.
async fn fetch(channel: &Channel) -> Result<crate::sys::pki::ServerCert, String> {
    let req = as_admin(api::cosi::GetRequest {
        namespace: types::SECRETS_NS.into(),
        r#type: types::secrets::ApiCertsSpec::TYPE.into(),
        id: crate::controllers::secrets::api::API_ID.into(),
        options: None,
    });
    let r = api::cosi::state_client::StateClient::new(channel.clone())
        .get(req)
        .await
        .map_err(|s| s.message().to_string())?;
    cert_of(r.into_inner().resource.unwrap_or_default())
}

/// The certificate an ApiCertificates resource holds.
fn cert_of(r: api::cosi::Resource) -> Result<crate::sys::pki::ServerCert, String> {
    let yaml = r.spec.map(|s| s.yaml_spec).unwrap_or_default();
    let doc = machinery::yaml::parse_stream(&yaml)
        .map_err(|e| format!("{e:?}"))?
        .into_iter()
        .next()
        .ok_or("empty certificate resource")?;
    let field = |k: &str| {
        doc.value
            .get(k)
            .and_then(|v| v.as_str())
            .map(String::from)
            .ok_or_else(|| format!("the certificate resource has no {k}"))
    };
    Ok(crate::sys::pki::ServerCert {
        crt: field("crt")?,
        key: field("key")?,
        client_ca: Some(field("ca")?),
    })
}

/// Completed TLS handshakes on every listener.
pub fn tls_incoming(
    listeners: Vec<tokio::net::TcpListener>,
    acceptor: tokio_rustls::TlsAcceptor,
) -> impl futures::Stream<Item = std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>>
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    for l in listeners {
        let (tx, acceptor) = (tx.clone(), acceptor.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = l.accept().await else {
                    continue;
                };
                let (tx, acceptor) = (tx.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(tcp),
                    )
                    .await;
                    match hs {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        });
    }
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

/// Serve the node's API on `listeners` until `shutdown`.
pub async fn serve(
    source: CertSource,
    listeners: Vec<tokio::net::TcpListener>,
    maintenance: bool,
    proxy: Option<super::Proxy>,
    socket: PathBuf,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), String> {
    let channel = local_channel(socket)?;
    let first = match source {
        CertSource::Static(c) => c,
        CertSource::Machined => {
            // machined issues it at boot (a worker waits for trustd).
            let mut delay = std::time::Duration::from_millis(10);
            loop {
                match fetch(&channel).await {
                    Ok(c) => break c,
                    Err(e) => {
                        tracing::debug!(error = %e, "waiting for the API certificate");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(std::time::Duration::from_secs(2));
                    }
                }
            }
        }
    };
    let resolver = Arc::new(Reloadable(std::sync::RwLock::new(certified(&first)?)));
    let config = server_config(resolver.clone(), first.client_ca.as_deref())?;
    if first.client_ca.is_some() {
        // Follow renewals: a watch on the certificate resource (machined's socket); a broken
        // watch is opened again.
        let (channel, resolver) = (channel.clone(), resolver.clone());
        let mut current = first.crt.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = follow(&channel, &resolver, &mut current).await {
                    tracing::debug!(error = %e, "the API certificate's watch ended");
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }
    let incoming = tls_incoming(listeners, tokio_rustls::TlsAcceptor::from(Arc::new(config)));
    let forward = |_: ()| channel.clone();
    Server::builder()
        .layer(AuthLayer {
            maintenance,
            proxy: proxy.map(Arc::new),
        })
        .add_service(Forward::<MachineName> {
            channel: forward(()),
            _name: PhantomData,
        })
        .add_service(Forward::<ImageName> {
            channel: forward(()),
            _name: PhantomData,
        })
        .add_service(Forward::<InspectName> {
            channel: forward(()),
            _name: PhantomData,
        })
        .add_service(Forward::<StateName> {
            channel: forward(()),
            _name: PhantomData,
        })
        .add_service(Forward::<StorageName> {
            channel: forward(()),
            _name: PhantomData,
        })
        .add_service(Forward::<TimeName> {
            channel: forward(()),
            _name: PhantomData,
        })
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// A maintenance-mode identity: self-signed, no client certificates asked for.
pub fn maintenance_cert() -> Result<crate::sys::pki::ServerCert, String> {
    let pair =
        machinery::pki::self_signed("talos-maintenance", None, machinery::pki::CLIENT_VALIDITY)
            .map_err(|e| e.to_string())?;
    let key = machinery::pki::Key::from_pem(&pair.key).map_err(|e| e.to_string())?;
    if let Ok(der) = pem::parse(&pair.crt) {
        if let Ok(fp) = machinery::pki::spki_fingerprint(der.contents()) {
            tracing::info!(
                "maintenance API certificate fingerprint (for --cert-fingerprint): {fp}"
            );
        }
    }
    Ok(crate::sys::pki::ServerCert {
        crt: pair.crt,
        key: key.to_pkcs8_pem(),
        client_ca: None,
    })
}
