//! The configuration files of the control plane's components and the kubeconfigs Talos
//! writes, as the objects the components read.

use base64::Engine;
use serde_json::{json, Value};

/// The API server's EncryptionConfig for the secrets of the config: secretbox first (the one
/// new data is written with), then aescbc, then identity (reads unencrypted data) unless both
/// keys are set.
pub fn encryption_config(secretbox: &str, aescbc: &str) -> Value {
    let mut providers = Vec::new();
    if !secretbox.is_empty() {
        providers.push(json!({"secretbox": {"keys": [{"name": "key2", "secret": secretbox}]}}));
    }
    if !aescbc.is_empty() {
        providers.push(json!({"aescbc": {"keys": [{"name": "key1", "secret": aescbc}]}}));
    }
    if secretbox.is_empty() || aescbc.is_empty() {
        providers.push(json!({"identity": {}}));
    }
    json!({
        "apiVersion": "v1",
        "kind": "EncryptionConfig",
        "resources": [{"resources": ["secrets"], "providers": providers}],
    })
}

/// A configuration object of the machine config with its `apiVersion` and `kind` set.
pub fn with_kind(config: &serde_json::Map<String, Value>, api_version: &str, kind: &str) -> Value {
    let mut out = Value::Object(config.clone());
    out["apiVersion"] = api_version.into();
    out["kind"] = kind.into();
    out
}

/// The API server's AuthorizationConfiguration of these authorizers, in order.
pub fn authorization_config(authorizers: &[Value]) -> Value {
    json!({
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AuthorizationConfiguration",
        "authorizers": authorizers,
    })
}

/// The API server's AdmissionConfiguration from `cluster.apiServer.admissionControl`.
pub fn admission_config(plugins: &[Value]) -> Value {
    json!({
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": plugins,
    })
}

/// The audit policy: the config's, or everything at the Metadata level.
pub fn audit_policy(policy: Option<&Value>) -> Value {
    match policy {
        Some(p) if p.is_object() => p.clone(),
        _ => {
            json!({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [{"level": "Metadata"}]})
        }
    }
}

/// Who a kubeconfig is for and where it points.
pub struct Kubeconfig<'a> {
    pub cluster: &'a str,
    pub server: &'a str,
    /// The CA bundle (PEM) the server's certificate chains to.
    pub ca: &'a str,
    /// The user's name (`admin`, `system:kube-scheduler`).
    pub user: &'a str,
    /// The context's name.
    pub context: &'a str,
    pub auth: Auth<'a>,
    /// The namespace of the context, if any.
    pub namespace: Option<&'a str>,
}

/// How a kubeconfig's user proves who it is.
pub enum Auth<'a> {
    /// A client certificate and its key (PEM).
    Cert { crt: &'a str, key: &'a str },
    /// A bearer token (the kubelet's bootstrap token, `<id>.<secret>`).
    Token(&'a str),
}

/// A kubeconfig (`kind: Config`) with the credentials inline.
pub fn kubeconfig(k: &Kubeconfig) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut context = json!({"cluster": k.cluster, "user": k.user});
    if let Some(ns) = k.namespace {
        context["namespace"] = ns.into();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": k.cluster, "cluster": {
            "server": k.server,
            "certificate-authority-data": b64(k.ca),
        }}],
        "users": [{"name": k.user, "user": match k.auth {
            Auth::Cert { crt, key } => json!({
                "client-certificate-data": b64(crt),
                "client-key-data": b64(key),
            }),
            Auth::Token(token) => json!({"token": token}),
        }}],
        "contexts": [{"name": k.context, "context": context}],
        "current-context": k.context,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encryption_configs_match_upstreams_goldens() {
        let golden = |name: &str| {
            std::fs::read_to_string(format!(
                "{}/../../../shared/conformance/k8s/templates/{name}.yaml",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        };
        let secretbox = "/FYehPLp5F8POCNQRVDEUb7Hmt+KkV44e+fQL4HMexs=";
        let aescbc = "/sFYehPLp5F8POCNQRVDEUb7Hmt+KkV44e+fQL4HMexs=";
        let render = |s, a| crate::yaml::to_string(&encryption_config(s, a));
        assert_eq!(
            render(secretbox, ""),
            golden("apiserver-encryption-secretbox")
        );
        assert_eq!(render("", aescbc), golden("apiserver-encryption-aescbc"));
        assert_eq!(
            render(secretbox, aescbc),
            golden("apiserver-encryption-config")
        );
    }
}
