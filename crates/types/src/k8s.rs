//! Kubernetes on the node.

use std::collections::BTreeMap;

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
    columns[("Nodename", "{.nodename}")]
);

use crate::CONTROLPLANE_NS;

/// Ids of the control plane components' resources.
pub const APISERVER_ID: &str = "kube-apiserver";
pub const CONTROLLER_MANAGER_ID: &str = "kube-controller-manager";
pub const SCHEDULER_ID: &str = "kube-scheduler";
/// The id prefix of a component's config with its full command line.
pub const FINAL_PREFIX: &str = "final-";

/// A host path mounted into a control plane pod.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtraVolume {
    pub name: String,
    pub host_path: String,
    pub mount_path: String,
    #[serde(rename = "readonly")]
    pub read_only: bool,
}

/// Requests and limits by resource name (`cpu`, `memory`), as quantities.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Resources {
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
}

/// kube-apiserver's settings (id `kube-apiserver`), and its full command line in
/// `final-kube-apiserver`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerConfigSpec {
    pub image: String,
    pub cloud_provider: String,
    pub control_plane_endpoint: String,
    pub etcd_servers: Vec<String>,
    pub local_port: u16,
    #[serde(rename = "serviceCIDR")]
    pub service_cidrs: Vec<String>,
    pub extra_args: BTreeMap<String, Vec<String>>,
    pub extra_volumes: Vec<ExtraVolume>,
    pub environment_variables: BTreeMap<String, String>,
    pub advertised_address: String,
    pub resources: Resources,
    pub startup_probes_enabled: bool,
    pub use_authentication_config: bool,
    /// The command line: only in the final form.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

/// kube-controller-manager's settings, and its command line in the final form.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerManagerConfigSpec {
    pub enabled: bool,
    pub image: String,
    pub cloud_provider: String,
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Vec<String>,
    #[serde(rename = "serviceCIDRs")]
    pub service_cidrs: Vec<String>,
    pub extra_args: BTreeMap<String, Vec<String>>,
    pub extra_volumes: Vec<ExtraVolume>,
    pub environment_variables: BTreeMap<String, String>,
    pub resources: Resources,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

/// kube-scheduler's settings, its configuration file, and its command line in the final form.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerConfigSpec {
    pub enabled: bool,
    pub image: String,
    pub extra_args: BTreeMap<String, Vec<String>>,
    pub extra_volumes: Vec<ExtraVolume>,
    pub environment_variables: BTreeMap<String, String>,
    pub resources: Resources,
    /// `cluster.scheduler.config`; in the final form the whole KubeSchedulerConfiguration.
    pub config: serde_json::Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

resource_type!(
    ApiServerConfigSpec,
    "APIServerConfigs.kubernetes.talos.dev",
    CONTROLPLANE_NS,
    sensitive
);
resource_type!(
    ControllerManagerConfigSpec,
    "ControllerManagerConfigs.kubernetes.talos.dev",
    CONTROLPLANE_NS
);
resource_type!(
    SchedulerConfigSpec,
    "SchedulerConfigs.kubernetes.talos.dev",
    CONTROLPLANE_NS
);

/// A static pod the kubelet runs (the whole Pod object).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StaticPodSpec {
    pub pod: serde_json::Value,
}

resource_type!(StaticPodSpec, "StaticPods.kubernetes.talos.dev", K8S_NS);

/// Where the static pod server serves the node's static pods (id `static-pods`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StaticPodServerStatusSpec {
    pub url: String,
}

pub const STATIC_POD_SERVER_ID: &str = "static-pods";

resource_type!(
    StaticPodServerStatusSpec,
    "StaticPodServerStatuses.kubernetes.talos.dev",
    K8S_NS
);

/// Which version of the inputs a control plane's files on disk are (ids `static-pods` for
/// the secrets, configs and static pods).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigStatusSpec {
    pub ready: bool,
    pub version: String,
}

resource_type!(ConfigStatusSpec, "ConfigStatuses.kubernetes.talos.dev", CONTROLPLANE_NS,
    columns [("Ready", "{.ready}"), ("Secrets Version", "{.version}")]);

/// The id of the statuses of the files the static pods read.
pub const STATIC_POD_FILES_ID: &str = "static-pods";

/// The same for the secrets written under /system/secrets/kubernetes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecretsStatusSpec {
    pub ready: bool,
    pub version: String,
}

resource_type!(SecretsStatusSpec, "SecretStatuses.kubernetes.talos.dev", CONTROLPLANE_NS,
    columns [("Ready", "{.ready}"), ("Secrets Version", "{.version}")]);

/// The id of the kubelet's resources.
pub const KUBELET_ID: &str = "kubelet";

/// Where the kubelet's files live on the node.
pub const KUBELET_CONFIG: &str = "/etc/kubernetes/kubelet.yaml";
pub const KUBELET_BOOTSTRAP_KUBECONFIG: &str = "/etc/kubernetes/bootstrap-kubeconfig";
pub const KUBELET_KUBECONFIG: &str = "/etc/kubernetes/kubeconfig-kubelet";
pub const KUBELET_CA: &str = "/etc/kubernetes/pki/ca.crt";
pub const KUBELET_PKI_DIR: &str = "/var/lib/kubelet/pki";

/// A mount into the kubelet's container (`machine.kubelet.extraMounts`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KubeletMount {
    pub destination: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// `machine.kubelet` and what it needs from the rest of the config.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfigSpec {
    pub image: String,
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub extra_args: BTreeMap<String, Vec<String>>,
    pub extra_mounts: Vec<KubeletMount>,
    pub extra_config: serde_json::Value,
    pub cloud_provider_external: bool,
    pub default_runtime_seccomp_enabled: bool,
    pub skip_node_registration: bool,
    pub static_pod_list_url: String,
    #[serde(rename = "registerWithFQDN")]
    pub register_with_fqdn: bool,
    /// `machine.nodeTaints` as `key=value:Effect`.
    pub node_taints: Vec<String>,
}

/// What the kubelet service runs: its image, command line, mounts and KubeletConfiguration.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletSpecSpec {
    pub image: String,
    pub args: Vec<String>,
    pub extra_mounts: Vec<KubeletMount>,
    pub expected_nodename: String,
    pub config: serde_json::Value,
}

resource_type!(
    KubeletConfigSpec,
    "KubeletConfigs.kubernetes.talos.dev",
    K8S_NS,
    sensitive
);
resource_type!(
    KubeletSpecSpec,
    "KubeletSpecs.kubernetes.talos.dev",
    K8S_NS,
    sensitive
);

/// The id of KubePrism's resources.
pub const KUBEPRISM_ID: &str = "k8s-cluster";

/// An API server KubePrism may send connections to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct KubePrismEndpoint {
    pub host: String,
    pub port: u32,
}

/// The API servers KubePrism knows of: the cluster endpoint, the local API server on a
/// control plane, and the control planes discovery knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KubePrismEndpointsSpec {
    pub endpoints: Vec<KubePrismEndpoint>,
}

/// What KubePrism runs with: where it listens and where it sends connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KubePrismConfigSpec {
    pub host: String,
    pub port: u32,
    pub endpoints: Vec<KubePrismEndpoint>,
}

/// KubePrism's address and whether any API server behind it answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KubePrismStatusesSpec {
    pub host: String,
    pub healthy: bool,
}

resource_type!(KubePrismEndpointsSpec, "KubePrismEndpoints.kubernetes.talos.dev", K8S_NS,
    columns [("Hosts", "{.endpoints[*].host}"), ("Ports", "{.endpoints[*].port}")]);
resource_type!(KubePrismConfigSpec, "KubePrismConfigs.kubernetes.talos.dev", K8S_NS,
    columns [("Host", "{.host}"), ("Port", "{.port}"), ("Endpoints", "{.endpoints}")]);
resource_type!(KubePrismStatusesSpec, "KubePrismStatuses.kubernetes.talos.dev", K8S_NS,
    columns [("HOST", "{.host}"), ("HEALTHY", "{.healthy}")]);

/// Which of the node's addresses the kubelet may register (id `kubelet`): inside one of
/// `validSubnets` (`!cidr` excludes), outside every `excludeSubnets` (the pod and service
/// subnets, the shared IPs).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeIpConfigSpec {
    pub valid_subnets: Vec<String>,
    pub exclude_subnets: Vec<String>,
}

/// The addresses the kubelet registers (id `kubelet`): at most one of each family.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeIpSpec {
    pub addresses: Vec<String>,
}

resource_type!(
    NodeIpConfigSpec,
    "NodeIPConfigs.kubernetes.talos.dev",
    K8S_NS
);
resource_type!(NodeIpSpec, "NodeIPs.kubernetes.talos.dev", K8S_NS);

/// What the kubelet says of one of the node's static pods (id `<namespace>/<name>`): its
/// PodStatus as the kubelet reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct StaticPodStatusSpec(pub serde_json::Value);

resource_type!(
    StaticPodStatusSpec,
    "StaticPodStatuses.kubernetes.talos.dev",
    K8S_NS,
    aliases["podstatus"],
    columns[("Ready", "{.conditions[?(@.type==\"Ready\")].status}")]
);

/// What the control plane puts into the cluster at bootstrap (id `manifests`): the inputs of
/// the bootstrap manifests (CoreDNS, Flannel, kube-proxy, the RBAC the nodes need).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapManifestsConfigSpec {
    /// The API server the cluster's own workloads reach (KubePrism when enabled).
    pub server: String,
    pub cluster_domain: String,
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Vec<String>,
    pub proxy_enabled: bool,
    pub proxy_image: String,
    pub proxy_args: Vec<String>,
    pub proxy_resources: Resources,
    /// The KubeProxyConfiguration kube-proxy reads from a ConfigMap; null with flags only.
    pub proxy_config: serde_json::Value,
    pub proxy_config_checksum: String,
    #[serde(rename = "coreDNSEnabled")]
    pub core_dns_enabled: bool,
    #[serde(rename = "coreDNSImage")]
    pub core_dns_image: String,
    #[serde(rename = "dnsServiceIP")]
    pub dns_service_ip: String,
    #[serde(rename = "dnsServiceIPv6")]
    pub dns_service_ipv6: String,
    pub flannel_enabled: bool,
    pub flannel_image: String,
    pub flannel_extra_args: Vec<String>,
    pub flannel_backend_type: String,
    pub flannel_backend_port: u16,
    #[serde(rename = "flannelBackendMTU")]
    pub flannel_backend_mtu: u32,
    pub flannel_backend_extra_config: serde_json::Map<String, serde_json::Value>,
    pub flannel_resources: Resources,
    pub flannel_kube_service_host: String,
    pub flannel_kube_service_port: String,
    pub flannel_kube_network_policies_enabled: bool,
    pub flannel_kube_network_policies_image: String,
    #[serde(rename = "talosAPIServiceEnabled")]
    pub talos_api_service_enabled: bool,
    #[serde(rename = "cniName")]
    pub cni_name: String,
}

pub const BOOTSTRAP_MANIFESTS_ID: &str = "manifests";

resource_type!(
    BootstrapManifestsConfigSpec,
    "BootstrapManifestsConfigs.kubernetes.talos.dev",
    CONTROLPLANE_NS
);

/// A manifest fetched or given inline: `cluster.extraManifests`, `cluster.inlineManifests`,
/// CNI URLs, the external cloud provider's manifests.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtraManifest {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// Sorts the manifest among the others (`30` after the bootstrap ones, `99` last).
    pub priority: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub inline_manifest: String,
}

/// The extra manifests of the config (id `extra-manifests`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtraManifestsConfigSpec {
    pub extra_manifests: Vec<ExtraManifest>,
}

pub const EXTRA_MANIFESTS_ID: &str = "extra-manifests";

resource_type!(
    ExtraManifestsConfigSpec,
    "ExtraManifestsConfigs.kubernetes.talos.dev",
    CONTROLPLANE_NS
);

/// One manifest: the Kubernetes objects it holds, applied in the order of the manifests' ids.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ManifestSpec {
    pub items: Vec<serde_json::Value>,
}

resource_type!(
    ManifestSpec,
    "Manifests.kubernetes.talos.dev",
    CONTROLPLANE_NS
);

/// What the last apply did (id `manifests`): the manifests applied, and the objects that
/// failed with why.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestStatusSpec {
    pub manifests_applied: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

pub const MANIFEST_STATUS_ID: &str = "manifests";

resource_type!(
    ManifestStatusSpec,
    "ManifestStatuses.kubernetes.talos.dev",
    CONTROLPLANE_NS
);

/// A label the node carries in Kubernetes (id: the key).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeLabelSpecSpec {
    pub key: String,
    pub value: String,
}

resource_type!(
    NodeLabelSpecSpec,
    "NodeLabelSpecs.k8s.talos.dev",
    K8S_NS,
    sensitive,
    columns[("Value", "{.value}")]
);

/// A taint the node carries (id: the key).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeTaintSpecSpec {
    pub key: String,
    pub effect: String,
    pub value: String,
}

resource_type!(NodeTaintSpecSpec, "NodeTaintSpecs.k8s.talos.dev", K8S_NS, sensitive,
    columns [("Effect", "{.effect}"), ("Value", "{.value}")]);

/// An annotation the node carries (id: the key).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeAnnotationSpecSpec {
    pub key: String,
    pub value: String,
}

resource_type!(
    NodeAnnotationSpecSpec,
    "NodeAnnotationSpecs.k8s.talos.dev",
    K8S_NS,
    sensitive,
    columns[("Value", "{.value}")]
);

/// The node is to be cordoned (id `cordoned`), while it upgrades or shuts down.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeCordonedSpecSpec {}

resource_type!(
    NodeCordonedSpecSpec,
    "NodeCordonedSpecs.k8s.talos.dev",
    K8S_NS,
    sensitive
);
