//! Draining a node before it reboots or upgrades (`talosctl reboot|upgrade --drain`): its Node
//! cordoned, then every pod on it evicted through the Eviction API (so PodDisruptionBudgets
//! hold) except mirror pods, DaemonSet pods and finished pods, and waited for until gone.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{EvictParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::apply::describe;

/// The name of the Node with address `ip`, if one has it.
pub async fn node_by_address(client: &Client, ip: &str) -> Result<Option<String>, String> {
    Ok(super::node_with_address(client, ip)
        .await?
        .and_then(|n| n.metadata.name))
}

/// Whether `pod` stays: a mirror pod, a DaemonSet's, or one that has finished.
fn stays(pod: &Pod) -> bool {
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let daemon = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet");
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    mirror || daemon || finished
}

fn pod_name(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or("default"),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

async fn pods_on(client: &Client, node: &str) -> Result<Vec<Pod>, String> {
    let api: Api<Pod> = Api::all(client.clone());
    Ok(api
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .map_err(|e| format!("listing the pods of {node}: {}", describe(&e)))?
        .items
        .into_iter()
        .filter(|p| !stays(p))
        .collect())
}

/// Lift the cordon of a drain whose reboot did not happen.
pub async fn uncordon(client: &Client, node: &str) -> Result<(), String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = json!({
        "metadata": {"annotations": {super::node::CORDONED: null}},
        "spec": {"unschedulable": null},
    });
    nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(drop)
        .map_err(|e| format!("uncordoning {node}: {}", describe(&e)))
}

/// Cordon Node `node`, evict its pods and wait (up to `timeout`) until they are gone; the pods
/// evicted.
pub async fn drain(
    client: &Client,
    node: &str,
    timeout: Duration,
    log: &mut dyn FnMut(String),
) -> Result<Vec<String>, String> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch(
            node,
            &PatchParams::default(),
            // Marked as Talos's cordon: the node lifts it once back (NodeApplyController).
            &Patch::Merge(json!({
                "metadata": {"annotations": {super::node::CORDONED: "true"}},
                "spec": {"unschedulable": true},
            })),
        )
        .await
        .map_err(|e| format!("cordoning {node}: {}", describe(&e)))?;
    log(format!("{node}: cordoned"));
    let deadline = Instant::now() + timeout;
    let mut evicted = Vec::new();
    loop {
        let left = pods_on(client, node).await?;
        if left.is_empty() {
            return Ok(evicted);
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = left.iter().map(pod_name).collect();
            return Err(format!(
                "draining {node}: pods still on the node after {timeout:?}: {names:?}"
            ));
        }
        for p in &left {
            let name = pod_name(p);
            if evicted.contains(&name) {
                continue;
            }
            let ns = p.metadata.namespace.as_deref().unwrap_or("default");
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            match api
                .evict(
                    p.metadata.name.as_deref().unwrap_or(""),
                    &EvictParams::default(),
                )
                .await
            {
                Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404, .. })) => {
                    log(format!("{node}: evicting {name}"));
                    evicted.push(name);
                }
                // A disruption budget says not now: tried again until the deadline.
                Err(kube::Error::Api(kube::core::ErrorResponse { code: 429, .. })) => {}
                Err(e) => return Err(format!("evicting {name}: {}", describe(&e))),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::client::fake::FakeApi;

    fn pod(name: &str, node: &str, extra: Value) -> Value {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "apps"},
            "spec": {"nodeName": node, "containers": []}});
        if let (Some(m), Some(e)) = (p["metadata"].as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        p
    }

    #[tokio::test]
    async fn cordons_and_evicts_all_but_mirror_and_daemonset_pods() {
        let api = FakeApi::new();
        let c = api.client();
        api.insert(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "w1"},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.5.0.3"}]}}),
        );
        api.insert(pod("web", "w1", json!({})));
        api.insert(pod("other-node", "w2", json!({})));
        api.insert(pod(
            "mirror",
            "w1",
            json!({"annotations": {"kubernetes.io/config.mirror": "x"}}),
        ));
        api.insert(pod("agent", "w1", json!({"ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": "u"}]})));
        assert_eq!(
            node_by_address(&c, "10.5.0.3").await.unwrap().as_deref(),
            Some("w1")
        );
        assert_eq!(node_by_address(&c, "10.5.0.9").await.unwrap(), None);

        let mut lines = Vec::new();
        let evicted = drain(&c, "w1", Duration::from_secs(5), &mut |l| lines.push(l))
            .await
            .unwrap();
        assert_eq!(evicted, ["apps/web"]);
        assert_eq!(lines, ["w1: cordoned", "w1: evicting apps/web"]);
        assert_eq!(
            api.get("", "nodes", "", "w1").unwrap()["spec"]["unschedulable"],
            true
        );
        assert!(api.get("", "pods", "apps", "web").is_none());
        assert!(api.get("", "pods", "apps", "other-node").is_some());
        assert!(api.get("", "pods", "apps", "mirror").is_some());
        uncordon(&c, "w1").await.unwrap();
        assert!(api.get("", "nodes", "", "w1").unwrap()["spec"]
            .get("unschedulable")
            .is_none());
        let evictions = api.calls("POST");
        assert_eq!(evictions, ["/api/v1/namespaces/apps/pods/web/eviction?"]);
    }
}
