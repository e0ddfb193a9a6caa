//! The kubelet. k8s.KubeletConfigController reads `machine.kubelet` (and the cluster's DNS,
//! taints and cloud provider) into KubeletConfig; k8s.KubeletSpecController makes what the
//! kubelet runs with: its command line (extraArgs merged; Talos's own flags refused), and its
//! KubeletConfiguration (Talos's defaults, then `extraConfig`, which apply has checked
//! against the complete field list), pointing at the static pod server.

use machinery::kubernetes::{kubelet_flag, strings};
use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use serde_json::{json, Value};
use types::k8s::{
    KubeletConfigSpec, KubeletMount, KubeletSpecSpec, NodeIpSpec, NodenameSpec,
    StaticPodServerStatusSpec, KUBELET_BOOTSTRAP_KUBECONFIG, KUBELET_CA, KUBELET_CONFIG,
    KUBELET_ID, KUBELET_KUBECONFIG, KUBELET_PKI_DIR, STATIC_POD_SERVER_ID,
};

use crate::controllers::inputs;
use crate::sys::cri::CRI_SOCKET;

pub struct KubeletConfigController;

/// The kubelet's share of a machine config.
pub fn kubelet_config_of(cfg: &machinery::Config) -> KubeletConfigSpec {
    use machinery::kubernetes::setting;
    // `machine.kubelet`'s fields, or a KubeletConfig document's (`extraConfig` is `config`
    // there), or a KubeNodeConfig's for the node's own settings.
    let k = |p: &str| {
        let (kind, field) = match p {
            "extraConfig" => ("KubeletConfig", "/config".to_string()),
            "skipNodeRegistration" | "registerWithFQDN" => ("KubeNodeConfig", format!("/{p}")),
            _ => ("KubeletConfig", format!("/{p}")),
        };
        setting(cfg, &format!("/machine/kubelet/{p}"), kind, &field)
    };
    let flag = |p: &str| k(p).and_then(Value::as_bool);
    let extra_args = machinery::kubernetes::extra_args(k("extraArgs"));
    let extra_mounts = k("extraMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| {
            let s = |f: &str| m.get(f).and_then(Value::as_str).unwrap_or("").to_string();
            KubeletMount {
                destination: s("destination"),
                kind: match s("type").as_str() {
                    "" => "bind".into(),
                    t => t.into(),
                },
                source: s("source"),
                options: strings(m.get("options")),
            }
        })
        .collect();
    let mut cluster_dns = strings(k("clusterDNS"));
    if cluster_dns.is_empty() {
        // The tenth address of the first service subnet, as CoreDNS's service gets.
        let subnet = strings(setting(
            cfg,
            "/cluster/network/serviceSubnets",
            "KubeNetworkConfig",
            "/serviceSubnets",
        ))
        .into_iter()
        .next()
        .unwrap_or_else(|| "10.96.0.0/12".into());
        if let Some((std::net::IpAddr::V4(ip), _)) = machinery::validate::parse_cidr(&subnet, false)
        {
            cluster_dns.push(std::net::Ipv4Addr::from(u32::from(ip) + 10).to_string());
        }
    }
    let node_taints = setting(cfg, "/machine/nodeTaints", "KubeNodeConfig", "/taints")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .map(|(key, v)| match v.split_once(':') {
            Some((value, effect)) if !value.is_empty() => format!("{key}={value}:{effect}"),
            Some((_, effect)) => format!("{key}:{effect}"),
            None => format!("{key}:{v}"),
        })
        .collect();
    KubeletConfigSpec {
        image: machinery::kubernetes::image_or_default(
            k("image").and_then(Value::as_str),
            "ghcr.io/siderolabs/kubelet",
        ),
        cluster_dns,
        cluster_domain: setting(
            cfg,
            "/cluster/network/dnsDomain",
            "KubeNetworkConfig",
            "/dnsDomain",
        )
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("cluster.local")
        .into(),
        extra_args,
        extra_mounts,
        extra_config: k("extraConfig").cloned().unwrap_or(Value::Null),
        cloud_provider_external: cfg
            .pointer("/cluster/externalCloudProvider/enabled")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        default_runtime_seccomp_enabled: flag("defaultRuntimeSeccompProfileEnabled")
            .unwrap_or(true),
        skip_node_registration: flag("skipNodeRegistration").unwrap_or(false),
        static_pod_list_url: String::new(),
        register_with_fqdn: flag("registerWithFQDN").unwrap_or(false),
        node_taints,
    }
}

#[async_trait::async_trait]
impl Controller for KubeletConfigController {
    fn name(&self) -> &str {
        "k8s.KubeletConfigController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![inputs::config(&[
            "kind:KubeletConfig",
            "kind:KubeNodeConfig",
            "kind:KubeNetworkConfig",
            "/machine/kubelet",
            "/machine/nodeTaints",
            "/cluster/network/serviceSubnets",
            "/cluster/network/dnsDomain",
            "/cluster/externalCloudProvider",
        ])]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<KubeletConfigSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        if let Some(cfg) = inputs::machine_config(ctx)? {
            ctx.put(KUBELET_ID, kubelet_config_of(&cfg))?;
        }
        Ok(())
    }
}

/// Talos's KubeletConfiguration, then `extra` (checked at apply) over it.
pub fn kubelet_configuration(cfg: &KubeletConfigSpec, static_pod_url: &str) -> Value {
    let mut c = json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "staticPodPath": "/etc/kubernetes/manifests",
        "address": "0.0.0.0",
        "port": 10250,
        "oomScoreAdj": -450,
        "rotateCertificates": true,
        "authentication": {
            "x509": {"clientCAFile": KUBELET_CA},
            "webhook": {"enabled": true},
            "anonymous": {"enabled": false},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": cfg.cluster_domain,
        "clusterDNS": cfg.cluster_dns,
        "serializeImagePulls": false,
        "failSwapOn": false,
        "cgroupRoot": "/",
        "systemCgroups": "/system",
        "kubeletCgroups": "/podruntime/kubelet",
        "systemReserved": {"cpu": "50m", "memory": "192Mi", "pid": "100", "ephemeral-storage": "256Mi"},
        "logging": {"format": "json"},
        "tlsMinVersion": "VersionTLS13",
        "streamingConnectionIdleTimeout": "5m0s",
        "shutdownGracePeriod": "30s",
        "shutdownGracePeriodCriticalPods": "10s",
        "seccompDefault": cfg.default_runtime_seccomp_enabled,
        "protectKernelDefaults": true,
        "resolvConf": "/system/resolved/resolv.conf",
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "containerRuntimeEndpoint": format!("unix://{CRI_SOCKET}"),
    });
    if !static_pod_url.is_empty() {
        c["staticPodURL"] = static_pod_url.into();
    }
    if !cfg.node_taints.is_empty() {
        c["registerWithTaints"] = cfg
            .node_taints
            .iter()
            .map(|t| {
                let (kv, effect) = t.rsplit_once(':').unwrap_or((t, ""));
                let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
                let mut taint = json!({"key": key, "effect": effect});
                if !value.is_empty() {
                    taint["value"] = value.into();
                }
                taint
            })
            .collect();
    }
    if cfg.skip_node_registration {
        c["registerNode"] = false.into();
    }
    if let Some(extra) = cfg.extra_config.as_object() {
        for (k, v) in extra {
            c[k] = v.clone();
        }
    }
    c
}

pub struct KubeletSpecController;

#[async_trait::async_trait]
impl Controller for KubeletSpecController {
    fn name(&self) -> &str {
        "k8s.KubeletSpecController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::of::<KubeletConfigSpec>().id(KUBELET_ID),
            Input::of::<NodenameSpec>(),
            Input::of::<StaticPodServerStatusSpec>().id(STATIC_POD_SERVER_ID),
            Input::of::<NodeIpSpec>().id(KUBELET_ID),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<KubeletSpecSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let (Some(cfg), Some((_, nodename))) = (
            ctx.spec_of::<KubeletConfigSpec>(KUBELET_ID)?,
            ctx.specs_of::<NodenameSpec>()?.into_iter().next(),
        ) else {
            return Ok(());
        };
        let url = ctx
            .spec_of::<StaticPodServerStatusSpec>(STATIC_POD_SERVER_ID)?
            .map(|s| s.url)
            .unwrap_or_default();
        let mut args = k8s::args::Args::new([
            (
                "bootstrap-kubeconfig",
                KUBELET_BOOTSTRAP_KUBECONFIG.to_string(),
            ),
            ("kubeconfig", KUBELET_KUBECONFIG.to_string()),
            ("config", KUBELET_CONFIG.to_string()),
            ("cert-dir", KUBELET_PKI_DIR.to_string()),
            ("hostname-override", nodename.nodename.clone()),
        ]);
        if cfg.cloud_provider_external {
            args.set("cloud-provider", "external");
        }
        if !cfg.extra_args.contains_key("node-ip") {
            if let Some(ips) = ctx.spec_of::<NodeIpSpec>(KUBELET_ID)? {
                args.set("node-ip", ips.addresses.join(","));
            }
        }
        args.merge(&cfg.extra_args, kubelet_flag)
            .map_err(|e| format!("machine.kubelet.extraArgs: {e}"))?;
        let mut argv = vec!["/usr/local/bin/kubelet".to_string()];
        argv.extend(args.to_vec());
        ctx.put(
            KUBELET_ID,
            KubeletSpecSpec {
                image: cfg.image.clone(),
                args: argv,
                extra_mounts: cfg.extra_mounts.clone(),
                expected_nodename: nodename.nodename,
                config: kubelet_configuration(&cfg, &url),
            },
        )?;
        Ok(())
    }
}
