//! The node's resources and the controllers that derive them from the machine config:
//! MachineConfig → MachineType, HostnameStatus; Version is published at boot.

use machinery::Config;
use resources::{
    Controller, ControllerError, ControllerInfo, Definition, Input, Output, Pointer,
    ReconcileContext, Registry, Resource, Runtime, RuntimeHandle, State,
};
use serde::Serialize;

pub const CONFIG_NS: &str = "config";
pub const NETWORK_NS: &str = "network";
pub const RUNTIME_NS: &str = "runtime";
pub const MACHINE_CONFIG: &str = "MachineConfigs.config.talos.dev";
pub const MACHINE_TYPE: &str = "MachineTypes.config.talos.dev";
pub const HOSTNAME_STATUS: &str = "HostnameStatuses.net.talos.dev";
pub const VERSION: &str = "Versions.runtime.talos.dev";
pub const K8S_NS: &str = "k8s";
pub const NODENAME: &str = "Nodenames.kubernetes.talos.dev";

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodenameSpec {
    pub nodename: String,
    pub skip_node_registration: bool,
}
pub const TIME_STATUS: &str = "TimeStatuses.v1alpha1.talos.dev";
pub const MACHINE_CONFIG_ID: &str = "v1alpha1";

pub const TAG: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// Write `spec` to machined's own resource `id` of type `ty` in the runtime namespace:
/// created when missing, updated when its spec differs, left alone when it is the same.
pub fn publish<S: PartialEq + resources::Spec>(
    state: &State,
    ty: &str,
    id: &str,
    spec: S,
) -> resources::Result<()> {
    match state.get(&Pointer::new(RUNTIME_NS, ty, id)) {
        Ok(cur) if cur.spec::<S>() == Some(&spec) => Ok(()),
        Ok(cur) => state.update(cur.with_spec(spec)).map(drop),
        Err(_) => {
            let mut r = Resource::new(RUNTIME_NS, ty, id, spec);
            r.metadata.owner = "machined".into();
            state.create(r).map(drop)
        }
    }
}

/// The active machine config, as its canonical text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MachineConfigSpec(pub String);

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostnameSpec {
    pub hostname: String,
    pub domainname: String,
}

/// Time sync: a node in container mode (and a process node) keeps the host's clock, which is
/// the host's to synchronize; `machine.time.disabled` turns reporting off.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeStatusSpec {
    pub synced: bool,
    pub epoch: u32,
    pub sync_disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionSpec {
    pub version: String,
}

/// A booted node's state: definitions registered, boot resources published, controllers running.
pub struct Node {
    pub state: State,
    pub registry: Registry,
    /// Where the persisted config (STATE) lives, if anywhere.
    pub state_file: Option<std::path::PathBuf>,
    /// Signalled to restart the node (re-exec machined, which boots from STATE).
    pub reboot: std::sync::Arc<tokio::sync::Notify>,
    /// Signalled to stop the node.
    pub shutdown: std::sync::Arc<tokio::sync::Notify>,
    /// The node's services.
    pub services: crate::services::Supervisor,
    /// The node's event stream.
    pub events: crate::events::Events,
    /// A config applied in maintenance mode with nowhere to persist it: handed to the next
    /// boot through USERDATA.
    pub handover: std::sync::Mutex<Option<String>>,
    /// The EPHEMERAL directory, if the node has one.
    pub ephemeral: std::sync::Mutex<Option<std::path::PathBuf>>,
    /// Set by a reset: the next boot forgets the config it was given.
    pub forget: std::sync::atomic::AtomicBool,
    /// The cluster discovery client.
    pub discovery: crate::discovery::Handle,
    /// etcd, on a control plane in container mode.
    pub etcd: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<crate::etcd::Etcd>>>,
    /// The registered controllers' declarations (for `inspect dependencies`).
    pub controllers: Vec<ControllerInfo>,
    _controllers: RuntimeHandle,
}

impl Node {
    pub fn start(
        config: &Config,
        state_file: Option<std::path::PathBuf>,
        log_dir: Option<std::path::PathBuf>,
    ) -> Result<Node, String> {
        let state = State::new();
        let registry = Registry::new(state.clone()).map_err(|e| e.to_string())?;
        for (ns, desc) in [
            (CONFIG_NS, "Talos node configuration."),
            (NETWORK_NS, "Networking resources."),
            (
                crate::network::NETWORK_CONFIG_NS,
                "Networking configuration resources.",
            ),
            (RUNTIME_NS, "Talos v1alpha1 subsystems glue resources."),
            (
                crate::secrets::SECRETS_NS,
                "Resources with secret material.",
            ),
            (
                crate::discovery::CLUSTER_NS,
                "Cluster membership resources.",
            ),
            (K8S_NS, "Kubernetes all around resources."),
        ] {
            registry
                .register_namespace(ns, desc)
                .map_err(|e| e.to_string())?;
        }
        for def in [
            Definition::new(MACHINE_CONFIG, CONFIG_NS, &[]).sensitive(),
            Definition::new(MACHINE_TYPE, CONFIG_NS, &[]).column("Type", "{@}"),
            Definition::new(
                crate::secrets::API_CERTIFICATES,
                crate::secrets::SECRETS_NS,
                &[],
            )
            .sensitive(),
            Definition::new(
                crate::discovery::IDENTITY,
                crate::discovery::CLUSTER_NS,
                &["identity"],
            )
            .column("ID", "{.nodeId}"),
            Definition::new(
                crate::discovery::AFFILIATE,
                crate::discovery::CLUSTER_NS,
                &["affiliate"],
            )
            .column("Hostname", "{.hostname}")
            .column("Machine Type", "{.machineType}")
            .column("Addresses", "{.addresses}"),
            Definition::new(
                crate::discovery::MEMBER,
                crate::discovery::CLUSTER_NS,
                &["member"],
            )
            .column("Hostname", "{.hostname}")
            .column("Machine Type", "{.machineType}")
            .column("OS", "{.operatingSystem}")
            .column("Addresses", "{.addresses}"),
            Definition::new(NODENAME, K8S_NS, &["nodename"]).column("Nodename", "{.nodename}"),
            Definition::new(
                crate::logship::LOG_DESTINATION_STATUS,
                RUNTIME_NS,
                &["logdestination", "logdestinations"],
            )
            .column("Connected", "{.connected}")
            .column("Queued", "{.queued}")
            .column("Sent", "{.sent}")
            .column("Dropped", "{.dropped}"),
            Definition::new(HOSTNAME_STATUS, NETWORK_NS, &["hostname"])
                .column("Hostname", "{.hostname}")
                .column("Domainname", "{.domainname}"),
            Definition::new(VERSION, RUNTIME_NS, &[]).column("Version", "{.version}"),
            Definition::new(
                crate::extensions::EXTENSION_STATUS,
                RUNTIME_NS,
                &["extensions"],
            )
            .column("Name", "{.metadata.name}")
            .column("Version", "{.metadata.version}"),
            Definition::new(
                crate::volumes::VOLUME_STATUS,
                RUNTIME_NS,
                &["volumestatus", "vs"],
            )
            .column("Type", "{.type}")
            .column("Phase", "{.phase}")
            .column("Location", "{.location}")
            .column("Size", "{.prettySize}"),
            Definition::new(crate::network::LINK_STATUS, NETWORK_NS, &["link", "links"])
                .column("Alias", "{.alias}")
                .column("Type", "{.type}")
                .column("Kind", "{.kind}")
                .column("Hw Addr", "{.hardwareAddr}")
                .column("Oper State", "{.operationalState}")
                .column("Link State", "{.linkState}"),
            Definition::new(
                crate::network::ADDRESS_STATUS,
                NETWORK_NS,
                &["address", "addresses"],
            )
            .column("Address", "{.address}")
            .column("Link", "{.linkName}"),
            Definition::new(
                crate::network::ROUTE_STATUS,
                NETWORK_NS,
                &["route", "routes"],
            )
            .column("Destination", "{.dst}")
            .column("Gateway", "{.gateway}")
            .column("Link", "{.outLinkName}")
            .column("Metric", "{.priority}"),
            Definition::new(crate::network::ADDRESS_SPEC, NETWORK_NS, &[]),
            Definition::new(crate::network::ROUTE_SPEC, NETWORK_NS, &[]),
            Definition::new(crate::network::HOSTNAME_SPEC, NETWORK_NS, &[]),
            Definition::new(crate::network::OPERATOR_SPEC, NETWORK_NS, &[]),
            Definition::new(crate::network::RESOLVER_SPEC, NETWORK_NS, &[])
                .column("Layer", "{.layer}")
                .column("Resolvers", "{.dnsServers}")
                .column("Search Domains", "{.searchDomains}"),
            Definition::new(crate::network::RESOLVER_STATUS, NETWORK_NS, &["resolvers"])
                .column("Resolvers", "{.dnsServers}")
                .column("Search Domains", "{.searchDomains}"),
            Definition::new(crate::network::TIME_SERVER_SPEC, NETWORK_NS, &[])
                .column("Layer", "{.layer}")
                .column("Timeservers", "{.timeServers}")
                .column("UseNTS", "{.useNTS}"),
            Definition::new(
                crate::network::TIME_SERVER_STATUS,
                NETWORK_NS,
                &["timeserver", "timeservers"],
            )
            .column("Timeservers", "{.timeServers}")
            .column("UseNTS", "{.useNTS}"),
            Definition::new(
                crate::network::NETWORK_STATUS,
                NETWORK_NS,
                &["netstatus", "netstatuses"],
            )
            .column("Address", "{.addressReady}")
            .column("Connectivity", "{.connectivityReady}")
            .column("Hostname", "{.hostnameReady}")
            .column("Etc", "{.etcFilesReady}"),
            Definition::new(crate::network::LINK_SPEC, NETWORK_NS, &[]),
            Definition::new(crate::network::NODE_ADDRESS, NETWORK_NS, &[])
                .column("Addresses", "{.addresses}")
                .column("SortAlgorithm", "{.sortAlgorithm}"),
            Definition::new(TIME_STATUS, RUNTIME_NS, &[]).column("Synced", "{.synced}"),
            Definition::new(
                crate::kernel::KERNEL_PARAM_STATUS,
                RUNTIME_NS,
                &["sysctls", "kernelparameters", "kernelparams"],
            )
            .column("Current", "{.current}")
            .column("Default", "{.default}")
            .column("Unsupported", "{.unsupported}"),
            Definition::new(crate::services::SERVICE_TYPE, RUNTIME_NS, &["svc"])
                .column("Running", "{.running}")
                .column("Healthy", "{.healthy}")
                .column("Health Unknown", "{.unknown}"),
        ] {
            registry.register(def).map_err(|e| e.to_string())?;
        }
        let mut version = Resource::new(
            RUNTIME_NS,
            VERSION,
            "version",
            VersionSpec {
                version: TAG.into(),
            },
        );
        version.metadata.owner = "machined".into();
        state.create(version).map_err(|e| e.to_string())?;
        for (i, spec) in crate::extensions::booted().into_iter().enumerate() {
            let mut r = Resource::new(
                RUNTIME_NS,
                crate::extensions::EXTENSION_STATUS,
                &i.to_string(),
                spec,
            );
            r.metadata.owner = "machined".into();
            state.create(r).map_err(|e| e.to_string())?;
        }
        let mut mc = Resource::new(
            CONFIG_NS,
            MACHINE_CONFIG,
            MACHINE_CONFIG_ID,
            MachineConfigSpec(config.encode_canonical()),
        );
        mc.metadata.owner = "machined".into();
        state.create(mc).map_err(|e| e.to_string())?;
        let mut identity = Resource::new(
            crate::discovery::CLUSTER_NS,
            crate::discovery::IDENTITY,
            "local",
            crate::discovery::IdentitySpec {
                node_id: crate::discovery::node_id(state_file.as_ref().and_then(|f| f.parent())),
            },
        );
        identity.metadata.owner = "machined".into();
        state.create(identity).map_err(|e| e.to_string())?;

        let events = crate::events::Events::default();
        let services =
            crate::services::Supervisor::new(state.clone(), log_dir).with_events(events.clone());
        let mut rt = Runtime::new(state.clone());
        if crate::container::rooted() {
            rt.register(crate::cri::CriConfigController {
                services: services.clone(),
            })
            .map_err(|e| e.to_string())?;
        }
        rt.register(MachineTypeController)
            .map_err(|e| e.to_string())?;
        rt.register(HostnameController).map_err(|e| e.to_string())?;
        rt.register(TimeStatusController)
            .map_err(|e| e.to_string())?;
        rt.register(crate::secrets::ApiCertController {
            ttl: std::time::Duration::from_secs(24 * 3600),
        })
        .map_err(|e| e.to_string())?;
        let cmdline = crate::netconfig::Cmdline::read();
        let logging_kernel = cmdline.logging_kernel.clone();
        crate::network::register(&mut rt, crate::container::rooted(), cmdline)?;
        let etcd: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<crate::etcd::Etcd>>> =
            Default::default();
        rt.register(crate::vip::VipController::new(etcd.clone()))
            .map_err(|e| e.to_string())?;
        rt.register(crate::kernel::KernelParamController::new(
            crate::container::rooted(),
        ))
        .map_err(|e| e.to_string())?;
        rt.register(crate::logship::LogShippingController {
            cmdline_kernel: logging_kernel,
        })
        .map_err(|e| e.to_string())?;
        let discovery = crate::discovery::Handle::default();
        rt.register(crate::discovery::ConfigController {
            handle: discovery.clone(),
        })
        .map_err(|e| e.to_string())?;
        rt.register(crate::discovery::MemberController {
            handle: discovery.clone(),
            waiting: false,
        })
        .map_err(|e| e.to_string())?;
        Ok(Node {
            discovery,
            state,
            registry,
            state_file,
            reboot: Default::default(),
            shutdown: Default::default(),
            services,
            events,
            handover: Default::default(),
            ephemeral: Default::default(),
            forget: Default::default(),
            etcd,
            controllers: rt.controllers().to_vec(),
            _controllers: rt.start(),
        })
    }

    /// The active config.
    pub fn active_config(&self) -> Result<Config, String> {
        let r = self
            .state
            .get(&Pointer::new(CONFIG_NS, MACHINE_CONFIG, MACHINE_CONFIG_ID))
            .map_err(|e| e.to_string())?;
        let text = &r
            .spec::<MachineConfigSpec>()
            .ok_or("machine config spec")?
            .0;
        Config::parse(text).map_err(|e| e.to_string())
    }

    /// Make `cfg` the active config; controllers react at once.
    pub fn set_active(&self, cfg: &Config) -> Result<(), String> {
        let ptr = Pointer::new(CONFIG_NS, MACHINE_CONFIG, MACHINE_CONFIG_ID);
        let cur = self.state.get(&ptr).map_err(|e| e.to_string())?;
        self.state
            .update(cur.with_spec(MachineConfigSpec(cfg.encode_canonical())))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Write `cfg` to STATE atomically (temporary file, fsync, rename, fsync the directory).
    pub fn persist(&self, cfg: &Config) -> Result<(), String> {
        match &self.state_file {
            Some(path) => machinery::fsutil::write_atomic(path, cfg.encode().as_bytes(), 0o600)
                .map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// Wipe STATE and/or EPHEMERAL (by label; both when none is named).
    pub fn wipe(&self, labels: &[String]) -> Result<Vec<String>, String> {
        let all = labels.is_empty();
        if crate::metal::installed() {
            // The partitions themselves are made anew when the machine restarts.
            let wiped: Vec<&str> = ["STATE", "EPHEMERAL"]
                .into_iter()
                .filter(|l| all || labels.iter().any(|x| x == l))
                .collect();
            crate::metal::wipe_at_boot(&wiped)?;
            return Ok(wiped.into_iter().map(str::to_string).collect());
        }
        let mut wiped = Vec::new();
        let mut clear = |label: &str, dir: Option<std::path::PathBuf>| -> Result<(), String> {
            if !(all || labels.iter().any(|l| l == label)) {
                return Ok(());
            }
            if let Some(dir) = dir.filter(|d| d.exists()) {
                for e in std::fs::read_dir(&dir)
                    .map_err(|e| e.to_string())?
                    .flatten()
                {
                    let p = e.path();
                    let r = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                    r.map_err(|e| format!("{}: {e}", p.display()))?;
                }
                wiped.push(label.to_string());
            }
            Ok(())
        };
        clear(
            "STATE",
            self.state_file
                .as_ref()
                .and_then(|f| f.parent().map(|p| p.to_path_buf())),
        )?;
        clear(
            "EPHEMERAL",
            self.ephemeral.lock().expect("ephemeral").clone(),
        )?;
        Ok(wiped)
    }

    pub fn hostname(&self) -> Option<String> {
        self.state
            .get(&Pointer::new(NETWORK_NS, HOSTNAME_STATUS, "hostname"))
            .ok()
            .and_then(|r| r.spec::<HostnameSpec>().map(|h| h.hostname.clone()))
    }
}

pub fn machine_config(ctx: &ReconcileContext) -> Result<Option<Config>, ControllerError> {
    let ptr = Pointer::new(CONFIG_NS, MACHINE_CONFIG, MACHINE_CONFIG_ID);
    let Some(r) = ctx.get(&ptr)? else {
        return Ok(None);
    };
    let text = &r
        .spec::<MachineConfigSpec>()
        .ok_or("machine config spec")?
        .0;
    Ok(Some(Config::parse(text)?))
}

struct MachineTypeController;

#[async_trait::async_trait]
impl Controller for MachineTypeController {
    fn name(&self) -> &str {
        "config.MachineTypeController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![Input::weak(CONFIG_NS, MACHINE_CONFIG).id(MACHINE_CONFIG_ID)]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive(CONFIG_NS, MACHINE_TYPE)]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        if let Some(cfg) = machine_config(ctx)? {
            let ty = cfg.machine_type().to_string();
            ctx.modify(CONFIG_NS, MACHINE_TYPE, "machine-type", |_| ty)?;
        }
        Ok(())
    }
}

struct HostnameController;

/// The hostname a config asks for, or a stable one derived from the cluster and machine token.
/// The hostname the config sets, if any.
pub fn configured_hostname(cfg: &Config) -> Option<String> {
    cfg.pointer("/machine/network/hostname")
        .or_else(|| {
            cfg.kind("HostnameConfig")
                .find_map(|d| d.value.get("hostname"))
        })
        .and_then(|v| v.as_str())
        .filter(|h| !h.is_empty())
        .map(String::from)
}

/// A stable hostname derived from the machine token (the default layer).
pub fn stable_hostname(cfg: &Config) -> String {
    let seed = cfg
        .pointer("/machine/token")
        .and_then(|v| v.as_str())
        .unwrap_or("talos");
    let mut h: u32 = 2166136261;
    for b in seed.bytes() {
        h = (h ^ b as u32).wrapping_mul(16777619);
    }
    format!("talos-{:03x}-{:03x}", h >> 20, (h >> 8) & 0xfff)
}

#[async_trait::async_trait]
impl Controller for HostnameController {
    fn name(&self) -> &str {
        "network.HostnameController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::weak(NETWORK_NS, crate::network::HOSTNAME_SPEC).id("hostname"),
            Input::weak(CONFIG_NS, MACHINE_CONFIG).id(MACHINE_CONFIG_ID),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::exclusive(NETWORK_NS, HOSTNAME_STATUS),
            Output::exclusive(K8S_NS, NODENAME),
        ]
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let merged = ctx
            .get(&Pointer::new(
                NETWORK_NS,
                crate::network::HOSTNAME_SPEC,
                "hostname",
            ))?
            .and_then(|r| r.spec::<crate::network::HostnameSpecSpec>().cloned());
        if let Some(h) = merged {
            crate::container::set_hostname(&h.hostname);
            // The node's name in Kubernetes: its hostname, or its FQDN when asked for.
            let fqdn = machine_config(ctx)?
                .and_then(|c| c.pointer("/machine/kubelet/registerWithFQDN")?.as_bool())
                == Some(true);
            let nodename = NodenameSpec {
                nodename: if fqdn && !h.domainname.is_empty() {
                    format!("{}.{}", h.hostname, h.domainname)
                } else {
                    h.hostname.clone()
                }
                .to_lowercase(),
                skip_node_registration: false,
            };
            ctx.modify(K8S_NS, NODENAME, "nodename", |_| nodename)?;
            let spec = HostnameSpec {
                hostname: h.hostname,
                domainname: h.domainname,
            };
            ctx.modify(NETWORK_NS, HOSTNAME_STATUS, "hostname", |_| spec)?;
        }
        Ok(())
    }
}

struct TimeStatusController;

#[async_trait::async_trait]
impl Controller for TimeStatusController {
    fn name(&self) -> &str {
        "time.StatusController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![Input::weak(CONFIG_NS, MACHINE_CONFIG).id(MACHINE_CONFIG_ID)]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive(RUNTIME_NS, TIME_STATUS)]
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let disabled = machine_config(ctx)?
            .and_then(|c| {
                c.pointer("/machine/time/disabled")
                    .and_then(|v| v.as_bool())
            })
            .unwrap_or(false);
        let spec = TimeStatusSpec {
            synced: !disabled,
            epoch: 1,
            sync_disabled: disabled,
        };
        ctx.modify(RUNTIME_NS, TIME_STATUS, "node", |_| spec)?;
        Ok(())
    }
}
