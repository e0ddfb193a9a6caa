//! The node's resources and the controllers that derive them from the machine config:
//! MachineConfig → MachineType, HostnameStatus; Version is published at boot.

use resources::ResourceType;
pub use types::config::{MachineConfigSpec, MACHINE_CONFIG_ID};
use types::network::HostnameStatusSpec;
use types::runtime::{ExtensionStatusSpec, VersionSpec};
pub use types::TAG;

use machinery::Config;

use crate::boot::mode::RunMode;
use resources::{ControllerInfo, Registry, Runtime, RuntimeHandle, State};

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
    pub services: crate::services::supervisor::Supervisor,
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
    pub discovery: crate::sys::discovery::Handle,
    /// etcd, on a control plane in container mode.
    pub etcd: crate::services::etcd::Handle,
    /// The config paths read only at boot (see `boot::CONFIG_AT_BOOT`): a change of one
    /// needs a reboot.
    pub boot_inputs: Vec<&'static str>,
    /// How the node runs.
    pub mode: RunMode,
    /// The node's kernel modules: what needs one of them waits for them.
    pub modules: crate::boot::metal::Modules,
    /// Set once this machine has installed itself: the next restart boots the disk.
    pub install_done: std::sync::atomic::AtomicBool,
    /// The registered controllers' declarations (for `inspect dependencies`, and the config
    /// paths they read, which change live).
    pub controllers: Vec<ControllerInfo>,
    _controllers: RuntimeHandle,
}

/// What the boot hands the node it starts.
pub struct Setup {
    pub mode: RunMode,
    /// Where the persisted config (STATE) lives, if anywhere.
    pub state_file: Option<std::path::PathBuf>,
    /// Where services' logs are written.
    pub log_dir: Option<std::path::PathBuf>,
    /// The EPHEMERAL directory, if the node has one.
    pub ephemeral: Option<std::path::PathBuf>,
    /// The node runs its cluster's services (it has a config and is not about to install).
    pub runs: bool,
    /// The config paths read only at boot.
    pub boot_inputs: Vec<&'static str>,
    /// The node's kernel modules (loaded beside the boot on a machine).
    pub modules: crate::boot::metal::Modules,
}

impl Node {
    pub fn start(config: &Config, setup: Setup) -> Result<Node, String> {
        let Setup {
            mode,
            state_file,
            log_dir,
            ephemeral,
            runs,
            boot_inputs,
            modules,
        } = setup;
        let state = State::new();
        let registry = Registry::new(state.clone()).map_err(|e| e.to_string())?;
        for (ns, desc) in types::NAMESPACES {
            registry
                .register_namespace(ns, desc)
                .map_err(|e| e.to_string())?;
        }
        for def in types::definitions() {
            registry.register(def).map_err(|e| e.to_string())?;
        }
        // What the boot knows: created once, owned by machined (no controller derives them).
        fn fact<T: ResourceType>(state: &State, id: &str, spec: T) -> Result<(), String> {
            let mut r = T::resource(id, spec);
            r.metadata.owner = "machined".into();
            state.create(r).map(drop).map_err(|e| e.to_string())
        }
        fact(
            &state,
            "version",
            VersionSpec {
                version: TAG.into(),
            },
        )?;
        for (i, spec) in crate::sys::extensions::booted().into_iter().enumerate() {
            fact::<ExtensionStatusSpec>(&state, &i.to_string(), spec)?;
        }
        fact(
            &state,
            MACHINE_CONFIG_ID,
            MachineConfigSpec(config.encode_canonical()),
        )?;
        let node_id = crate::sys::discovery::node_id(state_file.as_ref().and_then(|f| f.parent()));
        fact(&state, "local", types::cluster::IdentitySpec { node_id })?;

        let events = crate::events::Events::default();
        let services = crate::services::supervisor::Supervisor::new(state.clone(), log_dir)
            .with_events(events.clone())
            .with_env(config.string_map("/machine/env").into_iter().collect());
        let mut rt = Runtime::new(state.clone());
        let discovery = crate::sys::discovery::Handle::default();
        let etcd = crate::services::etcd::Handle::default();
        crate::controllers::register(
            &mut rt,
            crate::controllers::Wiring {
                rooted: mode.rooted(),
                runs,
                installed: mode.installed(),
                cmdline: crate::sys::cmdline::Cmdline::read(),
                services: services.clone(),
                discovery: discovery.clone(),
                etcd: etcd.clone(),
                state: state.clone(),
                ephemeral: ephemeral
                    .clone()
                    .unwrap_or_else(|| crate::boot::container::EPHEMERAL_DIR.into()),
            },
        )
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
            ephemeral: std::sync::Mutex::new(ephemeral),
            forget: Default::default(),
            etcd,
            boot_inputs,
            mode,
            modules,
            install_done: Default::default(),
            controllers: rt.controllers().to_vec(),
            _controllers: rt.start(),
        })
    }

    /// The active config.
    pub fn active_config(&self) -> Result<Config, String> {
        let r = self
            .state
            .get(&MachineConfigSpec::pointer(MACHINE_CONFIG_ID))
            .map_err(|e| e.to_string())?;
        let text = &r
            .spec::<MachineConfigSpec>()
            .ok_or("machine config spec")?
            .0;
        Config::parse(text).map_err(|e| e.to_string())
    }

    /// Make `cfg` the active config; controllers react at once.
    pub fn set_active(&self, cfg: &Config) -> Result<(), String> {
        let ptr = MachineConfigSpec::pointer(MACHINE_CONFIG_ID);
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
        if self.mode.installed() {
            // The partitions themselves are made anew when the machine restarts.
            let wiped: Vec<&str> = ["STATE", "EPHEMERAL"]
                .into_iter()
                .filter(|l| all || labels.iter().any(|x| x == l))
                .collect();
            crate::sys::wipe::wipe_at_boot(&wiped)?;
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

    /// The running etcd, if this node runs it.
    pub fn etcd(&self) -> Option<std::sync::Arc<crate::services::etcd::Etcd>> {
        self.etcd.read().expect("etcd").clone()
    }

    pub fn hostname(&self) -> Option<String> {
        self.state
            .get(&HostnameStatusSpec::pointer("hostname"))
            .ok()
            .and_then(|r| r.spec::<HostnameStatusSpec>().map(|h| h.hostname.clone()))
    }
}
