//! Configuration layers: how specs of each layer are identified and merged, and the reads
//! the network controllers share.

use resources::ResourceType;

use resources::{ControllerError, ReconcileContext};
use serde::Serialize;

use types::network::*;
use types::NETWORK_NS;

impl Layered for HostnameSpecSpec {
    fn layer(&self) -> &str {
        &self.layer
    }
    fn merged_id(&self) -> String {
        "hostname".into()
    }
}

impl Layered for OperatorSpecSpec {
    fn layer(&self) -> &str {
        &self.layer
    }
    fn merged_id(&self) -> String {
        format!("{}/{}", self.operator, self.link_name)
    }
}

/// The specs of one type in a namespace.
pub fn specs<S: ResourceType>(ctx: &ReconcileContext, ns: &str) -> Result<Vec<S>, ControllerError> {
    Ok(ctx.specs_in::<S>(ns)?.into_iter().map(|(_, s)| s).collect())
}

/// The merged operator specs of one kind.
pub fn operators(
    ctx: &ReconcileContext,
    operator: &str,
) -> Result<Vec<OperatorSpecSpec>, ControllerError> {
    Ok(specs::<OperatorSpecSpec>(ctx, NETWORK_NS)?
        .into_iter()
        .filter(|o| o.operator == operator)
        .collect())
}

/// A spec from a configuration layer.
pub trait Layered: resources::ResourceType + Serialize {
    fn layer(&self) -> &str;
    /// Its ID once merged into `network` (the same thing from different layers shares it).
    fn merged_id(&self) -> String;
    /// Take in a spec of a higher layer with the same merged ID (by default it replaces this).
    fn merge(&mut self, higher: &Self) {
        *self = higher.clone();
    }
}

impl Layered for AddressSpecSpec {
    fn layer(&self) -> &str {
        &self.layer
    }
    fn merged_id(&self) -> String {
        format!("{}/{}", self.link_name, self.address)
    }
}

impl Layered for RouteSpecSpec {
    fn layer(&self) -> &str {
        &self.layer
    }
    fn merged_id(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.family, self.gateway, self.destination, self.priority
        )
    }
}

impl Layered for ResolverSpecSpec {
    fn layer(&self) -> &str {
        &self.layer
    }
    fn merged_id(&self) -> String {
        "resolvers".into()
    }
}

impl Layered for TimeServerSpecSpec {
    fn layer(&self) -> &str {
        &self.layer
    }
    fn merged_id(&self) -> String {
        "timeservers".into()
    }
}

impl Layered for LinkSpecSpec {
    fn layer(&self) -> &str {
        &self.layer
    }
    fn merged_id(&self) -> String {
        self.name.clone()
    }
    /// Field by field: what the higher layer sets wins, the rest stays.
    fn merge(&mut self, higher: &Self) {
        self.logical |= higher.logical;
        self.up = higher.up;
        if higher.mtu != 0 {
            self.mtu = higher.mtu;
        }
        for (mine, theirs) in [
            (&mut self.kind, &higher.kind),
            (&mut self.parent_name, &higher.parent_name),
            (&mut self.bond_mode, &higher.bond_mode),
        ] {
            if !theirs.is_empty() {
                mine.clone_from(theirs);
            }
        }
        if higher.vlan_id != 0 {
            self.vlan_id = higher.vlan_id;
        }
        if higher.bond_slave.is_some() {
            self.bond_slave.clone_from(&higher.bond_slave);
        }
        if higher.bridge_slave.is_some() {
            self.bridge_slave.clone_from(&higher.bridge_slave);
        }
        if higher.stp.is_some() {
            self.stp = higher.stp;
        }
        self.layer.clone_from(&higher.layer);
    }
}

pub fn layer_rank(layer: &str) -> usize {
    LAYERS.iter().position(|l| *l == layer).unwrap_or(0)
}
