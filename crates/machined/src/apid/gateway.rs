//! apid as its own process (`machined --role apid`): it terminates TLS on :50000, checks every
//! call against the role table, forwards calls for other nodes to their apid, and passes the
//! rest to machined over its unix socket with the caller's roles attached. machined started it
//! and handed it the listening sockets, so a restart of apid loses no address.

use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::{Channel, Endpoint, Server, ServerTlsConfig};

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
pub struct InspectName;
impl Name for InspectName {
    const NAME: &'static str = "inspect.InspectService";
}
#[derive(Clone)]
pub struct StateName;
impl Name for StateName {
    const NAME: &'static str = "cosi.resource.State";
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

/// Serve the node's API on `listeners` until `shutdown`.
pub async fn serve(
    tls: super::Tls,
    listeners: Vec<tokio::net::TcpListener>,
    maintenance: bool,
    proxy: Option<super::Proxy>,
    socket: PathBuf,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), String> {
    let channel = local_channel(socket)?;
    let incoming =
        futures::stream::select_all(listeners.into_iter().map(|l| Box::pin(super::incoming(l))));
    let mut server_tls = ServerTlsConfig::new().identity(tls.identity);
    if let Some(ca) = tls.client_ca {
        server_tls = server_tls.client_ca_root(ca);
    }
    let forward = |_: ()| channel.clone();
    Server::builder()
        .tls_config(server_tls)
        .map_err(|e| e.to_string())?
        .layer(AuthLayer {
            maintenance,
            proxy: proxy.map(Arc::new),
        })
        .add_service(Forward::<MachineName> {
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
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| e.to_string())
}
