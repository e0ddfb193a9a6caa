//! What the node's Kubernetes Node object carries by the config: NodeLabelSpecs,
//! NodeTaintSpecs and NodeAnnotationSpecs (id: the key), from `machine.nodeLabels`,
//! `nodeTaints`, `nodeAnnotations` or a KubeNodeConfig document, with the control plane's role
//! label and taint. k8s.NodeApplyController puts them on the Node.

use std::marker::PhantomData;

use machinery::Config;
use resources::{Controller, ControllerError, Output, ReconcileContext, ResourceType};
use serde_json::Value;
use types::k8s::{NodeAnnotationSpecSpec, NodeLabelSpecSpec, NodeTaintSpecSpec};

use crate::controllers::inputs;

const PATHS: &[&str] = &[
    "kind:KubeNodeConfig",
    "/machine/type",
    "/machine/nodeLabels",
    "/machine/nodeTaints",
    "/machine/nodeAnnotations",
    "/cluster/allowSchedulingOnControlPlanes",
];

pub const CONTROL_PLANE_ROLE: &str = "node-role.kubernetes.io/control-plane";

/// `field` of the KubeNodeConfig document when the config has one (it is then the whole
/// truth: generated configs write the role label and taint into it), else v1alpha1's.
fn entries(cfg: &Config, doc_field: &str, v1alpha1: &str) -> Vec<(String, String)> {
    let v = match cfg.kind("KubeNodeConfig").next() {
        Some(doc) => doc.value.get(doc_field),
        None => cfg.pointer(v1alpha1),
    };
    machinery::kubernetes::string_map(v).into_iter().collect()
}

/// A spec type the config fills.
pub trait NodeSpec: ResourceType + Sized {
    const CONTROLLER: &'static str;
    fn of(cfg: &Config) -> Vec<(String, Self)>;
}

impl NodeSpec for NodeLabelSpecSpec {
    const CONTROLLER: &'static str = "k8s.NodeLabelSpecController";
    fn of(cfg: &Config) -> Vec<(String, Self)> {
        let from_doc = cfg.kind("KubeNodeConfig").next().is_some();
        let mut labels = entries(cfg, "labels", "/machine/nodeLabels");
        if !from_doc && cfg.is_control_plane() {
            labels.push((CONTROL_PLANE_ROLE.into(), String::new()));
        }
        labels
            .into_iter()
            .map(|(key, value)| (key.clone(), NodeLabelSpecSpec { key, value }))
            .collect()
    }
}

impl NodeSpec for NodeAnnotationSpecSpec {
    const CONTROLLER: &'static str = "k8s.NodeAnnotationSpecController";
    fn of(cfg: &Config) -> Vec<(String, Self)> {
        entries(cfg, "annotations", "/machine/nodeAnnotations")
            .into_iter()
            .map(|(key, value)| (key.clone(), NodeAnnotationSpecSpec { key, value }))
            .collect()
    }
}

/// `value:Effect` or `Effect`.
pub fn taint(key: &str, text: &str) -> NodeTaintSpecSpec {
    let (value, effect) = text.rsplit_once(':').unwrap_or(("", text));
    NodeTaintSpecSpec {
        key: key.into(),
        effect: effect.into(),
        value: value.into(),
    }
}

impl NodeSpec for NodeTaintSpecSpec {
    const CONTROLLER: &'static str = "k8s.NodeTaintSpecController";
    fn of(cfg: &Config) -> Vec<(String, Self)> {
        let from_doc = cfg.kind("KubeNodeConfig").next().is_some();
        let mut taints: Vec<NodeTaintSpecSpec> = entries(cfg, "taints", "/machine/nodeTaints")
            .iter()
            .map(|(k, v)| taint(k, v))
            .collect();
        let scheduling = cfg
            .pointer("/cluster/allowSchedulingOnControlPlanes")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !from_doc && cfg.is_control_plane() && !scheduling {
            taints.push(taint(CONTROL_PLANE_ROLE, "NoSchedule"));
        }
        taints.into_iter().map(|t| (t.key.clone(), t)).collect()
    }
}

/// Writes the specs of `T` the config gives, and removes those it no longer does.
pub struct NodeSpecController<T>(PhantomData<fn() -> T>);

impl<T> Default for NodeSpecController<T> {
    fn default() -> Self {
        NodeSpecController(PhantomData)
    }
}

#[async_trait::async_trait]
impl<T: NodeSpec + Send + 'static> Controller for NodeSpecController<T> {
    fn name(&self) -> &str {
        T::CONTROLLER
    }
    fn inputs(&self) -> Vec<resources::Input> {
        vec![inputs::config(PATHS)]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<T>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let Some(cfg) = inputs::machine_config(ctx)? else {
            return Ok(());
        };
        for (id, spec) in T::of(&cfg) {
            ctx.put(&id, spec)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1alpha1(machine_type: &str, extra: &str) -> Config {
        Config::parse(&format!(
            "version: v1alpha1\nmachine:\n  type: {machine_type}\n{extra}cluster:\n  controlPlane:\n    endpoint: https://10.5.0.2:6443\n"
        ))
        .unwrap()
    }

    fn keys<T>(specs: Vec<(String, T)>) -> Vec<String> {
        specs.into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn control_planes_get_the_role_label_and_taint_unless_scheduling_is_allowed() {
        let cp = v1alpha1("controlplane", "  nodeLabels:\n    rack: r1\n");
        assert_eq!(
            keys(NodeLabelSpecSpec::of(&cp)),
            ["rack", CONTROL_PLANE_ROLE]
        );
        let taints = NodeTaintSpecSpec::of(&cp);
        assert_eq!(taints[0].1.effect, "NoSchedule");
        let worker = v1alpha1(
            "worker",
            "  nodeTaints:\n    gpu: \"true:NoExecute\"\n    spot: PreferNoSchedule\n",
        );
        let taints: Vec<_> = NodeTaintSpecSpec::of(&worker)
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        assert_eq!(
            (taints[0].value.as_str(), taints[0].effect.as_str()),
            ("true", "NoExecute")
        );
        assert_eq!(
            (taints[1].value.as_str(), taints[1].effect.as_str()),
            ("", "PreferNoSchedule")
        );
        assert!(NodeLabelSpecSpec::of(&worker).is_empty());
        let allowed = Config::parse(&cp.encode_canonical().replace(
            "cluster:\n",
            "cluster:\n    allowSchedulingOnControlPlanes: true\n",
        ))
        .unwrap();
        assert!(NodeTaintSpecSpec::of(&allowed).is_empty());
    }

    #[test]
    fn a_kube_node_config_document_is_the_whole_truth() {
        let cfg = Config::parse(
            "version: v1alpha1\nmachine:\n  type: controlplane\ncluster:\n  controlPlane:\n    endpoint: https://10.5.0.2:6443\n---\napiVersion: v1alpha1\nkind: KubeNodeConfig\nlabels:\n  a: b\nannotations:\n  rack: r13\n",
        )
        .unwrap();
        assert_eq!(keys(NodeLabelSpecSpec::of(&cfg)), ["a"]);
        assert!(NodeTaintSpecSpec::of(&cfg).is_empty());
        assert_eq!(NodeAnnotationSpecSpec::of(&cfg)[0].1.value, "r13");
    }
}
