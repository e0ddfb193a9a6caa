//! The bootstrap manifests a control plane puts into the cluster: the kubelet bootstrap token,
//! the CSR and node RBAC, kubeconfig-in-cluster, CoreDNS, Flannel, kube-proxy and the Talos
//! ServiceAccount CRD, each a list of Kubernetes objects under its manifest id.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, Deployment, DeploymentSpec,
    DeploymentStrategy, RollingUpdateDaemonSet, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar,
    EnvVarSource, HTTPGetAction, HostPathVolumeSource, KeyToPath, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector, PodAffinityTerm,
    PodAntiAffinity, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Secret,
    SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Toleration, Volume,
    VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceConversion, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceValidation,
    JSONSchemaProps, JSONSchemaPropsOrArray,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Map, Value};
use types::k8s::BootstrapManifestsConfigSpec;
use types::secrets::KubernetesRootSpec;

use crate::pods::{self, env_var, go_mem_limit, requirements};

const KUBE_SYSTEM: &str = "kube-system";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
const CLUSTER_CRITICAL: &str = "system-cluster-critical";

/// One rendered manifest: its id and objects.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub id: &'static str,
    pub objects: Vec<Value>,
}

/// Every bootstrap manifest of `cfg`, in the order upstream lists them.
pub fn render(
    cfg: &BootstrapManifestsConfigSpec,
    secrets: &KubernetesRootSpec,
) -> Result<Vec<Manifest>, pods::Error> {
    let m = |id, objects: Vec<Value>| Manifest { id, objects };
    let mut out = vec![
        m(
            "00-kubelet-bootstrapping-token",
            vec![to(bootstrap_token(secrets))],
        ),
        m("01-csr-node-bootstrap", vec![to(csr_node_bootstrap())]),
        m("01-csr-approver-role-binding", vec![to(csr_approver())]),
        m("01-csr-renewal-role-binding", vec![to(csr_renewal())]),
        m(
            "11-kube-config-in-cluster",
            vec![to(kubeconfig_in_cluster(cfg))],
        ),
        m(
            "11-talos-node-rbac-template",
            vec![to(talos_nodes_binding()), to(talos_nodes_role())],
        ),
    ];
    if cfg.core_dns_enabled {
        out.push(m(
            "11-core-dns",
            vec![
                to(coredns_service_account()),
                to(coredns_role()),
                to(coredns_binding()),
                to(coredns_config(cfg)),
                to(coredns_deployment(cfg)),
            ],
        ));
        out.push(m("11-core-dns-svc", vec![to(coredns_service(cfg))]));
    }
    if cfg.flannel_enabled {
        out.push(m(
            "05-flannel",
            vec![
                to(flannel_role(cfg)),
                to(flannel_binding()),
                to(flannel_service_account()),
                to(flannel_config(cfg)),
                to(flannel_daemonset(cfg)?),
            ],
        ));
    }
    if cfg.proxy_enabled {
        let mut objects = Vec::new();
        if let Some(config) = kube_proxy_config(cfg) {
            objects.push(to(config));
        }
        objects.extend([
            to(kube_proxy_daemonset(cfg)?),
            to(kube_proxy_service_account()),
            to(kube_proxy_binding()),
        ]);
        out.push(m("10-kube-proxy", objects));
    }
    if cfg.talos_api_service_enabled {
        out.push(m(
            "13-talos-service-account-crd",
            vec![to(talos_service_account_crd())],
        ));
    }
    Ok(out)
}

fn to<T: serde::Serialize>(object: T) -> Value {
    serde_json::to_value(object).expect("Kubernetes objects serialize")
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn meta(name: &str, namespace: Option<&str>, label_pairs: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(String::from),
        labels: (!label_pairs.is_empty()).then(|| labels(label_pairs)),
        ..Default::default()
    }
}

/// The annotation and label of the RBAC objects Kubernetes keeps up to date itself.
fn rbac_defaults(name: &str, autoupdate: bool) -> ObjectMeta {
    ObjectMeta {
        annotations: autoupdate
            .then(|| labels(&[("rbac.authorization.kubernetes.io/autoupdate", "true")])),
        ..meta(
            name,
            None,
            &[("kubernetes.io/bootstrapping", "rbac-defaults")],
        )
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..Default::default()
    }
}

fn group(name: &str) -> Subject {
    Subject {
        api_group: Some(RBAC_GROUP.into()),
        kind: "Group".into(),
        name: name.into(),
        namespace: None,
    }
}

fn service_account_subject(name: &str) -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        name: name.into(),
        namespace: Some(KUBE_SYSTEM.into()),
        api_group: None,
    }
}

fn binding(metadata: ObjectMeta, role: &str, subjects: Vec<Subject>) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata,
        role_ref: RoleRef {
            api_group: RBAC_GROUP.into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(subjects),
    }
}

fn service_account(metadata: ObjectMeta) -> ServiceAccount {
    ServiceAccount {
        metadata,
        ..Default::default()
    }
}

fn config_map(metadata: ObjectMeta, data: &[(&str, String)]) -> ConfigMap {
    ConfigMap {
        metadata,
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        ),
        ..Default::default()
    }
}

pub fn bootstrap_token(secrets: &KubernetesRootSpec) -> Secret {
    Secret {
        metadata: meta(
            &format!("bootstrap-token-{}", secrets.bootstrap_token_id),
            Some(KUBE_SYSTEM),
            &[],
        ),
        string_data: Some(labels(&[
            ("auth-extra-groups", "system:bootstrappers:nodes"),
            ("token-id", &secrets.bootstrap_token_id),
            ("token-secret", &secrets.bootstrap_token_secret),
            ("usage-bootstrap-authentication", "true"),
        ])),
        type_: Some("bootstrap.kubernetes.io/token".into()),
        ..Default::default()
    }
}

pub fn csr_node_bootstrap() -> ClusterRoleBinding {
    binding(
        meta("system-bootstrap-node-bootstrapper", None, &[]),
        "system:node-bootstrapper",
        vec![group("system:bootstrappers:nodes"), group("system:nodes")],
    )
}

pub fn csr_approver() -> ClusterRoleBinding {
    binding(
        meta("system-bootstrap-approve-node-client-csr", None, &[]),
        "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
        vec![group("system:bootstrappers:nodes")],
    )
}

pub fn csr_renewal() -> ClusterRoleBinding {
    binding(
        meta("system-bootstrap-node-renewal", None, &[]),
        "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
        vec![group("system:nodes")],
    )
}

/// The kubeconfig kube-proxy (and others in the cluster) read: the API server with the pod's
/// service account.
pub fn kubeconfig_in_cluster(cfg: &BootstrapManifestsConfigSpec) -> ConfigMap {
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": cfg.server,
            "certificate-authority": "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
        }}],
        "users": [{"name": "service-account", "user": {
            "tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token",
        }}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "service-account"}}],
        "current-context": "local",
    });
    config_map(
        meta("kubeconfig-in-cluster", Some(KUBE_SYSTEM), &[]),
        &[("kubeconfig", crate::yaml::to_string(&kubeconfig))],
    )
}

pub fn talos_nodes_binding() -> ClusterRoleBinding {
    binding(
        rbac_defaults("system:talos-nodes", true),
        "system:talos-nodes",
        vec![group("system:nodes")],
    )
}

pub fn talos_nodes_role() -> ClusterRole {
    ClusterRole {
        metadata: rbac_defaults("system:talos-nodes", false),
        rules: Some(vec![rule(
            &["discovery.k8s.io"],
            &["endpointslices"],
            &["get", "list", "watch"],
        )]),
        ..Default::default()
    }
}

// CoreDNS

const KUBE_DNS: (&str, &str) = ("k8s-app", "kube-dns");

pub fn coredns_service_account() -> ServiceAccount {
    service_account(meta("coredns", Some(KUBE_SYSTEM), &[]))
}

pub fn coredns_role() -> ClusterRole {
    ClusterRole {
        metadata: rbac_defaults("system:coredns", false),
        rules: Some(vec![
            rule(
                &[""],
                &["endpoints", "services", "pods", "namespaces"],
                &["list", "watch"],
            ),
            rule(
                &["discovery.k8s.io"],
                &["endpointslices"],
                &["list", "watch"],
            ),
        ]),
        ..Default::default()
    }
}

pub fn coredns_binding() -> ClusterRoleBinding {
    binding(
        rbac_defaults("system:coredns", true),
        "system:coredns",
        vec![service_account_subject("coredns")],
    )
}

pub fn coredns_config(cfg: &BootstrapManifestsConfigSpec) -> ConfigMap {
    let domain = &cfg.cluster_domain;
    let cache = if domain.is_empty() {
        "cache 30".to_string()
    } else {
        format!(
            "cache 30 {{\n       disable success {domain}\n       disable denial {domain}\n    }}"
        )
    };
    let corefile = format!(
        r#".:53 {{
    errors
    health {{
        lameduck 5s
    }}
    ready
    log . {{
        class error
    }}
    prometheus :9153

    kubernetes {domain} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    forward . /etc/resolv.conf {{
       max_concurrent 1000
    }}
    {cache}
    loop
    reload
    loadbalance
}}
"#
    );
    config_map(
        meta("coredns", Some(KUBE_SYSTEM), &[]),
        &[("Corefile", corefile)],
    )
}

/// Linux on the architectures Talos ships.
fn linux_nodes(arches: bool) -> NodeAffinity {
    let mut expressions = vec![NodeSelectorRequirement {
        key: "kubernetes.io/os".into(),
        operator: "In".into(),
        values: Some(strings(&["linux"])),
    }];
    if arches {
        expressions.push(NodeSelectorRequirement {
            key: "kubernetes.io/arch".into(),
            operator: "In".into(),
            values: Some(strings(&["amd64", "arm64"])),
        });
    }
    NodeAffinity {
        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(expressions),
                ..Default::default()
            }],
        }),
        ..Default::default()
    }
}

fn http_probe(path: &str, port: i32) -> HTTPGetAction {
    HTTPGetAction {
        path: Some(path.into()),
        port: IntOrString::Int(port),
        scheme: Some("HTTP".into()),
        ..Default::default()
    }
}

fn port(name: &str, number: i32, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: number,
        protocol: Some(protocol.into()),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn host_volume(name: &str, path: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            type_: None,
        }),
        ..Default::default()
    }
}

fn config_map_volume(name: &str, config_map: &str, items: Option<Vec<KeyToPath>>) -> Volume {
    Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.into(),
            items,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn toleration(effect: &str, key: Option<&str>) -> Toleration {
    Toleration {
        effect: Some(effect.into()),
        key: key.map(String::from),
        operator: Some("Exists".into()),
        ..Default::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

fn selector(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(pairs)),
        ..Default::default()
    }
}

fn template(label_pairs: &[(&str, &str)], spec: PodSpec) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(label_pairs)),
            ..Default::default()
        }),
        spec: Some(spec),
    }
}

pub fn coredns_deployment(cfg: &BootstrapManifestsConfigSpec) -> Deployment {
    let container = Container {
        name: "coredns".into(),
        image: Some(cfg.core_dns_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(strings(&["-conf", "/etc/coredns/Corefile"])),
        env: Some(vec![env_var("GOMEMLIMIT", "161MiB".into())]),
        resources: Some(ResourceRequirements {
            limits: Some(quantities(&[("memory", "170Mi")])),
            requests: Some(quantities(&[("cpu", "100m"), ("memory", "70Mi")])),
            ..Default::default()
        }),
        volume_mounts: Some(vec![mount("config-volume", "/etc/coredns", true)]),
        ports: Some(vec![
            port("dns", 53, "UDP"),
            port("dns-tcp", 53, "TCP"),
            port("metrics", 9153, "TCP"),
        ]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: Some(strings(&["NET_BIND_SERVICE"])),
                drop: Some(strings(&["ALL"])),
            }),
            read_only_root_filesystem: Some(true),
            ..Default::default()
        }),
        liveness_probe: Some(Probe {
            http_get: Some(http_probe("/health", 8080)),
            initial_delay_seconds: Some(60),
            timeout_seconds: Some(5),
            success_threshold: Some(1),
            failure_threshold: Some(5),
            ..Default::default()
        }),
        readiness_probe: Some(Probe {
            http_get: Some(http_probe("/ready", 8181)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let anti_affinity = PodAntiAffinity {
        preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
            weight: 100,
            pod_affinity_term: PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: KUBE_DNS.0.into(),
                        operator: "In".into(),
                        values: Some(strings(&[KUBE_DNS.1])),
                    }]),
                    ..Default::default()
                }),
                topology_key: "kubernetes.io/hostname".into(),
                ..Default::default()
            },
        }]),
        ..Default::default()
    };
    Deployment {
        metadata: meta(
            "coredns",
            Some(KUBE_SYSTEM),
            &[KUBE_DNS, ("kubernetes.io/name", "CoreDNS")],
        ),
        spec: Some(DeploymentSpec {
            replicas: Some(2),
            selector: selector(&[KUBE_DNS]),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(1)),
                    ..Default::default()
                }),
            }),
            template: template(
                &[KUBE_DNS],
                PodSpec {
                    priority_class_name: Some(CLUSTER_CRITICAL.into()),
                    service_account_name: Some("coredns".into()),
                    affinity: Some(Affinity {
                        node_affinity: Some(linux_nodes(true)),
                        pod_anti_affinity: Some(anti_affinity),
                        ..Default::default()
                    }),
                    tolerations: Some(vec![
                        toleration("NoSchedule", Some("node-role.kubernetes.io/control-plane")),
                        toleration(
                            "NoSchedule",
                            Some("node.cloudprovider.kubernetes.io/uninitialized"),
                        ),
                    ]),
                    node_selector: Some(labels(&[("kubernetes.io/os", "linux")])),
                    containers: vec![container],
                    dns_policy: Some("Default".into()),
                    volumes: Some(vec![config_map_volume(
                        "config-volume",
                        "coredns",
                        Some(vec![KeyToPath {
                            key: "Corefile".into(),
                            path: "Corefile".into(),
                            mode: None,
                        }]),
                    )]),
                    ..Default::default()
                },
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The kube-dns Service at the service networks' DNS addresses: single stack IPv4 or IPv6,
/// or dual stack when the cluster has both.
pub fn coredns_service(cfg: &BootstrapManifestsConfigSpec) -> Service {
    let mut ips = Vec::new();
    let mut families = Vec::new();
    for (ip, family) in [
        (&cfg.dns_service_ip, "IPv4"),
        (&cfg.dns_service_ipv6, "IPv6"),
    ] {
        if !ip.is_empty() {
            ips.push(ip.clone());
            families.push(family.to_string());
        }
    }
    let policy = if ips.len() > 1 {
        "RequireDualStack"
    } else {
        "SingleStack"
    };
    let service_port = |name: &str, number: i32, protocol: &str| ServicePort {
        name: Some(name.into()),
        port: number,
        protocol: Some(protocol.into()),
        target_port: Some(IntOrString::Int(number)),
        ..Default::default()
    };
    Service {
        metadata: ObjectMeta {
            annotations: Some(labels(&[
                ("prometheus.io/port", "9153"),
                ("prometheus.io/scrape", "true"),
            ])),
            ..meta(
                "kube-dns",
                Some(KUBE_SYSTEM),
                &[
                    KUBE_DNS,
                    ("kubernetes.io/cluster-service", "true"),
                    ("kubernetes.io/name", "CoreDNS"),
                ],
            )
        },
        spec: Some(ServiceSpec {
            cluster_ip: ips.first().cloned(),
            cluster_ips: Some(ips),
            ip_families: Some(families),
            ip_family_policy: Some(policy.into()),
            selector: Some(labels(&[KUBE_DNS])),
            ports: Some(vec![
                service_port("dns", 53, "UDP"),
                service_port("dns-tcp", 53, "TCP"),
                service_port("metrics", 9153, "TCP"),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

// Flannel

const FLANNEL: (&str, &str) = ("k8s-app", "flannel");
const NODE_TIER: (&str, &str) = ("tier", "node");

pub fn flannel_role(cfg: &BootstrapManifestsConfigSpec) -> ClusterRole {
    let mut rules = vec![
        rule(
            &[""],
            &["pods", "nodes", "namespaces"],
            &["get", "list", "watch"],
        ),
        rule(&[""], &["nodes/status"], &["patch"]),
    ];
    if cfg.flannel_kube_network_policies_enabled {
        rules.push(rule(
            &["networking.k8s.io"],
            &["networkpolicies"],
            &["list", "watch"],
        ));
        rules.push(rule(
            &["policy.networking.k8s.io"],
            &["adminnetworkpolicies", "baselineadminnetworkpolicies"],
            &["list", "watch"],
        ));
    }
    ClusterRole {
        metadata: meta("flannel", None, &[FLANNEL]),
        rules: Some(rules),
        ..Default::default()
    }
}

pub fn flannel_binding() -> ClusterRoleBinding {
    binding(
        meta("flannel", None, &[FLANNEL]),
        "flannel",
        vec![service_account_subject("flannel")],
    )
}

pub fn flannel_service_account() -> ServiceAccount {
    service_account(meta("flannel", Some(KUBE_SYSTEM), &[FLANNEL]))
}

const FLANNEL_CNI_CONF: &str = r#"{
  "name": "cbr0",
  "cniVersion": "1.0.0",
  "plugins": [
    {
      "type": "flannel",
      "delegate": {
        "hairpinMode": true,
        "isDefaultGateway": true
      }
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      }
    }
  ]
}"#;

/// flanneld's net-conf.json: the pod networks, nftables, and the backend with the user's
/// extra settings over ours.
fn flannel_net_conf(cfg: &BootstrapManifestsConfigSpec) -> String {
    let mut backend = BTreeMap::from([(
        "Type".to_string(),
        Value::from(cfg.flannel_backend_type.clone()),
    )]);
    if cfg.flannel_backend_port != 0 {
        backend.insert("Port".into(), cfg.flannel_backend_port.into());
    }
    if cfg.flannel_backend_mtu != 0 {
        backend.insert("MTU".into(), cfg.flannel_backend_mtu.into());
    }
    backend.extend(cfg.flannel_backend_extra_config.clone());

    let v4 = cfg.pod_cidrs.iter().rev().find(|c| c.contains('.'));
    let v6 = cfg.pod_cidrs.iter().rev().find(|c| !c.contains('.'));
    let mut conf = Map::new();
    if let Some(v4) = v4 {
        conf.insert("Network".into(), v4.clone().into());
    }
    if let Some(v6) = v6 {
        conf.insert("IPv6Network".into(), v6.clone().into());
        conf.insert("EnableIPv6".into(), true.into());
    }
    if v4.is_none() {
        conf.insert("EnableIPv4".into(), false.into());
    }
    conf.insert("EnableNFTables".into(), true.into());
    conf.insert(
        "Backend".into(),
        backend.into_iter().collect::<Map<_, _>>().into(),
    );
    serde_json::to_string_pretty(&conf).expect("JSON serializes")
}

pub fn flannel_config(cfg: &BootstrapManifestsConfigSpec) -> ConfigMap {
    config_map(
        meta("kube-flannel-cfg", Some(KUBE_SYSTEM), &[FLANNEL, NODE_TIER]),
        &[
            ("cni-conf.json", FLANNEL_CNI_CONF.to_string()),
            ("net-conf.json", flannel_net_conf(cfg)),
        ],
    )
}

fn all_tolerated() -> Vec<Toleration> {
    vec![
        toleration("NoSchedule", None),
        toleration("NoExecute", None),
    ]
}

pub fn flannel_daemonset(cfg: &BootstrapManifestsConfigSpec) -> Result<DaemonSet, pods::Error> {
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        env_var("EVENT_QUEUE_DEPTH", "5000".into()),
        env_var("CONT_WHEN_CACHE_NOT_READY", "false".into()),
    ];
    if !cfg.flannel_kube_service_host.is_empty() {
        env.push(env_var(
            "KUBERNETES_SERVICE_HOST",
            cfg.flannel_kube_service_host.clone(),
        ));
    }
    if !cfg.flannel_kube_service_port.is_empty() {
        env.push(env_var(
            "KUBERNETES_SERVICE_PORT",
            cfg.flannel_kube_service_port.clone(),
        ));
    }
    env.extend(go_mem_limit(&cfg.flannel_resources));
    let mut args = strings(&["--ip-masq", "--kube-subnet-mgr"]);
    args.extend(cfg.flannel_extra_args.iter().cloned());
    let flanneld = Container {
        name: "kube-flannel".into(),
        image: Some(cfg.flannel_image.clone()),
        command: Some(strings(&["/opt/bin/flanneld"])),
        args: Some(args),
        env: Some(env),
        resources: Some(requirements(
            "flannel",
            ("100m", "50Mi"),
            &cfg.flannel_resources,
        )?),
        security_context: Some(SecurityContext {
            capabilities: Some(Capabilities {
                add: Some(strings(&["NET_ADMIN", "NET_RAW"])),
                drop: None,
            }),
            privileged: Some(false),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount("run", "/run/flannel", false),
            mount("flannel-cfg", "/etc/kube-flannel/", false),
        ]),
        ..Default::default()
    };
    let mut containers = vec![flanneld];
    let mut volumes = vec![
        host_volume("run", "/run/flannel"),
        host_volume("cni", "/etc/cni/net.d"),
        config_map_volume("flannel-cfg", "kube-flannel-cfg", None),
    ];
    if cfg.flannel_kube_network_policies_enabled {
        containers.push(Container {
            name: "kube-network-policies".into(),
            image: Some(cfg.flannel_kube_network_policies_image.clone()),
            command: Some(strings(&[
                "/bin/netpol",
                "--hostname-override=$(MY_NODE_NAME)",
                "--v=2",
            ])),
            env: Some(vec![field_env("MY_NODE_NAME", "spec.nodeName")]),
            resources: Some(ResourceRequirements {
                requests: Some(quantities(&[("cpu", "100m"), ("memory", "50Mi")])),
                ..Default::default()
            }),
            security_context: Some(SecurityContext {
                capabilities: Some(Capabilities {
                    add: Some(strings(&["NET_ADMIN"])),
                    drop: None,
                }),
                privileged: Some(true),
                ..Default::default()
            }),
            volume_mounts: Some(vec![mount("lib-modules", "/lib/modules", true)]),
            ..Default::default()
        });
        volumes.push(host_volume("lib-modules", "/usr/lib/modules"));
    }
    let install_config = Container {
        name: "install-config".into(),
        image: Some(cfg.flannel_image.clone()),
        command: Some(strings(&["cp"])),
        args: Some(strings(&[
            "-f",
            "/etc/kube-flannel/cni-conf.json",
            "/etc/cni/net.d/10-flannel.conflist",
        ])),
        resources: Some(ResourceRequirements::default()),
        volume_mounts: Some(vec![
            mount("cni", "/etc/cni/net.d", false),
            mount("flannel-cfg", "/etc/kube-flannel/", false),
        ]),
        ..Default::default()
    };
    Ok(DaemonSet {
        metadata: meta("kube-flannel", Some(KUBE_SYSTEM), &[FLANNEL, NODE_TIER]),
        spec: Some(DaemonSetSpec {
            selector: selector(&[FLANNEL, NODE_TIER]),
            update_strategy: Some(DaemonSetUpdateStrategy::default()),
            template: template(
                &[FLANNEL, NODE_TIER],
                PodSpec {
                    affinity: Some(Affinity {
                        node_affinity: Some(linux_nodes(false)),
                        ..Default::default()
                    }),
                    containers,
                    init_containers: Some(vec![install_config]),
                    host_network: Some(true),
                    priority_class_name: Some("system-node-critical".into()),
                    service_account_name: Some("flannel".into()),
                    tolerations: Some(all_tolerated()),
                    volumes: Some(volumes),
                    ..Default::default()
                },
            ),
            ..Default::default()
        }),
        ..Default::default()
    })
}

// kube-proxy

const KUBE_PROXY: (&str, &str) = ("k8s-app", "kube-proxy");
/// Where kube-proxy reads its configuration file (its `--config` flag says the same).
pub const KUBE_PROXY_CONFIG_DIR: &str = "/var/lib/kube-proxy";

/// The ConfigMap of kube-proxy's configuration, named after its checksum so that a change
/// rolls the DaemonSet over to a new one.
fn kube_proxy_config_name(cfg: &BootstrapManifestsConfigSpec) -> String {
    let sum = &cfg.proxy_config_checksum;
    format!("kube-proxy-config-{}", &sum[..sum.len().min(16)])
}

pub fn kube_proxy_config(cfg: &BootstrapManifestsConfigSpec) -> Option<ConfigMap> {
    if cfg.proxy_config.is_null() {
        return None;
    }
    Some(config_map(
        meta(
            &kube_proxy_config_name(cfg),
            Some(KUBE_SYSTEM),
            &[KUBE_PROXY, NODE_TIER],
        ),
        &[("config.conf", crate::yaml::to_string(&cfg.proxy_config))],
    ))
}

pub fn kube_proxy_daemonset(cfg: &BootstrapManifestsConfigSpec) -> Result<DaemonSet, pods::Error> {
    let resources = requirements("kube-proxy", ("100m", "50Mi"), &cfg.proxy_resources)?;
    let mut env = vec![
        field_env("NODE_NAME", "spec.nodeName"),
        field_env("POD_IP", "status.podIP"),
    ];
    env.extend(go_mem_limit(&cfg.proxy_resources));
    let mut mounts = vec![
        mount("lib-modules", "/lib/modules", true),
        mount("ssl-certs-host", "/etc/ssl/certs", true),
        mount("kubeconfig", "/etc/kubernetes", true),
    ];
    let mut volumes = vec![
        host_volume("lib-modules", "/usr/lib/modules"),
        host_volume("ssl-certs-host", "/etc/ssl/certs"),
        config_map_volume("kubeconfig", "kubeconfig-in-cluster", None),
    ];
    if !cfg.proxy_config.is_null() {
        mounts.push(mount("config", KUBE_PROXY_CONFIG_DIR, true));
        volumes.push(config_map_volume(
            "config",
            &kube_proxy_config_name(cfg),
            None,
        ));
    }
    let mut command = strings(&["/usr/local/bin/kube-proxy"]);
    command.extend(cfg.proxy_args.iter().cloned());
    let container = Container {
        name: "kube-proxy".into(),
        image: Some(cfg.proxy_image.clone()),
        command: Some(command),
        env: Some(env),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    Ok(DaemonSet {
        metadata: meta("kube-proxy", Some(KUBE_SYSTEM), &[KUBE_PROXY, NODE_TIER]),
        spec: Some(DaemonSetSpec {
            selector: selector(&[KUBE_PROXY, NODE_TIER]),
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    ..Default::default()
                }),
            }),
            template: template(
                &[KUBE_PROXY, NODE_TIER],
                PodSpec {
                    affinity: Some(Affinity {
                        node_affinity: Some(linux_nodes(true)),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    host_network: Some(true),
                    priority_class_name: Some(CLUSTER_CRITICAL.into()),
                    service_account_name: Some("kube-proxy".into()),
                    tolerations: Some(all_tolerated()),
                    volumes: Some(volumes),
                    ..Default::default()
                },
            ),
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub fn kube_proxy_service_account() -> ServiceAccount {
    service_account(meta("kube-proxy", Some(KUBE_SYSTEM), &[]))
}

pub fn kube_proxy_binding() -> ClusterRoleBinding {
    binding(
        meta("kube-proxy", None, &[]),
        "system:node-proxier",
        vec![service_account_subject("kube-proxy")],
    )
}

/// The CRD of Talos API access from pods (`serviceaccounts.talos.dev`).
pub fn talos_service_account_crd() -> CustomResourceDefinition {
    let typed = |ty: &str| JSONSchemaProps {
        type_: Some(ty.into()),
        ..Default::default()
    };
    let object = |props: Vec<(&str, JSONSchemaProps)>| JSONSchemaProps {
        type_: Some("object".into()),
        properties: Some(props.into_iter().map(|(k, v)| (k.into(), v)).collect()),
        ..Default::default()
    };
    let roles = JSONSchemaProps {
        type_: Some("array".into()),
        items: Some(JSONSchemaPropsOrArray::Schema(Box::new(typed("string")))),
        ..Default::default()
    };
    let schema = object(vec![
        ("spec", object(vec![("roles", roles)])),
        ("status", object(vec![("failureReason", typed("string"))])),
    ]);
    CustomResourceDefinition {
        metadata: meta("serviceaccounts.talos.dev", None, &[]),
        spec: CustomResourceDefinitionSpec {
            group: "talos.dev".into(),
            names: CustomResourceDefinitionNames {
                kind: "ServiceAccount".into(),
                list_kind: Some("ServiceAccountList".into()),
                plural: "serviceaccounts".into(),
                singular: Some("serviceaccount".into()),
                short_names: Some(strings(&["tsa"])),
                ..Default::default()
            },
            scope: "Namespaced".into(),
            conversion: Some(CustomResourceConversion {
                strategy: "None".into(),
                webhook: None,
            }),
            versions: vec![CustomResourceDefinitionVersion {
                name: "v1alpha1".into(),
                served: true,
                storage: true,
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: Some(schema),
                }),
                ..Default::default()
            }],
            ..Default::default()
        },
        ..Default::default()
    }
}
