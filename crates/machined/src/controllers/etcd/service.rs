//! etcd.ServiceController: runs the etcd service as EtcdSpec says once its PKI is on disk and
//! EPHEMERAL (where its data lives) is mounted;
//! a changed spec (a no-reboot change of `cluster.etcd.extraArgs`, a new address) restarts
//! it with the new command line. The supervisor publishes the service's status.

use std::path::PathBuf;
use std::sync::Arc;

use resources::{Controller, ControllerError, Input, Output, ReconcileContext, State};
use types::etcd::{EtcdSpecSpec, PkiStatusSpec, ETCD_ID};
use types::runtime::{MountStatusSpec, ServiceStatusSpec};
use types::secrets::EtcdCertsSpec;

use crate::services::etcd::{self, Etcd};
use crate::services::supervisor::Supervisor;
use crate::sys::ctrd_container;

pub struct ServiceController {
    pub services: Supervisor,
    /// The running etcd, for the API and the VIP.
    pub etcd: etcd::Handle,
    pub state: State,
    pub ephemeral: PathBuf,
    /// The spec etcd runs with now.
    running: Option<EtcdSpecSpec>,
}

impl ServiceController {
    pub fn new(services: Supervisor, etcd: etcd::Handle, state: State, ephemeral: PathBuf) -> Self {
        ServiceController {
            services,
            etcd,
            state,
            ephemeral,
            running: None,
        }
    }
}

#[async_trait::async_trait]
impl Controller for ServiceController {
    fn name(&self) -> &str {
        "etcd.ServiceController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::of::<EtcdSpecSpec>().id(ETCD_ID),
            Input::of::<PkiStatusSpec>().id(ETCD_ID),
            Input::of::<EtcdCertsSpec>().id(ETCD_ID),
            // etcd's data lives on EPHEMERAL: never under the mount.
            Input::of::<MountStatusSpec>().id(disk::EPHEMERAL),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::shared_of::<ServiceStatusSpec>()]
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let (Some(spec), Some(pki), Some(certs)) = (
            ctx.spec_of::<EtcdSpecSpec>(ETCD_ID)?,
            ctx.spec_of::<PkiStatusSpec>(ETCD_ID)?,
            ctx.spec_of::<EtcdCertsSpec>(ETCD_ID)?,
        ) else {
            return Ok(());
        };
        let mounted = ctx.spec_of::<MountStatusSpec>(disk::EPHEMERAL)?.is_some();
        if !pki.ready || !mounted || self.running.as_ref() == Some(&spec) {
            return Ok(());
        }
        let e = Arc::new(Etcd::new(
            &spec,
            &certs,
            &self.ephemeral,
            self.state.clone(),
        )?);
        let mut service = e.service();
        // Like upstream, etcd runs from an image when the config names one.
        if !spec.image.is_empty() {
            service.depends_on.push("containerd".into());
            service.launcher = Some(crate::services::container::launcher(
                ctrd_container::ContainerSpec {
                    id: etcd::SERVICE.into(),
                    image: spec.image.clone(),
                    binds: e.binds(),
                    capabilities: Vec::new(),
                    pids_limit: 4096,
                    cpu_shares: 2048,
                    ..Default::default()
                },
                crate::services::container::registries_of(&self.state),
            ));
        }
        if self.running.is_some() {
            tracing::info!("etcd's spec changed: restarting it");
        }
        *self.etcd.write().expect("etcd") = Some(e);
        self.services.replace(service);
        self.running = Some(spec);
        Ok(())
    }
}
