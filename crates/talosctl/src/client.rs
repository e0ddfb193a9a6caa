//! Connecting to nodes: endpoints and nodes from the talosconfig (or -e/-n), mutual TLS with
//! the context's CA and client certificate.

use std::sync::Arc;

use api::machine::machine_service_client::MachineServiceClient;
use machinery::clientconfig::ClientConfig;
use machinery::pki::Key;
use machinery::secrets::unb64;
use machinery::{Error, Result};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::config_cmd::ConnArgs;
use crate::util::split_commas;

pub const API_PORT: u16 = 50000;

/// One node to talk to: the name shown in the NODE column, the channel to it, and, when it is
/// reached through an endpoint's apid, the `node` the endpoint forwards to.
#[derive(Clone)]
pub struct Target {
    pub node: String,
    pub channel: Channel,
    pub route: Option<String>,
}

/// Adds the `node` routing key to every call of a proxied target.
#[derive(Clone)]
pub struct Route(Option<tonic::metadata::AsciiMetadataValue>);

impl tonic::service::Interceptor for Route {
    fn call(
        &mut self,
        mut req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("node", v.clone());
        }
        Ok(req)
    }
}

pub type Routed = tonic::service::interceptor::InterceptedService<Channel, Route>;

impl Target {
    pub fn route(&self) -> Route {
        Route(self.route.as_ref().and_then(|n| n.parse().ok()))
    }
}

pub fn state(t: &Target) -> api::cosi::state_client::StateClient<Routed> {
    api::cosi::state_client::StateClient::with_interceptor(t.channel.clone(), t.route())
}

pub fn inspect(t: &Target) -> api::inspect::inspect_service_client::InspectServiceClient<Routed> {
    api::inspect::inspect_service_client::InspectServiceClient::with_interceptor(
        t.channel.clone(),
        t.route(),
    )
}

/// `host` or `host:port` (IPv6 in brackets) as an https URI with the API port by default.
fn uri(endpoint: &str) -> String {
    let has_port = match endpoint.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    let host = if endpoint.contains(':') && !endpoint.starts_with('[') && !has_port {
        format!("[{endpoint}]")
    } else {
        endpoint.to_string()
    };
    if has_port {
        format!("https://{host}")
    } else {
        format!("https://{host}:{API_PORT}")
    }
}

/// Channels to every target node: `-n` nodes (each reached directly), else the endpoints.
pub async fn connect(conn: &ConnArgs) -> Result<Vec<Target>> {
    let cfg = ClientConfig::load(&conn.path())?;
    let context = Some(conn.context.as_str()).filter(|c| !c.is_empty());
    let (name, ctx) = cfg.current(context)?;
    let endpoints = if conn.endpoints.is_empty() {
        ctx.endpoints.clone()
    } else {
        split_commas(&conn.endpoints)
    };
    let nodes = if conn.nodes.is_empty() {
        ctx.nodes.clone()
    } else {
        split_commas(&conn.nodes)
    };
    // With nodes, calls go through the first endpoint's apid, which forwards them to each
    // node; without, each endpoint is called.
    let through = (!nodes.is_empty())
        .then(|| endpoints.first().cloned())
        .flatten();
    let targets: Vec<String> = if nodes.is_empty() { endpoints } else { nodes };
    if targets.is_empty() {
        return Err(Error::msg(
            "no endpoints: set them with `talosctl config endpoint` or pass -e",
        ));
    }
    dial(name, ctx, targets, through)
}

/// Channels to `targets` with a context's credentials; through `through`'s apid when given.
pub fn dial(
    context: &str,
    ctx: &machinery::clientconfig::Context,
    targets: Vec<String>,
    through: Option<String>,
) -> Result<Vec<Target>> {
    let key = Key::from_pem(&unb64(&ctx.key)?)?;
    let (roles, expires) = machinery::clientconfig::describe_certificate(ctx)
        .map(|(r, e)| (r, Some(e)))
        .unwrap_or_default();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(unb64(&ctx.ca)?))
        .identity(Identity::from_pem(unb64(&ctx.crt)?, key.to_pkcs8_pem()));
    let mut out = Vec::new();
    for t in targets {
        let dial = through.clone().unwrap_or_else(|| t.clone());
        let endpoint = Channel::from_shared(uri(&dial))
            .map_err(|e| Error::msg(format!("invalid endpoint \"{t}\": {e}")))?
            .tls_config(tls.clone())
            .map_err(|e| Error::msg(format!("{t}: {e}")))?
            .connect_timeout(std::time::Duration::from_secs(10));
        let channel = endpoint.connect_lazy();
        let route = through.as_ref().filter(|e| **e != t).map(|_| t.clone());
        crate::hints::remember(
            &t,
            crate::hints::Dialed {
                endpoint: dial,
                context: context.to_string(),
                roles: roles.clone(),
                expires,
            },
        );
        out.push(Target {
            node: t,
            channel,
            route,
        });
    }
    Ok(out)
}

/// `-i/--insecure` and `--cert-fingerprint`, for the commands a node in maintenance mode serves.
#[derive(clap::Args, Clone, Default)]
pub struct InsecureArgs {
    /// Talk to a node in maintenance mode: no client certificate, and the node's certificate
    /// is not checked (unless --cert-fingerprint is given).
    #[arg(short, long)]
    pub insecure: bool,
    /// With --insecure, accept only a node whose certificate's public key has one of these
    /// fingerprints (base64 SHA-256; a node in maintenance mode logs its own).
    #[arg(long = "cert-fingerprint", value_delimiter = ',')]
    pub cert_fingerprint: Vec<String>,
}

/// Channels to the nodes: to a node in maintenance mode with `--insecure`, else with the
/// talosconfig's credentials.
pub async fn connect_as(conn: &ConnArgs, how: &InsecureArgs) -> Result<Vec<Target>> {
    if how.insecure {
        connect_insecure(conn, how.cert_fingerprint.clone())
    } else if !how.cert_fingerprint.is_empty() {
        Err(Error::msg(
            "--cert-fingerprint is used with --insecure only",
        ))
    } else {
        connect(conn).await
    }
}

/// Channels to nodes in maintenance mode (`--insecure`): TLS without a client certificate;
/// the node's certificate is checked against `fingerprints` when there are any. The nodes
/// come from -n, else -e.
pub fn connect_insecure(conn: &ConnArgs, fingerprints: Vec<String>) -> Result<Vec<Target>> {
    let targets = if conn.nodes.is_empty() {
        split_commas(&conn.endpoints)
    } else {
        split_commas(&conn.nodes)
    };
    if targets.is_empty() {
        return Err(Error::msg(
            "--insecure needs the node's address: pass -n (or -e)",
        ));
    }
    let mut tls = oci::tls::pinned_server(fingerprints).with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let mut out = Vec::new();
    for t in targets {
        crate::hints::remember(
            &t,
            crate::hints::Dialed {
                endpoint: t.clone(),
                ..Default::default()
            },
        );
        let plain = uri(&t).replacen("https://", "http://", 1);
        let connector = connector.clone();
        let dial = tower::service_fn(move |u: http::Uri| {
            let connector = connector.clone();
            async move {
                let host = u
                    .host()
                    .unwrap_or_default()
                    .trim_matches(['[', ']'])
                    .to_string();
                let port = u.port_u16().unwrap_or(API_PORT);
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                let name = rustls::pki_types::ServerName::try_from(host)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let stream = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        let channel = tonic::transport::Endpoint::from_shared(plain)
            .map_err(|e| Error::msg(format!("invalid endpoint \"{t}\": {e}")))?
            .connect_with_connector_lazy(dial);
        out.push(Target {
            node: t,
            channel,
            route: None,
        });
    }
    Ok(out)
}

/// The node a reply came from: the hostname in its metadata (set when apid fanned the call
/// out), else the node the call went to.
pub fn node_of(md: Option<&api::common::Metadata>, t: &Target) -> String {
    md.map(|m| m.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| t.node.clone())
}

pub fn machine(t: &Target) -> MachineServiceClient<Routed> {
    MachineServiceClient::with_interceptor(t.channel.clone(), t.route())
}

pub fn images(t: &Target) -> api::machine::image_service_client::ImageServiceClient<Routed> {
    api::machine::image_service_client::ImageServiceClient::with_interceptor(
        t.channel.clone(),
        t.route(),
    )
}

/// A failed call, worded like talosctl: the node and the gRPC message.
pub fn call_error(node: &str, status: tonic::Status) -> Error {
    let hint = crate::hints::hint(node, &status);
    let what = match status.code() {
        tonic::Code::PermissionDenied => format!(
            "rpc error: code = PermissionDenied desc = {}",
            status.message()
        ),
        tonic::Code::Unavailable => {
            format!("rpc error: code = Unavailable desc = {}", status.message())
        }
        code => format!("rpc error: code = {code:?} desc = {}", status.message()),
    };
    match hint {
        Some(h) => Error::msg(format!("{node}: {what}\n{h}")),
        None => Error::msg(format!("{node}: {what}")),
    }
}

/// The outcome of a call made on several nodes: each failed node's error on a line of its own.
pub fn per_node(errors: Vec<String>) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::msg(errors.join("\n")))
    }
}

/// Copy a stream of `common.Data` to stdout as it comes (each chunk after `prefix`).
/// A node's data stream on stdout, every line prefixed with `prefix` (a line split across
/// messages is put back together first).
pub async fn print_data(
    t: &Target,
    mut stream: tonic::Streaming<api::common::Data>,
    prefix: &str,
) -> Result<()> {
    use std::io::Write;
    let mut pending: Vec<u8> = Vec::new();
    let write = |line: &[u8]| {
        let mut out = std::io::stdout().lock();
        out.write_all(prefix.as_bytes()).ok();
        out.write_all(line).ok();
        out.write_all(b"\n").ok();
        out.flush().ok();
    };
    while let Some(d) = stream.message().await.map_err(|s| call_error(&t.node, s))? {
        pending.extend_from_slice(&d.bytes);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            write(&line[..line.len() - 1]);
        }
    }
    if !pending.is_empty() {
        write(&pending);
    }
    Ok(())
}

/// Runs `f` for every target at once (following streams side by side); the errors, by node.
pub async fn each<F, Fut>(targets: &[Target], f: F) -> Result<()>
where
    F: Fn(Target) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let errors: Vec<String> = futures::future::join_all(targets.iter().cloned().map(f))
        .await
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    per_node(errors)
}

/// Every resource of a type on node `t`: (id, spec as YAML made a value).
pub async fn resource_specs(
    t: &Target,
    namespace: &str,
    ty: &str,
) -> std::result::Result<Vec<(String, serde_json::Value)>, Error> {
    let fail = |s| call_error(&t.node, s);
    let mut stream = state(t)
        .list(api::cosi::ListRequest {
            namespace: namespace.into(),
            r#type: ty.into(),
            options: None,
        })
        .await
        .map_err(fail)?
        .into_inner();
    let mut out = Vec::new();
    while let Some(item) = stream.message().await.map_err(fail)? {
        let Some(r) = item.resource else { continue };
        let id = r.metadata.map(|m| m.id).unwrap_or_default();
        let spec = crate::get::yaml_value(&r.spec.map(|s| s.yaml_spec).unwrap_or_default());
        out.push((id, spec));
    }
    Ok(out)
}

/// One resource's spec (as YAML made a value) and version, from node `t`.
pub async fn resource_spec(
    t: &Target,
    namespace: &str,
    ty: &str,
    id: &str,
) -> std::result::Result<(serde_json::Value, String), String> {
    let r = state(t)
        .get(api::cosi::GetRequest {
            namespace: namespace.into(),
            r#type: ty.into(),
            id: id.into(),
            options: None,
        })
        .await
        .map_err(|s| call_error(&t.node, s).to_string())?
        .into_inner()
        .resource
        .ok_or_else(|| format!("{}: no {ty} {id}", t.node))?;
    let version = r.metadata.map(|m| m.version).unwrap_or_default();
    let spec = crate::get::yaml_value(&r.spec.map(|s| s.yaml_spec).unwrap_or_default());
    Ok((spec, version))
}

#[cfg(test)]
mod tests {
    use super::uri;

    #[test]
    fn endpoint_uris() {
        assert_eq!(uri("10.5.0.2"), "https://10.5.0.2:50000");
        assert_eq!(uri("10.5.0.2:50001"), "https://10.5.0.2:50001");
        assert_eq!(uri("node-1"), "https://node-1:50000");
        assert_eq!(uri("fd00::1"), "https://[fd00::1]:50000");
        assert_eq!(uri("[fd00::1]:123"), "https://[fd00::1]:123");
    }
}
