//! The Kubernetes checks of `talosctl health`, each one attempt: `Ok(Pass)`, `Ok(Skip)` (the
//! thing checked is not deployed) or `Err(why)`, to be polled until it passes.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::{Api, Client};

use super::apply::describe;

pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// What an attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Skip,
}

pub type Attempt = Result<Outcome, String>;

async fn nodes(client: &Client) -> Result<Vec<Node>, String> {
    let api: Api<Node> = Api::all(client.clone());
    Ok(api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing nodes: {}", describe(&e)))?
        .items)
}

fn name(n: &Node) -> String {
    n.metadata.name.clone().unwrap_or_default()
}

/// A node's InternalIP and ExternalIP addresses.
fn addresses(n: &Node) -> Vec<String> {
    n.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .map(|a| a.address.clone())
        .collect()
}

/// The nodes (by address) against the expected ones: the first that lacks or is extra.
fn same_nodes<'a>(found: impl Iterator<Item = &'a Node>, expected: &[String]) -> Attempt {
    let found: Vec<&Node> = found.collect();
    let have: BTreeSet<String> = found.iter().flat_map(|n| addresses(n)).collect();
    let missing: Vec<&String> = expected.iter().filter(|e| !have.contains(*e)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "expected nodes {missing:?} are not registered in Kubernetes"
        ));
    }
    let extra: Vec<String> = found
        .iter()
        .filter(|n| !addresses(n).iter().any(|a| expected.contains(a)))
        .map(|n| name(n))
        .collect();
    if !extra.is_empty() {
        return Err(format!("unexpected nodes {extra:?} in Kubernetes"));
    }
    Ok(Outcome::Pass)
}

/// "all k8s nodes to report": the Nodes are the Talos nodes.
pub async fn nodes_report(client: &Client, expected: &[String]) -> Attempt {
    let all = nodes(client).await?;
    same_nodes(all.iter(), expected)
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn pods(client: &Client, app: &str) -> Result<Vec<Pod>, String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    Ok(api
        .list(&ListParams::default().labels(&format!("k8s-app={app}")))
        .await
        .map_err(|e| format!("listing {app} pods: {}", describe(&e)))?
        .items)
}

fn pod_name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

/// "all control plane components to be ready": the control plane Nodes are the expected
/// ones, and each component has one Ready pod per control plane.
pub async fn control_plane_components_ready(client: &Client, control_planes: &[String]) -> Attempt {
    let all = nodes(client).await?;
    let cps = all.iter().filter(|n| {
        n.metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(CONTROL_PLANE_LABEL))
    });
    same_nodes(cps, control_planes)?;
    for component in [
        "kube-apiserver",
        "kube-scheduler",
        "kube-controller-manager",
    ] {
        let found = pods(client, component).await?;
        if found.len() != control_planes.len() {
            return Err(format!(
                "expected number of pods for {component} to be {}, got {}",
                control_planes.len(),
                found.len()
            ));
        }
        let not_ready: Vec<String> = found.iter().filter(|p| !ready(p)).map(pod_name).collect();
        if !not_ready.is_empty() {
            return Err(format!(
                "some pods are not ready for {component}: {not_ready:?}"
            ));
        }
    }
    Ok(Outcome::Pass)
}

/// "all k8s nodes to report ready".
pub async fn nodes_ready(client: &Client) -> Attempt {
    let not_ready: Vec<String> = nodes(client)
        .await?
        .iter()
        .filter(|n| {
            !n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(name)
        .collect();
    match not_ready.is_empty() {
        true => Ok(Outcome::Pass),
        false => Err(format!("some nodes are not ready: {not_ready:?}")),
    }
}

/// Ready pods of `app` against the number wanted.
async fn pods_ready(client: &Client, app: &str, wanted: i32) -> Attempt {
    let found = pods(client, app).await?;
    let not_ready: Vec<String> = found.iter().filter(|p| !ready(p)).map(pod_name).collect();
    let ready_count = found.len() - not_ready.len();
    if !not_ready.is_empty() {
        return Err(format!("some pods are not ready: {not_ready:?}"));
    }
    if ready_count as i32 != wanted {
        return Err(format!("expected {wanted} ready pods, got {ready_count}"));
    }
    Ok(Outcome::Pass)
}

/// "kube-proxy to report ready": skipped when no kube-proxy DaemonSet is deployed.
pub async fn kube_proxy_ready(client: &Client) -> Attempt {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), "kube-system");
    let sets = api
        .list(&ListParams::default().labels("k8s-app=kube-proxy"))
        .await
        .map_err(|e| format!("listing DaemonSets: {}", describe(&e)))?
        .items;
    let desired = sets
        .first()
        .and_then(|d| d.status.as_ref())
        .map_or(0, |s| s.desired_number_scheduled);
    if desired == 0 {
        return Ok(Outcome::Skip);
    }
    pods_ready(client, "kube-proxy", desired).await
}

/// "coredns to report ready": skipped when no CoreDNS Deployment is deployed.
pub async fn coredns_ready(client: &Client) -> Attempt {
    let api: Api<Deployment> = Api::namespaced(client.clone(), "kube-system");
    let deployments = api
        .list(&ListParams::default().labels("k8s-app=kube-dns"))
        .await
        .map_err(|e| format!("listing Deployments: {}", describe(&e)))?
        .items;
    let Some(d) = deployments.first() else {
        return Ok(Outcome::Skip);
    };
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    pods_ready(client, "kube-dns", replicas).await
}

/// "all k8s nodes to report schedulable": none cordoned.
pub async fn nodes_schedulable(client: &Client) -> Attempt {
    let cordoned: Vec<String> = nodes(client)
        .await?
        .iter()
        .filter(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
        })
        .map(name)
        .collect();
    match cordoned.first() {
        None => Ok(Outcome::Pass),
        Some(first) => Err(format!("some nodes are not schedulable: [{first:?}]")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::client::fake::FakeApi;

    fn node(name: &str, ip: &str, cp: bool, ready: bool) -> Value {
        let labels = if cp {
            json!({CONTROL_PLANE_LABEL: ""})
        } else {
            json!({})
        };
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn pod(name: &str, app: &str, ready: bool) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "kube-system", "labels": {"k8s-app": app}},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn ips(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn each_check_passes_and_fails_with_its_line() {
        let api = FakeApi::new();
        let c = api.client();
        api.insert(node("cp-1", "10.5.0.2", true, true));
        assert_eq!(
            nodes_report(&c, &ips(&["10.5.0.2", "10.5.0.3"]))
                .await
                .unwrap_err(),
            "expected nodes [\"10.5.0.3\"] are not registered in Kubernetes"
        );
        api.insert(node("w-1", "10.5.0.3", false, false));
        assert_eq!(
            nodes_report(&c, &ips(&["10.5.0.2", "10.5.0.3"])).await,
            Ok(Outcome::Pass)
        );
        assert_eq!(
            nodes_report(&c, &ips(&["10.5.0.2"])).await.unwrap_err(),
            "unexpected nodes [\"w-1\"] in Kubernetes"
        );

        let cps = ips(&["10.5.0.2"]);
        assert_eq!(
            control_plane_components_ready(&c, &cps).await.unwrap_err(),
            "expected number of pods for kube-apiserver to be 1, got 0"
        );
        api.insert(pod("kube-apiserver-cp-1", "kube-apiserver", true));
        api.insert(pod("kube-scheduler-cp-1", "kube-scheduler", false));
        assert_eq!(
            control_plane_components_ready(&c, &cps).await.unwrap_err(),
            "some pods are not ready for kube-scheduler: [\"kube-scheduler-cp-1\"]"
        );
        api.insert(pod("kube-scheduler-cp-1", "kube-scheduler", true));
        api.insert(pod(
            "kube-controller-manager-cp-1",
            "kube-controller-manager",
            true,
        ));
        assert_eq!(
            control_plane_components_ready(&c, &cps).await,
            Ok(Outcome::Pass)
        );

        assert_eq!(
            nodes_ready(&c).await.unwrap_err(),
            "some nodes are not ready: [\"w-1\"]"
        );
        api.insert(node("w-1", "10.5.0.3", false, true));
        assert_eq!(nodes_ready(&c).await, Ok(Outcome::Pass));

        // Not deployed: skipped.
        assert_eq!(kube_proxy_ready(&c).await, Ok(Outcome::Skip));
        assert_eq!(coredns_ready(&c).await, Ok(Outcome::Skip));
        api.insert(json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": {"k8s-app": "kube-proxy"}},
            "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberMisscheduled": 0, "numberReady": 1}}));
        api.insert(pod("kube-proxy-a", "kube-proxy", true));
        assert_eq!(
            kube_proxy_ready(&c).await.unwrap_err(),
            "expected 2 ready pods, got 1"
        );
        api.insert(pod("kube-proxy-b", "kube-proxy", true));
        assert_eq!(kube_proxy_ready(&c).await, Ok(Outcome::Pass));
        api.insert(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "spec": {"replicas": 2, "selector": {}, "template": {}}}));
        api.insert(pod("coredns-a", "kube-dns", false));
        assert_eq!(
            coredns_ready(&c).await.unwrap_err(),
            "some pods are not ready: [\"coredns-a\"]"
        );

        assert_eq!(nodes_schedulable(&c).await, Ok(Outcome::Pass));
        let mut cordoned = node("w-1", "10.5.0.3", false, true);
        cordoned["spec"] = json!({"unschedulable": true});
        api.insert(cordoned);
        assert_eq!(
            nodes_schedulable(&c).await.unwrap_err(),
            "some nodes are not schedulable: [\"w-1\"]"
        );
    }
}
