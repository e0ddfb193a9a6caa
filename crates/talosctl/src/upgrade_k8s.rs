//! `talosctl upgrade-k8s`: Kubernetes upgraded across the cluster as upstream does it, one
//! step at a time: images pre-pulled; kube-apiserver, kube-controller-manager and
//! kube-scheduler on one control plane after another through no-reboot config patches, each
//! waited for until its pod runs the new config and is Ready; kube-proxy's image; the kubelet
//! node by node, waited for until the Node reports the new version; then the bootstrap
//! manifests synced by server-side apply. `--dry-run` patches nothing and shows the diffs.

use std::time::{Duration, Instant};

use clap::Args;
use k8s::client::sync::{self, InventoryPolicy};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use machinery::{Error, Result};
use serde_json::Value;

use crate::client;
use crate::config_cmd::ConnArgs;
use crate::health::ClusterInfo;

#[derive(Args)]
pub struct UpgradeK8sArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The kube-apiserver image (without tag).
    #[arg(long, default_value = "registry.k8s.io/kube-apiserver")]
    apiserver_image: String,
    /// The kube-controller-manager image.
    #[arg(long, default_value = "registry.k8s.io/kube-controller-manager")]
    controller_manager_image: String,
    /// The kube-scheduler image.
    #[arg(long, default_value = "registry.k8s.io/kube-scheduler")]
    scheduler_image: String,
    /// The kube-proxy image.
    #[arg(long, default_value = "registry.k8s.io/kube-proxy")]
    proxy_image: String,
    /// The kubelet image.
    #[arg(long, default_value = "ghcr.io/siderolabs/kubelet")]
    kubelet_image: String,
    /// Show what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// The Kubernetes API endpoint (host, host:port or URL) instead of the kubeconfig's.
    #[arg(long, default_value = "")]
    endpoint: String,
    /// The version upgraded from (default: what the control plane runs).
    #[arg(long, default_value = "")]
    from: String,
    /// The version upgraded to.
    #[arg(long, default_value = machinery::generate::DEFAULT_KUBERNETES_VERSION)]
    to: String,
    /// Take over fields other managers own in the manifests' objects.
    #[arg(long)]
    manifests_force: bool,
    /// Which objects the manifest sync may adopt: MustMatch, AdoptIfNoInventory, AdoptAll.
    #[arg(long, default_value = "AdoptIfNoInventory")]
    manifests_inventory_policy: String,
    /// Keep objects Talos no longer renders.
    #[arg(long)]
    manifests_no_prune: bool,
    /// How long to wait for the synced objects to be ready.
    #[arg(long, default_value = "5m0s")]
    manifests_reconcile_timeout: String,
    /// Pull the new images on the nodes first.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pre_pull_images: bool,
    /// Upgrade the kubelet too.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    upgrade_kubelet: bool,
    /// Accepted as upstream's (patches change images only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    with_docs: bool,
    /// Accepted as upstream's.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    with_examples: bool,
}

/// The control plane components, their config resources and config paths.
const COMPONENTS: [(&str, &str, &str); 3] = [
    (
        "kube-apiserver",
        "APIServerConfigs.kubernetes.talos.dev",
        "/cluster/apiServer/image",
    ),
    (
        "kube-controller-manager",
        "ControllerManagerConfigs.kubernetes.talos.dev",
        "/cluster/controllerManager/image",
    ),
    (
        "kube-scheduler",
        "SchedulerConfigs.kubernetes.talos.dev",
        "/cluster/scheduler/image",
    ),
];

/// What an upgrade needs of the Talos side of the cluster.
pub trait Talos {
    /// A control plane component's config resource: (image, resource version).
    async fn component(
        &self,
        node: &str,
        component: &str,
    ) -> std::result::Result<(String, String), String>;
    /// Apply a JSON patch to the node's config, no reboot.
    async fn patch(&self, node: &str, patch: &str) -> std::result::Result<(), String>;
    /// Pull an image (into the system containerd when `system`, else the CRI's).
    async fn pull(&self, node: &str, system: bool, image: &str) -> std::result::Result<(), String>;
    /// The kubelet's image (KubeletSpec).
    async fn kubelet_image(&self, node: &str) -> std::result::Result<String, String>;
    /// The control plane's manifests: (id, objects).
    async fn manifests(&self, node: &str)
        -> std::result::Result<Vec<(String, Vec<Value>)>, String>;
}

/// An upgrade's settings.
pub struct Plan {
    pub from: String,
    pub to: String,
    pub images: [String; 3],
    pub proxy_image: String,
    pub kubelet_image: String,
    pub dry_run: bool,
    pub pre_pull: bool,
    pub upgrade_kubelet: bool,
    pub sync: sync::Options,
    pub reconcile_timeout: Duration,
    /// How long one component or kubelet may take to come back.
    pub wait: Duration,
}

fn version(v: &str) -> Option<(u64, u64, u64)> {
    let v = v.trim_start_matches('v');
    let core = v.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// From `from` to `to`: the same or a newer version, at most one minor version ahead.
pub fn check_path(from: &str, to: &str) -> std::result::Result<(), String> {
    let (Some(f), Some(t)) = (version(from), version(to)) else {
        return Err(format!(
            "unsupported upgrade path (from {from:?} to {to:?}): not versions like 1.35.0"
        ));
    };
    if t < f || t.0 != f.0 || t.1 > f.1 + 1 {
        return Err(format!(
            "unsupported upgrade path {}.{}->{}.{} (from {from:?} to {to:?}): upgrade one minor version at a time",
            f.0, f.1, t.0, t.1
        ));
    }
    Ok(())
}

/// Poll `ready` (its error said once while it stays the same) until it gives a value or
/// `limit` runs out.
async fn wait<T, F, Fut>(
    limit: Duration,
    what: &str,
    log: &mut dyn FnMut(String),
    mut ready: F,
) -> std::result::Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<Option<T>, String>>,
{
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    loop {
        match ready().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) if e != last => {
                log(format!(" > {what}: {e}"));
                last = e;
            }
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{what}: not done within {limit:?}{}",
                if last.is_empty() {
                    String::new()
                } else {
                    format!(": {last}")
                }
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn patch(path: &str, image: &str) -> String {
    serde_json::json!([{"op": "add", "path": path, "value": image}]).to_string()
}

/// The static pod of `component` on `node` runs config `version` and is Ready.
async fn pod_updated(
    kube: &kube::Client,
    component: &str,
    node: &str,
    version: &str,
) -> std::result::Result<bool, String> {
    let api: kube::Api<Pod> = kube::Api::namespaced(kube.clone(), "kube-system");
    let pods = api
        .list(&ListParams::default().labels(&format!("k8s-app={component}")))
        .await
        .map_err(|e| k8s::client::apply::describe(&e))?;
    let Some(pod) = pods
        .items
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.host_ip.as_deref()) == Some(node))
    else {
        return Err(format!("no {component} pod on {node} yet"));
    };
    let got = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(k8s::pods::CONFIG_VERSION_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    if got != version {
        return Err(format!(
            "config version mismatch: got {got:?}, expected {version:?}"
        ));
    }
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if ready {
        Ok(true)
    } else {
        Err("pod is not ready, waiting".into())
    }
}

/// The Node of `ip` reports kubelet `version`.
async fn kubelet_updated(
    kube: &kube::Client,
    ip: &str,
    version: &str,
) -> std::result::Result<bool, String> {
    let Some(node) = k8s::client::node_with_address(kube, ip).await? else {
        return Err(format!("no Node with address {ip}"));
    };
    let got = node
        .status
        .as_ref()
        .and_then(|s| s.node_info.as_ref())
        .map(|i| i.kubelet_version.clone())
        .unwrap_or_default();
    if got.trim_start_matches('v') == version {
        Ok(true)
    } else {
        Err(format!("kubelet reports {got}, waiting for v{version}"))
    }
}

/// The upgrade, step by step as the module says.
pub async fn upgrade<T: Talos>(
    talos: &T,
    kube: &kube::Client,
    control_planes: &[String],
    workers: &[String],
    p: &Plan,
    log: &mut dyn FnMut(String),
) -> std::result::Result<(), String> {
    check_path(&p.from, &p.to)?;
    let to = p.to.trim_start_matches('v');
    let tagged = |image: &str| format!("{image}:v{to}");
    log(format!("discovered controlplane nodes {control_planes:?}"));
    if p.upgrade_kubelet {
        log(format!("discovered worker nodes {workers:?}"));
    }
    let all: Vec<&String> = control_planes.iter().chain(workers).collect();

    if p.pre_pull {
        for image in &p.images {
            for node in control_planes {
                log(format!(" > {node:?}: pre-pulling {}", tagged(image)));
                talos
                    .pull(node, false, &tagged(image))
                    .await
                    .map_err(|e| format!("error pre-pulling {} on {node}: {e}", tagged(image)))?;
            }
        }
        if p.upgrade_kubelet {
            for node in &all {
                log(format!(
                    " > {node:?}: pre-pulling {}",
                    tagged(&p.kubelet_image)
                ));
                talos
                    .pull(node, true, &tagged(&p.kubelet_image))
                    .await
                    .map_err(|e| {
                        format!(
                            "error pre-pulling {} on {node}: {e}",
                            tagged(&p.kubelet_image)
                        )
                    })?;
            }
        }
    }

    for ((component, _, path), image) in COMPONENTS.iter().zip(&p.images) {
        log(format!("updating {component:?} to version {to:?}"));
        for node in control_planes {
            log(format!(" > {node:?}: starting update"));
            let (current, before) = talos.component(node, component).await?;
            let wanted = tagged(image);
            let mut version = before.clone();
            if current != wanted {
                let old = k8s::pods::version_of_image(&current);
                log(format!(
                    " > update {component}: {} -> {to}",
                    if old.is_empty() { &p.from } else { &old }
                ));
                if p.dry_run {
                    log(" > skipped in dry-run".into());
                    continue;
                }
                talos.patch(node, &patch(path, &wanted)).await.map_err(|e| format!("failed updating service {component:?}: error updating node {node:?}: {e}"))?;
                log(format!(" > {node:?}: machine configuration patched"));
                log(format!(" > {node:?}: waiting for {component} pod update"));
                version = wait(
                    p.wait,
                    &format!("{node:?}: {component} config"),
                    log,
                    || async {
                        let (_, v) = talos.component(node, component).await?;
                        Ok((v != before).then_some(v))
                    },
                )
                .await?;
            } else if p.dry_run {
                continue;
            }
            let updated = || async {
                pod_updated(kube, component, node, &version)
                    .await
                    .map(|b| b.then_some(()))
            };
            wait(p.wait, &format!("{node:?}: {component}"), log, updated).await?;
            log(format!(" < {node:?}: successfully updated"));
        }
    }

    log(format!("updating kube-proxy to version {to:?}"));
    for node in control_planes {
        log(format!(" > {node:?}: starting update"));
        if p.dry_run {
            log(" > skipped in dry-run".into());
            continue;
        }
        talos
            .patch(
                node,
                &patch("/cluster/proxy/image", &tagged(&p.proxy_image)),
            )
            .await
            .map_err(|e| {
                format!("failed updating kube-proxy: error updating node {node:?}: {e}")
            })?;
    }

    if p.upgrade_kubelet {
        log(format!("updating kubelet to version {to:?}"));
        for node in &all {
            log(format!(" > {node:?}: starting update"));
            let current = talos.kubelet_image(node).await?;
            let wanted = tagged(&p.kubelet_image);
            if current == wanted {
                log(format!(" > {node:?}: kubelet is already at {to}"));
                continue;
            }
            log(format!(
                " > update kubelet: {} -> {to}",
                k8s::pods::version_of_image(&current)
            ));
            if p.dry_run {
                log(" > skipped in dry-run".into());
                continue;
            }
            talos
                .patch(node, &patch("/machine/kubelet/image", &wanted))
                .await
                .map_err(|e| {
                    format!("failed upgrading kubelet: error updating node {node:?}: {e}")
                })?;
            log(format!(" > {node:?}: machine configuration patched"));
            log(format!(" > {node:?}: waiting for kubelet restart"));
            let updated = || async {
                kubelet_updated(kube, node, to)
                    .await
                    .map(|b| b.then_some(()))
            };
            wait(p.wait, &format!("{node:?}: kubelet"), log, updated).await?;
            log(format!(" < {node:?}: successfully updated"));
        }
    }

    let first = control_planes
        .first()
        .ok_or("no controlplane nodes discovered")?;
    let manifests = talos.manifests(first).await?;
    log(format!(
        "updating manifests{}",
        if p.dry_run { " (dry run)" } else { "" }
    ));
    let changes = sync::sync(kube, &manifests, &p.sync).await?;
    for c in &changes {
        log(format!(" < {} {}", c.action, c.subject));
        if p.dry_run && !c.diff.is_empty() {
            log(c.diff.trim_end().to_string());
        }
    }
    if !p.dry_run {
        for c in changes.iter().filter(|c| c.action != sync::Action::Delete) {
            if let Some(kind) = ["DaemonSet", "Deployment"]
                .iter()
                .find(|k| c.subject.contains(&format!("/{k}/")))
            {
                let done = || async {
                    rolled_out(kube, &manifests, &c.subject, kind)
                        .await
                        .map(|b| b.then_some(()))
                };
                wait(p.reconcile_timeout, &c.subject, log, done).await?;
                log(format!(" < {}: ready", c.subject));
            }
        }
    }
    Ok(())
}

/// A DaemonSet or Deployment of the manifests runs its new generation everywhere.
async fn rolled_out(
    kube: &kube::Client,
    manifests: &[(String, Vec<Value>)],
    subject: &str,
    kind: &str,
) -> std::result::Result<bool, String> {
    let Some(o) = manifests
        .iter()
        .flat_map(|m| &m.1)
        .find(|o| k8s::client::apply::object_name(o) == subject)
    else {
        return Ok(true);
    };
    let ns = o["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = o["metadata"]["name"].as_str().unwrap_or("");
    let (generation, observed, ready, wanted) = if kind == "DaemonSet" {
        let api: kube::Api<k8s_openapi::api::apps::v1::DaemonSet> =
            kube::Api::namespaced(kube.clone(), ns);
        let d = api
            .get(name)
            .await
            .map_err(|e| k8s::client::apply::describe(&e))?;
        let s = d.status.unwrap_or_default();
        (
            d.metadata.generation,
            s.observed_generation,
            s.number_ready,
            s.desired_number_scheduled,
        )
    } else {
        let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
            kube::Api::namespaced(kube.clone(), ns);
        let d = api
            .get(name)
            .await
            .map_err(|e| k8s::client::apply::describe(&e))?;
        let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let s = d.status.unwrap_or_default();
        (
            d.metadata.generation,
            s.observed_generation,
            s.ready_replicas.unwrap_or(0),
            wanted,
        )
    };
    if observed < generation {
        return Err("the new generation is not observed yet".into());
    }
    if ready < wanted {
        return Err(format!("{ready} of {wanted} ready"));
    }
    Ok(true)
}

/// The Talos side through the API.
struct Api<'a>(&'a ClusterInfo);

impl Talos for Api<'_> {
    async fn component(
        &self,
        node: &str,
        component: &str,
    ) -> std::result::Result<(String, String), String> {
        let ty = COMPONENTS
            .iter()
            .find(|c| c.0 == component)
            .map(|c| c.1)
            .unwrap_or_default();
        let (spec, version) =
            client::resource_spec(&self.0.target(node)?, "controlplane", ty, component).await?;
        Ok((spec["image"].as_str().unwrap_or("").to_string(), version))
    }
    async fn patch(&self, node: &str, patch: &str) -> std::result::Result<(), String> {
        let t = self.0.target(node)?;
        let patches = machinery::load_patches(&[patch.to_string()]).map_err(|e| e.to_string())?;
        let cfg = machinery::Config::parse(
            &crate::apply::current_config(&t)
                .await
                .map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let patched = machinery::apply_patches(cfg, &patches).map_err(|e| e.to_string())?;
        crate::apply::apply_no_reboot(&t, &patched)
            .await
            .map_err(|e| e.to_string())
    }
    async fn pull(&self, node: &str, system: bool, image: &str) -> std::result::Result<(), String> {
        let t = self.0.target(node)?;
        match crate::containers::pull_quietly(&t, system, image).await {
            Err(s) if s.code() == tonic::Code::Unimplemented => Ok(()),
            other => other.map_err(|s| client::call_error(node, s).to_string()),
        }
    }
    async fn kubelet_image(&self, node: &str) -> std::result::Result<String, String> {
        let (spec, _) = client::resource_spec(
            &self.0.target(node)?,
            "k8s",
            "KubeletSpecs.kubernetes.talos.dev",
            "kubelet",
        )
        .await?;
        Ok(spec["image"].as_str().unwrap_or("").to_string())
    }
    async fn manifests(
        &self,
        node: &str,
    ) -> std::result::Result<Vec<(String, Vec<Value>)>, String> {
        let ty = "Manifests.kubernetes.talos.dev";
        let all = client::resource_specs(&self.0.target(node)?, "controlplane", ty)
            .await
            .map_err(|e| e.to_string())?;
        let out = all
            .into_iter()
            .map(|(id, spec)| (id, spec["items"].as_array().cloned().unwrap_or_default()))
            .collect();
        Ok(out)
    }
}

pub async fn run(a: UpgradeK8sArgs) -> Result<()> {
    let policy: InventoryPolicy = a.manifests_inventory_policy.parse().map_err(Error::msg)?;
    let targets = client::connect(&a.conn).await?;
    let [t] = &targets[..] else {
        return Err(Error::msg(
            "upgrade-k8s talks to one control plane node: pass one with -n",
        ));
    };
    let cfg = machinery::clientconfig::ClientConfig::load(&a.conn.path())?;
    let (_, ctx) = cfg.current(Some(a.conn.context.as_str()).filter(|c| !c.is_empty()))?;
    let endpoints = match a.conn.endpoints.is_empty() {
        true => ctx.endpoints.clone(),
        false => crate::util::split_commas(&a.conn.endpoints),
    };
    let mut info = ClusterInfo {
        control_planes: Vec::new(),
        workers: Vec::new(),
        context: ctx.clone(),
        through: endpoints.first().cloned(),
    };
    for (ty, addr) in crate::health::members(t).await? {
        match ty.as_str() {
            "worker" => info.workers.push(addr),
            _ => info.control_planes.push(addr),
        }
    }
    if info.control_planes.is_empty() {
        info.control_planes.push(t.node.clone());
    }
    let talos = Api(&info);
    let first = info.control_planes[0].clone();
    let from = match a.from.as_str() {
        "" => {
            let (image, _) = talos
                .component(&first, "kube-apiserver")
                .await
                .map_err(Error::msg)?;
            k8s::pods::version_of_image(&image)
        }
        v => v.trim_start_matches('v').to_string(),
    };
    eprintln!("automatically detected the lowest Kubernetes version {from}");
    let (kube, _) =
        crate::health_k8s::kube_client(&info.target(&first).map_err(Error::msg)?, &a.endpoint)
            .await
            .map_err(Error::msg)?;
    let plan = Plan {
        from,
        to: a.to.trim_start_matches('v').to_string(),
        images: [
            a.apiserver_image,
            a.controller_manager_image,
            a.scheduler_image,
        ],
        proxy_image: a.proxy_image,
        kubelet_image: a.kubelet_image,
        dry_run: a.dry_run,
        pre_pull: a.pre_pull_images && !a.dry_run,
        upgrade_kubelet: a.upgrade_kubelet,
        sync: sync::Options {
            dry_run: a.dry_run,
            force: a.manifests_force,
            no_prune: a.manifests_no_prune,
            policy,
        },
        reconcile_timeout: crate::util::parse_duration(&a.manifests_reconcile_timeout)?,
        wait: Duration::from_secs(300),
    };
    upgrade(
        &talos,
        &kube,
        &info.control_planes,
        &info.workers,
        &plan,
        &mut |line| eprintln!("{line}"),
    )
    .await
    .map_err(Error::msg)
}

/// The upgrade's sequence against a fake Talos (config patches recorded; each one "runs" on
/// the node: the component's pod or the kubelet's version changes in the FAKE Kubernetes API).
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use k8s::client::fake::FakeApi;
    use serde_json::json;

    use super::*;

    struct FakeTalos {
        api: FakeApi,
        /// (node, component) → (image, version); (node, "kubelet") → (image, "").
        state: Mutex<BTreeMap<(String, String), (String, u64)>>,
        patches: Mutex<Vec<(String, String, String)>>,
        pulls: Mutex<Vec<(String, String)>>,
    }

    fn pod(component: &str, node: &str, version: u64) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{component}-{node}"), "namespace": "kube-system",
                "labels": {"k8s-app": component},
                "annotations": {k8s::pods::CONFIG_VERSION_ANNOTATION: version.to_string()}},
            "status": {"hostIP": node, "conditions": [{"type": "Ready", "status": "True"}]}})
    }

    fn node(ip: &str, kubelet: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("n-{ip}")},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                "nodeInfo": {"kubeletVersion": kubelet, "architecture": "amd64", "bootID": "", "containerRuntimeVersion": "",
                    "kernelVersion": "", "kubeProxyVersion": "", "machineID": "", "operatingSystem": "linux", "osImage": "", "systemUUID": ""}}})
    }

    impl FakeTalos {
        fn new(cps: &[&str], workers: &[&str]) -> FakeTalos {
            let api = FakeApi::new();
            let mut state = BTreeMap::new();
            for n in cps {
                for (c, _, _) in COMPONENTS {
                    state.insert(
                        (n.to_string(), c.to_string()),
                        (format!("registry.k8s.io/{c}:v1.35.0"), 1),
                    );
                    api.insert(pod(c, n, 1));
                }
            }
            for n in cps.iter().chain(workers) {
                state.insert(
                    (n.to_string(), "kubelet".into()),
                    ("ghcr.io/siderolabs/kubelet:v1.35.0".into(), 0),
                );
                api.insert(node(n, "v1.35.0"));
            }
            FakeTalos {
                api,
                state: Mutex::new(state),
                patches: Mutex::default(),
                pulls: Mutex::default(),
            }
        }
    }

    impl Talos for FakeTalos {
        async fn component(
            &self,
            node: &str,
            component: &str,
        ) -> std::result::Result<(String, String), String> {
            let s = self.state.lock().unwrap();
            let (image, v) = s
                .get(&(node.to_string(), component.to_string()))
                .ok_or("no such component")?;
            Ok((image.clone(), v.to_string()))
        }
        async fn patch(&self, node: &str, patch: &str) -> std::result::Result<(), String> {
            let ops: Value = serde_json::from_str(patch).unwrap();
            let (path, image) = (
                ops[0]["path"].as_str().unwrap(),
                ops[0]["value"].as_str().unwrap(),
            );
            self.patches
                .lock()
                .unwrap()
                .push((node.into(), path.into(), image.into()));
            let mut s = self.state.lock().unwrap();
            if let Some((c, _, _)) = COMPONENTS.iter().find(|c| c.2 == path) {
                let entry = s.get_mut(&(node.to_string(), c.to_string())).unwrap();
                *entry = (image.to_string(), entry.1 + 1);
                self.api.insert(pod(c, node, entry.1));
            } else if path == "/machine/kubelet/image" {
                s.insert((node.into(), "kubelet".into()), (image.into(), 0));
                self.api.insert(super::tests::node(
                    node,
                    &format!("v{}", k8s::pods::version_of_image(image)),
                ));
            }
            Ok(())
        }
        async fn pull(
            &self,
            node: &str,
            _system: bool,
            image: &str,
        ) -> std::result::Result<(), String> {
            self.pulls.lock().unwrap().push((node.into(), image.into()));
            Ok(())
        }
        async fn kubelet_image(&self, node: &str) -> std::result::Result<String, String> {
            Ok(
                self.state.lock().unwrap()[&(node.to_string(), "kubelet".to_string())]
                    .0
                    .clone(),
            )
        }
        async fn manifests(
            &self,
            _: &str,
        ) -> std::result::Result<Vec<(String, Vec<Value>)>, String> {
            Ok(vec![(
                "11-kube-config-in-cluster".into(),
                vec![json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kubeconfig-in-cluster", "namespace": "kube-system"}, "data": {"kubeconfig": "v2"}})],
            )])
        }
    }

    fn plan(dry_run: bool) -> Plan {
        Plan {
            from: "1.35.0".into(),
            to: "1.36.0".into(),
            images: [
                "registry.k8s.io/kube-apiserver",
                "registry.k8s.io/kube-controller-manager",
                "registry.k8s.io/kube-scheduler",
            ]
            .map(String::from),
            proxy_image: "registry.k8s.io/kube-proxy".into(),
            kubelet_image: "ghcr.io/siderolabs/kubelet".into(),
            dry_run,
            pre_pull: !dry_run,
            upgrade_kubelet: true,
            sync: sync::Options {
                dry_run,
                force: false,
                no_prune: false,
                policy: InventoryPolicy::AdoptIfNoInventory,
            },
            reconcile_timeout: Duration::from_secs(5),
            wait: Duration::from_secs(10),
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn components_one_node_at_a_time_then_kube_proxy_kubelets_and_manifests() {
        let talos = FakeTalos::new(&["10.5.0.2", "10.5.0.3"], &["10.5.0.4"]);
        let kube = talos.api.client();
        let mut lines = Vec::new();
        let cps = strings(&["10.5.0.2", "10.5.0.3"]);
        upgrade(
            &talos,
            &kube,
            &cps,
            &strings(&["10.5.0.4"]),
            &plan(false),
            &mut |l| lines.push(l),
        )
        .await
        .unwrap();
        let patches: Vec<String> = talos
            .patches
            .lock()
            .unwrap()
            .iter()
            .map(|(n, p, _)| format!("{n} {p}"))
            .collect();
        assert_eq!(
            patches,
            [
                "10.5.0.2 /cluster/apiServer/image",
                "10.5.0.3 /cluster/apiServer/image",
                "10.5.0.2 /cluster/controllerManager/image",
                "10.5.0.3 /cluster/controllerManager/image",
                "10.5.0.2 /cluster/scheduler/image",
                "10.5.0.3 /cluster/scheduler/image",
                "10.5.0.2 /cluster/proxy/image",
                "10.5.0.3 /cluster/proxy/image",
                "10.5.0.2 /machine/kubelet/image",
                "10.5.0.3 /machine/kubelet/image",
                "10.5.0.4 /machine/kubelet/image",
            ]
        );
        assert!(talos
            .patches
            .lock()
            .unwrap()
            .iter()
            .all(|(_, _, image)| image.ends_with(":v1.36.0")));
        assert_eq!(talos.pulls.lock().unwrap().len(), 3 * 2 + 3);
        let text = lines.join("\n");
        for want in [
            "updating \"kube-apiserver\" to version \"1.36.0\"",
            " > update kube-apiserver: 1.35.0 -> 1.36.0",
            " > \"10.5.0.2\": waiting for kube-apiserver pod update",
            " < \"10.5.0.3\": successfully updated",
            "updating kubelet to version \"1.36.0\"",
            "updating manifests",
            " < create /v1/ConfigMap/kubeconfig-in-cluster",
        ] {
            assert!(text.contains(want), "{want:?} in:\n{text}");
        }
        assert!(talos
            .api
            .get("", "configmaps", "kube-system", "kubeconfig-in-cluster")
            .is_some());

        // Again: everything is at 1.36.0, nothing is patched.
        let before = talos.patches.lock().unwrap().len();
        upgrade(
            &talos,
            &kube,
            &cps,
            &strings(&["10.5.0.4"]),
            &plan(false),
            &mut |_| {},
        )
        .await
        .unwrap();
        assert_eq!(
            talos.patches.lock().unwrap().len(),
            before + 2,
            "kube-proxy is patched each time"
        );
    }

    #[tokio::test]
    async fn dry_run_patches_nothing_and_shows_the_manifest_diff() {
        let talos = FakeTalos::new(&["10.5.0.2"], &[]);
        let kube = talos.api.client();
        talos.api.insert(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kubeconfig-in-cluster", "namespace": "kube-system"}, "data": {"kubeconfig": "v1"}}));
        let mut lines = Vec::new();
        upgrade(
            &talos,
            &kube,
            &strings(&["10.5.0.2"]),
            &[],
            &plan(true),
            &mut |l| lines.push(l),
        )
        .await
        .unwrap();
        assert!(talos.patches.lock().unwrap().is_empty());
        let text = lines.join("\n");
        assert!(
            text.contains(" > skipped in dry-run") && text.contains("updating manifests (dry run)"),
            "{text}"
        );
        assert!(
            text.contains("-  kubeconfig: v1") && text.contains("+  kubeconfig: v2"),
            "{text}"
        );
        assert_eq!(
            talos
                .api
                .get("", "configmaps", "kube-system", "kubeconfig-in-cluster")
                .unwrap()["data"]["kubeconfig"],
            "v1"
        );
    }

    #[test]
    fn one_minor_version_at_a_time() {
        assert!(check_path("1.35.0", "1.36.2").is_ok());
        assert!(check_path("1.35.0", "1.35.0").is_ok());
        let e = check_path("1.35.0", "1.37.0").unwrap_err();
        assert!(e.starts_with("unsupported upgrade path 1.35->1.37"), "{e}");
        assert!(check_path("1.36.0", "1.35.4").is_err());
        assert!(check_path("latest", "1.35.0").is_err());
    }
}
