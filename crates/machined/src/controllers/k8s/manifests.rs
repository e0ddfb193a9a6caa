//! What a control plane puts into the cluster. k8s.ManifestsConfigController reads the
//! config into BootstrapManifestsConfig (CoreDNS, Flannel, kube-proxy, …) and
//! ExtraManifestsConfig (inline manifests, extra manifest URLs, CNI URLs);
//! k8s.ManifestController renders the bootstrap manifests; k8s.ExtraManifestController
//! fetches or parses the others. Each manifest is a Manifest resource, applied in id order.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use machinery::kubernetes::{self as mk, setting};
use machinery::Config;
use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use serde_json::{json, Value};
use types::k8s::{
    BootstrapManifestsConfigSpec, ExtraManifest, ExtraManifestsConfigSpec, ManifestSpec, Resources,
    BOOTSTRAP_MANIFESTS_ID, EXTRA_MANIFESTS_ID,
};
use types::secrets::{KubernetesRootSpec, K8S_CERTS_ID};

use crate::controllers::inputs;

const PATHS: &[&str] = &[
    "kind:KubeClusterConfig",
    "kind:KubeNetworkConfig",
    "kind:KubeProxyConfig",
    "kind:KubeFlannelCNIConfig",
    "kind:KubeCoreDNSConfig",
    "kind:KubePrismConfig",
    "kind:KubeTalosAPIAccessConfig",
    "kind:KubeInlineManifestConfig",
    "kind:KubeExternalManifestConfig",
    "/machine/type",
    "/machine/features/kubePrism",
    "/machine/features/kubernetesTalosAPIAccess",
    "/cluster/controlPlane",
    "/cluster/network",
    "/cluster/proxy",
    "/cluster/coreDNS",
    "/cluster/inlineManifests",
    "/cluster/extraManifests",
    "/cluster/extraManifestHeaders",
    "/cluster/externalCloudProvider",
];

/// The CoreDNS service address of a service network: its tenth address.
fn dns_service_ip(cidr: &str) -> Option<IpAddr> {
    let base: IpAddr = cidr.split('/').next()?.parse().ok()?;
    Some(match base {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a).checked_add(10)?).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a).checked_add(10)?).into()),
    })
}

fn text(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or_default().to_string()
}

fn resources(v: Option<&Value>) -> Resources {
    Resources {
        requests: mk::string_map(v.and_then(|r| r.get("requests"))),
        limits: mk::string_map(v.and_then(|r| r.get("limits"))),
    }
}

fn enabled(doc: Option<&Value>, v1alpha1_disabled: Option<&Value>) -> bool {
    let doc_on = doc.is_none_or(|d| d.get("enabled").and_then(Value::as_bool) != Some(false));
    doc_on && v1alpha1_disabled.and_then(Value::as_bool) != Some(true)
}

/// The bootstrap manifests' inputs of a control plane's config.
pub fn bootstrap_config_of(cfg: &Config) -> Result<BootstrapManifestsConfigSpec, String> {
    let doc = |kind: &'static str| cfg.kind(kind).next().map(|d| &d.value);
    let network = |v1: &str, field: &str| setting(cfg, v1, "KubeNetworkConfig", field);
    let pod_cidrs = match mk::strings(network("/cluster/network/podSubnets", "/podSubnets")) {
        v if v.is_empty() => vec![machinery::generate::DEFAULT_POD_SUBNET.to_string()],
        v => v,
    };
    let service_cidrs = match mk::strings(network(
        "/cluster/network/serviceSubnets",
        "/serviceSubnets",
    )) {
        v if v.is_empty() => vec![machinery::generate::DEFAULT_SERVICE_SUBNET.to_string()],
        v => v,
    };
    let dns: Vec<IpAddr> = service_cidrs
        .iter()
        .filter_map(|c| dns_service_ip(c))
        .collect();
    let prism = mk::kube_prism_port(cfg);
    let endpoint = cfg.control_plane_endpoint().unwrap_or_default().to_string();
    let mut spec = BootstrapManifestsConfigSpec {
        server: prism.map_or(endpoint, |p| format!("https://127.0.0.1:{p}")),
        cluster_domain: network("/cluster/network/dnsDomain", "/dnsDomain")
            .and_then(Value::as_str)
            .unwrap_or("cluster.local")
            .to_string(),
        dns_service_ip: dns
            .iter()
            .find(|ip| ip.is_ipv4())
            .map(ToString::to_string)
            .unwrap_or_default(),
        dns_service_ipv6: dns
            .iter()
            .find(|ip| ip.is_ipv6())
            .map(ToString::to_string)
            .unwrap_or_default(),
        talos_api_service_enabled: doc("KubeTalosAPIAccessConfig").is_some()
            || cfg
                .pointer("/machine/features/kubernetesTalosAPIAccess/enabled")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        ..Default::default()
    };

    let coredns = doc("KubeCoreDNSConfig");
    spec.core_dns_enabled = enabled(coredns, cfg.pointer("/cluster/coreDNS/disabled"));
    spec.core_dns_image = setting(cfg, "/cluster/coreDNS/image", "KubeCoreDNSConfig", "/image")
        .and_then(Value::as_str)
        .filter(|i| !i.is_empty())
        .map_or_else(
            || format!("{}:{}", mk::COREDNS_REPOSITORY, mk::DEFAULT_COREDNS_VERSION),
            String::from,
        );

    proxy(cfg, &mut spec, &pod_cidrs)?;
    flannel(cfg, &mut spec, prism);
    spec.pod_cidrs = pod_cidrs;
    Ok(spec)
}

/// kube-proxy: a KubeProxyConfig document gives it a configuration file (a ConfigMap);
/// v1alpha1's `cluster.proxy` gives it flags.
fn proxy(
    cfg: &Config,
    spec: &mut BootstrapManifestsConfigSpec,
    pod_cidrs: &[String],
) -> Result<(), String> {
    let doc = cfg.kind("KubeProxyConfig").next().map(|d| &d.value);
    let get = |field: &str| {
        setting(
            cfg,
            &format!("/cluster/proxy/{field}"),
            "KubeProxyConfig",
            &format!("/{field}"),
        )
    };
    spec.proxy_enabled = enabled(doc, cfg.pointer("/cluster/proxy/disabled"));
    spec.proxy_image = mk::image_or_default(
        get("image").and_then(Value::as_str),
        "registry.k8s.io/kube-proxy",
    );
    spec.proxy_resources = resources(get("resources"));
    let mode = get("mode")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or("nftables");
    let cluster_cidr = pod_cidrs.join(",");
    let extra = mk::extra_args(get("extraArgs"));
    let denied = |e: k8s::args::Denied| format!("kube-proxy: {e}");
    let Some(doc) = doc else {
        let mut args = k8s::args::Args::new([
            ("cluster-cidr", cluster_cidr),
            ("hostname-override", "$(NODE_NAME)".to_string()),
            ("kubeconfig", "/etc/kubernetes/kubeconfig".to_string()),
            ("proxy-mode", mode.to_string()),
            ("conntrack-max-per-core", "0".to_string()),
        ]);
        args.merge(&extra, |f| {
            if f == "kubeconfig" {
                mk::Merge::Denied
            } else {
                mk::Merge::Overwrite
            }
        })
        .map_err(denied)?;
        spec.proxy_args = args.to_vec();
        return Ok(());
    };
    let mut args = k8s::args::Args::new([
        (
            "config",
            format!("{}/config.conf", k8s::manifests::KUBE_PROXY_CONFIG_DIR),
        ),
        ("hostname-override", "$(NODE_NAME)".to_string()),
    ]);
    args.merge(&extra, |f| {
        if f == "config" {
            mk::Merge::Denied
        } else {
            mk::Merge::Overwrite
        }
    })
    .map_err(denied)?;
    spec.proxy_args = args.to_vec();
    let mut config = match doc.get("config") {
        Some(Value::Object(m)) => m.clone(),
        Some(Value::Null) | None => Default::default(),
        Some(_) => return Err("KubeProxyConfig: config must be a mapping".into()),
    };
    config.insert(
        "apiVersion".into(),
        "kubeproxy.config.k8s.io/v1alpha1".into(),
    );
    config.insert("kind".into(), "KubeProxyConfiguration".into());
    let client = config
        .entry("clientConnection")
        .or_insert_with(|| json!({}));
    if let Some(c) = client.as_object_mut() {
        c.insert("kubeconfig".into(), "/etc/kubernetes/kubeconfig".into());
    }
    config
        .entry("clusterCIDR")
        .or_insert_with(|| cluster_cidr.into());
    config.entry("mode").or_insert_with(|| mode.into());
    let conntrack = config.entry("conntrack").or_insert_with(|| json!({}));
    if let Some(c) = conntrack.as_object_mut() {
        c.entry("maxPerCore").or_insert(0.into());
    }
    let config = Value::Object(config);
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        k8s::yaml::to_string(&config).as_bytes(),
    );
    spec.proxy_config_checksum = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    spec.proxy_config = config;
    Ok(())
}

/// Flannel when the CNI is Flannel: v1alpha1's `cluster.network.cni.name` decides when set,
/// else a KubeFlannelCNIConfig document (a v1alpha1-only config defaults to Flannel).
fn flannel(cfg: &Config, spec: &mut BootstrapManifestsConfigSpec, prism: Option<u16>) {
    let doc = cfg.kind("KubeFlannelCNIConfig").next().map(|d| &d.value);
    let v1_name = cfg
        .pointer("/cluster/network/cni/name")
        .and_then(Value::as_str);
    let on = match v1_name {
        Some(name) => name == "flannel",
        None => doc.is_some() || cfg.kind("KubeNetworkConfig").next().is_none(),
    };
    if !on {
        spec.cni_name = v1_name.unwrap_or("none").to_string();
        return;
    }
    let get = |v1: &str, field: &str| {
        doc.and_then(|d| d.pointer(field))
            .or_else(|| cfg.pointer(&format!("/cluster/network/cni/flannel/{v1}")))
            .filter(|v| !v.is_null())
    };
    spec.cni_name = "flannel".into();
    spec.flannel_enabled = true;
    spec.flannel_image = format!(
        "{}:v{}",
        mk::FLANNEL_REPOSITORY,
        mk::DEFAULT_FLANNEL_VERSION
    );
    spec.flannel_backend_type = get("backendType", "/backendType")
        .and_then(Value::as_str)
        .unwrap_or("vxlan")
        .into();
    spec.flannel_backend_port = get("backendPort", "/backendPort")
        .and_then(Value::as_u64)
        .unwrap_or(4789) as u16;
    spec.flannel_backend_mtu = get("backendMTU", "/backendMTU")
        .and_then(Value::as_u64)
        .unwrap_or(0) as u32;
    spec.flannel_backend_extra_config = get("backendExtraConfig", "/backendExtraConfig")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    spec.flannel_resources = resources(get("resources", "/resources"));
    spec.flannel_extra_args = mk::strings(get("extraArgs", "/extraArgs"));
    if let Some(port) = prism {
        spec.flannel_kube_service_host = "127.0.0.1".into();
        spec.flannel_kube_service_port = port.to_string();
    }
    spec.flannel_kube_network_policies_enabled =
        get("kubeNetworkPoliciesEnabled", "/kubeNetworkPoliciesEnabled")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    spec.flannel_kube_network_policies_image = format!(
        "{}:{}",
        mk::KUBE_NETWORK_POLICIES_REPOSITORY,
        mk::DEFAULT_KUBE_NETWORK_POLICIES_VERSION
    );
}

/// The extra manifests of a control plane's config: CNI URLs first (`05`), the external
/// cloud provider's (`30`), then extra and inline manifests (`99`).
pub fn extra_manifests_of(cfg: &Config) -> ExtraManifestsConfigSpec {
    let mut out = Vec::new();
    let url = |url: &str, priority: &str, headers: BTreeMap<String, String>| ExtraManifest {
        name: url.into(),
        url: url.into(),
        priority: priority.into(),
        extra_headers: headers,
        ..Default::default()
    };
    if cfg
        .pointer("/cluster/network/cni/name")
        .and_then(Value::as_str)
        == Some("custom")
    {
        for u in mk::strings(cfg.pointer("/cluster/network/cni/urls")) {
            out.push(url(&u, "05", BTreeMap::new()));
        }
    }
    for u in mk::strings(cfg.pointer("/cluster/externalCloudProvider/manifests")) {
        out.push(url(&u, "30", BTreeMap::new()));
    }
    let headers = mk::string_map(cfg.pointer("/cluster/extraManifestHeaders"));
    for u in mk::strings(cfg.pointer("/cluster/extraManifests")) {
        out.push(url(&u, "99", headers.clone()));
    }
    for d in cfg.kind("KubeExternalManifestConfig") {
        out.push(ExtraManifest {
            name: text(d.value.get("name")),
            ..url(
                &text(d.value.get("url")),
                "99",
                mk::string_map(d.value.get("headers")),
            )
        });
    }
    let inline = |name: String, contents: String| ExtraManifest {
        name,
        priority: "99".into(),
        inline_manifest: contents,
        ..Default::default()
    };
    let v1_inline = cfg
        .pointer("/cluster/inlineManifests")
        .and_then(Value::as_array);
    for m in v1_inline.into_iter().flatten() {
        out.push(inline(text(m.get("name")), text(m.get("contents"))));
    }
    for d in cfg.kind("KubeInlineManifestConfig") {
        out.push(inline(
            text(d.value.get("name")),
            text(d.value.get("manifest")),
        ));
    }
    ExtraManifestsConfigSpec {
        extra_manifests: out,
    }
}

pub struct ManifestsConfigController;

#[async_trait::async_trait]
impl Controller for ManifestsConfigController {
    fn name(&self) -> &str {
        "k8s.ManifestsConfigController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![inputs::config(PATHS)]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::exclusive_of::<BootstrapManifestsConfigSpec>(),
            Output::exclusive_of::<ExtraManifestsConfigSpec>(),
        ]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let Some(cfg) = inputs::control_plane_config(ctx)? else {
            return Ok(());
        };
        ctx.put(BOOTSTRAP_MANIFESTS_ID, bootstrap_config_of(&cfg)?)?;
        ctx.put(EXTRA_MANIFESTS_ID, extra_manifests_of(&cfg))?;
        Ok(())
    }
}

pub struct ManifestController;

#[async_trait::async_trait]
impl Controller for ManifestController {
    fn name(&self) -> &str {
        "k8s.ManifestController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::of::<BootstrapManifestsConfigSpec>(),
            Input::of::<KubernetesRootSpec>().id(K8S_CERTS_ID),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::shared_of::<ManifestSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let (Some(cfg), Some(secrets)) = (
            ctx.spec_of::<BootstrapManifestsConfigSpec>(BOOTSTRAP_MANIFESTS_ID)?,
            ctx.spec_of::<KubernetesRootSpec>(K8S_CERTS_ID)?,
        ) else {
            return Ok(());
        };
        for m in k8s::manifests::render(&cfg, &secrets)? {
            ctx.put(m.id, ManifestSpec { items: m.objects })?;
        }
        Ok(())
    }
}

/// How long one fetch of an extra manifest may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The text at `url`, sent with `headers`.
fn fetch(url: &str, headers: &BTreeMap<String, String>) -> Result<String, String> {
    let agent = ureq::AgentBuilder::new().timeout(FETCH_TIMEOUT).build();
    let mut req = agent.get(url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    match req.call() {
        Ok(r) => r.into_string().map_err(|e| format!("reading {url}: {e}")),
        Err(ureq::Error::Status(code, r)) => Err(format!(
            "fetching {url}: the server answered {code} {}",
            r.status_text()
        )),
        Err(e) => Err(format!("fetching {url}: {e}")),
    }
}

pub struct ExtraManifestController;

#[async_trait::async_trait]
impl Controller for ExtraManifestController {
    fn name(&self) -> &str {
        "k8s.ExtraManifestController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![Input::of::<ExtraManifestsConfigSpec>()]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::shared_of::<ManifestSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    /// Every manifest that can be had is written; the first failures fail the reconcile (so it
    /// is retried with backoff, and manifests of the failed entries are kept as they were).
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let Some(cfg) = ctx.spec_of::<ExtraManifestsConfigSpec>(EXTRA_MANIFESTS_ID)? else {
            return Ok(());
        };
        let mut errors = Vec::new();
        for m in cfg.extra_manifests {
            let text = if m.url.is_empty() {
                Ok(m.inline_manifest.clone())
            } else {
                let (url, headers) = (m.url.clone(), m.extra_headers.clone());
                crate::sys::blocking(move || fetch(&url, &headers)).await
            };
            let objects = text
                .and_then(|t| machinery::manifest::objects(&m.name, &t).map_err(|e| e.to_string()));
            match objects {
                Ok(items) => {
                    ctx.put(
                        &format!("{}-{}", m.priority, m.name),
                        ManifestSpec { items },
                    )?;
                }
                Err(e) => errors.push(format!("extra manifest {:?}: {e}", m.name)),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; ").into())
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn config(patch: &str) -> Config {
        let secrets = machinery::secrets::SecretsBundle::generate().unwrap();
        let opts = machinery::generate::GenOptions::new("m", "https://10.5.0.2:6443");
        let cp = machinery::generate::MachineType::ControlPlane;
        let cfg = machinery::generate::generate(&secrets, &opts, cp).unwrap();
        if patch.is_empty() {
            return cfg;
        }
        let patch = machinery::patch::Patch::parse(patch).unwrap();
        machinery::patch::apply(cfg, &[patch]).unwrap()
    }

    #[test]
    fn dns_addresses_are_the_tenth_of_each_service_network() {
        assert_eq!(
            dns_service_ip("10.96.0.0/12").unwrap().to_string(),
            "10.96.0.10"
        );
        assert_eq!(
            dns_service_ip("fd00:10:96::/112").unwrap().to_string(),
            "fd00:10:96::a"
        );
    }

    #[test]
    fn generated_config_has_flannel_coredns_and_a_proxy_config_file() {
        let spec = bootstrap_config_of(&config("")).unwrap();
        assert!(spec.flannel_enabled && spec.core_dns_enabled && spec.proxy_enabled);
        assert_eq!(spec.server, "https://127.0.0.1:7445");
        assert_eq!(spec.flannel_kube_service_port, "7445");
        assert_eq!(spec.dns_service_ip, "10.96.0.10");
        assert_eq!(spec.proxy_config["mode"], "nftables");
        assert_eq!(spec.proxy_config["clusterCIDR"], "10.244.0.0/16");
        assert_eq!(
            spec.proxy_args,
            [
                "--config=/var/lib/kube-proxy/config.conf",
                "--hostname-override=$(NODE_NAME)"
            ]
        );
        assert_eq!(spec.proxy_config_checksum.len(), 64);
    }

    #[test]
    fn cni_none_and_proxy_disabled_in_v1alpha1_terms() {
        let spec = bootstrap_config_of(&config(
            "cluster:\n  network:\n    cni:\n      name: none\n  proxy:\n    disabled: true\n",
        ))
        .unwrap();
        assert!(!spec.flannel_enabled && !spec.proxy_enabled);
        assert_eq!(spec.cni_name, "none");
    }

    #[test]
    fn inline_and_extra_manifests_in_order() {
        let cfg = config(
            "cluster:\n  inlineManifests:\n    - name: cilium\n      contents: |\n        apiVersion: v1\n        kind: Namespace\n        metadata:\n          name: cilium\n  extraManifests:\n    - https://example.com/a.yaml\n  extraManifestHeaders:\n    Token: x\n",
        );
        let spec = extra_manifests_of(&cfg);
        let ids: Vec<_> = spec
            .extra_manifests
            .iter()
            .map(|m| format!("{}-{}", m.priority, m.name))
            .collect();
        assert_eq!(ids, ["99-https://example.com/a.yaml", "99-cilium"]);
        assert_eq!(spec.extra_manifests[0].extra_headers["Token"], "x");
    }
}

/// The extra manifest controller against a loopback HTTP server: headers sent, a 404 named,
/// inline manifests parsed, manifests the config drops removed.
#[cfg(test)]
mod extra {
    use std::io::{BufRead, BufReader, Write};

    use resources::{ResourceType, Runtime, State};

    use super::*;

    const OBJECT: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: fetched\n";

    /// Serves `/ok.yaml` to requests carrying `Token: x`; 403 without it, 404 for the rest.
    fn server() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut lines = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    lines.push(line.to_ascii_lowercase());
                }
                let first = lines.first().cloned().unwrap_or_default();
                let (status, body) = if !first.starts_with("get /ok.yaml ") {
                    ("404 Not Found", "")
                } else if !lines.iter().any(|l| l.trim() == "token: x") {
                    ("403 Forbidden", "")
                } else {
                    ("200 OK", OBJECT)
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        format!("http://{addr}")
    }

    fn manifest(name: &str, url: &str, inline: &str) -> ExtraManifest {
        ExtraManifest {
            name: name.into(),
            url: url.into(),
            priority: "99".into(),
            extra_headers: BTreeMap::from([("Token".to_string(), "x".to_string())]),
            inline_manifest: inline.into(),
        }
    }

    #[tokio::test]
    async fn fetched_inline_failed_and_dropped_manifests() {
        let base = server();
        let ok = format!("{base}/ok.yaml");
        let missing = format!("{base}/missing.yaml");
        let err = fetch(&missing, &BTreeMap::new()).unwrap_err();
        assert_eq!(
            err,
            format!("fetching {missing}: the server answered 404 Not Found")
        );
        assert!(fetch(&ok, &BTreeMap::new()).unwrap_err().contains("403"));

        let state = State::new();
        let config = |items: Vec<ExtraManifest>| {
            ExtraManifestsConfigSpec::resource(
                EXTRA_MANIFESTS_ID,
                ExtraManifestsConfigSpec {
                    extra_manifests: items,
                },
            )
        };
        state
            .create(config(vec![
                manifest(&ok, &ok, ""),
                manifest(&missing, &missing, ""),
                manifest("cilium", "", OBJECT),
            ]))
            .unwrap();
        let mut rt = Runtime::new(state.clone());
        rt.register(ExtraManifestController).unwrap();
        let _h = rt.start();
        let has = |id: &str| state.spec_of::<ManifestSpec>(id);
        let ok_id = format!("99-{ok}");
        assert!(
            crate::sys::wait_for(Some(Duration::from_secs(10)), || has(&ok_id).is_some()
                && has("99-cilium").is_some())
            .await
        );
        assert_eq!(has(&ok_id).unwrap().items[0]["metadata"]["name"], "fetched");
        assert!(has(&format!("99-{missing}")).is_none());

        // The config drops the URLs: their manifests go, the inline one stays.
        let mut dropped = config(vec![manifest("cilium", "", OBJECT)]);
        dropped.metadata.version = 1;
        state.update(dropped).unwrap();
        assert!(
            crate::sys::wait_for(Some(Duration::from_secs(10)), || has(&ok_id).is_none()).await
        );
        assert!(has("99-cilium").is_some());
    }
}

/// Every object of every manifest passes `kubernetes-validate --strict` (the Kubernetes
/// schemas, unknown fields rejected) for the default Kubernetes version: the default config,
/// `cni: none` with kube-proxy disabled, dual stack, and inline manifests. One object a file.
#[cfg(test)]
mod schema {
    use super::*;

    fn validator() -> bool {
        let ok = std::process::Command::new("kubernetes-validate")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok && std::env::var("CI").as_deref() == Ok("true") {
            panic!("kubernetes-validate is missing: scripts/setup installs it");
        }
        ok
    }

    fn objects_of(patch: &str) -> Vec<(String, Value)> {
        let cfg = tests::config(patch);
        let secrets = KubernetesRootSpec {
            bootstrap_token_id: "25p8ak".into(),
            bootstrap_token_secret: "vshybadgp2mhtvm7".into(),
            ..Default::default()
        };
        let mut out = Vec::new();
        for m in k8s::manifests::render(&bootstrap_config_of(&cfg).unwrap(), &secrets).unwrap() {
            out.extend(m.objects.into_iter().map(|o| (m.id.to_string(), o)));
        }
        for m in extra_manifests_of(&cfg).extra_manifests {
            let objects = machinery::manifest::objects(&m.name, &m.inline_manifest).unwrap();
            out.extend(objects.into_iter().map(|o| (format!("99-{}", m.name), o)));
        }
        out
    }

    fn validate(name: &str, objects: &[(String, Value)]) {
        let dir =
            std::env::temp_dir().join(format!("manifest-schemas-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files: Vec<_> = objects
            .iter()
            .enumerate()
            .map(|(i, (id, o))| {
                let path = dir.join(format!("{i:02}-{id}.yaml"));
                std::fs::write(&path, k8s::yaml::to_string(o)).unwrap();
                path
            })
            .collect();
        let version = machinery::generate::DEFAULT_KUBERNETES_VERSION;
        let out = std::process::Command::new("kubernetes-validate")
            .args(["--strict", "--no-warn", "--quiet", "-k", version])
            .args(&files)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "{name}: objects fail the Kubernetes {version} schema:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ids(objects: &[(String, Value)]) -> std::collections::BTreeSet<&str> {
        objects.iter().map(|(id, _)| id.as_str()).collect()
    }

    #[test]
    fn every_object_of_every_manifest_passes_the_strict_schema() {
        if !validator() {
            return;
        }
        let default = objects_of("");
        assert!(ids(&default).contains("05-flannel") && ids(&default).contains("10-kube-proxy"));
        validate("default", &default);

        let none = objects_of(
            "cluster:\n  network:\n    cni:\n      name: none\n  proxy:\n    disabled: true\n",
        );
        assert!(!ids(&none).contains("05-flannel") && !ids(&none).contains("10-kube-proxy"));
        validate("cni-none", &none);

        let dual = objects_of(
            "apiVersion: v1alpha1\nkind: KubeNetworkConfig\npodSubnets: [10.244.0.0/16, fd00:10:244::/56]\nserviceSubnets: [10.96.0.0/12, fd00:10:96::/112]\n",
        );
        let svc = dual.iter().find(|(id, _)| id == "11-core-dns-svc").unwrap();
        assert_eq!(
            svc.1["spec"]["clusterIPs"],
            json!(["10.96.0.10", "fd00:10:96::a"])
        );
        validate("dual-stack", &dual);

        let inline = objects_of(
            "cluster:\n  inlineManifests:\n    - name: cilium\n      contents: |\n        apiVersion: v1\n        kind: Namespace\n        metadata:\n          name: cilium\n        ---\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: cilium-config\n          namespace: cilium\n        data:\n          ipam: kubernetes\n",
        );
        assert_eq!(inline.iter().filter(|(id, _)| id == "99-cilium").count(), 2);
        validate("inline", &inline);
    }
}
