//! network.ConfigController: the specs of every source, written into `network-config`.

use std::collections::BTreeMap;

use crate::controllers::network::sources::gather;
use resources::{Controller, ControllerError, Input, Output, ReconcileContext};

use crate::controllers::inputs::{self, machine_config};
use crate::controllers::network::layers::Layered;
use types::network::{
    AddressSpecSpec, HostnameSpecSpec, LinkSpecSpec, LinkStatusSpec, OperatorSpecSpec,
    ResolverSpecSpec, RouteSpecSpec, TimeServerSpecSpec,
};
use types::NETWORK_CONFIG_NS;

use crate::sys::cmdline::Cmdline;

/// Writes the specs of every source into `network-config`.
pub struct ConfigController {
    pub cmdline: Cmdline,
}

fn put<S: Layered>(ctx: &mut ReconcileContext, specs: Vec<S>) -> Result<(), ControllerError> {
    for spec in specs {
        let id = format!("{}/{}", spec.layer(), spec.merged_id());
        ctx.put_in(NETWORK_CONFIG_NS, &id, spec)?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Controller for ConfigController {
    fn name(&self) -> &str {
        "network.ConfigController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            inputs::config(&[
                "/machine/network",
                "/machine/time/servers",
                "/machine/features/stableHostname",
                "kind:LinkConfig",
                "kind:VLANConfig",
                "kind:BondConfig",
                "kind:BridgeConfig",
                "kind:DummyLinkConfig",
                "kind:DHCPv4Config",
                "kind:Layer2VIPConfig",
                "kind:HostnameConfig",
                "kind:ResolverConfig",
                "kind:TimeSyncConfig",
            ]),
            Input::of::<types::network::LinkStatusSpec>(),
            Input::of::<types::network::NodeAddressSpec>().id("default"),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![
            // Shared with the operators (DHCP, VIP), each owning its own specs.
            Output::shared_in::<AddressSpecSpec>(NETWORK_CONFIG_NS),
            Output::shared_in::<RouteSpecSpec>(NETWORK_CONFIG_NS),
            Output::exclusive_in::<LinkSpecSpec>(NETWORK_CONFIG_NS),
            Output::exclusive_in::<ResolverSpecSpec>(NETWORK_CONFIG_NS),
            Output::exclusive_in::<TimeServerSpecSpec>(NETWORK_CONFIG_NS),
            Output::exclusive_in::<OperatorSpecSpec>(NETWORK_CONFIG_NS),
            Output::exclusive_in::<HostnameSpecSpec>(NETWORK_CONFIG_NS),
        ]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let cfg = machine_config(ctx)?;
        let links: BTreeMap<String, LinkStatusSpec> =
            ctx.specs_of::<LinkStatusSpec>()?.into_iter().collect();
        let node_address = crate::controllers::inputs::node_ips(ctx, "default")?
            .first()
            .copied();
        let specs = gather(cfg.as_ref(), &self.cmdline, &links, node_address);
        for w in &specs.warnings {
            tracing::warn!("{w}");
        }
        put(ctx, specs.addresses)?;
        put(ctx, specs.routes)?;
        put(ctx, specs.links)?;
        put(ctx, specs.resolvers)?;
        put(ctx, specs.time_servers)?;
        put(ctx, specs.operators)?;
        put(ctx, specs.hostnames)?;
        Ok(())
    }
}
