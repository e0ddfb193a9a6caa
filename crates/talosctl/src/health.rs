//! `talosctl health`: the cluster's readiness checks, run one after another, each polled until
//! it passes or the deadline. Each prints `waiting for <what>: ...`, then `OK`, `SKIP` or the
//! latest reason; a dead node is reported at once (every attempt has its own timeout).

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use api::cosi::GetRequest;
use api::machine::EtcdMemberListRequest;
use clap::Args;
use machinery::clientconfig::{ClientConfig, Context};
use machinery::{Error, Result};

use crate::client::{self, Target};
use crate::config_cmd::ConnArgs;
use crate::util::{parse_duration, split_commas};

#[derive(Args)]
pub struct HealthArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// How long to wait for the cluster to be healthy.
    #[arg(long, default_value = "20m0s")]
    wait_timeout: String,
    /// The init node's address.
    #[arg(long, default_value = "")]
    init_node: String,
    /// Control plane nodes' addresses.
    #[arg(long = "control-plane-nodes")]
    control_plane_nodes: Vec<String>,
    /// Worker nodes' addresses.
    #[arg(long = "worker-nodes")]
    worker_nodes: Vec<String>,
    /// Run the checks on the node (upstream's default); here they always run in the client.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    server: bool,
    /// The Kubernetes API endpoint to check (host, host:port or URL) instead of the one in the
    /// control plane's admin kubeconfig.
    #[arg(long, default_value = "")]
    k8s_endpoint: String,
    /// Check Talos alone: the Kubernetes checks are reported as skipped.
    #[arg(long)]
    skip_kubernetes: bool,
    /// Run the Kubernetes e2e tests (unused: the cluster has no Kubernetes).
    #[arg(long)]
    run_e2e: bool,
}

/// The cluster to check and how to reach its nodes.
pub struct ClusterInfo {
    pub control_planes: Vec<String>,
    pub workers: Vec<String>,
    pub context: Context,
    /// The endpoint whose apid forwards calls to each node.
    pub through: Option<String>,
}

impl ClusterInfo {
    /// A channel to `node` through the endpoint.
    pub fn target(&self, node: &str) -> std::result::Result<Target, String> {
        client::dial(
            "",
            &self.context,
            vec![node.to_string()],
            self.through.clone(),
        )
        .map_err(|e| e.to_string())?
        .pop()
        .ok_or_else(|| "no target".to_string())
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &String> {
        self.control_planes.iter().chain(&self.workers)
    }
}

pub async fn run(a: HealthArgs) -> Result<()> {
    let timeout = parse_duration(&a.wait_timeout)?;
    let cfg = ClientConfig::load(&a.conn.path())?;
    let context = Some(a.conn.context.as_str()).filter(|c| !c.is_empty());
    let (name, ctx) = cfg.current(context)?;
    let endpoints = if a.conn.endpoints.is_empty() {
        ctx.endpoints.clone()
    } else {
        split_commas(&a.conn.endpoints)
    };
    let mut control_planes = split_commas(&a.control_plane_nodes);
    if !a.init_node.is_empty() {
        control_planes.insert(0, a.init_node.clone());
    }
    let workers = split_commas(&a.worker_nodes);
    let mut info = ClusterInfo {
        control_planes,
        workers,
        context: ctx.clone(),
        through: endpoints.first().cloned(),
    };
    if info.control_planes.is_empty() {
        discover(&mut info, name).await?;
    }
    let kubernetes = (!a.skip_kubernetes).then(|| crate::health_k8s::Kubernetes {
        endpoint: a.k8s_endpoint.clone(),
        node_readiness: true,
    });
    check(&info, Instant::now() + timeout, kubernetes.as_ref()).await
}

/// The cluster's members as a node sees them (cluster discovery): (machine type, address).
pub async fn members(t: &client::Target) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (_, v) in client::resource_specs(t, "cluster", "Members.cluster.talos.dev").await? {
        if let (Some(ty), Some(addr)) = (v["machineType"].as_str(), v["addresses"][0].as_str()) {
            out.push((ty.to_string(), addr.to_string()));
        }
    }
    Ok(out)
}

/// Nodes when none are given: the cluster's members (discovery) as the endpoint's node sees
/// them; else a local cluster of the context's name; else the etcd members seen through the
/// endpoint are the control planes (workers unknown).
async fn discover(info: &mut ClusterInfo, context: &str) -> Result<()> {
    if let Some(through) = info.through.clone() {
        let t = client::dial("", &info.context, vec![through], None)?
            .pop()
            .expect("one target");
        let found = tokio::time::timeout(Duration::from_secs(5), members(&t)).await;
        if let Ok(Ok(found)) = found.map_err(|_| ()) {
            if found.iter().any(|(ty, _)| ty != "worker") {
                for (ty, addr) in found {
                    match ty.as_str() {
                        "worker" => info.workers.push(addr),
                        _ => info.control_planes.push(addr),
                    }
                }
                let ip = |a: &String| a.parse::<std::net::IpAddr>().ok();
                info.control_planes.sort_by_key(ip);
                info.workers.sort_by_key(ip);
                return Ok(());
            }
        }
    }
    if let Ok(cluster) = provision::Cluster::load(&crate::cluster::default_state_root(), context) {
        info.control_planes = cluster.controlplanes().map(|n| n.ip.to_string()).collect();
        info.workers = cluster.workers().map(|n| n.ip.to_string()).collect();
        return Ok(());
    }
    let through = info
        .through
        .clone()
        .ok_or_else(|| Error::msg("no endpoints"))?;
    let t = client::dial("", &info.context, vec![through.clone()], None)?
        .pop()
        .expect("one target");
    let members = client::machine(&t)
        .etcd_member_list(EtcdMemberListRequest { query_local: false })
        .await
        .map_err(|s| {
            Error::msg(format!(
                "cannot discover the nodes ({}): pass --control-plane-nodes and --worker-nodes",
                s.message()
            ))
        })?;
    for m in members
        .into_inner()
        .messages
        .into_iter()
        .flat_map(|m| m.members)
    {
        if let Some(host) = m.peer_urls.first().and_then(|u| peer_host(u)) {
            info.control_planes.push(host);
        }
    }
    eprintln!("workers are not known: pass --worker-nodes to check them too");
    Ok(())
}

fn peer_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|x| x.1).unwrap_or(url);
    rest.rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
}
pub(crate) enum Outcome {
    Ok,
    Skip,
    /// Failed for good: not to be waited for.
    GiveUp(String),
}

pub(crate) type Attempt<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::result::Result<Outcome, String>> + 'a>>;

/// Prints check lines: on a terminal the running line is rewritten in place; otherwise each
/// distinct line is printed once.
pub(crate) struct Reporter {
    tty: bool,
    last: String,
}

impl Reporter {
    fn update(&mut self, line: String, done: bool) {
        use std::io::Write;
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r\x1b[K{line}");
            if done {
                let _ = writeln!(err);
            }
        } else if line != self.last {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        self.last = if done { String::new() } else { line };
    }
}

const POLL: Duration = Duration::from_millis(250);
const ATTEMPT: Duration = Duration::from_secs(3);

/// Run every check in order until all pass, or the deadline; the Kubernetes ones unless
/// `kubernetes` is None.
pub async fn check(
    info: &ClusterInfo,
    deadline: Instant,
    kubernetes: Option<&crate::health_k8s::Kubernetes>,
) -> Result<()> {
    let mut out = Reporter {
        tty: std::io::stderr().is_terminal(),
        last: String::new(),
    };
    let quoted: Vec<String> = info.all().map(|n| format!("{n:?}")).collect();
    eprintln!("discovered nodes: [{}]", quoted.join(" "));
    type Check<'a> = (&'static str, Box<dyn Fn() -> Attempt<'a> + 'a>);
    let checks: Vec<Check> = vec![
        (
            "etcd to be healthy",
            Box::new(|| Box::pin(healthy_on_control_planes(info, "etcd"))),
        ),
        (
            "etcd members to be consistent across nodes",
            Box::new(|| Box::pin(etcd_consistent(info))),
        ),
        (
            "etcd members to be control plane nodes",
            Box::new(|| Box::pin(etcd_control_planes(info))),
        ),
        ("apid to be ready", Box::new(|| Box::pin(apid_ready(info)))),
        // Container-mode nodes are not held to memory and disk minimums.
        (
            "all nodes memory sizes",
            Box::new(|| Box::pin(async { Ok(Outcome::Ok) })),
        ),
        (
            "all nodes disk sizes",
            Box::new(|| Box::pin(async { Ok(Outcome::Ok) })),
        ),
        (
            "no diagnostics",
            Box::new(|| Box::pin(async { Ok(Outcome::Ok) })),
        ),
        (
            "kubelet to be healthy",
            Box::new(|| Box::pin(kubelet_healthy(info))),
        ),
        (
            "time to be in sync",
            Box::new(|| Box::pin(time_synced(info))),
        ),
        (
            "all nodes to finish boot sequence",
            Box::new(|| Box::pin(services_healthy(info))),
        ),
    ];
    for (what, attempt) in checks {
        run_check(&mut out, what, deadline, attempt.as_ref()).await?;
    }
    match kubernetes {
        Some(k) => crate::health_k8s::check(info, deadline, k, &mut out).await,
        None => {
            for what in crate::health_k8s::CHECKS {
                out.update(format!("waiting for {what}: SKIP"), true);
            }
            Ok(())
        }
    }
}

pub(crate) async fn run_check<'a>(
    out: &mut Reporter,
    what: &str,
    deadline: Instant,
    attempt: &(dyn Fn() -> Attempt<'a> + 'a),
) -> Result<()> {
    out.update(format!("waiting for {what}: ..."), false);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let result = match tokio::time::timeout(ATTEMPT.min(left.max(POLL)), attempt()).await {
            Ok(r) => r,
            Err(_) => Err("no answer in time".into()),
        };
        match result {
            Ok(Outcome::Ok) => {
                out.update(format!("waiting for {what}: OK"), true);
                return Ok(());
            }
            Ok(Outcome::Skip) => {
                out.update(format!("waiting for {what}: SKIP"), true);
                return Ok(());
            }
            Ok(Outcome::GiveUp(e)) => {
                out.update(format!("waiting for {what}: {e}"), true);
                return Err(Error::msg(format!("{what}: {e}")));
            }
            Err(e) => {
                if Instant::now() >= deadline {
                    out.update(format!("waiting for {what}: {e}"), true);
                    return Err(Error::msg(format!("timed out waiting for {what}: {e}")));
                }
                out.update(format!("waiting for {what}: {e}"), false);
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

fn rpc_error(node: &str, s: tonic::Status) -> String {
    client::call_error(node, s).to_string()
}

async fn services_of(
    info: &ClusterInfo,
    node: &str,
) -> std::result::Result<Vec<api::machine::ServiceInfo>, String> {
    let t = info.target(node)?;
    let r = client::machine(&t)
        .service_list(())
        .await
        .map_err(|s| rpc_error(node, s))?;
    Ok(r.into_inner()
        .messages
        .into_iter()
        .flat_map(|m| m.services)
        .collect())
}

fn service_problem(node: &str, s: &api::machine::ServiceInfo) -> Option<String> {
    if s.state != "Running" {
        let msg = s
            .events
            .as_ref()
            .and_then(|e| e.events.last())
            .map(|e| e.msg.clone())
            .unwrap_or_default();
        return Some(format!(
            "{node}: service \"{}\" not in expected state \"Running\": current state [{}] {msg}",
            s.id, s.state
        ));
    }
    match &s.health {
        Some(h) if !h.unknown && !h.healthy => Some(format!(
            "{node}: service is not healthy: {}{}",
            s.id,
            if h.last_message.is_empty() {
                String::new()
            } else {
                format!(" ({})", h.last_message)
            }
        )),
        _ => None,
    }
}

/// `id` Running and healthy on every control plane.
async fn healthy_on_control_planes(
    info: &ClusterInfo,
    id: &str,
) -> std::result::Result<Outcome, String> {
    let all = futures::future::join_all(info.control_planes.iter().map(|n| async move {
        let services = services_of(info, n).await?;
        let service = services
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| format!("{n}: service \"{id}\" not found"))?;
        match service_problem(n, service) {
            Some(p) => Err(p),
            None if service.health.as_ref().is_none_or(|h| h.unknown) => {
                Err(format!("{n}: service \"{id}\" health is not known yet"))
            }
            None => Ok(()),
        }
    }))
    .await;
    first_error(all)
}

/// The kubelet Running and healthy on every control plane; skipped when the node talked to
/// runs no kubelet (no KubeletConfig).
async fn kubelet_healthy(info: &ClusterInfo) -> std::result::Result<Outcome, String> {
    let Some(first) = info.control_planes.first() else {
        return Ok(Outcome::Skip);
    };
    let t = info.target(first)?;
    let config = client::state(&t)
        .get(GetRequest {
            namespace: "k8s".into(),
            r#type: "KubeletConfigs.kubernetes.talos.dev".into(),
            id: "kubelet".into(),
            options: None,
        })
        .await;
    match config {
        Err(s) if s.code() == tonic::Code::NotFound => Ok(Outcome::Skip),
        Err(s) => Err(rpc_error(first, s)),
        Ok(_) => healthy_on_control_planes(info, "kubelet").await,
    }
}

fn first_error(all: Vec<std::result::Result<(), String>>) -> std::result::Result<Outcome, String> {
    let errors: Vec<String> = all.into_iter().filter_map(|r| r.err()).collect();
    if errors.is_empty() {
        Ok(Outcome::Ok)
    } else {
        Err(errors.join("; "))
    }
}

async fn members_of(
    info: &ClusterInfo,
    node: &str,
) -> std::result::Result<Vec<api::machine::EtcdMember>, String> {
    let t = info.target(node)?;
    let r = client::machine(&t)
        .etcd_member_list(EtcdMemberListRequest { query_local: false })
        .await
        .map_err(|s| rpc_error(node, s))?;
    Ok(r.into_inner()
        .messages
        .into_iter()
        .flat_map(|m| m.members)
        .collect())
}

async fn etcd_consistent(info: &ClusterInfo) -> std::result::Result<Outcome, String> {
    let mut expected: Option<BTreeSet<(String, u64, bool)>> = None;
    for n in &info.control_planes {
        let got: BTreeSet<(String, u64, bool)> = members_of(info, n)
            .await?
            .into_iter()
            .map(|m| (m.hostname, m.id, m.is_learner))
            .collect();
        if got.len() != info.control_planes.len() {
            return Err(format!(
                "{n}: expected to have {} members, got {}",
                info.control_planes.len(),
                got.len()
            ));
        }
        if let Some(learner) = got.iter().find(|m| m.2) {
            return Err(format!("{n}: etcd member {} is still a learner", learner.0));
        }
        match &expected {
            None => expected = Some(got),
            Some(e) if *e != got => {
                let names = |s: &BTreeSet<(String, u64, bool)>| {
                    s.iter().map(|m| m.0.clone()).collect::<Vec<_>>().join(" ")
                };
                return Err(format!(
                    "{n}: expected to have [{}] members, got [{}]",
                    names(e),
                    names(&got)
                ));
            }
            _ => {}
        }
    }
    Ok(Outcome::Ok)
}

async fn etcd_control_planes(info: &ClusterInfo) -> std::result::Result<Outcome, String> {
    let Some(first) = info.control_planes.first() else {
        return Err("no control plane nodes".into());
    };
    let mut ips: Vec<String> = Vec::new();
    for m in members_of(info, first).await? {
        ips.extend(m.peer_urls.iter().filter_map(|u| peer_host(u)));
    }
    let cps: BTreeSet<&str> = info
        .control_planes
        .iter()
        .map(|c| c.rsplit_once(':').map(|(h, _)| h).unwrap_or(c))
        .collect();
    if ips.iter().all(|ip| cps.contains(ip.as_str())) {
        Ok(Outcome::Ok)
    } else {
        Err(format!(
            "etcd member ips {ips:?} are not subset of control plane node ips {:?}",
            cps.iter().collect::<Vec<_>>()
        ))
    }
}

async fn apid_ready(info: &ClusterInfo) -> std::result::Result<Outcome, String> {
    let all = futures::future::join_all(info.all().map(|n| async move {
        let t = info.target(n)?;
        client::machine(&t)
            .version(())
            .await
            .map(|_| ())
            .map_err(|s| format!("error getting version from node {n:?}: {}", s.message()))
    }))
    .await;
    first_error(all)
}

async fn time_synced(info: &ClusterInfo) -> std::result::Result<Outcome, String> {
    let all = futures::future::join_all(info.all().map(|n| async move {
        let (spec, _) = client::resource_spec(
            &info.target(n)?,
            "runtime",
            "TimeStatuses.v1alpha1.talos.dev",
            "node",
        )
        .await?;
        if spec["synced"] == true {
            Ok(())
        } else {
            Err(format!("{n}: time is not in sync yet"))
        }
    }))
    .await;
    first_error(all)
}

async fn services_healthy(info: &ClusterInfo) -> std::result::Result<Outcome, String> {
    let all = futures::future::join_all(info.all().map(|n| async move {
        // The kubelet is Kubernetes's, judged by its own check: the boot sequence is the
        // node's services.
        let problems: Vec<String> = services_of(info, n)
            .await?
            .iter()
            .filter(|s| s.id != "kubelet")
            .filter_map(|s| service_problem(n, s))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }))
    .await;
    first_error(all)
}
