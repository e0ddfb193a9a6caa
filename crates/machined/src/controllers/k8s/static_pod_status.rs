//! k8s.KubeletStaticPodController: on a control plane whose kubelet runs, asks the kubelet
//! every 15 s which pods it runs (with the API server's kubelet client certificate) and keeps
//! a StaticPodStatus of each static one (from a file or the static pod server): its PodStatus
//! as the kubelet says. None while the kubelet is not running.

use std::time::Duration;

use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use serde_json::Value;
use types::k8s::{NodenameSpec, StaticPodStatusSpec, KUBELET_PKI_DIR};
use types::runtime::ServiceStatusSpec;
use types::secrets::{
    KubernetesDynamicCertsSpec, KubernetesRootSpec, K8S_CERTS_ID, K8S_DYNAMIC_CERTS_ID,
};

use crate::sys::kubelet_api::{self, Credentials, KUBELET_API};

const REFRESH: Duration = Duration::from_secs(15);

/// The static pods of a kubelet's PodList: (`namespace/name`, status).
pub fn static_pod_statuses(list: &Value) -> Vec<(String, Value)> {
    list.get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|pod| {
            matches!(
                pod.pointer("/metadata/annotations/kubernetes.io~1config.source")
                    .and_then(Value::as_str),
                Some("file" | "http")
            )
        })
        .map(|pod| {
            let meta = |f: &str| {
                pod.pointer(&format!("/metadata/{f}"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            (
                format!("{}/{}", meta("namespace"), meta("name")),
                pod.get("status").cloned().unwrap_or(Value::Null),
            )
        })
        .collect()
}

#[derive(Default)]
pub struct KubeletStaticPodController {
    /// What the kubelet said last (kept while it does not answer).
    last: Vec<(String, Value)>,
}

#[async_trait::async_trait]
impl Controller for KubeletStaticPodController {
    fn name(&self) -> &str {
        "k8s.KubeletStaticPodController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::of::<ServiceStatusSpec>().id(crate::services::kubelet::SERVICE),
            Input::of::<NodenameSpec>(),
            Input::of::<KubernetesDynamicCertsSpec>().id(K8S_DYNAMIC_CERTS_ID),
            Input::of::<KubernetesRootSpec>().id(K8S_CERTS_ID),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<StaticPodStatusSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let running = ctx
            .spec_of::<ServiceStatusSpec>(crate::services::kubelet::SERVICE)?
            .is_some_and(|s| s.running);
        let (Some(certs), Some(root), Some((_, node))) = (
            ctx.spec_of::<KubernetesDynamicCertsSpec>(K8S_DYNAMIC_CERTS_ID)?,
            ctx.spec_of::<KubernetesRootSpec>(K8S_CERTS_ID)?,
            ctx.specs_of::<NodenameSpec>()?.into_iter().next(),
        ) else {
            self.last.clear();
            return Ok(());
        };
        if !running {
            self.last.clear();
            return Ok(());
        }
        // The kubelet's own serving certificate (self-signed unless it was issued by the
        // cluster's CA) and the cluster's CAs.
        let mut roots = vec![root.issuing_ca.crt.clone()];
        roots.extend(root.accepted_cas.iter().cloned());
        roots.extend(std::fs::read_to_string(format!("{KUBELET_PKI_DIR}/kubelet.crt")).ok());
        let creds = Credentials {
            server_name: &node.nodename,
            crt: &certs.api_server_kubelet_client.crt,
            key: &certs.api_server_kubelet_client.key,
            roots: &roots,
        };
        match kubelet_api::get(KUBELET_API, "/pods", &creds).await {
            Ok(list) => self.last = static_pod_statuses(&list),
            Err(e) => tracing::debug!(error = e, "the kubelet's pods"),
        }
        for (id, status) in &self.last {
            ctx.put(id, StaticPodStatusSpec(status.clone()))?;
        }
        ctx.requeue_after(REFRESH);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_static_pods_each_by_namespace_and_name() {
        let pod = |name: &str, source: &str| {
            serde_json::json!({
                "metadata": {"name": name, "namespace": "kube-system",
                    "annotations": {"kubernetes.io/config.source": source}},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
            })
        };
        let list = serde_json::json!({"items": [
            pod("kube-apiserver-node-1", "http"),
            pod("kube-scheduler-node-1", "file"),
            pod("coredns-1234", "api"),
        ]});
        let statuses = static_pod_statuses(&list);
        let ids: Vec<&str> = statuses.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "kube-system/kube-apiserver-node-1",
                "kube-system/kube-scheduler-node-1"
            ]
        );
        assert_eq!(statuses[0].1["phase"], "Running");
    }
}
