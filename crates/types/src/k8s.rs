//! Kubernetes on the node.

use serde::Serialize;

use crate::{resource_type, K8S_NS};

/// The node's name in Kubernetes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodenameSpec {
    pub nodename: String,
    pub skip_node_registration: bool,
}

resource_type!(
    NodenameSpec,
    "Nodenames.kubernetes.talos.dev",
    K8S_NS,
    aliases["nodename"],
    columns[("Nodename", "{.nodename}")]
);
