//! network.ConfigController: the specs of every source, written into `network-config`.

use resources::ResourceType;
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
use types::NETWORK_NS;

use crate::sys::cmdline::Cmdline;

/// Writes the specs of every source into `network-config`.
pub struct ConfigController {
    pub cmdline: Cmdline,
}

fn put<S: Layered>(
    ctx: &mut ReconcileContext,
    ty: &str,
    specs: Vec<S>,
) -> Result<(), ControllerError> {
    for spec in specs {
        let id = format!("{}/{}", spec.layer(), spec.merged_id());
        ctx.modify(NETWORK_CONFIG_NS, ty, &id, |_| spec)?;
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
            Output::shared(NETWORK_CONFIG_NS, types::network::AddressSpecSpec::TYPE),
            Output::shared(NETWORK_CONFIG_NS, types::network::RouteSpecSpec::TYPE),
            Output::exclusive(NETWORK_CONFIG_NS, types::network::LinkSpecSpec::TYPE),
            Output::exclusive(NETWORK_CONFIG_NS, types::network::ResolverSpecSpec::TYPE),
            Output::exclusive(NETWORK_CONFIG_NS, types::network::TimeServerSpecSpec::TYPE),
            Output::exclusive(NETWORK_CONFIG_NS, types::network::OperatorSpecSpec::TYPE),
            Output::exclusive(NETWORK_CONFIG_NS, types::network::HostnameSpecSpec::TYPE),
        ]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let cfg = machine_config(ctx)?;
        let links: BTreeMap<String, LinkStatusSpec> = ctx
            .list(
                NETWORK_NS,
                LinkStatusSpec::TYPE,
                &resources::LabelQuery::all(),
            )?
            .iter()
            .filter_map(|r| Some((r.metadata.id.clone(), r.spec::<LinkStatusSpec>()?.clone())))
            .collect();
        let node_address = crate::controllers::inputs::node_ips(ctx, "default")?
            .first()
            .copied();
        let specs = gather(cfg.as_ref(), &self.cmdline, &links, node_address);
        for w in &specs.warnings {
            tracing::warn!("{w}");
        }
        put(ctx, AddressSpecSpec::TYPE, specs.addresses)?;
        put(ctx, RouteSpecSpec::TYPE, specs.routes)?;
        put(ctx, LinkSpecSpec::TYPE, specs.links)?;
        put(ctx, ResolverSpecSpec::TYPE, specs.resolvers)?;
        put(ctx, TimeServerSpecSpec::TYPE, specs.time_servers)?;
        put(ctx, OperatorSpecSpec::TYPE, specs.operators)?;
        put(ctx, HostnameSpecSpec::TYPE, specs.hostnames)?;
        Ok(())
    }
}
