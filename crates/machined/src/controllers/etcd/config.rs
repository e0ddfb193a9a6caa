//! etcd.ConfigController: `cluster.etcd` of a control plane's config as EtcdConfig.

use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use types::etcd::{EtcdConfigSpec, ETCD_ID};

use crate::controllers::inputs;

pub struct ConfigController;

#[async_trait::async_trait]
impl Controller for ConfigController {
    fn name(&self) -> &str {
        "etcd.ConfigController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![inputs::config(&[
            "/machine/type",
            "/cluster/etcd/image",
            "/cluster/etcd/extraArgs",
            "/cluster/etcd/advertisedSubnets",
            "/cluster/etcd/listenSubnets",
        ])]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<EtcdConfigSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let Some(cfg) = inputs::control_plane_config(ctx)? else {
            return Ok(());
        };
        let list = |p: &str| machinery::kubernetes::strings(cfg.pointer(p));
        let spec = EtcdConfigSpec {
            image: cfg
                .pointer("/cluster/etcd/image")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
            extra_args: cfg
                .string_map("/cluster/etcd/extraArgs")
                .into_iter()
                .collect(),
            advertised_subnets: list("/cluster/etcd/advertisedSubnets"),
            listen_subnets: list("/cluster/etcd/listenSubnets"),
        };
        ctx.put(ETCD_ID, spec)?;
        Ok(())
    }
}
