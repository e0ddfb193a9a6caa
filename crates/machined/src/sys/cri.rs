//! containerd on the node, as two services: `containerd` (Talos's own, namespace `system`, no
//! CRI) and `cri` (the CRI containerd Kubernetes uses, namespace `k8s.io`). The CRI
//! configuration follows the machine config (registries, CRICustomizationConfig) and the
//! `*.part` files of `/etc/cri/conf.d` (`20-customization.part` from `machine.files`); a change
//! of the merged configuration restarts `cri`, a change of mirrors only rewrites `hosts.toml`
//! (read on every pull).
//!
//! The API's container calls go through here: images (list, pull with per-layer progress,
//! remove), containers and pods, their stats and their logs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use containerd_client::services::v1 as ctrd;
use containerd_client::with_namespace;
use k8s_cri::v1 as cri;
use machinery::cri::{self as conf, Registries};
use machinery::Config;
use tonic::transport::Channel;
use tonic::{Request, Status};

pub const SYSTEM_SOCKET: &str = "/system/run/containerd/containerd.sock";
pub const CRI_SOCKET: &str = "/run/containerd/containerd.sock";
pub const SYSTEM_NS: &str = "system";
pub const CRI_NS: &str = "k8s.io";
pub const SYSTEM_CONFIG: &str = "/system/etc/containerd/config.toml";
pub const CRI_CONFIG: &str = "/etc/cri/containerd.toml";
const CONF_D: &str = "/etc/cri/conf.d";
pub const MERGED: &str = "/etc/cri/conf.d/cri.toml";

pub fn daemon_config(root: &str, state: &str, socket: &str, extra: &str) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
{extra}
[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
"#
    )
}

pub fn write(path: &str, text: &str) -> Result<(), String> {
    let p = Path::new(path);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    machinery::fsutil::write_atomic(p, text.as_bytes(), 0o600).map_err(|e| format!("{path}: {e}"))
}

/// Write the CRI configuration for `cfg`: the hosts folders, the generated parts and the merged
/// `cri.toml`. Returns whether `cri.toml` changed.
pub fn write_cri_config(cfg: &Config) -> Result<bool, String> {
    let registries = Registries::from_config(cfg)?;
    // The hosts folders are replaced as a whole.
    let hosts = Path::new(conf::HOSTS_DIR);
    let fresh = hosts.with_extension("new");
    let _ = std::fs::remove_dir_all(&fresh);
    for (rel, text) in registries.hosts_files() {
        write(&fresh.join(rel).display().to_string(), &text)?;
    }
    std::fs::create_dir_all(&fresh).map_err(|e| format!("{}: {e}", fresh.display()))?;
    let old = hosts.with_extension("old");
    let _ = std::fs::remove_dir_all(&old);
    let _ = std::fs::rename(hosts, &old);
    std::fs::rename(&fresh, hosts).map_err(|e| format!("{}: {e}", hosts.display()))?;
    let _ = std::fs::remove_dir_all(&old);

    write(&format!("{CONF_D}/00-base.part"), &conf::base_part())?;
    write(
        &format!("{CONF_D}/01-registries.part"),
        &registries.auth_part(),
    )?;
    let mut parts = conf::customization_parts(cfg);
    for e in std::fs::read_dir(CONF_D)
        .map_err(|e| format!("{CONF_D}: {e}"))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".part") {
            let text = std::fs::read_to_string(e.path()).map_err(|e| format!("{name}: {e}"))?;
            parts.push((name, text));
        }
    }
    parts.sort();
    let merged = conf::merge_parts(&parts)?;
    if std::fs::read_to_string(MERGED).ok().as_deref() == Some(merged.as_str()) {
        return Ok(false);
    }
    write(MERGED, &merged)?;
    Ok(true)
}

pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_else(|| vec!["/usr/sbin".into(), "/usr/bin".into()])
        .into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

// ---- clients ----

/// A channel to a containerd, waiting a little for one that is restarting.
pub(crate) async fn channel(socket: &str) -> Result<Channel, Status> {
    // A node that runs containerd has written its configuration (the socket itself is gone
    // while containerd restarts).
    let config = if socket == SYSTEM_SOCKET {
        SYSTEM_CONFIG
    } else {
        CRI_CONFIG
    };
    if !Path::new(config).exists() {
        return Err(Status::unavailable(format!(
            "containerd is not running on this node (no {config})"
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match containerd_client::connect(socket).await {
            Ok(ch) => return Ok(ch),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(Status::unavailable(format!(
                    "containerd at {socket} is not answering: {e}"
                )))
            }
        }
    }
}

/// Which containerd and namespace an API request means: `system` (containerd) or `k8s.io`
/// (the CRI's).
pub fn instance(namespace: i32, driver: i32) -> (&'static str, &'static str) {
    use api::common::{ContainerDriver, ContainerdNamespace};
    if namespace == ContainerdNamespace::NsSystem as i32
        || (namespace == ContainerdNamespace::NsUnknown as i32
            && driver == ContainerDriver::Containerd as i32)
    {
        (SYSTEM_SOCKET, SYSTEM_NS)
    } else {
        (CRI_SOCKET, CRI_NS)
    }
}

/// `alpine` → `docker.io/library/alpine:latest`, `reg:5000/x` → `reg:5000/x:latest`; a
/// malformed reference is the caller's error.
pub fn normalize(reference: &str) -> Result<String, Status> {
    oci::Reference::parse(reference)
        .map(|r| r.to_string())
        .map_err(Status::invalid_argument)
}

pub type ListStream =
    futures::stream::BoxStream<'static, Result<api::machine::ImageServiceListResponse, Status>>;
pub type PullStream =
    futures::stream::BoxStream<'static, Result<api::machine::ImageServicePullResponse, Status>>;

/// The images of a namespace with their full size (manifest, config and layers).
pub async fn list_images(socket: &str, ns: &str) -> Result<ListStream, Status> {
    let ch = channel(socket).await?;
    let images = ctrd::images_client::ImagesClient::new(ch.clone())
        .list(with_namespace!(
            ctrd::ListImagesRequest { filters: vec![] },
            ns
        ))
        .await?
        .into_inner()
        .images;
    let mut out = Vec::new();
    for i in images {
        let target = i.target.unwrap_or_default();
        let size = image_size(&ch, ns, &target).await.unwrap_or(target.size);
        out.push(Ok(api::machine::ImageServiceListResponse {
            name: i.name,
            digest: target.digest,
            size,
            created_at: i.created_at,
            labels: i.labels.into_iter().collect(),
        }));
    }
    Ok(Box::pin(futures::stream::iter(out)))
}

pub(crate) async fn read_blob(ch: &Channel, ns: &str, digest: &str) -> Result<Vec<u8>, Status> {
    use futures::StreamExt;
    let mut s = ctrd::content_client::ContentClient::new(ch.clone())
        .read(with_namespace!(
            ctrd::ReadContentRequest {
                digest: digest.into(),
                offset: 0,
                size: 0,
            },
            ns
        ))
        .await?
        .into_inner();
    let mut data = Vec::new();
    while let Some(part) = s.next().await {
        data.extend(part?.data);
    }
    Ok(data)
}

/// Manifest + config + layers; for an index, of the manifest for this machine.
async fn image_size(
    ch: &Channel,
    ns: &str,
    target: &containerd_client::types::Descriptor,
) -> Result<i64, Status> {
    let mut desc = (target.digest.clone(), target.size);
    for _ in 0..2 {
        let blob = read_blob(ch, ns, &desc.0).await?;
        let v: serde_json::Value =
            serde_json::from_slice(&blob).map_err(|e| Status::internal(e.to_string()))?;
        if let Some(ms) = v.get("manifests").and_then(|m| m.as_array()) {
            let Some(m) = ms.iter().find(|m| {
                m.pointer("/platform/architecture").and_then(|a| a.as_str()) == Some(arch())
            }) else {
                return Ok(desc.1);
            };
            desc = (
                m["digest"].as_str().unwrap_or_default().to_string(),
                m["size"].as_i64().unwrap_or(0),
            );
            continue;
        }
        let layers: i64 = v
            .get("layers")
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten()
            .filter_map(|l| l["size"].as_i64())
            .sum();
        return Ok(desc.1
            + v.pointer("/config/size")
                .and_then(|s| s.as_i64())
                .unwrap_or(0)
            + layers);
    }
    Ok(desc.1)
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Pull through the CRI (so the registry configuration applies exactly as it does for
/// Kubernetes), reporting each layer's progress as containerd receives it.
pub async fn pull(socket: &str, reference: &str) -> Result<PullStream, Status> {
    use api::machine::image_service_pull_layer_progress::Status as Layer;
    use api::machine::image_service_pull_response::Response as R;
    if reference.trim().is_empty() {
        return Err(Status::invalid_argument("an image reference is required"));
    }
    let name = normalize(reference)?;
    let ch = channel(socket).await?;
    let mut images = cri::image_service_client::ImageServiceClient::new(ch.clone());
    let request = cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: name.clone(),
            ..Default::default()
        }),
        auth: None,
        sandbox_config: None,
    };
    let socket = socket.to_string();
    let stream = crate::sys::async_stream(move |tx| async move {
        let started = Instant::now();
        let mut pulling = Box::pin(async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                match images.pull_image(request.clone()).await {
                    // The CRI restarts when its configuration changes: ask the new one (its
                    // socket answers before its plugin is ready).
                    Err(s)
                        if Instant::now() < deadline
                            && (s.code() == tonic::Code::Unavailable
                                || s.message().contains("transport error")
                                || s.message().contains("server is not initialized yet")) =>
                    {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        if let Ok(ch) = channel(&socket).await {
                            images = cri::image_service_client::ImageServiceClient::new(ch);
                        }
                    }
                    r => break r,
                }
            }
        });
        let mut content = ctrd::content_client::ContentClient::new(ch);
        let mut seen: HashMap<String, (i64, i64)> = HashMap::new();
        let progress = |layer: &str, status: Layer, (offset, total): (i64, i64)| {
            Ok(api::machine::ImageServicePullResponse {
                response: Some(R::PullProgress(api::machine::ImageServicePullProgress {
                    layer_id: layer.to_string(),
                    progress: Some(api::machine::ImageServicePullLayerProgress {
                        status: status as i32,
                        elapsed: prost_types::Duration::try_from(started.elapsed()).ok(),
                        offset,
                        total,
                    }),
                })),
            })
        };
        let result = loop {
            tokio::select! {
                r = &mut pulling => break r,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            let Ok(statuses) = content
                .list_statuses(with_namespace!(
                    ctrd::ListStatusesRequest { filters: vec![] },
                    CRI_NS
                ))
                .await
            else {
                continue;
            };
            let now: HashMap<String, (i64, i64)> = statuses
                .into_inner()
                .statuses
                .into_iter()
                .filter(|s| s.r#ref.contains("layer-sha256"))
                .map(|s| (layer_id(&s.r#ref), (s.offset, s.total)))
                .collect();
            for (id, at) in &now {
                if seen.get(id) != Some(at) {
                    let _ = tx.send(progress(id, Layer::Downloading, *at)).await;
                }
            }
            for (id, at) in &seen {
                if !now.contains_key(id) {
                    let _ = tx
                        .send(progress(id, Layer::DownloadComplete, (at.1, at.1)))
                        .await;
                }
            }
            seen = now;
        };
        let last = match result {
            Ok(_) => {
                for (id, at) in &seen {
                    let _ = tx
                        .send(progress(id, Layer::DownloadComplete, (at.1, at.1)))
                        .await;
                }
                Ok(api::machine::ImageServicePullResponse {
                    response: Some(R::Name(name)),
                })
            }
            Err(s) => Err(Status::new(
                s.code(),
                format!("pull {name}: {}", s.message()),
            )),
        };
        let _ = tx.send(last).await;
    });
    Ok(Box::pin(stream))
}

/// `layer-sha256:abcd…` → `abcd…` shortened as docker does (12 characters).
fn layer_id(r: &str) -> String {
    let d = r.rsplit(':').next().unwrap_or(r);
    d.chars().take(12).collect()
}

/// Whether a call failed because containerd went away under it (it restarts when the CRI
/// configuration changes): the connection, not the request.
fn dropped(s: &Status) -> bool {
    s.code() == tonic::Code::Unavailable || s.message().contains("transport error")
}

pub async fn remove_image(socket: &str, ns: &str, reference: &str) -> Result<(), Status> {
    let name = normalize(reference)?;
    let delete = || async {
        ctrd::images_client::ImagesClient::new(channel(socket).await?)
            .delete(with_namespace!(
                ctrd::DeleteImageRequest {
                    name: name.clone(),
                    sync: true,
                    target: None,
                },
                ns
            ))
            .await
    };
    // Once more against the restarted containerd when the first one was going away (then
    // "not found" means the first one did remove it).
    match delete().await {
        Err(s) if dropped(&s) => match delete().await {
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            other => other.map(|_| ()),
        },
        other => other.map(|_| ()),
    }
    .map_err(|s| Status::new(s.code(), format!("remove {name}: {}", s.message())))
}

// ---- containers ----

/// A CRI container's display ID: `<pod namespace>/<pod>:<container>:<short id>`.
fn display_id(pod: Option<&cri::PodSandbox>, name: &str, id: &str) -> String {
    let short: String = id.chars().take(12).collect();
    match pod.and_then(|p| p.metadata.as_ref()) {
        Some(m) => format!("{}/{}:{name}:{short}", m.namespace, m.name),
        None => format!("{name}:{short}"),
    }
}

fn pod_id(p: &cri::PodSandbox) -> String {
    p.metadata
        .as_ref()
        .map(|m| format!("{}/{}", m.namespace, m.name))
        .unwrap_or_else(|| p.id.clone())
}

async fn runtime(
    socket: &str,
) -> Result<cri::runtime_service_client::RuntimeServiceClient<Channel>, Status> {
    Ok(cri::runtime_service_client::RuntimeServiceClient::new(
        channel(socket).await?,
    ))
}

async fn pods_and_containers(
    rt: &mut cri::runtime_service_client::RuntimeServiceClient<Channel>,
) -> Result<(Vec<cri::PodSandbox>, Vec<cri::Container>), Status> {
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await?
        .into_inner()
        .items;
    let containers = rt
        .list_containers(cri::ListContainersRequest { filter: None })
        .await?
        .into_inner()
        .containers;
    Ok((pods, containers))
}

/// Pod sandboxes and their containers, from the CRI.
pub async fn cri_containers() -> Result<Vec<api::machine::ContainerInfo>, Status> {
    let mut rt = runtime(CRI_SOCKET).await?;
    let (pods, containers) = pods_and_containers(&mut rt).await?;
    let mut out = Vec::new();
    for p in &pods {
        let info = rt
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: p.id.clone(),
                verbose: true,
            })
            .await
            .map(|r| r.into_inner().info)
            .unwrap_or_default();
        out.push(api::machine::ContainerInfo {
            namespace: CRI_NS.into(),
            id: pod_id(p),
            internal_id: p.id.clone(),
            uid: p
                .metadata
                .as_ref()
                .map(|m| m.uid.clone())
                .unwrap_or_default(),
            image: String::new(),
            pid: verbose_pid(&info),
            status: cri::PodSandboxState::try_from(p.state)
                .map(|s| s.as_str_name().to_string())
                .unwrap_or_default(),
            pod_id: pod_id(p),
            name: pod_id(p),
            network_namespace: String::new(),
        });
        for c in containers.iter().filter(|c| c.pod_sandbox_id == p.id) {
            out.push(container_info(&mut rt, Some(p), c).await);
        }
    }
    for c in containers
        .iter()
        .filter(|c| !pods.iter().any(|p| p.id == c.pod_sandbox_id))
    {
        out.push(container_info(&mut rt, None, c).await);
    }
    Ok(out)
}

fn verbose_pid(info: &HashMap<String, String>) -> u32 {
    info.get("info")
        .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
        .and_then(|v| v["pid"].as_u64())
        .unwrap_or(0) as u32
}

async fn container_info(
    rt: &mut cri::runtime_service_client::RuntimeServiceClient<Channel>,
    pod: Option<&cri::PodSandbox>,
    c: &cri::Container,
) -> api::machine::ContainerInfo {
    let name = c
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let info = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: c.id.clone(),
            verbose: true,
        })
        .await
        .map(|r| r.into_inner().info)
        .unwrap_or_default();
    api::machine::ContainerInfo {
        namespace: CRI_NS.into(),
        id: display_id(pod, &name, &c.id),
        internal_id: c.id.clone(),
        uid: String::new(),
        image: c
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default(),
        pid: verbose_pid(&info),
        status: cri::ContainerState::try_from(c.state)
            .map(|s| s.as_str_name().to_string())
            .unwrap_or_default(),
        pod_id: pod.map(pod_id).unwrap_or_default(),
        name,
        network_namespace: String::new(),
    }
}

/// Containers of the system containerd (beside the node's own process services).
pub async fn system_containers() -> Result<Vec<api::machine::ContainerInfo>, Status> {
    let ch = channel(SYSTEM_SOCKET).await?;
    let containers = ctrd::containers_client::ContainersClient::new(ch.clone())
        .list(with_namespace!(
            ctrd::ListContainersRequest { filters: vec![] },
            SYSTEM_NS
        ))
        .await?
        .into_inner()
        .containers;
    let tasks = ctrd::tasks_client::TasksClient::new(ch)
        .list(with_namespace!(
            ctrd::ListTasksRequest {
                filter: String::new(),
            },
            SYSTEM_NS
        ))
        .await?
        .into_inner()
        .tasks;
    Ok(containers
        .into_iter()
        .map(|c| {
            let task = tasks.iter().find(|t| t.id == c.id);
            api::machine::ContainerInfo {
                namespace: SYSTEM_NS.into(),
                id: c.id.clone(),
                internal_id: c.id.clone(),
                image: c.image,
                pid: task.map(|t| t.pid).unwrap_or(0),
                status: task
                    .map(|t| {
                        containerd_client::types::v1::Status::try_from(t.status)
                            .map(|s| s.as_str_name().to_string())
                            .unwrap_or_default()
                    })
                    .unwrap_or_else(|| "CREATED".into()),
                name: c.id,
                ..Default::default()
            }
        })
        .collect())
}

/// CPU (nanoseconds) and memory (working set) of the CRI's containers.
pub async fn cri_stats() -> Result<Vec<api::machine::Stat>, Status> {
    let mut rt = runtime(CRI_SOCKET).await?;
    let (pods, containers) = pods_and_containers(&mut rt).await?;
    let stats = rt
        .list_container_stats(cri::ListContainerStatsRequest { filter: None })
        .await?
        .into_inner()
        .stats;
    Ok(stats
        .into_iter()
        .map(|s| {
            let attrs = s.attributes.unwrap_or_default();
            let name = attrs.metadata.map(|m| m.name).unwrap_or_default();
            let pod = containers
                .iter()
                .find(|c| c.id == attrs.id)
                .and_then(|c| pods.iter().find(|p| p.id == c.pod_sandbox_id));
            api::machine::Stat {
                namespace: CRI_NS.into(),
                id: display_id(pod, &name, &attrs.id),
                memory_usage: s
                    .memory
                    .and_then(|m| m.working_set_bytes)
                    .map(|v| v.value)
                    .unwrap_or(0),
                cpu_usage: s
                    .cpu
                    .and_then(|c| c.usage_core_nano_seconds)
                    .map(|v| v.value)
                    .unwrap_or(0),
                pod_id: pod.map(pod_id).unwrap_or_default(),
                name,
            }
        })
        .collect())
}

/// The CRI log file of the container `id` names: its display ID, `<ns>/<pod>:<container>`
/// (the latest such container), or (a prefix of) its container ID.
/// Stop a CRI container (the newest of that name, as `containers -k` shows it): the kubelet
/// starts it again, which is a restart.
pub async fn restart_container(id: &str) -> Result<(), Status> {
    let (mut rt, c) = find_container(id).await?;
    rt.stop_container(cri::StopContainerRequest {
        container_id: c.id,
        timeout: 10,
    })
    .await?;
    Ok(())
}

/// A CRI container by the id `containers -k` shows (`namespace/pod:name`, or the pod's
/// `namespace/pod`, or a prefix of its own id), with the runtime that has it.
async fn find_container(
    id: &str,
) -> Result<
    (
        cri::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
        cri::Container,
    ),
    Status,
> {
    let mut rt = runtime(CRI_SOCKET).await?;
    let (pods, mut containers) = pods_and_containers(&mut rt).await?;
    containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    let found = containers.iter().find(|c| {
        let pod = pods.iter().find(|p| p.id == c.pod_sandbox_id);
        let name = c.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("");
        let shown = display_id(pod, name, &c.id);
        shown == id
            || shown.rsplit_once(':').map(|(head, _)| head) == Some(id)
            || (id.len() >= 6 && c.id.starts_with(id))
    });
    let Some(c) = found.cloned() else {
        return Err(Status::not_found(format!(
            "no container \"{id}\" in the CRI (talosctl containers -k lists them)"
        )));
    };
    Ok((rt, c))
}

pub async fn log_path(id: &str) -> Result<PathBuf, Status> {
    let (mut rt, c) = find_container(id).await?;
    let status = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: c.id.clone(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .unwrap_or_default();
    if status.log_path.is_empty() {
        return Err(Status::not_found(format!(
            "container \"{id}\" keeps no log"
        )));
    }
    Ok(PathBuf::from(status.log_path))
}

/// The message of one CRI log line: `<time> <stream> <P|F> <message>`.
pub fn cri_log_message(line: &str) -> &str {
    let mut it = line.splitn(4, ' ');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(_), Some("stdout" | "stderr"), Some(_), Some(msg)) => msg,
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_log_lines() {
        assert_eq!(
            cri_log_message("2026-11-22T07:00:00.1Z stdout F hello world"),
            "hello world"
        );
        assert_eq!(cri_log_message("plain"), "plain");
        assert_eq!(layer_id("layer-sha256:0123456789abcdef"), "0123456789ab");
    }
}
