//! `MachineService/Kubeconfig`.

use tonic::Status;

use super::services;
use crate::node::Node;

/// `MachineService/Kubeconfig`: a control plane's admin kubeconfig with a certificate issued
/// for this call, as a gzipped tar holding `kubeconfig` (as upstream sends it).
pub fn kubeconfig(node: &Node) -> Result<services::DataStream, Status> {
    use types::secrets::{KubernetesRootSpec, K8S_CERTS_ID};
    let root = node
        .state
        .spec_of::<KubernetesRootSpec>(K8S_CERTS_ID)
        .ok_or_else(|| {
            Status::failed_precondition(
                "kubeconfig is served by control plane nodes only (this node has no Kubernetes CA)",
            )
        })?;
    let text = crate::controllers::secrets::kubernetes::admin_kubeconfig(&root)
        .map_err(Status::internal)?;
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(crate::sys::pki::now());
    header.set_cksum();
    archive
        .append_data(&mut header, "kubeconfig", text.as_bytes())
        .and_then(|_| archive.into_inner())
        .and_then(|gz| gz.finish())
        .map(|bytes| services::one(bytes))
        .map_err(|e| Status::internal(format!("kubeconfig archive: {e}")))
}
