//! The bootstrap manifests' objects rendered from upstream's test inputs, against upstream's
//! golden files (`shared/conformance/k8s/templates`) byte for byte, except `status`: upstream's
//! encoder writes the zero status of each Go object; we send none (the API server owns it).

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s::manifests as m;
use serde_json::json;
use types::k8s::{BootstrapManifestsConfigSpec, Resources};
use types::secrets::KubernetesRootSpec;

fn golden(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/conformance/k8s/templates")
        .join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match text.find("\nstatus:") {
        Some(i) => text[..=i].to_string(),
        None => text,
    }
}

fn check<T: serde::Serialize>(name: &str, object: T) {
    let ours = k8s::yaml::to_string(&object);
    let want = golden(name);
    assert!(
        ours == want,
        "{name}: rendering differs from the golden file\n--- golden\n{want}\n--- ours\n{ours}"
    );
}

fn spec() -> BootstrapManifestsConfigSpec {
    BootstrapManifestsConfigSpec::default()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn rbac_service_accounts_and_secrets() {
    check("coredns-service-account", m::coredns_service_account());
    check("coredns-cluster-role", m::coredns_role());
    check("coredns-cluster-role-binding", m::coredns_binding());
    check("csr-node-bootstrap", m::csr_node_bootstrap());
    check("csr-approver-role-binding", m::csr_approver());
    check("csr-renewal-role-binding", m::csr_renewal());
    check(
        "talos-nodes-rbac-cluster-role-binding",
        m::talos_nodes_binding(),
    );
    check("talos-nodes-rbac-cluster-role", m::talos_nodes_role());
    check(
        "kube-proxy-service-account",
        m::kube_proxy_service_account(),
    );
    check("kube-proxy-cluster-role-binding", m::kube_proxy_binding());
    check("flannel-cluster-role-binding", m::flannel_binding());
    check("flannel-service-account", m::flannel_service_account());
    check("talos-service-account-crd", m::talos_service_account_crd());
    let secrets = KubernetesRootSpec {
        bootstrap_token_id: "25p8ak".into(),
        bootstrap_token_secret: "vshybadgp2mhtvm7".into(),
        ..Default::default()
    };
    check("kubelet-bootstrapping-token", m::bootstrap_token(&secrets));
    let server = BootstrapManifestsConfigSpec {
        server: "https://localhost:6443".into(),
        ..spec()
    };
    check("kubeconfig-in-cluster", m::kubeconfig_in_cluster(&server));
}

#[test]
fn coredns() {
    let ip = |v4: &str, v6: &str| BootstrapManifestsConfigSpec {
        dns_service_ip: v4.into(),
        dns_service_ipv6: v6.into(),
        ..spec()
    };
    check(
        "coredns-service-ipv4",
        m::coredns_service(&ip("10.96.0.10", "")),
    );
    check(
        "coredns-service-ipv6",
        m::coredns_service(&ip("", "fd00::10")),
    );
    check(
        "coredns-service-dual",
        m::coredns_service(&ip("10.96.0.10", "fd00::10")),
    );
    let domain = BootstrapManifestsConfigSpec {
        cluster_domain: "cluster.local".into(),
        ..spec()
    };
    check(
        "coredns-configmap-cluster-domain",
        m::coredns_config(&domain),
    );
    check(
        "coredns-configmap-no-cluster-domain",
        m::coredns_config(&spec()),
    );
    let image = BootstrapManifestsConfigSpec {
        core_dns_image: "coredns/coredns:1.9.3".into(),
        ..spec()
    };
    check("coredns-deployment", m::coredns_deployment(&image));
}

fn flannel(pods: &[&str]) -> BootstrapManifestsConfigSpec {
    BootstrapManifestsConfigSpec {
        pod_cidrs: pods.iter().map(|s| s.to_string()).collect(),
        flannel_backend_type: "vxlan".into(),
        flannel_backend_port: 4789,
        ..spec()
    }
}

#[test]
fn flannel_objects() {
    check("flannel-cluster-role", m::flannel_role(&spec()));
    let policies = BootstrapManifestsConfigSpec {
        flannel_kube_network_policies_enabled: true,
        ..spec()
    };
    check(
        "flannel-cluster-role-with-network-policies",
        m::flannel_role(&policies),
    );
    check(
        "flannel-configmap-v4",
        m::flannel_config(&flannel(&["10.96.0.0/12"])),
    );
    check(
        "flannel-configmap-v6",
        m::flannel_config(&flannel(&["fd00::/112"])),
    );
    let mut dual = flannel(&["10.96.0.0/12", "fd00::/112"]);
    dual.flannel_backend_extra_config = json!({"VNI": 4096}).as_object().unwrap().clone();
    check("flannel-configmap-dual", m::flannel_config(&dual));
    let mtu = BootstrapManifestsConfigSpec {
        flannel_backend_mtu: 1420,
        ..flannel(&["10.96.0.0/12"])
    };
    check("flannel-configmap-with-mtu", m::flannel_config(&mtu));

    let ds = BootstrapManifestsConfigSpec {
        flannel_image: "quay.io/coreos/flannel:v0.14.0".into(),
        flannel_extra_args: vec!["--foo=bar".into()],
        ..spec()
    };
    check("flannel-daemonset", m::flannel_daemonset(&ds).unwrap());
    let with_policies = BootstrapManifestsConfigSpec {
        flannel_resources: Resources {
            requests: map(&[("cpu", "100m"), ("memory", "50Mi")]),
            limits: map(&[("cpu", "200m"), ("memory", "100Mi")]),
        },
        flannel_kube_network_policies_enabled: true,
        flannel_kube_network_policies_image:
            "registry.k8s.io/networking/kube-network-policies:v0.7.0".into(),
        ..ds
    };
    check(
        "flannel-daemonset-with-network-policies",
        m::flannel_daemonset(&with_policies).unwrap(),
    );
}

#[test]
fn kube_proxy() {
    let args = BootstrapManifestsConfigSpec {
        proxy_image: "k8s.gcr.io/kube-proxy:v1.27.0".into(),
        proxy_args: vec!["--proxy-mode=iptables".into()],
        ..spec()
    };
    check(
        "kube-proxy-daemonset",
        m::kube_proxy_daemonset(&args).unwrap(),
    );
    assert!(m::kube_proxy_config(&args).is_none());

    let file = BootstrapManifestsConfigSpec {
        proxy_args: vec![
            "--config=/var/lib/kube-proxy/config.conf".into(),
            "--hostname-override=$(NODE_NAME)".into(),
        ],
        proxy_resources: Resources {
            requests: map(&[("cpu", "150m"), ("memory", "64Mi")]),
            limits: map(&[("cpu", "300m"), ("memory", "128Mi")]),
        },
        proxy_config: json!({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": "/etc/kubernetes/kubeconfig"},
            "clusterCIDR": "10.244.0.0/16",
            "mode": "nftables",
            "conntrack": {"maxPerCore": 0},
        }),
        proxy_config_checksum: "abc123".into(),
        ..args
    };
    check(
        "kube-proxy-daemonset-with-config",
        m::kube_proxy_daemonset(&file).unwrap(),
    );
    check("kube-proxy-configmap", m::kube_proxy_config(&file).unwrap());
}
