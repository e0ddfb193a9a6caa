//! The kubelet service: KubeletSpec's image and command line as a privileged container of the
//! system containerd, in the node's network and PID namespaces, with the node's paths it
//! manages mounted where upstream mounts them. Before each start its image is made present;
//! while it cannot be pulled the service is Waiting, the reason in its last event. Healthy
//! while `127.0.0.1:10248/healthz` answers 200.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use machinery::cri::Registries;
use tonic::Code;
use types::k8s::KubeletSpecSpec;

use crate::services::supervisor::{HealthCheck, Note, ServiceSpec, ServiceState};
use crate::sys::cri::{channel, SYSTEM_SOCKET};
use crate::sys::ctrd_container::{ContainerSpec, Mount};

pub const SERVICE: &str = "kubelet";
/// Where the kubelet answers its health check.
pub const HEALTHZ: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 10248);
/// Below the pods, above everything else a node may give up (upstream's value).
const OOM_SCORE_ADJ: i32 = -450;

/// The node's paths the kubelet sees: (source, destination, options). A directory is made
/// when missing; a file that is missing is left out.
const MOUNTS: &[(&str, &str, &[&str])] = &[
    ("/dev", "/dev", &["rbind", "rw"]),
    ("/sys/fs/cgroup", "/sys/fs/cgroup", &["rbind", "rw"]),
    ("/usr/lib/modules", "/lib/modules", &["bind", "ro"]),
    ("/etc/kubernetes", "/etc/kubernetes", &["bind", "rw"]),
    (
        "/usr/local/lib/kubelet/credentialproviders",
        "/usr/local/lib/kubelet/credentialproviders",
        &["bind", "ro"],
    ),
    ("/etc/nfsmount.conf", "/etc/nfsmount.conf", &["bind", "ro"]),
    ("/etc/machine-id", "/etc/machine-id", &["bind", "ro"]),
    ("/etc/os-release", "/etc/os-release", &["bind", "ro"]),
    ("/etc/cni", "/etc/cni", &["bind", "ro"]),
    ("/run", "/var/run", &["rbind", "rslave", "rw"]),
    (
        "/var/lib/containerd",
        "/var/lib/containerd",
        &["rbind", "rslave", "rw"],
    ),
    (
        "/var/lib/kubelet",
        "/var/lib/kubelet",
        &["rbind", "rshared", "rw"],
    ),
    (
        "/var/log/containers",
        "/var/log/containers",
        &["bind", "rw"],
    ),
    ("/var/log/pods", "/var/log/pods", &["bind", "rw"]),
    ("/var/mnt", "/var/mnt", &["rbind", "rslave", "ro"]),
];

/// Directories among MOUNTS' sources (made when missing).
const DIRS: &[&str] = &[
    "/etc/kubernetes",
    "/etc/cni",
    "/var/lib/containerd",
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/mnt",
];

/// The kubelet's container: privileged, the node's PID namespace, its mounts and then the
/// config's `extraMounts`.
pub fn container(spec: &KubeletSpecSpec, env: &[String]) -> ContainerSpec {
    let mut mounts: Vec<Mount> = MOUNTS
        .iter()
        .filter(|(source, _, _)| DIRS.contains(source) || Path::new(source).exists())
        .map(|(source, destination, options)| Mount {
            kind: "bind".into(),
            source: source.into(),
            destination: destination.into(),
            options: options.iter().map(|o| o.to_string()).collect(),
        })
        .collect();
    mounts.extend(spec.extra_mounts.iter().map(|m| Mount {
        kind: m.kind.clone(),
        source: m.source.clone().into(),
        destination: m.destination.clone().into(),
        options: m.options.clone(),
    }));
    ContainerSpec {
        id: SERVICE.into(),
        image: spec.image.clone(),
        mounts,
        pids_limit: -1,
        cpu_shares: 1024,
        host_pid: true,
        privileged: true,
        oom_score_adj: Some(OOM_SCORE_ADJ),
        env: env.to_vec(),
        cgroup: "podruntime/kubelet".into(),
        ..Default::default()
    }
}

/// Make the directories the kubelet's mounts come from (before each start: they live on
/// EPHEMERAL).
fn make_dirs(spec: &KubeletSpecSpec) -> Result<(), String> {
    let extra = spec
        .extra_mounts
        .iter()
        .filter(|m| m.kind == "bind")
        .map(|m| m.source.as_str());
    for dir in DIRS.iter().copied().chain(extra) {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("{dir}: {e}"))?;
    }
    Ok(())
}

/// The kubelet service for `spec`, pulled through the registries `registries` gives.
pub fn service(
    spec: &KubeletSpecSpec,
    env: &[String],
    registries: Arc<dyn Fn() -> Registries + Send + Sync>,
) -> ServiceSpec {
    let mut argv = spec.args.iter();
    let program = argv.next().cloned().unwrap_or_default();
    let image = spec.image.clone();
    let pulling = registries.clone();
    let dirs = spec.clone();
    ServiceSpec {
        id: SERVICE.into(),
        program: program.into(),
        args: argv.cloned().collect(),
        depends_on: vec!["containerd".into(), "cri".into()],
        health: Some(HealthCheck::Probe(Arc::new(|| Box::pin(healthz())))),
        prepare: Some(Arc::new(move |note| {
            let (image, registries) = (image.clone(), pulling.clone());
            let made = make_dirs(&dirs);
            Box::pin(async move {
                made?;
                image_present(&image, registries, note).await;
                Ok(Vec::new())
            })
        })),
        fds: Vec::new(),
        launcher: Some(crate::services::container::launcher(
            container(spec, env),
            registries,
        )),
    }
}

/// Wait until `image` is in the system containerd, pulling it; each failure is said as a
/// Waiting event naming the image and why, and tried again later.
async fn image_present(
    image: &str,
    registries: Arc<dyn Fn() -> Registries + Send + Sync>,
    note: Note,
) {
    let mut delay = Duration::from_secs(1);
    let mut said = String::new();
    loop {
        let attempt = async {
            let ch = channel(SYSTEM_SOCKET).await?;
            match crate::sys::ctrd::local_image(&ch, image).await {
                Err(s) if s.code() == Code::NotFound => {
                    if said.is_empty() {
                        note(ServiceState::Preparing, format!("Pulling image {image:?}"));
                    }
                    crate::sys::ctrd::pull(registries(), image, None).await?;
                    Ok(())
                }
                found => found.map(|_| ()),
            }
        };
        let why = match attempt.await {
            Ok(()) => return,
            Err(s) => s.message().to_string(),
        };
        let msg = format!("Waiting for image {image:?} to be pulled: {why}");
        if msg != said {
            note(ServiceState::Waiting, msg.clone());
            said = msg;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// GET /healthz on the kubelet's health port: 200 is healthy.
async fn healthz() -> Result<(), String> {
    use http_body_util::Empty;
    let stream = tokio::net::TcpStream::connect(HEALTHZ)
        .await
        .map_err(|e| format!("{HEALTHZ}: {e}"))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get("/healthz")
        .header(http::header::HOST, HEALTHZ.to_string())
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let res = send.send_request(req).await.map_err(|e| e.to_string())?;
    if res.status() == http::StatusCode::OK {
        Ok(())
    } else {
        Err(format!("expected HTTP status OK, got {}", res.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::ctrd_container::runtime_spec;
    use types::k8s::KubeletMount;

    #[test]
    fn the_kubelets_container_shares_the_nodes_pids_and_network_and_sees_its_paths() {
        let spec = KubeletSpecSpec {
            image: "ghcr.io/siderolabs/kubelet:v1.35.0".into(),
            args: vec![
                "/usr/local/bin/kubelet".into(),
                "--config=/etc/kubernetes/kubelet.yaml".into(),
            ],
            extra_mounts: vec![KubeletMount {
                destination: "/var/lib/extra".into(),
                kind: "bind".into(),
                source: "/var/lib/extra".into(),
                options: vec!["bind".into(), "rshared".into(), "rw".into()],
            }],
            ..Default::default()
        };
        let c = container(&spec, &["HTTP_PROXY=http://proxy:3128".into()]);
        let s = runtime_spec(&c, &spec.args, &c.env);
        let namespaces: Vec<&str> = s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(!namespaces.contains(&"pid") && !namespaces.contains(&"network"));
        assert_eq!(c.oom_score_adj, Some(-450));
        assert_eq!(s["process"]["noNewPrivileges"], false);
        let caps = s["process"]["capabilities"]["bounding"].as_array().unwrap();
        // Every capability machined itself may grant.
        assert!(
            caps.iter().any(|c| c == "CAP_SYS_ADMIN") && caps.len() > 30,
            "{caps:?}"
        );
        assert_eq!(s["linux"]["resources"]["devices"][0]["allow"], true);
        assert_eq!(s["linux"]["rootfsPropagation"], "shared");
        assert!(s["linux"].get("maskedPaths").is_none());
        assert!(s["linux"]["cgroupsPath"]
            .as_str()
            .unwrap()
            .ends_with("/podruntime/kubelet"));
        let mount = |dst: &str| {
            s["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["destination"] == dst)
                .cloned()
                .unwrap_or_else(|| panic!("{dst} in {s}"))
        };
        assert_eq!(mount("/var/lib/kubelet")["options"][1], "rshared");
        assert_eq!(mount("/var/run")["source"], "/run");
        assert_eq!(mount("/var/lib/extra")["options"][1], "rshared");
        assert_eq!(mount("/sys")["options"][3], "rw");
        assert_eq!(
            s["process"]["args"][1],
            "--config=/etc/kubernetes/kubelet.yaml"
        );
    }
}
