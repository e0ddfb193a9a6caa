//! Every piece of node behaviour as a controller over typed resources (crate `types`), one
//! per file, grouped by domain. A controller reads its declared inputs (for the machine config:
//! the paths it consumes, see `inputs::config`) and writes only its declared outputs; it never
//! imports another controller, the API or boot. `register` is the one place they are wired.

pub mod block;
pub mod cluster;
pub mod config;
pub mod cri;
pub mod etcd;
pub mod files;
pub mod inputs;
pub mod k8s;
pub mod network;
pub mod runtime;
pub mod secrets;
pub mod time;

use std::path::PathBuf;
use std::time::Duration;

use resources::{Runtime, RuntimeError, State};

use crate::services::supervisor::Supervisor;
use crate::sys::cmdline::Cmdline;

/// What the controllers are given: the run mode's facts and the handles of the services they
/// drive.
pub struct Wiring {
    /// The node runs in namespaces of its own (container mode or a booted machine): it may
    /// change the kernel's network, sysctls, hostname and files.
    pub rooted: bool,
    /// The node runs its cluster's services (it has a config and is not about to install).
    pub runs: bool,
    /// The machine is installed (its volumes are partitions of its disk).
    pub installed: bool,
    pub cmdline: Cmdline,
    pub services: Supervisor,
    pub discovery: crate::sys::discovery::Handle,
    pub etcd: crate::services::etcd::Handle,
    pub state: State,
    /// Where EPHEMERAL is (etcd's data lives there).
    pub ephemeral: PathBuf,
}

/// Register every controller of the node.
pub fn register(rt: &mut Runtime, w: Wiring) -> Result<(), RuntimeError> {
    rt.register(config::machine_type::MachineTypeController)?;
    rt.register(time::status::TimeStatusController)?;
    rt.register(secrets::api::ApiCertController {
        ttl: Duration::from_secs(24 * 3600),
    })?;
    rt.register(secrets::api::RestartOnNewCa {
        services: w.services.clone(),
        seen: None,
    })?;
    let logging_kernel = w.cmdline.logging_kernel.clone();
    network::register(rt, w.rooted, w.cmdline)?;
    rt.register(network::vip::VipController::new(w.etcd.clone()))?;
    rt.register(runtime::kernel_params::KernelParamController::new(w.rooted))?;
    rt.register(runtime::log_shipping::LogShippingController {
        cmdline_kernel: logging_kernel,
        kernel: None,
    })?;
    k8s::register(rt, w.rooted && w.runs, &w.services, &w.state, &w.etcd)?;
    rt.register(cluster::config::ConfigController)?;
    rt.register(cluster::service::ServiceController {
        handle: w.discovery.clone(),
    })?;
    rt.register(cluster::members::MemberController {
        handle: w.discovery,
        waiting: false,
    })?;
    rt.register(block::volume_status::VolumeStatusController {
        installed: w.installed,
    })?;
    if w.rooted {
        rt.register(cri::config::CriConfigController {
            services: w.services.clone(),
        })?;
        rt.register(block::ephemeral::EphemeralMountController::new(
            w.installed,
            crate::sys::EPHEMERAL_DIR,
        ))?;
        rt.register(files::machine_files::MachineFilesController::default())?;
    }
    if w.rooted && w.runs {
        // etcd needs the node's own network: it runs only on a rooted node.
        rt.register(etcd::config::ConfigController)?;
        rt.register(etcd::spec::SpecController {
            ephemeral: w.ephemeral.clone(),
            pki_dir: PathBuf::from(ETCD_PKI_DIR),
        })?;
        rt.register(secrets::etcd::EtcdController::default())?;
        rt.register(etcd::pki::PkiController {
            dir: PathBuf::from(ETCD_PKI_DIR),
        })?;
        rt.register(etcd::member::MemberController {
            etcd: w.etcd.clone(),
        })?;
        rt.register(etcd::service::ServiceController::new(
            w.services,
            w.etcd,
            w.state,
            w.ephemeral,
        ))?;
    }
    Ok(())
}

/// Where etcd's certificates are written.
pub const ETCD_PKI_DIR: &str = "/system/secrets/etcd";
