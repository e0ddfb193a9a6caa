//! Kubernetes on the node: the control plane's configs and static pods (`control_plane`,
//! `render`, `static_pods`) the kubelet's (`kubelet`, `kubelet_service`) and KubePrism (`kubeprism`).

pub mod apply;
pub mod control_plane;
pub mod kubelet;
pub mod kubelet_service;
pub mod kubeprism;
pub mod manifests;
pub mod node_specs;
pub mod nodeip;
pub mod render;
pub mod static_pod_status;
pub mod static_pods;

use resources::{Runtime, RuntimeError, State};
use types::k8s::{NodeAnnotationSpecSpec, NodeLabelSpecSpec, NodeTaintSpecSpec};

use crate::controllers::secrets::kubernetes as k8s_secrets;
use crate::services::supervisor::Supervisor;

/// Register the Kubernetes controllers; those writing files and running the kubelet only on a
/// node that owns its file system (`rooted`).
pub fn register(
    rt: &mut Runtime,
    rooted: bool,
    services: &Supervisor,
    state: &State,
    etcd: &crate::services::etcd::Handle,
) -> Result<(), RuntimeError> {
    rt.register(k8s_secrets::KubernetesRootController)?;
    rt.register(k8s_secrets::KubeletController)?;
    rt.register(k8s_secrets::KubernetesCertsController::default())?;
    rt.register(control_plane::ControlPlaneController)?;
    rt.register(control_plane::ControlPlaneFinalController)?;
    rt.register(kubelet::KubeletSpecController)?;
    rt.register(nodeip::NodeIpConfigController)?;
    rt.register(nodeip::NodeIpController)?;
    rt.register(static_pods::StaticPodConfigController)?;
    rt.register(kubeprism::KubePrismEndpointsController)?;
    rt.register(kubeprism::KubePrismConfigController)?;
    rt.register(static_pods::StaticPodServerController::default())?;
    rt.register(manifests::ManifestsConfigController)?;
    rt.register(manifests::ManifestController)?;
    rt.register(manifests::ExtraManifestController)?;
    rt.register(apply::ManifestApplyController { etcd: etcd.clone() })?;
    rt.register(apply::NodeApplyController { rooted })?;
    rt.register(node_specs::NodeSpecController::<NodeLabelSpecSpec>::default())?;
    rt.register(node_specs::NodeSpecController::<NodeTaintSpecSpec>::default())?;
    rt.register(node_specs::NodeSpecController::<NodeAnnotationSpecSpec>::default())?;
    if rooted {
        // A node that runs no kubelet has no KubeletConfig (`health` skips its kubelet).
        rt.register(kubelet::KubeletConfigController)?;
        rt.register(render::RenderSecretsController)?;
        rt.register(render::RenderConfigsController)?;
        rt.register(static_pods::ControlPlaneStaticPodController)?;
        rt.register(kubeprism::KubePrismController::default())?;
        rt.register(static_pod_status::KubeletStaticPodController::default())?;
        rt.register(kubelet_service::KubeletServiceController::new(
            services.clone(),
            state.clone(),
        ))?;
    }
    Ok(())
}
