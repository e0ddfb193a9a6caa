//! The system containerd's own images and containers. Images come through the machine
//! config's registry settings (the `oci` client: mirrors, `overridePath`, fallback,
//! credentials, TLS) into the `system` namespace, are unpacked into overlayfs snapshots, and
//! services run as containers from them: a [`Launcher`] for the supervisor, with the mounts,
//! capabilities and cgroup limits a service needs, its output through FIFOs into the
//! service's log like any other service.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use containerd_client::services::v1 as ctrd;
use containerd_client::services::v1::snapshots as snap;
use containerd_client::types::Descriptor as CDescriptor;
use futures::SinkExt;
use machinery::cri::Registries;
use oci::{Descriptor, ImageConfig, Reference};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::services::supervisor::{Launcher, Task};
use crate::sys::cri::{channel, read_blob, SYSTEM_NS, SYSTEM_SOCKET};

const SNAPSHOTTER: &str = "overlayfs";
const CHUNK: usize = 1 << 20;
/// Where a container's output FIFOs live.
const FIFO_DIR: &str = "/system/run/containers";

/// Progress of one blob: (digest, bytes so far, total).
pub type Progress = Arc<dyn Fn(&str, u64, u64) + Send + Sync>;

fn request<T>(msg: T, lease: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    let md = r.metadata_mut();
    md.insert(
        "containerd-namespace",
        SYSTEM_NS.parse().expect("ascii namespace"),
    );
    if let Some(l) = lease.and_then(|l| l.parse().ok()) {
        md.insert("containerd-lease", l);
    }
    r
}

fn cdesc(d: &Descriptor) -> CDescriptor {
    CDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size as i64,
        annotations: d.annotations.clone().into_iter().collect(),
    }
}

/// A lease keeps what a pull writes from the garbage collector until the image names it.
struct Lease {
    ch: Channel,
    id: String,
}

impl Lease {
    async fn create(ch: &Channel) -> Result<Lease, Status> {
        let id = format!(
            "talos-pull-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        let expire = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        let mut labels = HashMap::new();
        labels.insert(
            "containerd.io/gc.expire".to_string(),
            expire
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        );
        ctrd::leases_client::LeasesClient::new(ch.clone())
            .create(request(
                ctrd::CreateRequest {
                    id: id.clone(),
                    labels,
                },
                None,
            ))
            .await?;
        Ok(Lease { ch: ch.clone(), id })
    }

    async fn delete(self) {
        let _ = ctrd::leases_client::LeasesClient::new(self.ch)
            .delete(request(
                ctrd::DeleteRequest {
                    id: self.id,
                    sync: false,
                },
                None,
            ))
            .await;
    }
}

async fn has_content(ch: &Channel, digest: &str) -> bool {
    ctrd::content_client::ContentClient::new(ch.clone())
        .info(request(
            ctrd::InfoRequest {
                digest: digest.into(),
            },
            None,
        ))
        .await
        .is_ok()
}

/// Write a blob into the content store from chunks as they come; containerd checks the
/// digest on commit.
async fn write_blob(
    ch: &Channel,
    lease: &str,
    desc: &Descriptor,
    labels: HashMap<String, String>,
    mut chunks: tokio::sync::mpsc::Receiver<Result<Vec<u8>, String>>,
    progress: Option<Progress>,
) -> Result<(), Status> {
    use ctrd::WriteAction;
    let reference = format!("talos-{}", desc.digest);
    let (mut tx, rx) = futures::channel::mpsc::channel::<ctrd::WriteContentRequest>(2);
    let (total, expected) = (desc.size as i64, desc.digest.clone());
    let r = reference.clone();
    let feed = async move {
        let mut offset = 0i64;
        while let Some(chunk) = chunks.recv().await {
            let data = chunk.map_err(Status::unavailable)?;
            let n = data.len() as i64;
            let msg = ctrd::WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: r.clone(),
                total,
                expected: expected.clone(),
                offset,
                data,
                labels: HashMap::new(),
            };
            if tx.send(msg).await.is_err() {
                return Ok(());
            }
            offset += n;
            if let Some(p) = &progress {
                p(&expected, offset as u64, total as u64);
            }
        }
        let _ = tx
            .send(ctrd::WriteContentRequest {
                action: WriteAction::Commit as i32,
                r#ref: r,
                total,
                expected,
                offset,
                data: Vec::new(),
                labels,
            })
            .await;
        Ok::<(), Status>(())
    };
    let mut content = ctrd::content_client::ContentClient::new(ch.clone());
    let drain = async {
        let mut responses = content.write(request(rx, Some(lease))).await?.into_inner();
        while responses.message().await?.is_some() {}
        Ok::<(), Status>(())
    };
    let (fed, drained) = tokio::join!(feed, drain);
    let result = fed.and(drained);
    if result.is_err() {
        let _ = ctrd::content_client::ContentClient::new(ch.clone())
            .abort(request(ctrd::AbortRequest { r#ref: reference }, None))
            .await;
    }
    match result {
        Err(s) if s.code() == Code::AlreadyExists => Ok(()),
        r => r,
    }
}

/// Chunks of bytes held in memory.
fn chunks_of(data: Vec<u8>) -> tokio::sync::mpsc::Receiver<Result<Vec<u8>, String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(data.len() / CHUNK + 1);
    for c in data.chunks(CHUNK) {
        let _ = tx.try_send(Ok(c.to_vec()));
    }
    rx
}

/// Chunks read from a blocking reader on a thread of their own.
fn chunks_from(
    mut reader: Box<dyn Read + Send>,
) -> tokio::sync::mpsc::Receiver<Result<Vec<u8>, String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.to_string()));
                    return;
                }
            }
        }
        if filled == 0 {
            return;
        }
        buf.truncate(filled);
        if tx.blocking_send(Ok(buf)).is_err() {
            return;
        }
    });
    rx
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::unavailable)
}

/// Pull an image into the system namespace through the registry settings and unpack it.
/// Returns the image's full name.
pub async fn pull(
    registries: Registries,
    reference: &str,
    progress: Option<Progress>,
) -> Result<String, Status> {
    let r = Reference::parse(reference).map_err(Status::invalid_argument)?;
    let name = r.to_string();
    let client = Arc::new(oci::registry::Client::new(registries));
    let found = {
        let (c, r) = (client.clone(), r.clone());
        blocking(move || c.resolve(&r)).await?
    };
    let ch = channel(SYSTEM_SOCKET).await?;
    let lease = Lease::create(&ch).await?;
    let result = async {
        let m = &found.manifest;
        let config_bytes = {
            let (c, src, d) = (client.clone(), found.source.clone(), m.config.clone());
            blocking(move || {
                let mut data = Vec::new();
                c.blob(&src, &d)?
                    .take(16 << 20)
                    .read_to_end(&mut data)
                    .map_err(|e| format!("{}: {e}", d.digest))?;
                Ok(data)
            })
            .await?
        };
        if oci::sha256(&config_bytes) != m.config.digest {
            return Err(Status::data_loss(format!(
                "pull {name}: the image config does not match its digest"
            )));
        }
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| Status::invalid_argument(format!("pull {name}: image config: {e}")))?;
        if config.rootfs.diff_ids.len() != m.layers.len() {
            return Err(Status::invalid_argument(format!(
                "pull {name}: {} layers but {} diff IDs",
                m.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        for layer in &m.layers {
            if has_content(&ch, &layer.digest).await {
                continue;
            }
            let reader = {
                let (c, src, d) = (client.clone(), found.source.clone(), layer.clone());
                blocking(move || c.blob(&src, &d)).await?
            };
            write_blob(
                &ch,
                &lease.id,
                layer,
                HashMap::new(),
                chunks_from(reader),
                progress.clone(),
            )
            .await
            .map_err(|s| Status::new(s.code(), format!("pull {name}: {}", s.message())))?;
        }
        let chains = oci::chain_ids(&config.rootfs.diff_ids);
        let mut config_labels = HashMap::new();
        if let Some(top) = chains.last() {
            config_labels.insert(
                format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
                top.clone(),
            );
        }
        write_blob(
            &ch,
            &lease.id,
            &m.config,
            config_labels,
            chunks_of(config_bytes),
            None,
        )
        .await?;
        let mut manifest_labels = HashMap::new();
        manifest_labels.insert(
            "containerd.io/gc.ref.content.config".to_string(),
            m.config.digest.clone(),
        );
        for (i, l) in m.layers.iter().enumerate() {
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest.clone(),
            );
        }
        let manifest_desc = Descriptor {
            media_type: found.media_type.clone(),
            digest: found.digest.clone(),
            size: found.bytes.len() as u64,
            annotations: Default::default(),
            platform: None,
        };
        write_blob(
            &ch,
            &lease.id,
            &manifest_desc,
            manifest_labels,
            chunks_of(found.bytes.clone()),
            None,
        )
        .await?;
        unpack(&ch, &lease.id, &m.layers, &config.rootfs.diff_ids).await?;
        put_image(&ch, &name, &manifest_desc).await
    }
    .await;
    lease.delete().await;
    result.map(|_| name)
}

/// `image pull --namespace system`: the pull with each layer's progress (at most every
/// 200 ms per layer), then the image's name.
pub fn pull_stream(registries: Registries, reference: String) -> crate::sys::cri::PullStream {
    use api::machine::image_service_pull_layer_progress::Status as Layer;
    use api::machine::image_service_pull_response::Response as R;
    Box::pin(crate::api::async_stream(move |tx| async move {
        let started = Instant::now();
        let last = Arc::new(std::sync::Mutex::new(HashMap::<String, Instant>::new()));
        let sender = tx.clone();
        let progress: Progress = Arc::new(move |digest, offset, total| {
            let now = Instant::now();
            let mut last = last.lock().expect("progress");
            let due = last
                .get(digest)
                .is_none_or(|t| now.duration_since(*t).as_millis() >= 200);
            if !due && offset < total {
                return;
            }
            last.insert(digest.to_string(), now);
            let status = if offset >= total {
                Layer::DownloadComplete
            } else {
                Layer::Downloading
            };
            let _ = sender.try_send(Ok(api::machine::ImageServicePullResponse {
                response: Some(R::PullProgress(api::machine::ImageServicePullProgress {
                    layer_id: digest
                        .trim_start_matches("sha256:")
                        .chars()
                        .take(12)
                        .collect(),
                    progress: Some(api::machine::ImageServicePullLayerProgress {
                        status: status as i32,
                        elapsed: prost_types::Duration::try_from(started.elapsed()).ok(),
                        offset: offset as i64,
                        total: total as i64,
                    }),
                })),
            }));
        });
        let done = pull(registries, &reference, Some(progress))
            .await
            .map(|name| api::machine::ImageServicePullResponse {
                response: Some(R::Name(name)),
            });
        let _ = tx.send(done).await;
    }))
}

/// Apply each layer onto its parent's snapshot, committed under its chain ID (layers already
/// unpacked are kept).
async fn unpack(
    ch: &Channel,
    lease: &str,
    layers: &[Descriptor],
    diff_ids: &[String],
) -> Result<(), Status> {
    let mut snaps = snap::snapshots_client::SnapshotsClient::new(ch.clone());
    let mut diff = ctrd::diff_client::DiffClient::new(ch.clone());
    let chains = oci::chain_ids(diff_ids);
    let mut parent = String::new();
    for (i, layer) in layers.iter().enumerate() {
        let chain = &chains[i];
        let exists = snaps
            .stat(request(
                snap::StatSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: chain.clone(),
                },
                None,
            ))
            .await
            .is_ok();
        if !exists {
            let key = format!("extract-{} {chain}", lease);
            let mounts = snaps
                .prepare(request(
                    snap::PrepareSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: key.clone(),
                        parent: parent.clone(),
                        labels: HashMap::new(),
                    },
                    Some(lease),
                ))
                .await?
                .into_inner()
                .mounts;
            let applied = diff
                .apply(request(
                    ctrd::ApplyRequest {
                        diff: Some(cdesc(layer)),
                        mounts,
                        payloads: HashMap::new(),
                        sync_fs: false,
                    },
                    Some(lease),
                ))
                .await
                .map(|r| r.into_inner().applied.map(|d| d.digest).unwrap_or_default());
            let committed = match applied {
                Ok(d) if d == diff_ids[i] => snaps
                    .commit(request(
                        snap::CommitSnapshotRequest {
                            snapshotter: SNAPSHOTTER.into(),
                            name: chain.clone(),
                            key: key.clone(),
                            labels: HashMap::new(),
                        },
                        Some(lease),
                    ))
                    .await
                    .map(|_| ()),
                Ok(d) => Err(Status::data_loss(format!(
                    "layer {} unpacks to {d}, the image says {}",
                    layer.digest, diff_ids[i]
                ))),
                Err(s) => Err(s),
            };
            if let Err(s) = committed {
                let _ = snaps
                    .remove(request(
                        snap::RemoveSnapshotRequest {
                            snapshotter: SNAPSHOTTER.into(),
                            key,
                        },
                        None,
                    ))
                    .await;
                return Err(s);
            }
        }
        parent = chain.clone();
    }
    Ok(())
}

async fn put_image(ch: &Channel, name: &str, target: &Descriptor) -> Result<(), Status> {
    let mut images = ctrd::images_client::ImagesClient::new(ch.clone());
    let image = ctrd::Image {
        name: name.into(),
        target: Some(cdesc(target)),
        ..Default::default()
    };
    match images
        .create(request(
            ctrd::CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            },
            None,
        ))
        .await
    {
        Err(s) if s.code() == Code::AlreadyExists => images
            .update(request(
                ctrd::UpdateImageRequest {
                    image: Some(image),
                    update_mask: None,
                    source_date_epoch: None,
                },
                None,
            ))
            .await
            .map(|_| ()),
        r => r.map(|_| ()),
    }
}

/// An image of the system namespace: (its config, the chain ID of its top layer).
async fn local_image(ch: &Channel, name: &str) -> Result<(ImageConfig, String), Status> {
    let image = ctrd::images_client::ImagesClient::new(ch.clone())
        .get(request(ctrd::GetImageRequest { name: name.into() }, None))
        .await?
        .into_inner()
        .image
        .and_then(|i| i.target)
        .ok_or_else(|| Status::not_found(format!("image {name} has no target")))?;
    let mut manifest = read_blob(ch, SYSTEM_NS, &image.digest).await?;
    let value: serde_json::Value = serde_json::from_slice(&manifest)
        .map_err(|e| Status::internal(format!("{name}: manifest: {e}")))?;
    if value.get("manifests").is_some() {
        let index: oci::Index = serde_json::from_value(value)
            .map_err(|e| Status::internal(format!("{name}: index: {e}")))?;
        let d = index
            .for_this_platform()
            .ok_or_else(|| Status::not_found(format!("{name}: no image for this platform")))?;
        manifest = read_blob(ch, SYSTEM_NS, &d.digest).await?;
    }
    let m: oci::Manifest = serde_json::from_slice(&manifest)
        .map_err(|e| Status::internal(format!("{name}: manifest: {e}")))?;
    let config: ImageConfig =
        serde_json::from_slice(&read_blob(ch, SYSTEM_NS, &m.config.digest).await?)
            .map_err(|e| Status::internal(format!("{name}: config: {e}")))?;
    let top = oci::chain_ids(&config.rootfs.diff_ids)
        .pop()
        .ok_or_else(|| Status::internal(format!("{name}: the image has no layers")))?;
    Ok((config, top))
}

/// A bind mount into a service container.
#[derive(Debug, Clone)]
pub struct Bind {
    pub source: PathBuf,
    pub destination: PathBuf,
    pub writable: bool,
}

/// How a service runs as a container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub id: String,
    pub image: String,
    pub binds: Vec<Bind>,
    /// Capabilities kept (all others are dropped).
    pub capabilities: Vec<String>,
    pub pids_limit: i64,
    /// CPU shares relative to other services (1024 is the default).
    pub cpu_shares: u64,
    /// Memory limit in bytes; 0 for none.
    pub memory_limit: i64,
}

/// The cgroup machined itself runs in (the node's, in container mode), where service
/// containers go under `system/`.
fn own_cgroup() -> String {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| *p != "/")
        .or_else(|| {
            text.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
                ctrls.split(',').any(|c| c == "memory").then_some(path)
            })
        })
        .unwrap_or("/");
    path.trim_end_matches('/').to_string()
}

/// The OCI runtime spec of a service container: its own mount, PID and IPC namespaces, the
/// node's network and hostname, a read-only root.
pub fn runtime_spec(spec: &ContainerSpec, args: &[String], env: &[String]) -> serde_json::Value {
    use serde_json::json;
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}),
    ];
    for b in &spec.binds {
        mounts.push(json!({
            "destination": b.destination,
            "type": "bind",
            "source": b.source,
            "options": ["rbind", "nosuid", "nodev", if b.writable { "rw" } else { "ro" }],
        }));
    }
    let caps = &spec.capabilities;
    // As many open files as the node may have (raising it needs CAP_SYS_RESOURCE).
    let mut limit = nix::libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let nofile = if unsafe { nix::libc::getrlimit(nix::libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_max
    } else {
        1024
    };
    let mut resources = json!({
        "devices": [{"allow": false, "access": "rwm"}],
        "pids": {"limit": spec.pids_limit},
        "cpu": {"shares": spec.cpu_shares},
    });
    if spec.memory_limit > 0 {
        resources["memory"] = json!({"limit": spec.memory_limit});
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": env,
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": true},
        "mounts": mounts,
        "linux": {
            "cgroupsPath": format!("{}/system/{}", own_cgroup(), spec.id),
            "resources": resources,
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}],
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    })
}

/// Remove what a previous run of a container left (task, container, snapshot).
async fn remove_container(ch: &Channel, id: &str) {
    let mut tasks = ctrd::tasks_client::TasksClient::new(ch.clone());
    let _ = tasks
        .kill(request(
            ctrd::KillRequest {
                container_id: id.into(),
                exec_id: String::new(),
                signal: 9,
                all: true,
            },
            None,
        ))
        .await;
    let _ = tasks
        .wait(request(
            ctrd::WaitRequest {
                container_id: id.into(),
                exec_id: String::new(),
            },
            None,
        ))
        .await;
    let _ = tasks
        .delete(request(
            ctrd::DeleteTaskRequest {
                container_id: id.into(),
            },
            None,
        ))
        .await;
    let _ = ctrd::containers_client::ContainersClient::new(ch.clone())
        .delete(request(
            ctrd::DeleteContainerRequest { id: id.into() },
            None,
        ))
        .await;
    let _ = snap::snapshots_client::SnapshotsClient::new(ch.clone())
        .remove(request(
            snap::RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.into(),
            },
            None,
        ))
        .await;
    let _ = std::fs::remove_dir_all(Path::new(FIFO_DIR).join(id));
}

fn fifo(path: &Path) -> Result<tokio::net::unix::pipe::Receiver, String> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // Read-write: opening never waits for the writer, and the shim's end may come and go.
    tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

async fn start_container(
    spec: &ContainerSpec,
    argv: &[String],
    registries: Registries,
) -> Result<Task, Status> {
    let ch = channel(SYSTEM_SOCKET).await?;
    let (config, top) = match local_image(&ch, &spec.image).await {
        Ok(found) => found,
        Err(s) if s.code() == Code::NotFound => {
            let name = pull(registries, &spec.image, None).await?;
            local_image(&ch, &name).await?
        }
        Err(s) => return Err(s),
    };
    remove_container(&ch, &spec.id).await;
    for b in spec
        .binds
        .iter()
        .filter(|b| b.writable && !b.source.exists())
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&b.source)
            .map_err(|e| Status::internal(format!("{}: {e}", b.source.display())))?;
    }
    let mounts = snap::snapshots_client::SnapshotsClient::new(ch.clone())
        .prepare(request(
            snap::PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: spec.id.clone(),
                parent: top,
                labels: HashMap::new(),
            },
            None,
        ))
        .await?
        .into_inner()
        .mounts;
    // The image says which program; the service says with which arguments.
    let mut args = if config.config.entrypoint.is_empty() {
        config.config.cmd.clone()
    } else {
        config.config.entrypoint.clone()
    };
    if args.is_empty() {
        args.push(argv.first().cloned().unwrap_or_default());
    }
    args.extend(argv.iter().skip(1).cloned());
    let mut env = config.config.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    let oci_spec = runtime_spec(spec, &args, &env);
    let mut labels = HashMap::new();
    labels.insert("talos.dev/service".to_string(), spec.id.clone());
    ctrd::containers_client::ContainersClient::new(ch.clone())
        .create(request(
            ctrd::CreateContainerRequest {
                container: Some(ctrd::Container {
                    id: spec.id.clone(),
                    labels,
                    image: spec.image.clone(),
                    runtime: Some(ctrd::container::Runtime {
                        name: "io.containerd.runc.v2".into(),
                        options: None,
                    }),
                    spec: Some(prost_types::Any {
                        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                        value: serde_json::to_vec(&oci_spec).expect("a spec serializes"),
                    }),
                    snapshotter: SNAPSHOTTER.into(),
                    snapshot_key: spec.id.clone(),
                    ..Default::default()
                }),
            },
            None,
        ))
        .await?;
    let dir = Path::new(FIFO_DIR).join(&spec.id);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Status::internal(format!("{}: {e}", dir.display())))?;
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let outputs = (|| -> Result<_, String> { Ok((fifo(&out_path)?, fifo(&err_path)?)) })()
        .map_err(Status::internal)?;
    let mut tasks = ctrd::tasks_client::TasksClient::new(ch.clone());
    let created = tasks
        .create(request(
            ctrd::CreateTaskRequest {
                container_id: spec.id.clone(),
                rootfs: mounts,
                stdout: out_path.display().to_string(),
                stderr: err_path.display().to_string(),
                ..Default::default()
            },
            None,
        ))
        .await;
    let pid = match created {
        Ok(r) => r.into_inner().pid,
        Err(s) => {
            remove_container(&ch, &spec.id).await;
            return Err(s);
        }
    };
    // Ask for the exit before starting, so that it cannot be missed.
    let mut waiter = tasks.clone();
    let id = spec.id.clone();
    let exited = tokio::spawn(async move {
        waiter
            .wait(request(
                ctrd::WaitRequest {
                    container_id: id,
                    exec_id: String::new(),
                },
                None,
            ))
            .await
    });
    if let Err(s) = tasks
        .start(request(
            ctrd::StartRequest {
                container_id: spec.id.clone(),
                exec_id: String::new(),
            },
            None,
        ))
        .await
    {
        remove_container(&ch, &spec.id).await;
        return Err(s);
    }
    let (cleanup_ch, id) = (ch.clone(), spec.id.clone());
    Ok(Task {
        pid,
        outputs: vec![Box::new(outputs.0), Box::new(outputs.1)],
        exited: Box::pin(async move {
            let code = match exited.await {
                Ok(Ok(r)) => r.into_inner().exit_status,
                _ => 255,
            };
            std::process::ExitStatus::from_raw(((code & 0xff) << 8) as i32)
        }),
        cleanup: Some(Box::pin(
            async move { remove_container(&cleanup_ch, &id).await },
        )),
    })
}

/// A launcher that runs a service as this container; images are pulled through the
/// registry settings `registries` gives at the time.
pub fn launcher(
    spec: ContainerSpec,
    registries: Arc<dyn Fn() -> Registries + Send + Sync>,
) -> Launcher {
    let spec = Arc::new(spec);
    Arc::new(move |argv| {
        let (spec, registries) = (spec.clone(), registries.clone());
        Box::pin(async move {
            let started = Instant::now();
            let task = start_container(&spec, &argv, registries())
                .await
                .map_err(|s| {
                    format!("container {} from {}: {}", spec.id, spec.image, s.message())
                })?;
            tracing::info!(
                container = spec.id,
                image = spec.image,
                ms = started.elapsed().as_millis() as u64,
                "service container started"
            );
            Ok(task)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_spec_binds_limits_and_drops_capabilities() {
        let spec = ContainerSpec {
            id: "etcd".into(),
            image: "talos.local/etcd:v3.4.23".into(),
            binds: vec![Bind {
                source: "/var/lib/etcd".into(),
                destination: "/var/lib/etcd".into(),
                writable: true,
            }],
            capabilities: Vec::new(),
            pids_limit: 1024,
            cpu_shares: 2048,
            memory_limit: 0,
        };
        let s = runtime_spec(&spec, &["/usr/local/bin/etcd".into()], &[]);
        assert_eq!(
            s["process"]["capabilities"]["bounding"],
            serde_json::json!([])
        );
        assert_eq!(s["linux"]["resources"]["pids"]["limit"], 1024);
        assert!(s["linux"]["cgroupsPath"]
            .as_str()
            .unwrap()
            .ends_with("/system/etcd"));
        let binds: Vec<_> = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["type"] == "bind")
            .collect();
        assert_eq!(binds[0]["options"][3], "rw");
        // The node's network: no network namespace of its own.
        assert!(!s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network"));
    }
}
