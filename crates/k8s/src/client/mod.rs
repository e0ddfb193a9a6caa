//! Talking to the cluster's API with kube: applying manifests (`apply`), the node's labels,
//! taints and cordon (`node`), and what `talosctl health` checks (`health`).

pub mod apply;
pub mod drain;
#[cfg(any(test, feature = "fake-api"))]
pub mod fake;
pub mod health;
pub mod node;
pub mod sync;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope};
use kube::{Api, Client};

/// A client of the cluster a kubeconfig (its text) names.
pub async fn from_kubeconfig(text: &str) -> Result<Client, String> {
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(text).map_err(|e| format!("kubeconfig: {e}"))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| format!("kubeconfig: {e}"))?;
    Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
}

/// `group/version` of an apiVersion (`v1` is the core group's).
pub fn gvk(api_version: &str, kind: &str) -> GroupVersionKind {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

/// The API of objects of one kind, in `namespace` when the kind is namespaced (`default`
/// when the object names none).
pub fn dynamic_api(
    client: &Client,
    resource: &(ApiResource, ApiCapabilities),
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match resource.1.scope {
        Scope::Namespaced => {
            Api::namespaced_with(client.clone(), namespace.unwrap_or("default"), &resource.0)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource.0),
    }
}

/// The Node with address `ip`, if one has it.
pub async fn node_with_address(
    client: &Client,
    ip: &str,
) -> Result<Option<k8s_openapi::api::core::v1::Node>, String> {
    let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let nodes = api
        .list(&Default::default())
        .await
        .map_err(|e| format!("listing nodes: {}", apply::describe(&e)))?;
    Ok(nodes.items.into_iter().find(|n| {
        n.status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .is_some_and(|a| a.iter().any(|a| a.address == ip))
    }))
}
