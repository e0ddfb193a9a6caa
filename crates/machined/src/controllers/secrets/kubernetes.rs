//! Kubernetes's PKI on a control plane. secrets.KubernetesRootController reads the cluster's
//! CAs, keys, token and names from the config (KubernetesRootSecrets);
//! secrets.KubernetesCertsController issues what depends on this node, once time is synced
//! and its hostname and addresses are known: the API server's serving certificate for every
//! name and address, its kubelet client and front proxy certificates
//! (KubernetesDynamicCerts), the components' kubeconfigs and the API server's etcd client
//! certificate (KubernetesSecrets). One year, issued again at half life or when a name,
//! address or CA changes. secrets.KubeletController gives every node what its kubelet needs
//! to join (KubeletSecrets).

use std::net::IpAddr;
use std::time::Duration;

use machinery::kubernetes::strings;
use machinery::pki::{self, CertAndKey, Key, KeyKind, LeafSpec};
use machinery::secrets::unb64;
use machinery::Config;
use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use serde_json::Value;
use types::network::{HostnameStatusSpec, NodeAddressSpec};
use types::runtime::TimeStatusSpec;
use types::secrets::{
    CertAndKeyPem, CertSansSpec, KubeletSecretsSpec, KubernetesCertsSpec,
    KubernetesDynamicCertsSpec, KubernetesRootSpec, K8S_CERTS_ID, K8S_DYNAMIC_CERTS_ID, KUBELET_ID,
};

use crate::controllers::inputs;
use crate::sys::pki::{now, validity};

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

fn str_at<'a>(cfg: &'a Config, ptr: &str) -> &'a str {
    cfg.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// A setting of either config form (see [`machinery::kubernetes::setting`]).
fn setting<'a>(cfg: &'a Config, v1alpha1: &str, kind: &'a str, field: &str) -> Option<&'a Value> {
    machinery::kubernetes::setting(cfg, v1alpha1, kind, field)
}

fn pem(cfg: &Config, v1alpha1: &str, kind: &str, field: &str) -> Result<String, String> {
    machinery::kubernetes::pem_setting(cfg, v1alpha1, kind, field).map_err(|e| e.to_string())
}

/// The first address of a CIDR (`10.96.0.0/12` → `10.96.0.1`): the `kubernetes` service.
fn first_address(cidr: &str) -> Option<String> {
    let (ip, _) = machinery::validate::parse_cidr(cidr, false)?;
    Some(match ip {
        IpAddr::V4(v4) => IpAddr::from((u32::from(v4) | 1).to_be_bytes()).to_string(),
        IpAddr::V6(v6) => IpAddr::from((u128::from(v6) | 1).to_be_bytes()).to_string(),
    })
}

/// The root secrets of a control plane's config.
pub fn root_of(cfg: &Config) -> Result<KubernetesRootSpec, String> {
    let token = str_at(cfg, "/cluster/token");
    let (token_id, token_secret) = token.split_once('.').unwrap_or(("", ""));
    let port = setting(
        cfg,
        "/cluster/controlPlane/localAPIServerPort",
        "KubeAPIServerConfig",
        "/apiPort",
    )
    .and_then(Value::as_u64)
    .unwrap_or(6443);
    let mut service_subnets = strings(setting(
        cfg,
        "/cluster/network/serviceSubnets",
        "KubeNetworkConfig",
        "/serviceSubnets",
    ));
    if service_subnets.is_empty() {
        service_subnets.push("10.96.0.0/12".into());
    }
    let admin_lifetime = match str_at(cfg, "/cluster/adminKubeconfig/certLifetime") {
        "" => YEAR,
        d => machinery::duration::parse(d)
            .map_err(|e| format!("cluster.adminKubeconfig.certLifetime: {e}"))?,
    };
    let domain = setting(
        cfg,
        "/cluster/network/dnsDomain",
        "KubeNetworkConfig",
        "/dnsDomain",
    )
    .and_then(Value::as_str)
    .filter(|d| !d.is_empty())
    .unwrap_or("cluster.local");
    let mut accepted_cas = strings(
        cfg.kind("KubeAPIServerCAConfig")
            .next()
            .and_then(|d| d.value.get("acceptedCAs")),
    );
    for (i, v) in cfg
        .pointer("/cluster/acceptedCAs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(crt) = v.get("crt").and_then(Value::as_str) {
            accepted_cas.push(unb64(crt).map_err(|e| format!("cluster.acceptedCAs[{i}]: {e}"))?);
        }
    }
    Ok(KubernetesRootSpec {
        name: setting(
            cfg,
            "/cluster/clusterName",
            "KubeClusterConfig",
            "/clusterName",
        )
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string(),
        endpoint: cfg.control_plane_endpoint().unwrap_or_default().to_string(),
        local_endpoint: format!("https://localhost:{port}"),
        cert_sans: strings(setting(
            cfg,
            "/cluster/apiServer/certSANs",
            "KubeAPIServerConfig",
            "/certExtraSANs",
        )),
        dns_domain: domain.to_string(),
        api_server_ips: service_subnets
            .iter()
            .filter_map(|c| first_address(c))
            .collect(),
        issuing_ca: CertAndKeyPem {
            crt: pem(
                cfg,
                "/cluster/ca/crt",
                "KubeAPIServerCAConfig",
                "/issuingCA/cert",
            )?,
            key: pem(
                cfg,
                "/cluster/ca/key",
                "KubeAPIServerCAConfig",
                "/issuingCA/key",
            )?,
        },
        accepted_cas,
        aggregator_ca: CertAndKeyPem {
            crt: pem(
                cfg,
                "/cluster/aggregatorCA/crt",
                "KubeAggregatorCAConfig",
                "/issuingCA/cert",
            )?,
            key: pem(
                cfg,
                "/cluster/aggregatorCA/key",
                "KubeAggregatorCAConfig",
                "/issuingCA/key",
            )?,
        },
        service_account: pem(
            cfg,
            "/cluster/serviceAccount/key",
            "KubeServiceAccountConfig",
            "/issuer/privateKey",
        )?,
        bootstrap_token_id: token_id.to_string(),
        bootstrap_token_secret: token_secret.to_string(),
        secretbox_encryption_secret: str_at(cfg, "/cluster/secretboxEncryptionSecret").into(),
        aescbc_encryption_secret: str_at(cfg, "/cluster/aescbcEncryptionSecret").into(),
        etcd_encryption_config: cfg
            .kind("KubeEtcdEncryptionConfig")
            .find_map(|d| d.value.get("config").cloned())
            .unwrap_or(Value::Null),
        admin_cert_lifetime: admin_lifetime.as_secs(),
    })
}

const ROOT_PATHS: &[&str] = &[
    "kind:KubeClusterConfig",
    "kind:KubeAPIServerConfig",
    "kind:KubeNetworkConfig",
    "kind:KubeAPIServerCAConfig",
    "kind:KubeAggregatorCAConfig",
    "kind:KubeServiceAccountConfig",
    "kind:KubeEtcdEncryptionConfig",
    "/machine/type",
    "/cluster/clusterName",
    "/cluster/controlPlane",
    "/cluster/apiServer/certSANs",
    "/cluster/network/dnsDomain",
    "/cluster/network/serviceSubnets",
    "/cluster/ca",
    "/cluster/acceptedCAs",
    "/cluster/aggregatorCA",
    "/cluster/serviceAccount",
    "/cluster/token",
    "/cluster/secretboxEncryptionSecret",
    "/cluster/aescbcEncryptionSecret",
    "/cluster/adminKubeconfig",
];

pub struct KubernetesRootController;

#[async_trait::async_trait]
impl Controller for KubernetesRootController {
    fn name(&self) -> &str {
        "secrets.KubernetesRootController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![inputs::config(ROOT_PATHS)]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<KubernetesRootSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let Some(cfg) = inputs::machine_config(ctx)? else {
            return Ok(());
        };
        if cfg.is_control_plane() {
            ctx.put(K8S_CERTS_ID, root_of(&cfg)?)?;
        }
        Ok(())
    }
}

pub struct KubeletController;

#[async_trait::async_trait]
impl Controller for KubeletController {
    fn name(&self) -> &str {
        "secrets.KubeletController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![inputs::config(&[
            "kind:KubeClusterConfig",
            "kind:KubeAPIServerCAConfig",
            "/cluster/controlPlane/endpoint",
            "/cluster/ca/crt",
            "/cluster/acceptedCAs",
            "/cluster/token",
            "kind:KubePrismConfig",
            "/machine/features/kubePrism",
        ])]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<KubeletSecretsSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let Some(cfg) = inputs::machine_config(ctx)? else {
            return Ok(());
        };
        let mut root = root_of(&cfg)?;
        // A worker's config carries the CA it trusts among the accepted ones (no issuing CA).
        let ca = match root.issuing_ca.crt.as_str() {
            "" if !root.accepted_cas.is_empty() => root.accepted_cas.remove(0),
            ca => ca.to_string(),
        };
        if root.endpoint.is_empty() || ca.is_empty() {
            return Ok(());
        }
        // The kubelet reaches the API servers through KubePrism when it is on.
        let endpoint = match machinery::kubernetes::kube_prism_port(&cfg) {
            Some(port) => format!("https://localhost:{port}"),
            None => root.endpoint,
        };
        ctx.put(
            KUBELET_ID,
            KubeletSecretsSpec {
                endpoint,
                ca,
                accepted_cas: root.accepted_cas,
                bootstrap_token_id: root.bootstrap_token_id,
                bootstrap_token_secret: root.bootstrap_token_secret,
            },
        )?;
        Ok(())
    }
}

/// A certificate for `spec` signed by `ca`.
fn issue(ca: &CertAndKeyPem, spec: LeafSpec) -> Result<CertAndKeyPem, String> {
    let ca = CertAndKey {
        crt: ca.crt.clone(),
        key: ca.key.clone(),
    };
    let key = Key::generate(KeyKind::EcdsaP256).map_err(|e| e.to_string())?;
    let crt = pki::sign_leaf(&ca, &key, &spec).map_err(|e| e.to_string())?;
    Ok(CertAndKeyPem {
        crt,
        key: key.to_pkcs8_pem(),
    })
}

fn client(cn: &str, orgs: &[&str], ttl: Duration) -> LeafSpec {
    LeafSpec {
        common_name: cn.into(),
        organizations: orgs.iter().map(|s| s.to_string()).collect(),
        client: true,
        ttl: Some(ttl),
        ..Default::default()
    }
}

/// The API server's names and addresses on this node.
pub fn cert_sans(
    root: &KubernetesRootSpec,
    hostname: &HostnameStatusSpec,
    ips: &[IpAddr],
) -> CertSansSpec {
    let fqdn = if hostname.domainname.is_empty() {
        hostname.hostname.clone()
    } else {
        format!("{}.{}", hostname.hostname, hostname.domainname)
    };
    let mut dns = vec![
        "kubernetes".to_string(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!("kubernetes.default.svc.{}", root.dns_domain),
        "localhost".into(),
        hostname.hostname.clone(),
        fqdn.clone(),
    ];
    let mut addrs: Vec<String> = root.api_server_ips.clone();
    addrs.extend(["127.0.0.1".to_string(), "::1".to_string()]);
    addrs.extend(ips.iter().map(IpAddr::to_string));
    let endpoint_host = root
        .endpoint
        .trim_start_matches("https://")
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']).to_string());
    for name in root.cert_sans.iter().cloned().chain(endpoint_host) {
        if name.parse::<IpAddr>().is_ok() {
            addrs.push(name);
        } else {
            dns.push(name);
        }
    }
    dns.retain(|d| !d.is_empty());
    dns.sort();
    dns.dedup();
    addrs.sort();
    addrs.dedup();
    CertSansSpec {
        ips: addrs,
        dns_names: dns,
        fqdn,
    }
}

/// The node's dynamic certificates for `sans`.
pub fn dynamic_certs(
    root: &KubernetesRootSpec,
    sans: &CertSansSpec,
) -> Result<KubernetesDynamicCertsSpec, String> {
    let api_server = issue(
        &root.issuing_ca,
        LeafSpec {
            common_name: "kube-apiserver".into(),
            dns_names: sans.dns_names.clone(),
            ip_addresses: sans.ips.iter().filter_map(|i| i.parse().ok()).collect(),
            server: true,
            ttl: Some(YEAR),
            ..Default::default()
        },
    )?;
    let (from, to) = validity(&api_server.crt)?;
    Ok(KubernetesDynamicCertsSpec {
        api_server_kubelet_client: issue(
            &root.issuing_ca,
            client("apiserver-kubelet-client", &["system:masters"], YEAR),
        )?,
        front_proxy: issue(&root.aggregator_ca, client("front-proxy-client", &[], YEAR))?,
        api_server,
        renew_at: from + (to - from) / 2,
    })
}

/// A kubeconfig for a new client certificate of `cn` in `orgs`, against `server`.
pub fn kubeconfig_for(
    root: &KubernetesRootSpec,
    server: &str,
    cn: &str,
    orgs: &[&str],
    context: &str,
    ttl: Duration,
) -> Result<String, String> {
    let cert = issue(&root.issuing_ca, client(cn, orgs, ttl))?;
    let mut ca = root.issuing_ca.crt.clone();
    for extra in &root.accepted_cas {
        ca.push_str(extra);
    }
    Ok(k8s::yaml::to_string(&k8s::files::kubeconfig(
        &k8s::files::Kubeconfig {
            cluster: &root.name,
            server,
            ca: &ca,
            user: context,
            context,
            auth: k8s::files::Auth::Cert {
                crt: &cert.crt,
                key: &cert.key,
            },
            namespace: None,
        },
    )))
}

/// The admin kubeconfig `talosctl kubeconfig` hands out: a fresh certificate each time.
pub fn admin_kubeconfig(root: &KubernetesRootSpec) -> Result<String, String> {
    kubeconfig_for(
        root,
        &root.endpoint,
        "admin",
        &["system:masters"],
        &format!("admin@{}", root.name),
        Duration::from_secs(root.admin_cert_lifetime),
    )
}

fn component_certs(root: &KubernetesRootSpec, cfg: &Config) -> Result<KubernetesCertsSpec, String> {
    let local = &root.local_endpoint;
    let etcd_ca = CertAndKeyPem {
        crt: pem(cfg, "/cluster/etcd/ca/crt", "", "")?,
        key: pem(cfg, "/cluster/etcd/ca/key", "", "")?,
    };
    let admin_context = format!("admin@{}", root.name);
    let certs = KubernetesCertsSpec {
        scheduler_kubeconfig: kubeconfig_for(
            root,
            local,
            "system:kube-scheduler",
            &[],
            "system:kube-scheduler@k8s",
            YEAR,
        )?,
        controller_manager_kubeconfig: kubeconfig_for(
            root,
            local,
            "system:kube-controller-manager",
            &[],
            "system:kube-controller-manager@k8s",
            YEAR,
        )?,
        localhost_admin_kubeconfig: kubeconfig_for(
            root,
            local,
            "admin",
            &["system:masters"],
            &admin_context,
            YEAR,
        )?,
        admin_kubeconfig: admin_kubeconfig(root)?,
        etcd_client: issue(&etcd_ca, client("kube-apiserver", &[], YEAR))?,
        etcd_ca: etcd_ca.crt,
        renew_at: 0,
    };
    let (from, to) = validity(&certs.etcd_client.crt)?;
    Ok(KubernetesCertsSpec {
        renew_at: from + (to - from) / 2,
        ..certs
    })
}

/// Remembers what the current certificates were issued from.
#[derive(Default)]
pub struct KubernetesCertsController {
    issued_for: Option<(KubernetesRootSpec, CertSansSpec)>,
    components_for: Option<(KubernetesRootSpec, String)>,
}

#[async_trait::async_trait]
impl Controller for KubernetesCertsController {
    fn name(&self) -> &str {
        "secrets.KubernetesCertsController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            inputs::config(&["/cluster/etcd/ca"]),
            Input::of::<KubernetesRootSpec>().id(K8S_CERTS_ID),
            Input::of::<TimeStatusSpec>(),
            Input::of::<HostnameStatusSpec>(),
            Input::of::<NodeAddressSpec>(),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::exclusive_of::<KubernetesDynamicCertsSpec>(),
            Output::exclusive_of::<KubernetesCertsSpec>(),
            Output::exclusive_of::<CertSansSpec>(),
        ]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let (Some(cfg), Some(root)) = (
            inputs::machine_config(ctx)?,
            ctx.spec_of::<KubernetesRootSpec>(K8S_CERTS_ID)?,
        ) else {
            return Ok(());
        };
        let synced = ctx
            .specs_of::<TimeStatusSpec>()?
            .iter()
            .any(|(_, t)| t.synced || t.sync_disabled);
        let hostname = ctx.specs_of::<HostnameStatusSpec>()?.into_iter().next();
        let ips = inputs::node_ips(ctx, "accumulative")?;
        let (true, Some((_, hostname)), false) = (synced, hostname, ips.is_empty()) else {
            return Ok(());
        };
        let sans = cert_sans(&root, &hostname, &ips);
        ctx.put(K8S_CERTS_ID, sans.clone())?;

        let wanted = (root.clone(), sans.clone());
        let dynamic = match ctx.spec_of::<KubernetesDynamicCertsSpec>(K8S_DYNAMIC_CERTS_ID)? {
            Some(c) if now() < c.renew_at && self.issued_for.as_ref() == Some(&wanted) => c,
            _ => {
                let c = dynamic_certs(&root, &sans)?;
                tracing::info!(sans = ?sans.dns_names, ips = ?sans.ips, "issued the Kubernetes API server certificates");
                self.issued_for = Some(wanted);
                c
            }
        };
        let etcd_ca = str_at(&cfg, "/cluster/etcd/ca/crt").to_string();
        let wanted = (root.clone(), etcd_ca);
        let components = match ctx.spec_of::<KubernetesCertsSpec>(K8S_CERTS_ID)? {
            Some(c) if now() < c.renew_at && self.components_for.as_ref() == Some(&wanted) => c,
            _ => {
                let c = component_certs(&root, &cfg)?;
                self.components_for = Some(wanted);
                c
            }
        };
        let next = dynamic.renew_at.min(components.renew_at);
        ctx.requeue_after(Duration::from_secs(next.saturating_sub(now()).max(1)));
        ctx.put(K8S_DYNAMIC_CERTS_ID, dynamic)?;
        ctx.put(K8S_CERTS_ID, components)?;
        Ok(())
    }
}
