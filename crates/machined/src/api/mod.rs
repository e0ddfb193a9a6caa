//! apid: the node's API on :50000. Mutual TLS with the machine CA; every call is checked
//! against the role table before it reaches a handler.

pub mod apply;
mod auth;
mod etcd;
pub mod gateway;
mod images;
mod inspect;
mod kubeconfig;
mod local;
mod netstat;
mod pcap;
mod proxy;
mod roles_table;
mod services;
mod state;
mod storage;
mod system;
mod time;
pub mod trustd;

use std::sync::Arc;

use api::machine::machine_service_server::MachineService;
use api::machine::{
    FeaturesInfo, Hostname, HostnameResponse, PlatformInfo, Version, VersionResponse,
};
use machinery::pki::{self, Key, KeyKind, LeafSpec};
use machinery::secrets::unb64;
use machinery::Config;

use crate::node::Node;
use resources::ResourceType;
use tonic::{Request, Response, Status};
use types::k8s::NodeCordonedSpecSpec;

pub use local::serve_local;
pub use proxy::Proxy;

/// A proxy for this node: it calls other nodes as os:impersonator (needs the machine CA key).
pub fn proxy_from_config(cfg: &Config, own: Vec<String>) -> Result<Proxy, String> {
    let ca = machinery::secrets::machine_ca(cfg).map_err(|e| e.to_string())?;
    let key = Key::generate(KeyKind::Ed25519).map_err(|e| e.to_string())?;
    let spec = LeafSpec {
        organizations: vec![proxy::IMPERSONATOR.to_string()],
        client: true,
        ..Default::default()
    };
    let crt = pki::sign_leaf(&ca, &key, &spec).map_err(|e| e.to_string())?;
    // Other nodes' certificates may come from any CA the config accepts (during a rotation,
    // the old one or the new one).
    let trusted = crate::sys::pki::client_cas(cfg)?;
    Ok(Proxy::new(own, &trusted, &crt, &key.to_pkcs8_pem()))
}

struct Machine {
    node: Arc<Node>,
    applier: apply::Applier,
}

#[tonic::async_trait]
impl MachineService for Machine {
    async fn apply_configuration(
        &self,
        req: Request<api::machine::ApplyConfigurationRequest>,
    ) -> Result<Response<api::machine::ApplyConfigurationResponse>, Status> {
        self.applier.apply(req).await
    }

    async fn generate_client_configuration(
        &self,
        req: Request<api::machine::GenerateClientConfigurationRequest>,
    ) -> Result<Response<api::machine::GenerateClientConfigurationResponse>, Status> {
        let r = req.into_inner();
        const ROLES: [&str; 4] = ["os:admin", "os:operator", "os:reader", "os:etcd:backup"];
        if let Some(bad) = r.roles.iter().find(|x| !ROLES.contains(&x.as_str())) {
            return Err(Status::invalid_argument(format!("unknown role \"{bad}\"")));
        }
        let ttl = r
            .crt_ttl
            .map(|d| std::time::Duration::new(d.seconds.max(0) as u64, 0))
            .filter(|d| !d.is_zero())
            .ok_or_else(|| Status::invalid_argument("crt_ttl is required"))?;
        let cfg = self.node.active_config().map_err(Status::internal)?;
        let ca = machinery::secrets::machine_ca(&cfg).map_err(|_| {
            Status::failed_precondition("this node does not hold the machine CA key")
        })?;
        let ctx = machinery::clientconfig::new_client_context(&ca, &r.roles, ttl, Vec::new())
            .map_err(|e| Status::internal(e.to_string()))?;
        let name = cfg
            .pointer("/cluster/clusterName")
            .or_else(|| {
                cfg.kind("KubeClusterConfig")
                    .find_map(|d| d.value.get("clusterName"))
            })
            .and_then(|v| v.as_str())
            .unwrap_or("talos")
            .to_string();
        let talosconfig = machinery::clientconfig::ClientConfig {
            context: name.clone(),
            contexts: [(name, ctx.clone())].into_iter().collect(),
        };
        let pem = |b: &str| {
            unb64(b)
                .map(String::into_bytes)
                .map_err(|e| Status::internal(e.to_string()))
        };
        Ok(Response::new(
            api::machine::GenerateClientConfigurationResponse {
                messages: vec![api::machine::GenerateClientConfiguration {
                    metadata: None,
                    ca: pem(&ctx.ca)?,
                    crt: pem(&ctx.crt)?,
                    key: pem(&ctx.key)?,
                    talosconfig: talosconfig.encode().into_bytes(),
                }],
            },
        ))
    }

    async fn service_list(
        &self,
        _req: Request<()>,
    ) -> Result<Response<api::machine::ServiceListResponse>, Status> {
        Ok(Response::new(services::list(&self.node.services)))
    }

    async fn service_start(
        &self,
        req: Request<api::machine::ServiceStartRequest>,
    ) -> Result<Response<api::machine::ServiceStartResponse>, Status> {
        let id = req.into_inner().id;
        self.node.services.start(&id).map_err(services::not_found)?;
        Ok(Response::new(api::machine::ServiceStartResponse {
            messages: vec![api::machine::ServiceStart {
                metadata: None,
                resp: format!("Service \"{id}\" started"),
            }],
        }))
    }

    async fn service_stop(
        &self,
        req: Request<api::machine::ServiceStopRequest>,
    ) -> Result<Response<api::machine::ServiceStopResponse>, Status> {
        let id = req.into_inner().id;
        self.node.services.stop(&id).map_err(services::not_found)?;
        Ok(Response::new(api::machine::ServiceStopResponse {
            messages: vec![api::machine::ServiceStop {
                metadata: None,
                resp: format!("Service \"{id}\" stopped"),
            }],
        }))
    }

    async fn service_restart(
        &self,
        req: Request<api::machine::ServiceRestartRequest>,
    ) -> Result<Response<api::machine::ServiceRestartResponse>, Status> {
        let id = req.into_inner().id;
        self.node
            .services
            .restart(&id)
            .map_err(services::not_found)?;
        Ok(Response::new(api::machine::ServiceRestartResponse {
            messages: vec![api::machine::ServiceRestart {
                metadata: None,
                resp: format!("Service \"{id}\" restarted"),
            }],
        }))
    }

    async fn netstat(
        &self,
        req: Request<api::machine::NetstatRequest>,
    ) -> Result<Response<api::machine::NetstatResponse>, Status> {
        let r = req.into_inner();
        tokio::task::spawn_blocking(move || netstat::netstat(&r))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map(Response::new)
    }

    type PacketCaptureStream = services::DataStream;

    async fn packet_capture(
        &self,
        req: Request<api::machine::PacketCaptureRequest>,
    ) -> Result<Response<Self::PacketCaptureStream>, Status> {
        pcap::capture(req.into_inner()).map(Response::new)
    }

    /// A service (a system container or process) by its id, or with -k a CRI container.
    async fn restart(
        &self,
        req: Request<api::machine::RestartRequest>,
    ) -> Result<Response<api::machine::RestartResponse>, Status> {
        let r = req.into_inner();
        if r.namespace == crate::sys::cri::CRI_NS
            || r.driver == api::common::ContainerDriver::Cri as i32
        {
            crate::sys::cri::restart_container(&r.id).await?;
        } else {
            self.node
                .services
                .restart(&r.id)
                .map_err(services::not_found)?;
        }
        Ok(Response::new(api::machine::RestartResponse {
            messages: vec![api::machine::Restart { metadata: None }],
        }))
    }

    type LogsStream = services::DataStream;

    async fn logs(
        &self,
        req: Request<api::machine::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let r = req.into_inner();
        if r.namespace == crate::sys::cri::CRI_NS
            || r.driver == api::common::ContainerDriver::Cri as i32
        {
            let path = crate::sys::cri::log_path(&r.id).await?;
            return Ok(Response::new(services::container_logs(
                path,
                r.tail_lines,
                r.follow,
            )));
        }
        let stream = services::logs(&self.node.services, &r.id, r.tail_lines, r.follow)?;
        Ok(Response::new(stream))
    }

    async fn load_avg(
        &self,
        _req: Request<()>,
    ) -> Result<Response<api::machine::LoadAvgResponse>, Status> {
        system::load_avg().map(Response::new)
    }

    async fn cpu_info(
        &self,
        _req: Request<()>,
    ) -> Result<Response<api::machine::CpuInfoResponse>, Status> {
        system::cpu_info().map(Response::new)
    }

    async fn memory(
        &self,
        _req: Request<()>,
    ) -> Result<Response<api::machine::MemoryResponse>, Status> {
        system::memory().map(Response::new)
    }

    async fn mounts(
        &self,
        _req: Request<()>,
    ) -> Result<Response<api::machine::MountsResponse>, Status> {
        system::mounts().map(Response::new)
    }

    async fn processes(
        &self,
        _req: Request<()>,
    ) -> Result<Response<api::machine::ProcessesResponse>, Status> {
        Ok(Response::new(api::machine::ProcessesResponse {
            messages: vec![api::machine::Process {
                metadata: None,
                processes: system::processes(),
            }],
        }))
    }

    type DmesgStream = services::DataStream;

    async fn dmesg(
        &self,
        req: Request<api::machine::DmesgRequest>,
    ) -> Result<Response<Self::DmesgStream>, Status> {
        system::dmesg(req.into_inner().follow).map(Response::new)
    }

    type EventsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<api::machine::Event, Status>> + Send>>;

    async fn events(
        &self,
        req: Request<api::machine::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let r = req.into_inner();
        let tail = crate::events::Tail {
            events: usize::try_from(r.tail_events).unwrap_or(0),
            after_id: (!r.tail_id.is_empty())
                .then(|| r.tail_id.parse::<u64>())
                .transpose()
                .map_err(|_| {
                    Status::invalid_argument(format!("invalid event id \"{}\"", r.tail_id))
                })?,
            seconds: (r.tail_seconds > 0)
                .then(|| std::time::Duration::from_secs(r.tail_seconds as u64)),
        };
        let (past, rx) = self.node.events.subscribe(&tail);
        let to_pb = |e: &crate::events::NodeEvent| api::machine::Event {
            metadata: None,
            data: Some(prost_types::Any {
                type_url: e.type_url.clone(),
                value: e.data.clone(),
            }),
            id: format!("{:020}", e.id),
            actor_id: String::new(),
        };
        let first: Vec<Result<api::machine::Event, Status>> =
            past.iter().map(|e| Ok(to_pb(e))).collect();
        let live = futures::stream::unfold(rx, move |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some((Ok(to_pb(&e)), rx)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(futures::StreamExt::chain(
            futures::stream::iter(first),
            live,
        ))))
    }

    type CopyStream = services::DataStream;

    async fn copy(
        &self,
        req: Request<api::machine::CopyRequest>,
    ) -> Result<Response<Self::CopyStream>, Status> {
        system::copy(&req.into_inner().root_path).map(Response::new)
    }

    type DiskUsageStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<api::machine::DiskUsageInfo, Status>> + Send>,
    >;

    async fn disk_usage(
        &self,
        req: Request<api::machine::DiskUsageRequest>,
    ) -> Result<Response<Self::DiskUsageStream>, Status> {
        let r = req.into_inner();
        let paths = if r.paths.is_empty() {
            vec!["/".to_string()]
        } else {
            r.paths
        };
        let items = tokio::task::spawn_blocking(move || {
            system::disk_usage(&paths, r.recursion_depth, r.all, r.threshold)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(Box::pin(futures::stream::iter(
            items.into_iter().map(Ok),
        ))))
    }

    type ReadStream = services::DataStream;

    async fn read(
        &self,
        req: Request<api::machine::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        system::read(&req.into_inner().path).map(Response::new)
    }

    type ListStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<api::machine::FileInfo, Status>> + Send>,
    >;

    async fn list(
        &self,
        req: Request<api::machine::ListRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let r = req.into_inner();
        let items = system::list(&r.root, r.recurse, r.recursion_depth)?;
        Ok(Response::new(Box::pin(futures::stream::iter(
            items.into_iter().map(Ok),
        ))))
    }

    async fn reboot(
        &self,
        _req: Request<api::machine::RebootRequest>,
    ) -> Result<Response<api::machine::RebootResponse>, Status> {
        after_reply(&self.node, self.node.reboot.clone());
        Ok(Response::new(api::machine::RebootResponse {
            messages: vec![api::machine::Reboot {
                metadata: None,
                actor_id: String::new(),
            }],
        }))
    }

    async fn reset(
        &self,
        req: Request<api::machine::ResetRequest>,
    ) -> Result<Response<api::machine::ResetResponse>, Status> {
        let r = req.into_inner();
        const LABELS: [&str; 2] = ["STATE", "EPHEMERAL"];
        let labels: Vec<String> = r
            .system_partitions_to_wipe
            .iter()
            .filter(|p| p.wipe)
            .map(|p| p.label.clone())
            .collect();
        if let Some(bad) = labels.iter().find(|l| !LABELS.contains(&l.as_str())) {
            return Err(Status::invalid_argument(format!(
                "unknown partition label \"{bad}\": expected STATE or EPHEMERAL"
            )));
        }
        // A graceful reset of a control plane leaves etcd first, so that the cluster does not
        // keep a member that will never come back.
        if r.graceful {
            if let Some(e) = self.node.etcd().filter(|e| e.is_member()) {
                e.leave(&self.node.services).await.map_err(|s| {
                    Status::new(
                        s.code(),
                        format!(
                            "{}; reset with --graceful=false to skip leaving etcd",
                            s.message()
                        ),
                    )
                })?;
            }
        }
        // Other nodes stop listing this one at once.
        self.node.discovery.leave().await;
        self.node.services.shutdown().await;
        let wiped = self.node.wipe(&labels).map_err(Status::internal)?;
        tracing::info!(?wiped, graceful = r.graceful, "reset");
        self.node
            .forget
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let signal = if r.reboot {
            self.node.reboot.clone()
        } else {
            self.node.shutdown.clone()
        };
        after_reply(&self.node, signal);
        Ok(Response::new(api::machine::ResetResponse {
            messages: vec![api::machine::Reset {
                metadata: None,
                actor_id: String::new(),
            }],
        }))
    }

    async fn upgrade(
        &self,
        req: Request<api::machine::UpgradeRequest>,
    ) -> Result<Response<api::machine::UpgradeResponse>, Status> {
        let r = req.into_inner();
        if r.image.is_empty() {
            return Err(Status::invalid_argument(
                "an installer image is required (--image)",
            ));
        }
        oci::Reference::parse(&r.image)
            .map_err(|e| Status::invalid_argument(format!("--image {}: {e}", r.image)))?;
        crate::boot::upgrade::check(self.node.mode).map_err(Status::failed_precondition)?;
        // A control plane whose EPHEMERAL goes leaves etcd first (and joins again, empty, on
        // the new system); one that cannot leave is told before anything is done.
        let member = self.node.etcd().filter(|e| e.is_member() && !r.preserve);
        if let Some(e) = &member {
            if r.stage {
                return Err(Status::failed_precondition(
                    "a staged upgrade of a control plane keeps its etcd data: add --preserve",
                ));
            }
            e.can_leave().await.map_err(|s| {
                Status::new(
                    s.code(),
                    format!(
                        "{}; upgrade with --preserve to keep its etcd data",
                        s.message()
                    ),
                )
            })?;
        }
        let config = self.node.active_config().map_err(Status::internal)?;
        let image = r.image.clone();
        let mode = self.node.mode;
        self.node.modules.loaded().await;
        let slot =
            crate::sys::blocking(move || crate::boot::upgrade::install(&config, &image, mode))
                .await
                .map_err(Status::internal)?;
        if let Some(e) = member {
            e.leave(&self.node.services).await?;
        }
        if !r.preserve {
            self.node
                .wipe(&["EPHEMERAL".to_string()])
                .map_err(Status::internal)?;
        }
        tracing::info!(image = %r.image, slot, preserve = r.preserve, stage = r.stage, "upgrade");
        let ack = if r.stage {
            format!(
                "Upgrade staged: {} starts at the next reboot (boot slot {slot})",
                r.image
            )
        } else {
            after_reply(&self.node, self.node.reboot.clone());
            format!(
                "Upgrade request received: rebooting into {} (boot slot {slot})",
                r.image
            )
        };
        Ok(Response::new(api::machine::UpgradeResponse {
            messages: vec![api::machine::Upgrade {
                metadata: None,
                ack,
                actor_id: String::new(),
            }],
        }))
    }

    async fn rollback(
        &self,
        _req: Request<api::machine::RollbackRequest>,
    ) -> Result<Response<api::machine::RollbackResponse>, Status> {
        let mode = self.node.mode;
        self.node.modules.loaded().await;
        tokio::task::spawn_blocking(move || crate::boot::upgrade::rollback(mode))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::failed_precondition)?;
        after_reply(&self.node, self.node.reboot.clone());
        Ok(Response::new(api::machine::RollbackResponse {
            messages: vec![api::machine::Rollback { metadata: None }],
        }))
    }

    async fn shutdown(
        &self,
        _req: Request<api::machine::ShutdownRequest>,
    ) -> Result<Response<api::machine::ShutdownResponse>, Status> {
        after_reply(&self.node, self.node.shutdown.clone());
        Ok(Response::new(api::machine::ShutdownResponse {
            messages: vec![api::machine::Shutdown {
                metadata: None,
                actor_id: String::new(),
            }],
        }))
    }

    async fn stats(
        &self,
        req: Request<api::machine::StatsRequest>,
    ) -> Result<Response<api::machine::StatsResponse>, Status> {
        let r = req.into_inner();
        let namespace = if r.namespace.is_empty() {
            "system".to_string()
        } else {
            r.namespace
        };
        if namespace == crate::sys::cri::CRI_NS {
            return Ok(Response::new(api::machine::StatsResponse {
                messages: vec![api::machine::Stats {
                    metadata: None,
                    stats: crate::sys::cri::cri_stats().await?,
                }],
            }));
        }
        Ok(Response::new(system::stats(
            &self.node.services,
            &namespace,
        )))
    }

    async fn containers(
        &self,
        req: Request<api::machine::ContainersRequest>,
    ) -> Result<Response<api::machine::ContainersResponse>, Status> {
        let r = req.into_inner();
        let containers = if r.namespace == crate::sys::cri::CRI_NS {
            crate::sys::cri::cri_containers().await?
        } else if r.namespace.is_empty() || r.namespace == crate::sys::cri::SYSTEM_NS {
            let mut all = system::service_containers(&self.node.services);
            // Without containerd (maintenance, or not running yet) the services are all there is.
            // A service run as a container is shown as the container (with its image).
            if let Ok(more) = crate::sys::cri::system_containers().await {
                for c in more {
                    match all.iter_mut().find(|s| s.id == c.id) {
                        Some(s) => *s = c,
                        None => all.push(c),
                    }
                }
            }
            all
        } else {
            return Err(Status::invalid_argument(format!(
                "unknown containerd namespace \"{}\": expected system or k8s.io",
                r.namespace
            )));
        };
        Ok(Response::new(api::machine::ContainersResponse {
            messages: vec![api::machine::Container {
                metadata: None,
                containers,
            }],
        }))
    }

    async fn bootstrap(
        &self,
        req: Request<api::machine::BootstrapRequest>,
    ) -> Result<Response<api::machine::BootstrapResponse>, Status> {
        etcd::bootstrap(&self.node, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn etcd_member_list(
        &self,
        req: Request<api::machine::EtcdMemberListRequest>,
    ) -> Result<Response<api::machine::EtcdMemberListResponse>, Status> {
        etcd::member_list(&self.node, req.into_inner().query_local)
            .await
            .map(Response::new)
    }

    async fn etcd_remove_member_by_id(
        &self,
        req: Request<api::machine::EtcdRemoveMemberByIdRequest>,
    ) -> Result<Response<api::machine::EtcdRemoveMemberByIdResponse>, Status> {
        etcd::remove_member(&self.node, req.into_inner().member_id)
            .await
            .map(Response::new)
    }

    async fn etcd_leave_cluster(
        &self,
        _req: Request<api::machine::EtcdLeaveClusterRequest>,
    ) -> Result<Response<api::machine::EtcdLeaveClusterResponse>, Status> {
        etcd::leave(&self.node).await.map(Response::new)
    }

    async fn etcd_forfeit_leadership(
        &self,
        _req: Request<api::machine::EtcdForfeitLeadershipRequest>,
    ) -> Result<Response<api::machine::EtcdForfeitLeadershipResponse>, Status> {
        etcd::forfeit_leadership(&self.node)
            .await
            .map(Response::new)
    }

    async fn etcd_recover(
        &self,
        req: Request<tonic::Streaming<api::common::Data>>,
    ) -> Result<Response<api::machine::EtcdRecoverResponse>, Status> {
        etcd::recover(&self.node, req.into_inner())
            .await
            .map(Response::new)
    }

    type KubeconfigStream = services::DataStream;

    async fn kubeconfig(
        &self,
        _req: Request<()>,
    ) -> Result<Response<Self::KubeconfigStream>, Status> {
        kubeconfig::kubeconfig(&self.node).map(Response::new)
    }

    type EtcdSnapshotStream = services::DataStream;

    async fn etcd_snapshot(
        &self,
        _req: Request<api::machine::EtcdSnapshotRequest>,
    ) -> Result<Response<Self::EtcdSnapshotStream>, Status> {
        etcd::snapshot(&self.node).await.map(Response::new)
    }

    async fn etcd_alarm_list(
        &self,
        _req: Request<()>,
    ) -> Result<Response<api::machine::EtcdAlarmListResponse>, Status> {
        etcd::alarm_list(&self.node).await.map(Response::new)
    }

    async fn etcd_alarm_disarm(
        &self,
        _req: Request<()>,
    ) -> Result<Response<api::machine::EtcdAlarmDisarmResponse>, Status> {
        etcd::alarm_disarm(&self.node).await.map(Response::new)
    }

    async fn etcd_defragment(
        &self,
        _req: Request<()>,
    ) -> Result<Response<api::machine::EtcdDefragmentResponse>, Status> {
        etcd::defragment(&self.node).await.map(Response::new)
    }

    async fn etcd_status(
        &self,
        _req: Request<()>,
    ) -> Result<Response<api::machine::EtcdStatusResponse>, Status> {
        etcd::status(&self.node).await.map(Response::new)
    }

    async fn etcd_downgrade_validate(
        &self,
        req: Request<api::machine::EtcdDowngradeValidateRequest>,
    ) -> Result<Response<api::machine::EtcdDowngradeValidateResponse>, Status> {
        let v = req.into_inner().version;
        let cluster_version =
            etcd::downgrade(&self.node, etcd_client::DowngradeOptions::Validate(v)).await?;
        Ok(Response::new(api::machine::EtcdDowngradeValidateResponse {
            messages: vec![api::machine::EtcdDowngradeValidate {
                metadata: None,
                cluster_downgrade: Some(api::machine::EtcdClusterDowngrade { cluster_version }),
            }],
        }))
    }

    async fn etcd_downgrade_enable(
        &self,
        req: Request<api::machine::EtcdDowngradeEnableRequest>,
    ) -> Result<Response<api::machine::EtcdDowngradeEnableResponse>, Status> {
        let v = req.into_inner().version;
        let cluster_version =
            etcd::downgrade(&self.node, etcd_client::DowngradeOptions::Enable(v)).await?;
        Ok(Response::new(api::machine::EtcdDowngradeEnableResponse {
            messages: vec![api::machine::EtcdDowngradeEnable {
                metadata: None,
                cluster_downgrade: Some(api::machine::EtcdClusterDowngrade { cluster_version }),
            }],
        }))
    }

    async fn etcd_downgrade_cancel(
        &self,
        _req: Request<()>,
    ) -> Result<Response<api::machine::EtcdDowngradeCancelResponse>, Status> {
        let cluster_version =
            etcd::downgrade(&self.node, etcd_client::DowngradeOptions::Cancel).await?;
        Ok(Response::new(api::machine::EtcdDowngradeCancelResponse {
            messages: vec![api::machine::EtcdDowngradeCancel {
                metadata: None,
                cluster_downgrade: Some(api::machine::EtcdClusterDowngrade { cluster_version }),
            }],
        }))
    }

    async fn version(&self, _req: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            messages: vec![Version {
                metadata: None,
                version: Some(system::version_info()),
                platform: Some(PlatformInfo {
                    name: "container".into(),
                    mode: "container".into(),
                }),
                features: Some(FeaturesInfo { rbac: true }),
            }],
        }))
    }

    async fn hostname(&self, _req: Request<()>) -> Result<Response<HostnameResponse>, Status> {
        let hostname = self
            .node
            .hostname()
            .ok_or_else(|| Status::unavailable("hostname is not known yet"))?;
        Ok(Response::new(HostnameResponse {
            messages: vec![Hostname {
                metadata: None,
                hostname,
            }],
        }))
    }
}

/// Signal the node (reboot, reset, shut down) a moment after the reply has gone out (a
/// second: the reply may still cross apid and a proxying control plane on a loaded machine).
/// The node is cordoned first (its Node unschedulable; the next boot lifts it).
fn after_reply(node: &Node, signal: Arc<tokio::sync::Notify>) {
    let cordon = NodeCordonedSpecSpec::resource("cordoned", NodeCordonedSpecSpec {});
    let _ = node.state.create(cordon);
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        signal.notify_one();
    });
}
