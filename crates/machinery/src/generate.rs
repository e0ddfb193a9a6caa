//! `gen config`: machine configurations for control plane and worker nodes from a secrets bundle,
//! shaped by the version contract (the Talos version whose defaults the output follows).

use std::fmt;
use std::str::FromStr;

use serde_json::{json, Map, Value};

use crate::config::{Config, Document};
use crate::error::{Error, Result};
use crate::secrets::{unb64, SecretsBundle};

pub const DEFAULT_KUBERNETES_VERSION: &str = "1.35.0";
pub const DEFAULT_DNS_DOMAIN: &str = "cluster.local";
pub const DEFAULT_POD_SUBNET: &str = "10.244.0.0/16";
pub const DEFAULT_SERVICE_SUBNET: &str = "10.96.0.0/12";
pub const DISCOVERY_ENDPOINT: &str = "https://discovery.talos.dev/";

/// A Talos version whose config defaults to follow (`v1.3` … `v1.15`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Contract {
    pub major: u32,
    pub minor: u32,
}

impl Contract {
    pub const OLDEST: Contract = Contract { major: 1, minor: 3 };
    pub const CURRENT: Contract = Contract {
        major: 1,
        minor: 15,
    };

    fn at_least(self, minor: u32) -> bool {
        self >= Contract { major: 1, minor }
    }
}

impl Default for Contract {
    fn default() -> Self {
        Contract::CURRENT
    }
}

impl fmt::Display for Contract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}", self.major, self.minor)
    }
}

impl FromStr for Contract {
    type Err = Error;

    fn from_str(s: &str) -> Result<Contract> {
        let bad = || {
            Error::msg(format!(
                "invalid version contract \"{s}\": expected a Talos version such as v1.15"
            ))
        };
        let v = s.trim().trim_start_matches('v');
        let mut parts = v.split('.');
        let major: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let minor: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let c = Contract { major, minor };
        if c < Contract::OLDEST || c > Contract::CURRENT {
            return Err(Error::msg(format!(
                "version contract {c} is not supported (supported: {} to {})",
                Contract::OLDEST,
                Contract::CURRENT
            )));
        }
        Ok(c)
    }
}

/// The machine types `gen config` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineType {
    ControlPlane,
    Worker,
}

impl MachineType {
    pub fn as_str(self) -> &'static str {
        match self {
            MachineType::ControlPlane => "controlplane",
            MachineType::Worker => "worker",
        }
    }
}

/// Everything `gen config` can be told.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub cluster_name: String,
    pub endpoint: String,
    pub kubernetes_version: String,
    pub contract: Contract,
    pub install_disk: Option<String>,
    pub install_image: Option<String>,
    pub extra_kernel_args: Vec<String>,
    pub additional_sans: Vec<String>,
    pub dns_domain: String,
    pub allow_scheduling_on_control_planes: bool,
    pub local_api_server_port: Option<u16>,
    pub sysctls: Vec<(String, String)>,
    pub cni_urls: Vec<String>,
    /// Registry host → mirror endpoints.
    pub registry_mirrors: Vec<(String, Vec<String>)>,
    /// Cluster discovery (on by default).
    pub with_discovery: bool,
    /// KubeSpan (off by default).
    pub with_kubespan: bool,
}

impl GenOptions {
    pub fn new(cluster_name: &str, endpoint: &str) -> GenOptions {
        GenOptions {
            cluster_name: cluster_name.into(),
            endpoint: endpoint.into(),
            kubernetes_version: DEFAULT_KUBERNETES_VERSION.into(),
            contract: Contract::CURRENT,
            install_disk: None,
            install_image: None,
            extra_kernel_args: Vec::new(),
            additional_sans: Vec::new(),
            dns_domain: DEFAULT_DNS_DOMAIN.into(),
            allow_scheduling_on_control_planes: false,
            local_api_server_port: None,
            sysctls: Vec::new(),
            cni_urls: Vec::new(),
            registry_mirrors: Vec::new(),
            with_discovery: true,
            with_kubespan: false,
        }
    }

    fn k8s(&self) -> String {
        format!("v{}", self.kubernetes_version.trim_start_matches('v'))
    }

    fn image(&self, repo: &str) -> String {
        format!("{repo}:{}", self.k8s())
    }
}

/// The host part of an endpoint URL (`https://host:6443` → `host`).
pub fn endpoint_host(endpoint: &str) -> Result<String> {
    let rest = endpoint.split_once("://").map(|(_, r)| r).ok_or_else(|| {
        Error::msg(format!(
            "invalid endpoint \"{endpoint}\": expected https://HOST:PORT"
        ))
    })?;
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    if host.is_empty() {
        return Err(Error::msg(format!(
            "invalid endpoint \"{endpoint}\": no host"
        )));
    }
    Ok(host.to_string())
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn pod_security() -> Value {
    json!({
        "apiVersion": "pod-security.admission.config.k8s.io/v1alpha1",
        "kind": "PodSecurityConfiguration",
        "defaults": {
            "enforce": "baseline", "enforce-version": "latest",
            "audit": "restricted", "audit-version": "latest",
            "warn": "restricted", "warn-version": "latest",
        },
        "exemptions": {"usernames": [], "runtimeClasses": [], "namespaces": ["kube-system"]},
    })
}

fn audit_policy() -> Value {
    json!({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [{"level": "Metadata"}]})
}

/// Generate the configuration of one machine type.
pub fn generate(secrets: &SecretsBundle, opts: &GenOptions, ty: MachineType) -> Result<Config> {
    let host = endpoint_host(&opts.endpoint)?;
    let docs = if opts.contract.at_least(14) {
        multi_document(secrets, opts, ty)?
    } else {
        single_document(secrets, opts, ty, &host)?
    };
    let documents = docs
        .into_iter()
        .map(Document::from_value)
        .collect::<Result<Vec<_>>>()?;
    Ok(Config::from_documents(documents))
}

fn ca_pair(crt: &str, key: &str, with_key: bool) -> Value {
    json!({"crt": crt, "key": if with_key { key } else { "" }})
}

fn single_document(
    s: &SecretsBundle,
    o: &GenOptions,
    ty: MachineType,
    host: &str,
) -> Result<Vec<Value>> {
    let c = o.contract;
    let cp = ty == MachineType::ControlPlane;
    let mut features = Map::new();
    if !c.at_least(12) {
        features.extend(obj(
            json!({"rbac": true, "stableHostname": true, "apidCheckExtKeyUsage": true}),
        ));
    }
    if c.at_least(5) {
        features.insert("diskQuotaSupport".into(), true.into());
    }
    if c.at_least(6) {
        features.insert("kubePrism".into(), json!({"enabled": true, "port": 7445}));
    }
    if c.at_least(7) {
        let mut dns = json!({"enabled": true});
        if c.at_least(8) {
            dns["forwardKubeDNSToHost"] = true.into();
        }
        features.insert("hostDNS".into(), dns);
    }
    let mut install = json!({"wipe": false});
    if let Some(d) = &o.install_disk {
        install["disk"] = d.as_str().into();
    }
    if let Some(i) = &o.install_image {
        install["image"] = i.as_str().into();
    }
    if !o.extra_kernel_args.is_empty() {
        install["extraKernelArgs"] = json!(o.extra_kernel_args);
    }
    if c.at_least(12) {
        install["grubUseUKICmdline"] = true.into();
    }
    let mut machine = json!({
        "type": ty.as_str(),
        "token": s.trustdinfo.token,
        "ca": ca_pair(&s.certs.os.crt, &s.certs.os.key, cp),
        "certSANs": o.additional_sans,
        "kubelet": {
            "image": o.image("ghcr.io/siderolabs/kubelet"),
            "defaultRuntimeSeccompProfileEnabled": true,
            "disableManifestsDirectory": true,
        },
        "install": install,
        "features": features,
    });
    if !c.at_least(13) || o.with_kubespan {
        machine["network"] = json!({});
    }
    if o.with_kubespan {
        machine["network"]["kubespan"] = json!({"enabled": true});
    }
    if !o.sysctls.is_empty() {
        machine["sysctls"] = Value::Object(
            o.sysctls
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect(),
        );
    }
    if !o.registry_mirrors.is_empty() && !c.at_least(12) {
        let mirrors: Map<String, Value> = o
            .registry_mirrors
            .iter()
            .map(|(host, eps)| (host.clone(), json!({"endpoints": eps})))
            .collect();
        machine["registries"] = json!({"mirrors": mirrors});
    }
    if cp && c.at_least(8) {
        machine["nodeLabels"] =
            json!({"node.kubernetes.io/exclude-from-external-load-balancers": ""});
    }

    let mut network = json!({
        "dnsDomain": o.dns_domain,
        "podSubnets": [DEFAULT_POD_SUBNET],
        "serviceSubnets": [DEFAULT_SERVICE_SUBNET],
    });
    if !o.cni_urls.is_empty() {
        network["cni"] = json!({"name": "custom", "urls": o.cni_urls});
    }
    let mut control_plane = json!({"endpoint": o.endpoint});
    if let (true, Some(port)) = (cp, o.local_api_server_port) {
        control_plane["localAPIServerPort"] = port.into();
    }
    let mut cluster = json!({
        "id": s.cluster.id,
        "secret": s.cluster.secret,
        "controlPlane": control_plane,
        "network": network,
        "token": s.secrets.bootstraptoken,
        "ca": ca_pair(&s.certs.k8s.crt, &s.certs.k8s.key, cp),
        "discovery": if o.with_discovery {
            json!({"enabled": true, "registries": {"kubernetes": {"disabled": true}, "service": {}}})
        } else {
            json!({"enabled": false})
        },
    });
    if cp || c.at_least(8) {
        cluster["clusterName"] = o.cluster_name.as_str().into();
    }
    if cp {
        let mut sans: Vec<String> = Vec::new();
        if !c.at_least(12) {
            sans.push(host.to_string());
        }
        sans.extend(o.additional_sans.iter().cloned());
        let mut api = json!({
            "image": o.image("registry.k8s.io/kube-apiserver"),
            "certSANs": sans,
            "admissionControl": [{"name": "PodSecurity", "configuration": pod_security()}],
            "auditPolicy": audit_policy(),
        });
        if !c.at_least(12) {
            api["disablePodSecurityPolicy"] = true.into();
        }
        let extra = obj(json!({
            "secretboxEncryptionSecret": s.secrets.secretboxencryptionsecret,
            "aescbcEncryptionSecret": s.secrets.aescbcencryptionsecret,
            "aggregatorCA": {"crt": s.certs.k8saggregator.crt, "key": s.certs.k8saggregator.key},
            "serviceAccount": {"key": s.certs.k8sserviceaccount.key},
            "apiServer": api,
            "controllerManager": {"image": o.image("registry.k8s.io/kube-controller-manager")},
            "proxy": {"image": o.image("registry.k8s.io/kube-proxy")},
            "scheduler": {"image": o.image("registry.k8s.io/kube-scheduler")},
            "etcd": {"ca": {"crt": s.certs.etcd.crt, "key": s.certs.etcd.key}},
        }));
        cluster.as_object_mut().expect("object").extend(extra);
        if o.allow_scheduling_on_control_planes {
            cluster["allowSchedulingOnControlPlanes"] = true.into();
        }
    }
    let mut docs = vec![json!({
        "version": "v1alpha1",
        "debug": false,
        "persist": true,
        "machine": machine,
        "cluster": cluster,
    })];
    if c.at_least(12) {
        docs.extend(registry_mirror_docs(o));
        docs.push(json!({"apiVersion": "v1alpha1", "kind": "HostnameConfig", "auto": "stable"}));
    }
    Ok(docs)
}

fn registry_mirror_docs(o: &GenOptions) -> Vec<Value> {
    o.registry_mirrors
        .iter()
        .map(|(host, eps)| {
            let endpoints: Vec<Value> = eps.iter().map(|e| json!({"url": e})).collect();
            json!({"apiVersion": "v1alpha1", "kind": "RegistryMirrorConfig", "name": host, "endpoints": endpoints})
        })
        .collect()
}

fn kind(kind: &str, body: Value) -> Value {
    let mut m = obj(json!({"apiVersion": "v1alpha1", "kind": kind}));
    m.extend(obj(body));
    Value::Object(m)
}

fn multi_document(s: &SecretsBundle, o: &GenOptions, ty: MachineType) -> Result<Vec<Value>> {
    let cp = ty == MachineType::ControlPlane;
    let pem = |b64: &str| unb64(b64);
    let mut cluster = json!({"token": s.secrets.bootstraptoken});
    if cp {
        cluster["etcd"] = json!({"ca": {"crt": s.certs.etcd.crt, "key": s.certs.etcd.key}});
    }
    let mut docs = vec![json!({
        "version": "v1alpha1",
        "debug": false,
        "persist": true,
        "machine": {
            "type": ty.as_str(),
            "token": s.trustdinfo.token,
            "ca": ca_pair(&s.certs.os.crt, &s.certs.os.key, cp),
            "certSANs": o.additional_sans,
            "features": {"diskQuotaSupport": true},
        },
        "cluster": cluster,
    })];
    if o.with_discovery {
        docs.push(kind(
            "DiscoveryServiceConfig",
            json!({"name": "default", "endpoint": DISCOVERY_ENDPOINT}),
        ));
    }
    docs.push(kind(
        "DiscoveryIdentityConfig",
        json!({"clusterID": s.cluster.id, "clusterSecret": s.cluster.secret}),
    ));
    if o.with_kubespan {
        docs.push(kind("KubeSpanConfig", json!({"enabled": true})));
    }
    if let Some(disk) = &o.install_disk {
        let mut installer = json!({});
        if let Some(i) = &o.install_image {
            installer["image"] = i.as_str().into();
        }
        docs.push(kind(
            "UnattendedInstallConfig",
            json!({
                "installer": installer,
                "provisioning": {
                    "diskSelector": {"match": format!("disk.dev_path == \"{disk}\"")},
                    "wipe": false,
                },
            }),
        ));
    }
    docs.push(kind(
        "ResolverConfig",
        json!({"hostDNS": {"enabled": true, "forwardKubeDNSToHost": true}}),
    ));
    if !o.sysctls.is_empty() {
        let params: Map<String, Value> = o
            .sysctls
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        docs.push(kind("SysctlConfig", json!({"params": params})));
    }
    docs.push(kind(
        "VolumeConfig",
        json!({"name": "EPHEMERAL", "mount": {"secure": true}}),
    ));
    docs.push(kind(
        "FilesystemTrimConfig",
        json!({"interval": "168h0m0s"}),
    ));
    docs.push(kind(
        "SecurityProfileConfig",
        json!({"workloadIsolation": true}),
    ));
    docs.extend(registry_mirror_docs(o));
    docs.push(kind("HostnameConfig", json!({"auto": "stable"})));
    docs.push(kind(
        "KubeClusterConfig",
        json!({"clusterName": o.cluster_name, "endpoint": o.endpoint}),
    ));
    let mut node = json!({"nodeIP": {}});
    if cp {
        node["labels"] = json!({
            "node-role.kubernetes.io/control-plane": "",
            "node.kubernetes.io/exclude-from-external-load-balancers": "",
        });
        if !o.allow_scheduling_on_control_planes {
            node["taints"] = json!({"node-role.kubernetes.io/control-plane": "NoSchedule"});
        }
    }
    docs.push(kind("KubeNodeConfig", node));
    docs.push(kind(
        "KubeletConfig",
        json!({
            "image": o.image("ghcr.io/siderolabs/kubelet"),
            "config": {},
            "defaultRuntimeSeccompProfileEnabled": true,
        }),
    ));
    docs.push(kind(
        "KubeNetworkConfig",
        json!({
            "dnsDomain": o.dns_domain,
            "podSubnets": [DEFAULT_POD_SUBNET],
            "serviceSubnets": [DEFAULT_SERVICE_SUBNET],
        }),
    ));
    let k8s_ca = pem(&s.certs.k8s.crt)?;
    docs.push(if cp {
        kind(
            "KubeAPIServerCAConfig",
            json!({"issuingCA": {"cert": k8s_ca, "key": pem(&s.certs.k8s.key)?}}),
        )
    } else {
        kind("KubeAPIServerCAConfig", json!({"acceptedCAs": [k8s_ca]}))
    });
    docs.push(kind("KubePrismConfig", json!({"port": 7445})));
    if !cp {
        return Ok(docs);
    }
    docs.push(kind(
        "KubeAggregatorCAConfig",
        json!({"issuingCA": {
            "cert": pem(&s.certs.k8saggregator.crt)?,
            "key": pem(&s.certs.k8saggregator.key)?,
        }}),
    ));
    docs.push(kind(
        "KubeAdmissionControlConfig",
        json!({"name": "PodSecurity", "configuration": pod_security()}),
    ));
    docs.push(kind(
        "KubeAuditPolicyConfig",
        json!({"configuration": audit_policy()}),
    ));
    docs.push(kind(
        "KubeAuthenticationConfig",
        json!({"configuration": {
            "anonymous": {
                "enabled": true,
                "conditions": [{"path": "/livez"}, {"path": "/readyz"}, {"path": "/healthz"}],
            },
            "jwt": [],
        }}),
    ));
    docs.push(kind(
        "KubeAuthorizerConfig",
        json!({"name": "node", "type": "Node"}),
    ));
    docs.push(kind(
        "KubeAuthorizerConfig",
        json!({"name": "rbac", "type": "RBAC"}),
    ));
    docs.push(kind(
        "KubeEtcdEncryptionConfig",
        json!({"config": {"resources": [{
            "resources": ["secrets"],
            "providers": [{"secretbox": {"keys": [{
                "name": "key2",
                "secret": s.secrets.secretboxencryptionsecret,
            }]}}],
        }]}}),
    ));
    docs.push(kind(
        "KubeServiceAccountConfig",
        json!({"issuer": {
            "privateKey": pem(&s.certs.k8sserviceaccount.key)?,
            "issuerURL": o.endpoint,
        }}),
    ));
    let mut api = json!({"image": o.image("registry.k8s.io/kube-apiserver")});
    if let Some(port) = o.local_api_server_port {
        api["apiPort"] = port.into();
    }
    if !o.additional_sans.is_empty() {
        api["certExtraSANs"] = json!(o.additional_sans);
    }
    docs.push(kind("KubeAPIServerConfig", api));
    docs.push(kind(
        "KubeControllerManagerConfig",
        json!({"image": o.image("registry.k8s.io/kube-controller-manager")}),
    ));
    docs.push(kind(
        "KubeSchedulerConfig",
        json!({"image": o.image("registry.k8s.io/kube-scheduler"), "config": {}}),
    ));
    docs.push(kind(
        "KubeProxyConfig",
        json!({"image": o.image("registry.k8s.io/kube-proxy"), "config": {}}),
    ));
    if o.cni_urls.is_empty() {
        docs.push(kind(
            "KubeFlannelCNIConfig",
            json!({"backendType": "vxlan", "backendPort": 4789}),
        ));
    }
    docs.push(kind("KubeCoreDNSConfig", json!({"enabled": true})));
    for (i, url) in o.cni_urls.iter().enumerate() {
        let name = if i == 0 {
            "custom-cni".to_string()
        } else {
            format!("custom-cni-{i}")
        };
        docs.push(kind(
            "KubeExternalManifestConfig",
            json!({"name": name, "url": url}),
        ));
    }
    Ok(docs)
}
