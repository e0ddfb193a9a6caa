//! What to do about a failed call: the four failures users meet most (a node in maintenance
//! mode reached without `--insecure`, a talosconfig of another cluster, an expired client
//! certificate, a node that does not answer) and a role that lacks the method, each told in
//! one line after the gRPC error.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// How a node was dialed: what explains its failures.
#[derive(Clone, Default)]
pub struct Dialed {
    /// The address the client connected to (the endpoint, for a proxied node).
    pub endpoint: String,
    /// The talosconfig context (empty with --insecure).
    pub context: String,
    /// The client certificate's roles and expiry.
    pub roles: Vec<String>,
    pub expires: Option<time::OffsetDateTime>,
}

fn dialed() -> &'static Mutex<HashMap<String, Dialed>> {
    static D: OnceLock<Mutex<HashMap<String, Dialed>>> = OnceLock::new();
    D.get_or_init(Mutex::default)
}

pub fn remember(node: &str, d: Dialed) {
    dialed().lock().expect("dialed").insert(node.to_string(), d);
}

/// The status's message with the causes below it (a transport error's io error).
fn detail(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    text
}

/// The subject of the certificate `endpoint` presents, read without verifying it.
fn presented_subject(endpoint: &str) -> Option<String> {
    use std::net::ToSocketAddrs;
    let addr = if endpoint
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        endpoint.to_string()
    } else {
        format!("{endpoint}:{}", crate::client::API_PORT)
    };
    let sock = addr.to_socket_addrs().ok()?.next()?;
    let timeout = std::time::Duration::from_secs(3);
    let mut tcp = std::net::TcpStream::connect_timeout(&sock, timeout).ok()?;
    tcp.set_read_timeout(Some(timeout)).ok()?;
    let cfg = oci::tls::any_server().with_no_client_auth();
    let name = rustls::pki_types::ServerName::from(sock.ip());
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).ok()?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).ok()?;
        if conn.peer_certificates().is_some() {
            break;
        }
    }
    let der = conn.peer_certificates()?.first()?.clone();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(cert.subject().to_string())
}

/// One line on what to do about `status` from `node`, when there is something to say.
pub fn hint(node: &str, status: &tonic::Status) -> Option<String> {
    let d = dialed()
        .lock()
        .expect("dialed")
        .get(node)
        .cloned()
        .unwrap_or_default();
    let text = detail(status);
    let ctx = match d.context.is_empty() {
        true => String::new(),
        false => format!(" (context \"{}\")", d.context),
    };
    if let Some(when) = d.expires.filter(|t| *t < time::OffsetDateTime::now_utc()) {
        return Some(format!(
            "the client certificate of the talosconfig{ctx} expired on {}: get a new talosconfig (`talosctl config new` with a valid one, or `talosctl gen config` from the cluster's secrets)",
            when.date()
        ));
    }
    match status.code() {
        tonic::Code::PermissionDenied if text.contains("maintenance mode") => Some(format!(
            "{node} is in maintenance mode and serves only what helps to configure it: apply a config with `talosctl apply-config --insecure -n {node} -f <config.yaml>`"
        )),
        tonic::Code::PermissionDenied => Some(format!(
            "the talosconfig's certificate{ctx} has the roles [{}]: use a talosconfig with a role that allows this (`talosctl config new --roles os:admin` from an admin's talosconfig)",
            d.roles.join(", ")
        )),
        tonic::Code::Unavailable if text.contains("certificate") => {
            let subject = presented_subject(&d.endpoint).unwrap_or_default();
            if subject.contains("talos-maintenance") {
                Some(format!(
                    "{0} is in maintenance mode (it has no config yet): add --insecure, e.g. `talosctl apply-config --insecure -n {0} -f <config.yaml>`",
                    d.endpoint
                ))
            } else if text.contains("UnknownIssuer") || text.contains("BadSignature") {
                Some(format!(
                    "{}'s certificate is not signed by the CA of the talosconfig{ctx}: the talosconfig belongs to another cluster; pick this cluster's with --context or --talosconfig",
                    d.endpoint
                ))
            } else {
                None
            }
        }
        // The client could not reach the address it dials.
        tonic::Code::Unavailable if text.contains("tcp connect error") || text.contains("timed out") => {
            let addr = match d.endpoint.is_empty() {
                true => node,
                false => d.endpoint.as_str(),
            };
            Some(format!(
                "{addr} does not answer on the Talos API: is it up and reachable, and is it the right endpoint? (`talosctl cluster show` for a local cluster, else its console)"
            ))
        }
        // The endpoint could not reach the node it forwards to.
        tonic::Code::Unavailable if text.contains("transport error") => Some(format!(
            "{node} does not answer (the call went through the endpoint {}): is the node up? `talosctl -n {} get members` shows what the cluster knows of it",
            d.endpoint, d.endpoint
        )),
        _ => None,
    }
}
