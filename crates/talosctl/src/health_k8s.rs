//! The Kubernetes half of `talosctl health`: the checks of `k8s::client::health` through the
//! admin kubeconfig a control plane issues (its server replaced by `--k8s-endpoint`), and the
//! control plane's static pods as the kubelet reports them to Talos. An API server that never
//! answers is reported as such after a grace period, not waited for until the deadline.

use std::time::{Duration, Instant};

use k8s::client::health as kh;
use machinery::Result;

use crate::client::{self, Target};
use crate::health::{run_check, Attempt, ClusterInfo, Outcome, Reporter};

/// How long an API server that has never answered is waited for.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(120);

/// The checks, in order.
pub const CHECKS: [&str; 7] = [
    "all k8s nodes to report",
    "all control plane static pods to be running",
    "all control plane components to be ready",
    "all k8s nodes to report ready",
    "kube-proxy to report ready",
    "coredns to report ready",
    "all k8s nodes to report schedulable",
];

/// How the Kubernetes checks run.
pub struct Kubernetes {
    /// `--k8s-endpoint`: the API server to check instead of the kubeconfig's.
    pub endpoint: String,
    /// The node readiness checks (the last four); `cluster create
    /// --skip-k8s-node-readiness-check` leaves them out.
    pub node_readiness: bool,
}

/// `https://host:6443` from `--k8s-endpoint` (a host, host:port or URL).
pub fn endpoint_url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        return endpoint.to_string();
    }
    let has_port = endpoint
        .rsplit_once(':')
        .is_some_and(|(h, p)| p.parse::<u16>().is_ok() && (!h.contains(':') || h.ends_with(']')));
    if has_port {
        format!("https://{endpoint}")
    } else if endpoint.contains(':') {
        format!("https://[{endpoint}]:6443")
    } else {
        format!("https://{endpoint}:6443")
    }
}

/// A client of the cluster's API and the server it talks to.
struct Api {
    client: kube::Client,
    server: String,
}

/// A client of the cluster's API through the admin kubeconfig node `t` issues (its server
/// replaced by `endpoint` when given), and that server.
pub async fn kube_client(
    t: &Target,
    endpoint: &str,
) -> std::result::Result<(kube::Client, String), String> {
    let text = crate::kubeconfig::fetch(t)
        .await
        .map_err(|e| e.to_string())?;
    let node = &t.node;
    let mut kubeconfig = kube::config::Kubeconfig::from_yaml(&text)
        .map_err(|e| format!("{node}'s kubeconfig: {e}"))?;
    if !endpoint.is_empty() {
        for c in kubeconfig
            .clusters
            .iter_mut()
            .filter_map(|c| c.cluster.as_mut())
        {
            c.server = Some(endpoint_url(endpoint));
        }
    }
    let server = kubeconfig
        .clusters
        .iter()
        .find_map(|c| c.cluster.as_ref()?.server.clone())
        .unwrap_or_default();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| format!("{node}'s kubeconfig: {e}"))?;
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(5));
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    Ok((client, server))
}

async fn connect(info: &ClusterInfo, endpoint: &str) -> std::result::Result<Api, String> {
    let first = info
        .control_planes
        .first()
        .ok_or("no control plane nodes to ask for a kubeconfig")?;
    let (client, server) = kube_client(&info.target(first)?, endpoint).await?;
    Ok(Api { client, server })
}

/// A check's attempt in health's terms.
fn outcome(a: kh::Attempt) -> std::result::Result<Outcome, String> {
    a.map(|o| match o {
        kh::Outcome::Pass => Outcome::Ok,
        kh::Outcome::Skip => Outcome::Skip,
    })
}

/// The CNI the control planes deploy (`none` skips the checks that need pod networking).
async fn cni(info: &ClusterInfo) -> std::result::Result<String, String> {
    let first = info
        .control_planes
        .first()
        .ok_or("no control plane nodes")?;
    let (spec, _) = client::resource_spec(
        &info.target(first)?,
        "controlplane",
        "BootstrapManifestsConfigs.kubernetes.talos.dev",
        "manifests",
    )
    .await?;
    Ok(spec["cniName"].as_str().unwrap_or("").to_string())
}

/// Every control plane's kubelet reports the three components' static pods.
async fn static_pods(info: &ClusterInfo) -> std::result::Result<Outcome, String> {
    for n in &info.control_planes {
        let ty = "StaticPodStatuses.kubernetes.talos.dev";
        let ids: Vec<String> = client::resource_specs(&info.target(n)?, "k8s", ty)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let missing: Vec<&str> = [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ]
        .into_iter()
        .filter(|c| {
            !ids.iter()
                .any(|id| id.starts_with(&format!("kube-system/{c}")))
        })
        .collect();
        if !missing.is_empty() {
            return Err(format!("missing static pods on node {n}: {missing:?}"));
        }
    }
    Ok(Outcome::Ok)
}

/// Run the Kubernetes checks after the Talos ones.
pub async fn check(
    info: &ClusterInfo,
    deadline: Instant,
    k: &Kubernetes,
    out: &mut Reporter,
) -> Result<()> {
    let endpoint = k.endpoint.as_str();
    let api: tokio::sync::OnceCell<Api> = tokio::sync::OnceCell::new();
    let started = Instant::now();
    let nodes: Vec<String> = info.all().cloned().collect();
    // Whether the API server has answered once: then it is not given up on.
    let reached = std::cell::Cell::new(false);
    let get = || async { api.get_or_try_init(|| connect(info, endpoint)).await };
    let report = || -> Attempt {
        Box::pin(async {
            let a = get().await?;
            if let Err(e) = a.client.apiserver_version().await {
                let why = format!("the Kubernetes API at {} does not answer: {e}", a.server);
                if !reached.get() && started.elapsed() >= UNREACHABLE_GRACE {
                    return Ok(Outcome::GiveUp(format!(
                        "{why}; is kube-apiserver running on the control planes? (`talosctl health --skip-kubernetes` checks Talos alone)"
                    )));
                }
                return Err(why);
            }
            reached.set(true);
            outcome(kh::nodes_report(&a.client, &nodes).await)
        })
    };
    run_check(out, CHECKS[0], deadline, &report).await?;
    run_check(out, CHECKS[1], deadline, &|| Box::pin(static_pods(info))).await?;
    let components = || -> Attempt {
        Box::pin(async {
            let a = get().await?;
            outcome(kh::control_plane_components_ready(&a.client, &info.control_planes).await)
        })
    };
    run_check(out, CHECKS[2], deadline, &components).await?;
    if !k.node_readiness {
        return Ok(());
    }
    let skip = || -> Attempt { Box::pin(async { Ok(Outcome::Skip) }) };
    let ready =
        || -> Attempt { Box::pin(async { outcome(kh::nodes_ready(&get().await?.client).await) }) };
    let proxy = || -> Attempt {
        Box::pin(async { outcome(kh::kube_proxy_ready(&get().await?.client).await) })
    };
    let dns = || -> Attempt {
        Box::pin(async { outcome(kh::coredns_ready(&get().await?.client).await) })
    };
    let schedulable = || -> Attempt {
        Box::pin(async { outcome(kh::nodes_schedulable(&get().await?.client).await) })
    };
    // Without a CNI no node is Ready and CoreDNS does not run: those two are skipped.
    let no_cni = cni(info).await.is_ok_and(|c| c == "none");
    run_check(
        out,
        CHECKS[3],
        deadline,
        if no_cni { &skip } else { &ready },
    )
    .await?;
    run_check(out, CHECKS[4], deadline, &proxy).await?;
    run_check(out, CHECKS[5], deadline, if no_cni { &skip } else { &dns }).await?;
    run_check(out, CHECKS[6], deadline, &schedulable).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoints_become_urls() {
        use super::endpoint_url as u;
        assert_eq!(u("10.5.0.2"), "https://10.5.0.2:6443");
        assert_eq!(u("10.5.0.2:7445"), "https://10.5.0.2:7445");
        assert_eq!(u("fd00::2"), "https://[fd00::2]:6443");
        assert_eq!(u("[fd00::2]:443"), "https://[fd00::2]:443");
        assert_eq!(u("https://k8s.example:443"), "https://k8s.example:443");
    }
}
