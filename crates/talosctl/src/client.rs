//! Connecting to nodes: endpoints and nodes from the talosconfig (or -e/-n), mutual TLS with
//! the context's CA and client certificate.

use api::machine::machine_service_client::MachineServiceClient;
use machinery::clientconfig::ClientConfig;
use machinery::pki::Key;
use machinery::secrets::unb64;
use machinery::{Error, Result};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::config_cmd::ConnArgs;
use crate::util::split_commas;

pub const API_PORT: u16 = 50000;

/// One node to talk to: the name shown in the NODE column and the channel to it.
pub struct Target {
    pub node: String,
    pub channel: Channel,
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
    let (_, ctx) = cfg.current(context)?;
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
    let targets: Vec<String> = if nodes.is_empty() { endpoints } else { nodes };
    if targets.is_empty() {
        return Err(Error::msg(
            "no endpoints: set them with `talosctl config endpoint` or pass -e",
        ));
    }
    let key = Key::from_pem(&unb64(&ctx.key)?)?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(unb64(&ctx.ca)?))
        .identity(Identity::from_pem(unb64(&ctx.crt)?, key.to_pkcs8_pem()));
    let mut out = Vec::new();
    for t in targets {
        let endpoint = Channel::from_shared(uri(&t))
            .map_err(|e| Error::msg(format!("invalid endpoint \"{t}\": {e}")))?
            .tls_config(tls.clone())
            .map_err(|e| Error::msg(format!("{t}: {e}")))?
            .connect_timeout(std::time::Duration::from_secs(10));
        let channel = endpoint.connect_lazy();
        out.push(Target { node: t, channel });
    }
    Ok(out)
}

pub fn machine(t: &Target) -> MachineServiceClient<Channel> {
    MachineServiceClient::new(t.channel.clone())
}

/// A failed call, worded like talosctl: the node and the gRPC message.
pub fn call_error(node: &str, status: tonic::Status) -> Error {
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
    Error::msg(format!("{node}: {what}"))
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
