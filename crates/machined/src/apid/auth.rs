//! Who may call what: roles come from the client certificate's Organization, every method is
//! checked against the role table, and methods not in the table need os:admin.

use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

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

/// Whether any of `roles` may call `method` (e.g. `/machine.MachineService/Version`).
pub fn allowed(method: &str, roles: &[String]) -> bool {
    let rule: &[&str] = RULES
        .iter()
        .find(|(m, _)| *m == method)
        .map(|(_, r)| *r)
        .unwrap_or(&[ADMIN]);
    roles.iter().any(|r| rule.contains(&r.as_str()))
}

/// The caller's roles, put in request extensions for handlers.
#[derive(Debug, Clone, Default)]
pub struct Roles(pub Vec<String>);

impl Roles {
    pub fn is_admin(&self) -> bool {
        self.0.iter().any(|r| r == ADMIN)
    }
}

/// Methods a node in maintenance mode serves (to anyone: it has no CA yet).
pub const MAINTENANCE_METHODS: [&str; 2] = [
    "/machine.MachineService/Version",
    "/machine.MachineService/ApplyConfiguration",
];

/// A tower layer that refuses calls the caller's roles do not allow. In maintenance mode only
/// version and apply-config are served.
#[derive(Debug, Clone, Default)]
pub struct AuthLayer {
    pub maintenance: bool,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            maintenance: self.maintenance,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    maintenance: bool,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let roles = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs())
            .and_then(|certs| certs.first().map(|c| roles_from_cert(c.as_ref())))
            .unwrap_or_default();
        let method = req.uri().path().to_string();
        if self.maintenance {
            if !MAINTENANCE_METHODS.contains(&method.as_str()) {
                let denied = tonic::Status::permission_denied("not available in maintenance mode")
                    .into_http();
                return Box::pin(async move { Ok(denied) });
            }
        } else if !allowed(&method, &roles) {
            tracing::info!(%method, ?roles, "denied");
            let denied = tonic::Status::permission_denied("not authorized").into_http();
            return Box::pin(async move { Ok(denied) });
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
