//! Cluster membership: this node's identity, the affiliates discovery knows, and the members
//! they make, with discovery's own settings.

use serde::Serialize;

use crate::{resource_type, CLUSTER_NS, CONFIG_NS};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentitySpec {
    pub node_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlane {
    pub api_server_port: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AffiliateSpec {
    pub node_id: String,
    pub addresses: Vec<String>,
    pub hostname: String,
    pub nodename: String,
    pub machine_type: String,
    pub operating_system: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlane>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberSpec {
    pub node_id: String,
    pub addresses: Vec<String>,
    pub hostname: String,
    pub machine_type: String,
    pub operating_system: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlane>,
    /// False once the node has been silent for 25 s (it stays listed until its TTL runs out).
    pub reachable: bool,
}

/// The id of the DiscoveryConfig resource.
pub const DISCOVERY_ID: &str = "discovery";

/// Discovery's settings, from `cluster.discovery` or `DiscoveryServiceConfig` (sensitive: it
/// holds the cluster secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryConfigSpec {
    pub discovery_enabled: bool,
    pub registry_service_enabled: bool,
    pub service_endpoint: String,
    pub service_cluster_id: String,
    pub service_encryption_key: String,
    /// The affiliate's TTL, seconds.
    pub ttl_seconds: u64,
}

resource_type!(
    IdentitySpec,
    "Identities.cluster.talos.dev",
    CLUSTER_NS,
    columns[("ID", "{.nodeId}")]
);
resource_type!(AffiliateSpec, "Affiliates.cluster.talos.dev", CLUSTER_NS,
    columns [("Hostname", "{.hostname}"), ("Machine Type", "{.machineType}"),
        ("Addresses", "{.addresses}")]);
resource_type!(MemberSpec, "Members.cluster.talos.dev", CLUSTER_NS,
    columns [("Hostname", "{.hostname}"), ("Machine Type", "{.machineType}"),
        ("OS", "{.operatingSystem}"), ("Addresses", "{.addresses}")]);
resource_type!(
    DiscoveryConfigSpec,
    "DiscoveryConfigs.cluster.talos.dev",
    CONFIG_NS,
    sensitive
);
