//! Putting the config's Kubernetes objects into the cluster. k8s.ManifestApplyController
//! applies the Manifests on a control plane once etcd is healthy, holding an etcd lock so that
//! control planes take turns, and says in ManifestStatus what was applied and what failed.
//! k8s.NodeApplyController puts the node's labels, taints, annotations and cordon on its Node.

use std::time::Duration;

use k8s::client::{apply, node};
use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use types::k8s::{
    ManifestSpec, ManifestStatusSpec, NodeAnnotationSpecSpec, NodeCordonedSpecSpec,
    NodeLabelSpecSpec, NodeTaintSpecSpec, NodenameSpec, KUBELET_KUBECONFIG, MANIFEST_STATUS_ID,
};
use types::runtime::ServiceStatusSpec;
use types::secrets::{KubernetesCertsSpec, K8S_CERTS_ID};

use crate::services::etcd;

/// The etcd lock control planes take turns with (upstream's name).
const APPLY_LOCK: &str = "talos:v1:manifestApplyMutex";
/// The bound on one apply; the lock's lease outlives it.
const APPLY_TIMEOUT: Duration = Duration::from_secs(60);
const LOCK_TTL: i64 = 90;

pub struct ManifestApplyController {
    pub etcd: etcd::Handle,
}

impl ManifestApplyController {
    /// Run `apply` holding the etcd lock.
    async fn locked(
        &self,
        manifests: Vec<(String, Vec<serde_json::Value>)>,
        kubeconfig: &str,
    ) -> Result<apply::Report, String> {
        let running = self.etcd.read().expect("etcd").clone();
        let e = running.ok_or("etcd is not running")?;
        let mut c = e.client().await?;
        let lease = c
            .lease_grant(LOCK_TTL, None)
            .await
            .map_err(|e| format!("etcd lease: {}", etcd::describe(&e)))?
            .id();
        let opts = etcd_client::LockOptions::new().with_lease(lease);
        let result = async {
            let key = tokio::time::timeout(APPLY_TIMEOUT, c.lock(APPLY_LOCK, Some(opts)))
                .await
                .map_err(|_| "another control plane holds the manifest lock".to_string())?
                .map_err(|e| format!("etcd lock: {}", etcd::describe(&e)))?
                .key()
                .to_vec();
            let client = k8s::client::from_kubeconfig(kubeconfig).await?;
            // One reason when the API server is not up yet, not one per object.
            let probe = tokio::time::timeout(APPLY_TIMEOUT, client.apiserver_version()).await;
            if let Err(e) = probe
                .map_err(|_| "no answer".to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
            {
                let _ = c.unlock(key).await;
                return Err(format!("the Kubernetes API server does not answer: {e}"));
            }
            let report = tokio::time::timeout(APPLY_TIMEOUT, apply::apply(&client, &manifests))
                .await
                .map_err(|_| format!("the API server did not finish within {APPLY_TIMEOUT:?}"));
            let _ = c.unlock(key).await;
            report
        }
        .await;
        let _ = c.lease_revoke(lease).await;
        result
    }
}

#[async_trait::async_trait]
impl Controller for ManifestApplyController {
    fn name(&self) -> &str {
        "k8s.ManifestApplyController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::of::<ManifestSpec>(),
            Input::of::<KubernetesCertsSpec>().id(K8S_CERTS_ID),
            Input::of::<ServiceStatusSpec>().id(etcd::SERVICE),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<ManifestStatusSpec>()]
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let healthy = ctx
            .spec_of::<ServiceStatusSpec>(etcd::SERVICE)?
            .is_some_and(|s| s.healthy);
        let certs = ctx.spec_of::<KubernetesCertsSpec>(K8S_CERTS_ID)?;
        let (Some(certs), true) = (certs, healthy) else {
            return Ok(());
        };
        let manifests: Vec<(String, Vec<serde_json::Value>)> = ctx
            .specs_of::<ManifestSpec>()?
            .into_iter()
            .map(|(id, m)| (id, m.items))
            .collect();
        if manifests.is_empty() {
            return Ok(());
        }
        let report = self
            .locked(manifests.clone(), &certs.localhost_admin_kubeconfig)
            .await;
        let (applied, errors) = match &report {
            Ok(r) => {
                let failed = |o: &serde_json::Value| {
                    let prefix = format!("{}: ", apply::object_name(o));
                    r.errors.iter().any(|e| e.starts_with(&prefix))
                };
                let applied = manifests
                    .iter()
                    .filter(|(_, objects)| !objects.iter().any(failed))
                    .map(|(id, _)| id.clone())
                    .collect();
                (applied, r.errors.clone())
            }
            Err(e) => (Vec::new(), vec![e.clone()]),
        };
        if let Ok(r) = &report {
            for name in &r.created {
                tracing::info!("created {name}");
            }
        }
        ctx.put(
            MANIFEST_STATUS_ID,
            ManifestStatusSpec {
                manifests_applied: applied,
                errors: errors.clone(),
            },
        )?;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("applying manifests: {}", errors.join("; ")).into())
        }
    }
}

pub struct NodeApplyController {
    /// The node owns its file system (the kubelet's kubeconfig is on it).
    pub rooted: bool,
}

impl NodeApplyController {
    /// The admin kubeconfig of a control plane, else the kubelet's once it has one.
    fn kubeconfig(&self, ctx: &ReconcileContext) -> Result<Option<String>, ControllerError> {
        if let Some(c) = ctx.spec_of::<KubernetesCertsSpec>(K8S_CERTS_ID)? {
            return Ok(Some(c.localhost_admin_kubeconfig));
        }
        Ok(self
            .rooted
            .then(|| std::fs::read_to_string(KUBELET_KUBECONFIG).ok())
            .flatten())
    }
}

#[async_trait::async_trait]
impl Controller for NodeApplyController {
    fn name(&self) -> &str {
        "k8s.NodeApplyController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::of::<NodeLabelSpecSpec>(),
            Input::of::<NodeTaintSpecSpec>(),
            Input::of::<NodeAnnotationSpecSpec>(),
            Input::of::<NodeCordonedSpecSpec>(),
            Input::of::<NodenameSpec>(),
            Input::of::<KubernetesCertsSpec>().id(K8S_CERTS_ID),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        Vec::new()
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let Some((_, name)) = ctx.specs_of::<NodenameSpec>()?.into_iter().next() else {
            return Ok(());
        };
        if name.skip_node_registration {
            return Ok(());
        }
        let wanted = node::Wanted {
            labels: ctx
                .specs_of::<NodeLabelSpecSpec>()?
                .into_iter()
                .map(|(_, s)| (s.key, s.value))
                .collect(),
            annotations: ctx
                .specs_of::<NodeAnnotationSpecSpec>()?
                .into_iter()
                .map(|(_, s)| (s.key, s.value))
                .collect(),
            taints: ctx
                .specs_of::<NodeTaintSpecSpec>()?
                .into_iter()
                .map(|(_, s)| (s.key, s.value, s.effect))
                .collect(),
            cordoned: !ctx.specs_of::<NodeCordonedSpecSpec>()?.is_empty(),
        };
        // The Node may change under Talos (and register late): looked at again now and then.
        ctx.requeue_after(Duration::from_secs(60));
        let Some(kubeconfig) = self.kubeconfig(ctx)? else {
            return Ok(());
        };
        let client = k8s::client::from_kubeconfig(&kubeconfig).await?;
        let out =
            tokio::time::timeout(APPLY_TIMEOUT, node::apply(&client, &name.nodename, &wanted))
                .await
                .map_err(|_| "the API server did not answer in time".to_string())??;
        for key in out.not_owned {
            tracing::warn!("node {}: leaving {key}", name.nodename);
        }
        Ok(())
    }
}
