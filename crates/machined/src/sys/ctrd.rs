//! The system containerd's own images. Images come through the machine
//! config's registry settings (the `oci` client: mirrors, `overridePath`, fallback,
//! credentials, TLS) into the `system` namespace, are unpacked into overlayfs snapshots, and
//! services run as containers from them: a [`Launcher`] for the supervisor, with the mounts,
//! capabilities and cgroup limits a service needs, its output through FIFOs into the
//! service's log like any other service.

use std::collections::HashMap;
use std::io::Read;
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

use crate::sys::cri::{channel, read_blob, SYSTEM_NS, SYSTEM_SOCKET};

pub const SNAPSHOTTER: &str = "overlayfs";
const CHUNK: usize = 1 << 20;

/// Progress of one blob: (digest, bytes so far, total).
pub type Progress = Arc<dyn Fn(&str, u64, u64) + Send + Sync>;

pub fn request<T>(msg: T, lease: Option<&str>) -> Request<T> {
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
    Box::pin(crate::sys::async_stream(move |tx| async move {
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
pub async fn local_image(ch: &Channel, name: &str) -> Result<(ImageConfig, String), Status> {
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
