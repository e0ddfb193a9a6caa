//! Reads every controller group shares: the machine config (declared with the config paths a
//! controller consumes, from which apply-config derives what changes live) and the node's
//! addresses.

use std::net::IpAddr;

use machinery::Config;
use resources::{ControllerError, Input, ReconcileContext, ResourceType};
use types::config::{MachineConfigSpec, MACHINE_CONFIG_ID};
use types::network::NodeAddressSpec;

/// The machine config as an input, reading the v1alpha1 `paths` (JSON pointers) and, for a
/// multi-document config, `kind:<Kind>` for documents of that kind.
pub fn config(paths: &[&str]) -> Input {
    Input::of::<MachineConfigSpec>()
        .id(MACHINE_CONFIG_ID)
        .paths(paths)
}

/// The active machine config, if any.
pub fn machine_config(ctx: &ReconcileContext) -> Result<Option<Config>, ControllerError> {
    match ctx.spec_of::<MachineConfigSpec>(MACHINE_CONFIG_ID)? {
        Some(text) => Ok(Some(Config::parse(&text.0)?)),
        None => Ok(None),
    }
}

/// The active machine config when the machine is a control plane.
pub fn control_plane_config(ctx: &ReconcileContext) -> Result<Option<Config>, ControllerError> {
    Ok(machine_config(ctx)?.filter(Config::is_control_plane))
}

/// The IPs (prefixes dropped) of one of the node's NodeAddresses: `default`, `current` or
/// `accumulative`.
pub fn node_ips(ctx: &ReconcileContext, id: &str) -> Result<Vec<IpAddr>, ControllerError> {
    Ok(ctx
        .get(&NodeAddressSpec::pointer(id))?
        .and_then(|r| r.spec::<NodeAddressSpec>().map(|a| a.addresses.clone()))
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect())
}
