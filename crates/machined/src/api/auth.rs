//! Who may call what: roles come from the client certificate's Organization, every method is
//! checked against the role table, and methods not in the table need os:admin.

use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;

use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::ServiceExt;

use super::proxy::{self, Proxy};

use super::roles_table::RULES;

pub const ADMIN: &str = "os:admin";

/// The roles of a client certificate (its Organization values; empty ones are ignored).
pub fn roles_from_cert(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    cert.subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .filter(|o| !o.is_empty())
        .map(String::from)
        .collect()
}

/// The roles that may call `method` (e.g. `/machine.MachineService/Version`).
fn rule(method: &str) -> &'static [&'static str] {
    RULES
        .iter()
        .find(|(m, _)| *m == method)
        .map(|(_, r)| *r)
        .unwrap_or(&[ADMIN])
}

/// Whether any of `roles` may call `method`.
pub fn allowed(method: &str, roles: &[String]) -> bool {
    roles.iter().any(|r| rule(method).contains(&r.as_str()))
}

/// May `roles` call `method`? In maintenance mode only the maintenance methods are served.
fn check(method: &str, roles: &[String], maintenance: bool) -> Result<(), tonic::Status> {
    if maintenance {
        if !MAINTENANCE_METHODS.contains(&method) {
            return Err(tonic::Status::permission_denied(
                "not available in maintenance mode",
            ));
        }
    } else if !allowed(method, roles) {
        tracing::info!(%method, ?roles, "denied");
        return Err(tonic::Status::permission_denied(format!(
            "not authorized: {method} needs one of the roles {}",
            rule(method).join(", ")
        )));
    }
    Ok(())
}

/// Roles another apid passed along in `talos-role`.
fn passed_roles(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(proxy::ROLE_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok().map(String::from))
        .collect()
}

/// The caller's roles, put in request extensions for handlers.
#[derive(Debug, Clone, Default)]
pub struct Roles(pub Vec<String>);

impl Roles {
    pub fn is_admin(&self) -> bool {
        self.0.iter().any(|r| r == ADMIN)
    }
}

/// Methods a node in maintenance mode serves (to anyone: it has no CA yet): its config, and
/// what helps to write one (its version, kernel log, memory, services, and the resources that
/// are not sensitive: disks, links, addresses).
pub const MAINTENANCE_METHODS: [&str; 9] = [
    "/machine.MachineService/Version",
    "/machine.MachineService/ApplyConfiguration",
    "/machine.MachineService/Dmesg",
    "/machine.MachineService/Memory",
    "/machine.MachineService/ServiceList",
    "/machine.MachineService/Logs",
    "/cosi.resource.State/Get",
    "/cosi.resource.State/List",
    "/cosi.resource.State/Watch",
];

/// A tower layer that refuses calls the caller's roles do not allow. In maintenance mode only
/// version and apply-config are served.
#[derive(Clone, Default)]
pub struct AuthLayer {
    pub maintenance: bool,
    /// Forwards calls meant for other nodes.
    pub proxy: Option<Arc<Proxy>>,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            maintenance: self.maintenance,
            proxy: self.proxy.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    maintenance: bool,
    proxy: Option<Arc<Proxy>>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Auth<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display + Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let peer = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs())
            .and_then(|certs| certs.first().map(|c| roles_from_cert(c.as_ref())))
            .unwrap_or_default();
        // Another node's apid passes its caller's roles along.
        let passed = passed_roles(req.headers());
        let roles = if peer.iter().any(|r| r == proxy::IMPERSONATOR) {
            passed
        } else {
            peer
        };
        if let Err(denied) = check(req.uri().path(), &roles, self.maintenance) {
            return Box::pin(async move { Ok(denied.into_http()) });
        }
        let targets = proxy::targets(req.headers());
        if let Some(p) = self.proxy.clone() {
            let local = match targets.as_slice() {
                [] => true,
                [one] => p.is_own(one),
                _ => false,
            };
            let remote = !local;
            if remote {
                return forward(p, self.inner.clone(), req, targets, roles);
            }
        }
        req.extensions_mut().insert(Roles(roles));
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(req))
    }
}

/// Send a call to one other node as is (streams included), or to several and merge the replies.
fn forward<S>(
    p: Arc<Proxy>,
    inner: S,
    req: http::Request<Body>,
    targets: Vec<String>,
    roles: Vec<String>,
) -> BoxFuture<Result<http::Response<Body>, S::Error>>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display + Send,
{
    Box::pin(async move {
        if let [target] = targets.as_slice() {
            let out = proxy::outgoing(req, &roles);
            let resp = p.send(target, out).await;
            return Ok(resp.unwrap_or_else(|e| {
                tonic::Status::unavailable(format!("{target}: {e}")).into_http()
            }));
        }
        let (parts, body) = match proxy::buffer(req).await {
            Ok(x) => x,
            Err(e) => return Ok(tonic::Status::internal(e).into_http()),
        };
        let mut merged = bytes::BytesMut::new();
        for t in &targets {
            let mut req = proxy::outgoing(proxy::rebuild(&parts, &body), &roles);
            let resp = if p.is_own(t) {
                req.extensions_mut().insert(Roles(roles.clone()));
                inner.clone().oneshot(req).await.map_err(|e| e.to_string())
            } else {
                p.send(t, req).await
            };
            let part = match resp {
                Ok(r) => proxy::read_reply(r).await,
                Err(e) => Err(e),
            };
            let bytes = match part.map(|b| proxy::mark(b, t)) {
                Ok(Some(b)) => b,
                Ok(None) => proxy::failure(t, "malformed reply"),
                Err(e) => proxy::failure(t, &e),
            };
            merged.extend_from_slice(&bytes);
        }
        Ok(proxy::reply(merged.freeze()))
    })
}

/// machined's side of its socket: the roles apid passed become the request's `Roles`; a call
/// without any (not from apid) is refused.
#[derive(Clone, Default)]
pub struct LocalLayer {
    pub maintenance: bool,
}

impl<S> tower::Layer<S> for LocalLayer {
    type Service = Local<S>;

    fn layer(&self, inner: S) -> Local<S> {
        Local {
            inner,
            maintenance: self.maintenance,
        }
    }
}

#[derive(Clone)]
pub struct Local<S> {
    inner: S,
    maintenance: bool,
}

impl<S> tower::Service<http::Request<Body>> for Local<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let roles = passed_roles(req.headers());
        if let Err(denied) = check(req.uri().path(), &roles, self.maintenance) {
            return Box::pin(async move { Ok(denied.into_http()) });
        }
        req.extensions_mut().insert(Roles(roles));
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(roles: &[&str]) -> Vec<String> {
        roles.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn table_and_fallback() {
        let v = "/machine.MachineService/Version";
        assert!(allowed(v, &r(&["os:reader"])));
        assert!(allowed(v, &r(&["other", "os:operator"])));
        assert!(!allowed(v, &r(&["os:etcd:backup"])));
        assert!(!allowed(v, &r(&[])));
        let unlisted = "/machine.MachineService/SomethingNew";
        assert!(allowed(unlisted, &r(&["os:admin"])));
        assert!(!allowed(unlisted, &r(&["os:operator"])));
        assert!(!allowed(
            "/machine.MachineService/GenerateClientConfiguration",
            &r(&["os:reader"])
        ));
    }
}
