//! An in-process FAKE of the Kubernetes API server, for tests only: no API server can run on
//! the machines this project is built on. It answers what Talos's clients ask, in the API's
//! shapes: discovery (`/api/v1`, `/apis/<group>/<version>`), GET and LIST, POST, DELETE,
//! server-side apply (`application/apply-patch+yaml`, merged over what is stored) and JSON
//! merge patches. Every request is recorded for the tests to check; chosen paths can be made
//! to fail.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

/// A kind the fake serves.
#[derive(Debug, Clone)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> Kind {
    Kind {
        group,
        version,
        kind,
        plural,
        namespaced,
    }
}

/// The kinds Talos's manifests and checks use.
pub const KINDS: &[Kind] = &[
    kind("", "v1", "Namespace", "namespaces", false),
    kind("", "v1", "Node", "nodes", false),
    kind("", "v1", "Pod", "pods", true),
    kind("", "v1", "Service", "services", true),
    kind("", "v1", "ServiceAccount", "serviceaccounts", true),
    kind("", "v1", "ConfigMap", "configmaps", true),
    kind("", "v1", "Secret", "secrets", true),
    kind("apps", "v1", "DaemonSet", "daemonsets", true),
    kind("apps", "v1", "Deployment", "deployments", true),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    kind("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    kind(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
    ),
];

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    /// Objects by (group, plural, namespace, name).
    objects: BTreeMap<(String, String, String, String), Value>,
    requests: Vec<Recorded>,
    /// Paths that answer this status instead.
    failures: BTreeMap<String, u16>,
    kinds: Vec<Kind>,
    version: u64,
    /// The field manager that last applied each object: its next apply replaces what it
    /// applied before (fields it no longer sets go, as with the real server-side apply).
    applied_by: BTreeMap<(String, String, String, String), String>,
}

/// The fake API; clones share their state. `client()` gives a kube client talking to it.
#[derive(Clone)]
pub struct FakeApi(Arc<Mutex<Inner>>);

impl Default for FakeApi {
    fn default() -> Self {
        FakeApi(Arc::new(Mutex::new(Inner {
            kinds: KINDS.to_vec(),
            ..Default::default()
        })))
    }
}

fn api_version(k: &Kind) -> String {
    if k.group.is_empty() {
        k.version.to_string()
    } else {
        format!("{}/{}", k.group, k.version)
    }
}

impl FakeApi {
    pub fn new() -> FakeApi {
        FakeApi::default()
    }

    /// A kube client of this fake.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    /// Store `object` as if someone had created it.
    pub fn insert(&self, object: Value) {
        let mut s = self.0.lock().unwrap();
        let k = s
            .kinds
            .iter()
            .find(|k| {
                api_version(k) == object["apiVersion"].as_str().unwrap_or("")
                    && k.kind == object["kind"].as_str().unwrap_or("")
            })
            .cloned()
            .expect("a kind the fake serves");
        let ns = if k.namespaced {
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
        } else {
            ""
        };
        let key = (
            k.group.to_string(),
            k.plural.to_string(),
            ns.to_string(),
            object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
        s.objects.insert(key, object);
    }

    /// The stored object, if any.
    pub fn get(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = (group.into(), plural.into(), namespace.into(), name.into());
        self.0.lock().unwrap().objects.get(&key).cloned()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.0.lock().unwrap().requests.clone()
    }

    /// Requests with `method`, as `path?query`.
    pub fn calls(&self, method: &str) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method)
            .map(|r| format!("{}?{}", r.path, r.query))
            .collect()
    }

    /// Make requests to `path` answer `status`.
    pub fn fail(&self, path: &str, status: u16) {
        self.0.lock().unwrap().failures.insert(path.into(), status);
    }

    fn handle(&self, r: Recorded) -> (u16, Value) {
        let mut s = self.0.lock().unwrap();
        s.requests.push(r.clone());
        if let Some(code) = s.failures.get(&r.path) {
            return (*code, status(*code, "injected failure"));
        }
        let parts: Vec<&str> = r.path.trim_matches('/').split('/').collect();
        match parts.as_slice() {
            ["api"] => {
                return (
                    200,
                    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
                )
            }
            ["apis"] => {
                let mut groups: Vec<(&str, &str)> = s
                    .kinds
                    .iter()
                    .filter(|k| !k.group.is_empty())
                    .map(|k| (k.group, k.version))
                    .collect();
                groups.dedup();
                let groups: Vec<Value> = groups
                    .into_iter()
                    .map(|(g, v)| {
                        let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                        json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
                    })
                    .collect();
                return (
                    200,
                    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
                );
            }
            _ => {}
        }
        // Discovery.
        let (group, version, rest) = match parts.as_slice() {
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return (404, status(404, "not found")),
        };
        if rest.is_empty() {
            let resources: Vec<Value> = s
                .kinds
                .iter()
                .filter(|k| k.group == group && k.version == version)
                .map(|k| {
                    json!({"name": k.plural, "singularName": k.kind.to_lowercase(), "namespaced": k.namespaced,
                        "kind": k.kind, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
                })
                .collect();
            if resources.is_empty() {
                return (
                    404,
                    status(404, "the server could not find the requested resource"),
                );
            }
            let gv = if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            };
            return (
                200,
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
            );
        }
        // The Eviction API: the pod goes at once (no disruption budgets in the fake).
        if let ["namespaces", ns, "pods", name, "eviction"] = rest {
            let key = (
                String::new(),
                "pods".to_string(),
                ns.to_string(),
                name.to_string(),
            );
            return match (r.method.as_str(), s.objects.remove(&key)) {
                ("POST", Some(_)) => (
                    201,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}),
                ),
                ("POST", None) => (404, status(404, &format!("pods {name:?} not found"))),
                _ => (405, status(405, "method not allowed")),
            };
        }
        let (ns, plural, name) = match rest {
            ["namespaces", ns, plural] => (*ns, *plural, None),
            ["namespaces", ns, plural, name] => (*ns, *plural, Some(*name)),
            [plural] => ("", *plural, None),
            [plural, name] => ("", *plural, Some(*name)),
            _ => return (404, status(404, "not found")),
        };
        let Some(k) = s
            .kinds
            .iter()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
            .cloned()
        else {
            return (
                404,
                status(404, "the server could not find the requested resource"),
            );
        };
        let key = |name: &str| {
            (
                group.to_string(),
                plural.to_string(),
                ns.to_string(),
                name.to_string(),
            )
        };
        match (r.method.as_str(), name) {
            ("GET", None) => {
                let selector = label_selector(&r.query, "labelSelector=");
                let fields = label_selector(&r.query, "fieldSelector=");
                let labelled = |v: &Value| {
                    selector.iter().all(|(k, want)| {
                        v["metadata"]["labels"].get(k).and_then(Value::as_str) == Some(want)
                    }) && fields.iter().all(|(path, want)| {
                        v.pointer(&format!("/{}", path.replace('.', "/")))
                            .and_then(Value::as_str)
                            == Some(want)
                    })
                };
                let items: Vec<Value> = s
                    .objects
                    .iter()
                    .filter(|((g, p, n, _), _)| {
                        g == group && p == plural && (ns.is_empty() || n == ns)
                    })
                    .map(|(_, v)| v)
                    .filter(|v| labelled(v))
                    .cloned()
                    .collect();
                (
                    200,
                    json!({"apiVersion": api_version(&k), "kind": format!("{}List", k.kind), "metadata": {}, "items": items}),
                )
            }
            ("GET", Some(name)) => match s.objects.get(&key(name)) {
                Some(v) => (200, v.clone()),
                None => (404, not_found(&k, name)),
            },
            ("DELETE", Some(name)) => match s.objects.remove(&key(name)) {
                Some(v) => (200, v),
                None => (404, not_found(&k, name)),
            },
            ("POST", None) => {
                let name = r.body["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if s.objects.contains_key(&key(&name)) {
                    return (
                        409,
                        status(409, &format!("{} {name:?} already exists", k.plural)),
                    );
                }
                let v = s.stored(r.body.clone());
                s.objects.insert(key(&name), v.clone());
                (201, v)
            }
            ("PATCH", Some(name)) => {
                let dry_run = r.query.split('&').any(|kv| kv == "dryRun=All");
                let current = s.objects.get(&key(name)).cloned();
                let manager = r
                    .query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("fieldManager="))
                    .unwrap_or("")
                    .to_string();
                let merged = if r.content_type.starts_with("application/apply-patch") {
                    let same = s.applied_by.get(&key(name)) == Some(&manager);
                    let mut base = if same {
                        Value::Null
                    } else {
                        current.unwrap_or(Value::Null)
                    };
                    merge(&mut base, &r.body, false);
                    if !dry_run {
                        s.applied_by.insert(key(name), manager);
                    }
                    base
                } else if r.content_type.starts_with("application/merge-patch+json") {
                    let Some(mut base) = current else {
                        return (404, not_found(&k, name));
                    };
                    merge(&mut base, &r.body, true);
                    base
                } else {
                    return (
                        415,
                        status(415, &format!("unsupported patch type {}", r.content_type)),
                    );
                };
                if dry_run {
                    return (200, merged);
                }
                let v = s.stored(merged);
                s.objects.insert(key(name), v.clone());
                (200, v)
            }
            _ => (405, status(405, "method not allowed")),
        }
    }
}

impl Inner {
    /// `object` with the resource version the fake gives it.
    fn stored(&mut self, mut object: Value) -> Value {
        self.version += 1;
        object["metadata"]["resourceVersion"] = self.version.to_string().into();
        object
    }
}

/// Merge `patch` into `base`: objects key by key, anything else replaced; with `nulls`
/// (JSON merge patch) a null removes the key.
fn merge(base: &mut Value, patch: &Value, nulls: bool) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if nulls && v.is_null() {
                    b.remove(k);
                } else {
                    merge(b.entry(k.clone()).or_insert(Value::Null), v, nulls);
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// The `key=value` terms of a LIST's label or field selector (`param` with its `=`; all the
/// fake understands).
fn label_selector(query: &str, param: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        s.replace("%3D", "=")
            .replace("%2C", ",")
            .replace("%2F", "/")
    };
    query
        .split('&')
        .filter_map(|kv| kv.strip_prefix(param))
        .flat_map(|sel| {
            decode(sel)
                .split(',')
                .filter_map(|t| {
                    t.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn status(code: u16, message: &str) -> Value {
    let reason = match code {
        404 => "NotFound",
        409 => "AlreadyExists",
        403 => "Forbidden",
        _ => "InternalError",
    };
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code})
}

fn not_found(k: &Kind, name: &str) -> Value {
    status(404, &format!("{} {name:?} not found", k.plural))
}

impl tower::Service<Request<kube::client::Body>> for FakeApi {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        let api = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let content_type = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                // Apply patches come as YAML; JSON is YAML.
                serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                    machinery::yaml::parse_stream(&String::from_utf8_lossy(&bytes))
                        .ok()
                        .and_then(|d| d.into_iter().next())
                        .map_or(Value::Null, |d| d.value)
                })
            };
            let recorded = Recorded {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or("").to_string(),
                content_type,
                body,
            };
            let (code, value) = api.handle(recorded);
            let response = Response::builder()
                .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(value.to_string())))
                .expect("a response");
            Ok(response)
        })
    }
}
