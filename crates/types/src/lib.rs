//! The node's resource types, one Rust type each: the spec struct, and through
//! [`resources::ResourceType`] its type name, default namespace, aliases, print columns and
//! sensitivity. No logic lives here; machined's controllers read and write these types, its
//! registry registers [`definitions`], and talosctl's tables and aliases come from them
//! through the node's ResourceDefinitions.
//!
//! Start with the domain you need: [`config`], [`network`], [`runtime`], [`secrets`],
//! [`cluster`], [`k8s`], [`etcd`].

pub mod cluster;
pub mod config;
pub mod etcd;
pub mod k8s;
pub mod network;
pub mod runtime;
pub mod secrets;

use resources::{Definition, ResourceType};

/// The version of the node's software (`v` and the workspace version).
pub const TAG: &str = concat!("v", env!("CARGO_PKG_VERSION"));

pub const CONFIG_NS: &str = "config";
pub const NETWORK_NS: &str = "network";
pub const NETWORK_CONFIG_NS: &str = "network-config";
pub const RUNTIME_NS: &str = "runtime";
pub const SECRETS_NS: &str = "secrets";
pub const CLUSTER_NS: &str = "cluster";
pub const K8S_NS: &str = "k8s";
pub const CONTROLPLANE_NS: &str = "controlplane";
pub const ETCD_NS: &str = "etcd";
pub const FILES_NS: &str = "files";

/// The namespaces and their descriptions, as upstream's.
pub const NAMESPACES: &[(&str, &str)] = &[
    (CONFIG_NS, "Talos node configuration."),
    (NETWORK_NS, "Networking resources."),
    (NETWORK_CONFIG_NS, "Networking configuration resources."),
    (RUNTIME_NS, "Talos v1alpha1 subsystems glue resources."),
    (SECRETS_NS, "Resources with secret material."),
    (CLUSTER_NS, "Cluster membership resources."),
    (K8S_NS, "Kubernetes all node types resources."),
    (CONTROLPLANE_NS, "Kubernetes control plane resources."),
    (ETCD_NS, "etcd resources."),
    (FILES_NS, "Files manipulation resources."),
];

/// Implement [`ResourceType`] for a spec struct:
/// `resource_type!(Spec, "Types.x.talos.dev", NS, aliases [..], columns [(..)])`, or
/// `resource_type!(Spec, "Types.x.talos.dev", NS, sensitive)` for secret material.
macro_rules! resource_type {
    ($spec:ty, $ty:literal, $ns:expr, sensitive) => {
        impl resources::ResourceType for $spec {
            const TYPE: &'static str = $ty;
            const NAMESPACE: &'static str = $ns;
            const SENSITIVE: bool = true;
        }
    };
    ($spec:ty, $ty:literal, $ns:expr, sensitive, columns [$(($col:literal, $path:literal)),* $(,)?]) => {
        impl resources::ResourceType for $spec {
            const TYPE: &'static str = $ty;
            const NAMESPACE: &'static str = $ns;
            const SENSITIVE: bool = true;
            const COLUMNS: &'static [(&'static str, &'static str)] = &[$(($col, $path)),*];
        }
    };
    ($spec:ty, $ty:literal, $ns:expr
        $(, aliases [$($alias:literal),* $(,)?])?
        $(, columns [$(($col:literal, $path:literal)),* $(,)?])?) => {
        impl resources::ResourceType for $spec {
            const TYPE: &'static str = $ty;
            const NAMESPACE: &'static str = $ns;
            $(const ALIASES: &'static [&'static str] = &[$($alias),*];)?
            $(const COLUMNS: &'static [(&'static str, &'static str)] = &[$(($col, $path)),*];)?
        }
    };
}
pub(crate) use resource_type;

/// Every type's definition, for the node's registry.
pub fn definitions() -> Vec<Definition> {
    vec![
        config::MachineConfigSpec::definition(),
        config::MachineTypeSpec::definition(),
        secrets::ApiCertsSpec::definition(),
        secrets::EtcdCertsSpec::definition(),
        cluster::IdentitySpec::definition(),
        cluster::AffiliateSpec::definition(),
        cluster::MemberSpec::definition(),
        cluster::DiscoveryConfigSpec::definition(),
        k8s::NodenameSpec::definition(),
        k8s::ApiServerConfigSpec::definition(),
        k8s::ControllerManagerConfigSpec::definition(),
        k8s::SchedulerConfigSpec::definition(),
        k8s::StaticPodSpec::definition(),
        k8s::StaticPodServerStatusSpec::definition(),
        k8s::ConfigStatusSpec::definition(),
        k8s::SecretsStatusSpec::definition(),
        k8s::KubeletConfigSpec::definition(),
        k8s::KubeletSpecSpec::definition(),
        k8s::KubePrismEndpointsSpec::definition(),
        k8s::KubePrismConfigSpec::definition(),
        k8s::KubePrismStatusesSpec::definition(),
        k8s::NodeIpConfigSpec::definition(),
        k8s::NodeIpSpec::definition(),
        k8s::StaticPodStatusSpec::definition(),
        secrets::KubernetesRootSpec::definition(),
        secrets::KubernetesDynamicCertsSpec::definition(),
        secrets::KubernetesCertsSpec::definition(),
        secrets::KubeletSecretsSpec::definition(),
        secrets::CertSansSpec::definition(),
        runtime::LogDestinationStatusSpec::definition(),
        network::HostnameStatusSpec::definition(),
        runtime::VersionSpec::definition(),
        runtime::ExtensionStatusSpec::definition(),
        runtime::VolumeStatusSpec::definition(),
        runtime::MachineFileStatusSpec::definition(),
        runtime::MountStatusSpec::definition(),
        network::LinkStatusSpec::definition(),
        network::AddressStatusSpec::definition(),
        network::RouteStatusSpec::definition(),
        network::AddressSpecSpec::definition(),
        network::RouteSpecSpec::definition(),
        network::HostnameSpecSpec::definition(),
        network::OperatorSpecSpec::definition(),
        network::ResolverSpecSpec::definition(),
        network::ResolverStatusSpec::definition(),
        network::TimeServerSpecSpec::definition(),
        network::TimeServerStatusSpec::definition(),
        network::NetworkStatusSpec::definition(),
        network::LinkSpecSpec::definition(),
        network::NodeAddressSpec::definition(),
        runtime::TimeStatusSpec::definition(),
        runtime::KernelParamStatusSpec::definition(),
        runtime::ServiceStatusSpec::definition(),
        runtime::BootstrapRequestSpec::definition(),
        etcd::EtcdConfigSpec::definition(),
        etcd::EtcdSpecSpec::definition(),
        etcd::PkiStatusSpec::definition(),
        etcd::EtcdMemberSpec::definition(),
        k8s::BootstrapManifestsConfigSpec::definition(),
        k8s::ExtraManifestsConfigSpec::definition(),
        k8s::ManifestSpec::definition(),
        k8s::ManifestStatusSpec::definition(),
        k8s::NodeLabelSpecSpec::definition(),
        k8s::NodeTaintSpecSpec::definition(),
        k8s::NodeAnnotationSpecSpec::definition(),
        k8s::NodeCordonedSpecSpec::definition(),
    ]
}

#[cfg(test)]
mod tests {
    use resources::ResourceType;

    #[test]
    fn secret_material_is_sensitive() {
        assert!(crate::config::MachineConfigSpec::definition().is_sensitive());
        assert!(crate::secrets::ApiCertsSpec::definition().is_sensitive());
        assert!(crate::secrets::EtcdCertsSpec::definition().is_sensitive());
        assert!(crate::cluster::DiscoveryConfigSpec::definition().is_sensitive());
        assert!(!crate::etcd::EtcdSpecSpec::definition().is_sensitive());
        let mounts = crate::runtime::MountStatusSpec::definition();
        assert_eq!(mounts.all_aliases, ["mounts"]);
    }

    #[test]
    fn every_type_once_in_a_known_namespace() {
        let defs = super::definitions();
        let mut seen = std::collections::BTreeSet::new();
        for d in &defs {
            assert!(seen.insert(d.ty.clone()), "{} twice", d.ty);
            assert!(
                super::NAMESPACES
                    .iter()
                    .any(|(ns, _)| *ns == d.default_namespace),
                "{}: namespace {}",
                d.ty,
                d.default_namespace
            );
        }
    }
}
