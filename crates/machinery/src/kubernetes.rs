//! What the machine config may and may not say to Kubernetes components: which command-line
//! flags Talos owns (and how the rest merge with its own), and the KubeletConfiguration
//! (kubelet.config.k8s.io/v1beta1) fields `machine.kubelet.extraConfig` may set.

use serde_json::Value;

/// How a flag from `extraArgs` combines with Talos's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// The user's value replaces Talos's (the default).
    Overwrite,
    /// Comma-separated values: Talos's first, then the user's not already there.
    Additive,
    /// The user's values are passed as further occurrences of the flag.
    Append,
    /// Talos owns the flag; setting it is an error.
    Denied,
}

/// kube-apiserver's flags.
pub fn api_server_flag(flag: &str) -> Merge {
    match flag {
        "enable-admission-plugins" | "feature-gates" | "authorization-mode" => Merge::Additive,
        "etcd-servers"
        | "client-ca-file"
        | "requestheader-client-ca-file"
        | "proxy-client-cert-file"
        | "proxy-client-key-file"
        | "encryption-provider-config"
        | "etcd-cafile"
        | "etcd-certfile"
        | "etcd-keyfile"
        | "kubelet-client-certificate"
        | "kubelet-client-key"
        | "service-account-key-file"
        | "service-account-signing-key-file"
        | "tls-cert-file"
        | "tls-min-version"
        | "tls-private-key-file"
        | "authorization-config"
        | "authentication-config" => Merge::Denied,
        _ => Merge::Overwrite,
    }
}

/// kube-controller-manager's flags.
pub fn controller_manager_flag(flag: &str) -> Merge {
    match flag {
        "service-cluster-ip-range" | "controllers" => Merge::Additive,
        "cluster-signing-cert-file"
        | "cluster-signing-key-file"
        | "authentication-kubeconfig"
        | "authorization-kubeconfig"
        | "root-ca-file"
        | "service-account-private-key-file" => Merge::Denied,
        _ => Merge::Overwrite,
    }
}

/// kube-scheduler's flags.
pub fn scheduler_flag(flag: &str) -> Merge {
    match flag {
        "kubeconfig" | "authentication-kubeconfig" | "authorization-kubeconfig" | "config" => {
            Merge::Denied
        }
        _ => Merge::Overwrite,
    }
}

/// The kubelet's flags.
pub fn kubelet_flag(flag: &str) -> Merge {
    match flag {
        "bootstrap-kubeconfig"
        | "kubeconfig"
        | "container-runtime"
        | "container-runtime-endpoint"
        | "config"
        | "cert-dir" => Merge::Denied,
        _ => Merge::Overwrite,
    }
}

/// A component's section of the machine config and its flag policy.
pub struct Component {
    /// JSON pointer of the section (`/cluster/apiServer`).
    pub pointer: &'static str,
    /// The same as users write it (`cluster.apiServer`).
    pub path: &'static str,
    pub flag: fn(&str) -> Merge,
}

pub const COMPONENTS: &[Component] = &[
    Component {
        pointer: "/cluster/apiServer",
        path: "cluster.apiServer",
        flag: api_server_flag,
    },
    Component {
        pointer: "/cluster/controllerManager",
        path: "cluster.controllerManager",
        flag: controller_manager_flag,
    },
    Component {
        pointer: "/cluster/scheduler",
        path: "cluster.scheduler",
        flag: scheduler_flag,
    },
    Component {
        pointer: "/machine/kubelet",
        path: "machine.kubelet",
        flag: kubelet_flag,
    },
];

/// The JSON type of a KubeletConfiguration field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
    Float,
    /// Strings, durations (`5m0s`) and quantities.
    String,
    List,
    Object,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Bool => "a boolean",
            Kind::Int => "an integer",
            Kind::Float => "a number",
            Kind::String => "a string",
            Kind::List => "a list",
            Kind::Object => "a mapping",
        }
    }
}

/// Every field of KubeletConfiguration v1beta1 (as of Kubernetes 1.34) and its type.
pub const KUBELET_FIELDS: &[(&str, Kind)] = {
    use Kind::*;
    &[
        ("apiVersion", String),
        ("kind", String),
        ("enableServer", Bool),
        ("staticPodPath", String),
        ("podLogsDir", String),
        ("syncFrequency", String),
        ("fileCheckFrequency", String),
        ("httpCheckFrequency", String),
        ("staticPodURL", String),
        ("staticPodURLHeader", Object),
        ("address", String),
        ("port", Int),
        ("readOnlyPort", Int),
        ("tlsCertFile", String),
        ("tlsPrivateKeyFile", String),
        ("tlsCipherSuites", List),
        ("tlsMinVersion", String),
        ("rotateCertificates", Bool),
        ("serverTLSBootstrap", Bool),
        ("authentication", Object),
        ("authorization", Object),
        ("registryPullQPS", Int),
        ("registryBurst", Int),
        ("imagePullCredentialsVerificationPolicy", String),
        ("preloadedImagesVerificationAllowlist", List),
        ("eventRecordQPS", Int),
        ("eventBurst", Int),
        ("enableDebuggingHandlers", Bool),
        ("enableContentionProfiling", Bool),
        ("healthzPort", Int),
        ("healthzBindAddress", String),
        ("oomScoreAdj", Int),
        ("clusterDomain", String),
        ("clusterDNS", List),
        ("streamingConnectionIdleTimeout", String),
        ("nodeStatusUpdateFrequency", String),
        ("nodeStatusReportFrequency", String),
        ("nodeLeaseDurationSeconds", Int),
        ("imageMinimumGCAge", String),
        ("imageMaximumGCAge", String),
        ("imageGCHighThresholdPercent", Int),
        ("imageGCLowThresholdPercent", Int),
        ("volumeStatsAggPeriod", String),
        ("kubeletCgroups", String),
        ("systemCgroups", String),
        ("cgroupRoot", String),
        ("cgroupsPerQOS", Bool),
        ("cgroupDriver", String),
        ("cpuManagerPolicy", String),
        ("singleProcessOOMKill", Bool),
        ("cpuManagerPolicyOptions", Object),
        ("cpuManagerReconcilePeriod", String),
        ("memoryManagerPolicy", String),
        ("topologyManagerPolicy", String),
        ("topologyManagerScope", String),
        ("topologyManagerPolicyOptions", Object),
        ("qosReserved", Object),
        ("runtimeRequestTimeout", String),
        ("hairpinMode", String),
        ("maxPods", Int),
        ("podCIDR", String),
        ("podPidsLimit", Int),
        ("resolvConf", String),
        ("runOnce", Bool),
        ("cpuCFSQuota", Bool),
        ("cpuCFSQuotaPeriod", String),
        ("nodeStatusMaxImages", Int),
        ("maxOpenFiles", Int),
        ("contentType", String),
        ("kubeAPIQPS", Int),
        ("kubeAPIBurst", Int),
        ("serializeImagePulls", Bool),
        ("maxParallelImagePulls", Int),
        ("evictionHard", Object),
        ("evictionSoft", Object),
        ("evictionSoftGracePeriod", Object),
        ("evictionPressureTransitionPeriod", String),
        ("evictionMaxPodGracePeriod", Int),
        ("evictionMinimumReclaim", Object),
        ("mergeDefaultEvictionSettings", Bool),
        ("podsPerCore", Int),
        ("enableControllerAttachDetach", Bool),
        ("protectKernelDefaults", Bool),
        ("makeIPTablesUtilChains", Bool),
        ("iptablesMasqueradeBit", Int),
        ("iptablesDropBit", Int),
        ("featureGates", Object),
        ("failSwapOn", Bool),
        ("memorySwap", Object),
        ("containerLogMaxSize", String),
        ("containerLogMaxFiles", Int),
        ("containerLogMaxWorkers", Int),
        ("containerLogMonitorInterval", String),
        ("configMapAndSecretChangeDetectionStrategy", String),
        ("systemReserved", Object),
        ("kubeReserved", Object),
        ("reservedSystemCPUs", String),
        ("showHiddenMetricsForVersion", String),
        ("systemReservedCgroup", String),
        ("kubeReservedCgroup", String),
        ("enforceNodeAllocatable", List),
        ("allowedUnsafeSysctls", List),
        ("volumePluginDir", String),
        ("providerID", String),
        ("kernelMemcgNotification", Bool),
        ("logging", Object),
        ("enableSystemLogHandler", Bool),
        ("enableSystemLogQuery", Bool),
        ("shutdownGracePeriod", String),
        ("shutdownGracePeriodCriticalPods", String),
        ("shutdownGracePeriodByPodPriority", List),
        ("crashLoopBackOff", Object),
        ("reservedMemory", List),
        ("enableProfilingHandler", Bool),
        ("enableDebugFlagsHandler", Bool),
        ("seccompDefault", Bool),
        ("memoryThrottlingFactor", Float),
        ("registerWithTaints", List),
        ("registerNode", Bool),
        ("tracing", Object),
        ("localStorageCapacityIsolation", Bool),
        ("containerRuntimeEndpoint", String),
        ("imageServiceEndpoint", String),
        ("failCgroupV1", Bool),
        ("userNamespaces", Object),
    ]
};

/// Fields Talos sets itself, which `extraConfig` may not override.
pub const KUBELET_PROTECTED_FIELDS: &[&str] = &[
    "apiVersion",
    "authentication",
    "authorization",
    "cgroupRoot",
    "kind",
    "kubeletCgroups",
    "port",
    "protectKernelDefaults",
    "resolvConf",
    "rotateCertificates",
    "systemCgroups",
    "staticPodPath",
    "seccompDefault",
];

/// Each problem of `machine.kubelet.extraConfig`: (field, message) for fields that are
/// protected, unknown to KubeletConfiguration, or of the wrong type.
pub fn kubelet_extra_config_problems(extra: &Value) -> Vec<(String, String)> {
    let Some(fields) = extra.as_object() else {
        return if extra.is_null() {
            Vec::new()
        } else {
            vec![(
                String::new(),
                "must be a mapping of KubeletConfiguration fields".into(),
            )]
        };
    };
    let mut problems = Vec::new();
    for (name, value) in fields {
        if KUBELET_PROTECTED_FIELDS.contains(&name.as_str()) {
            problems.push((
                name.clone(),
                format!(
                    "kubelet configuration field \"{name}\" can't be overridden: Talos sets it"
                ),
            ));
            continue;
        }
        let Some((_, kind)) = KUBELET_FIELDS.iter().find(|(f, _)| f == name) else {
            problems.push((
                name.clone(),
                format!(
                    "unknown KubeletConfiguration field \"{name}\"{}",
                    crate::suggest::suggestion(name, KUBELET_FIELDS.iter().map(|(f, _)| *f))
                ),
            ));
            continue;
        };
        let ok = match kind {
            Kind::Bool => value.is_boolean(),
            Kind::Int => value.is_i64() || value.is_u64(),
            Kind::Float => value.is_number(),
            Kind::String => value.is_string(),
            Kind::List => value.is_array(),
            Kind::Object => value.is_object(),
        } || value.is_null();
        if !ok {
            problems.push((
                name.clone(),
                format!(
                    "kubelet configuration field \"{name}\" must be {}, not {value}",
                    kind.noun()
                ),
            ));
        }
    }
    problems
}

/// A map setting's entries as strings (a non-string value as its JSON text).
pub fn string_map(v: Option<&Value>) -> std::collections::BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), String::from),
            )
        })
        .collect()
}

/// The strings of a list setting (anything else in it is left out).
pub fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

/// A Kubernetes setting of the config: the field (JSON pointer) of the first document of
/// `kind` (the multi-document form) when it sets it, else the v1alpha1 path.
pub fn setting<'a>(
    cfg: &'a crate::Config,
    v1alpha1: &str,
    kind: &'a str,
    field: &str,
) -> Option<&'a Value> {
    cfg.kind(kind)
        .next()
        .and_then(|doc| doc.value.pointer(field))
        .filter(|v| !v.is_null())
        .or_else(|| cfg.pointer(v1alpha1).filter(|v| !v.is_null()))
}

/// A PEM of the config: a multi-document kind's PEM text, or v1alpha1's base64 of it.
pub fn pem_setting(
    cfg: &crate::Config,
    v1alpha1_b64: &str,
    kind: &str,
    field: &str,
) -> crate::Result<String> {
    if let Some(doc) = cfg.kind(kind).next() {
        return Ok(doc
            .value
            .pointer(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string());
    }
    match cfg.pointer(v1alpha1_b64).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => crate::secrets::unb64(s).map_err(|e| {
            crate::Error::msg(format!(
                "{}: {e}",
                v1alpha1_b64.trim_start_matches('/').replace('/', ".")
            ))
        }),
        _ => Ok(String::new()),
    }
}

/// `configured` when set, else `repository` at the default Kubernetes version.
pub fn image_or_default(configured: Option<&str>, repository: &str) -> String {
    match configured {
        Some(i) if !i.is_empty() => i.to_string(),
        _ => format!(
            "{repository}:v{}",
            crate::generate::DEFAULT_KUBERNETES_VERSION
        ),
    }
}

/// `extraArgs` of the config: a value is a string, or a list for a repeated flag.
pub fn extra_args(v: Option<&Value>) -> std::collections::BTreeMap<String, Vec<String>> {
    let scalar = |v: &Value| {
        v.as_str()
            .map(String::from)
            .unwrap_or_else(|| v.to_string())
    };
    v.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let values = match v {
                Value::Array(items) => items.iter().map(scalar).collect(),
                other => vec![scalar(other)],
            };
            (k.clone(), values)
        })
        .collect()
}

/// KubePrism's port when it is on: `machine.features.kubePrism` (enabled, port) or a
/// KubePrismConfig document (its presence turns it on; port 7445 unless said).
pub fn kube_prism_port(cfg: &crate::Config) -> Option<u16> {
    let (enabled, port) = match cfg.kind("KubePrismConfig").next() {
        Some(doc) => (
            doc.value.get("enabled").and_then(Value::as_bool) != Some(false),
            doc.value.get("port"),
        ),
        None => (
            cfg.pointer("/machine/features/kubePrism/enabled")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            cfg.pointer("/machine/features/kubePrism/port"),
        ),
    };
    let port = port
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(7445);
    enabled.then_some(port)
}

/// The versions of the cluster's add-ons Talos deploys by default.
pub const DEFAULT_COREDNS_VERSION: &str = "v1.14.7";
/// (Without its `v`, as `talosctl images k8s-bundle` shows it.)
pub const DEFAULT_FLANNEL_VERSION: &str = "0.28.9";
pub const DEFAULT_KUBE_NETWORK_POLICIES_VERSION: &str = "v1.1.1";
pub const COREDNS_REPOSITORY: &str = "registry.k8s.io/coredns/coredns";
pub const FLANNEL_REPOSITORY: &str = "ghcr.io/siderolabs/flannel";
pub const KUBE_NETWORK_POLICIES_REPOSITORY: &str =
    "registry.k8s.io/networking/kube-network-policies";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kube_prism_is_on_by_feature_or_document() {
        let port = |text: &str| kube_prism_port(&crate::Config::parse(text).unwrap());
        let v1 = |f: &str| {
            format!("version: v1alpha1\nmachine:\n    type: worker\n    features:\n        kubePrism: {f}\n")
        };
        assert_eq!(port(&v1("{enabled: true, port: 7446}")), Some(7446));
        assert_eq!(port(&v1("{enabled: true}")), Some(7445));
        assert_eq!(port(&v1("{enabled: false, port: 7446}")), None);
        let doc = "version: v1alpha1\nmachine:\n    type: worker\n---\napiVersion: v1alpha1\nkind: KubePrismConfig\n";
        assert_eq!(port(doc), Some(7445));
        assert_eq!(port(&format!("{doc}port: 7000\n")), Some(7000));
    }

    #[test]
    fn extra_config_fields_are_checked_by_name_protection_and_type() {
        let problems = kubelet_extra_config_problems(&json!({
            "serverTLSBootstrap": true,
            "maxPods": 250,
            "staticPodPath": "/tmp",
            "maxPod": 1,
            "failSwapOn": "no",
        }));
        let by_field: Vec<(&str, &str)> = problems
            .iter()
            .map(|(f, m)| (f.as_str(), m.as_str()))
            .collect();
        assert_eq!(
            by_field,
            [
                ("staticPodPath", "kubelet configuration field \"staticPodPath\" can't be overridden: Talos sets it"),
                (
                    "maxPod",
                    "unknown KubeletConfiguration field \"maxPod\" (did you mean \"maxPods\"?)"
                ),
                ("failSwapOn", "kubelet configuration field \"failSwapOn\" must be a boolean, not \"no\""),
            ]
        );
    }

    #[test]
    fn protected_fields_are_kubelet_fields() {
        for f in KUBELET_PROTECTED_FIELDS {
            assert!(KUBELET_FIELDS.iter().any(|(n, _)| n == f), "{f}");
        }
    }

    #[test]
    fn owned_flags_are_denied() {
        assert_eq!(api_server_flag("etcd-servers"), Merge::Denied);
        assert_eq!(api_server_flag("oidc-issuer-url"), Merge::Overwrite);
        assert_eq!(api_server_flag("feature-gates"), Merge::Additive);
        assert_eq!(kubelet_flag("config"), Merge::Denied);
        assert_eq!(scheduler_flag("config"), Merge::Denied);
        assert_eq!(controller_manager_flag("root-ca-file"), Merge::Denied);
    }
}
