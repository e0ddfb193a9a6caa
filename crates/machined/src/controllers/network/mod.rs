//! Networking as resources, through netlink in the node's own network namespace.
//!
//! - Status: links, addresses and routes as the kernel has them (whoever added them), and the
//!   node's addresses (`NodeAddress` default/current/accumulative), refreshed on every netlink
//!   change notification (`status`).
//! - Specs: configuration sources (`config`, `dhcp`, `vip`) write unmerged specs into
//!   `network-config` with IDs prefixed by their layer; `merge` merges them into `network` by
//!   layer precedence; `address`, `route` and `link` apply merged specs to the kernel and take
//!   out again what a removed spec had added; `etc_files` writes resolv.conf and hosts.

pub mod address;
pub mod config;
pub mod dhcp;
pub mod etc_files;
pub mod hostname;
pub mod layers;
pub mod link;
pub mod merge;
pub mod route;
pub mod sources;
pub mod status;
pub mod vip;

use resources::{Runtime, RuntimeError};
use types::network::*;

use crate::sys::cmdline::Cmdline;

/// The network controllers; `apply`: whether specs go to the kernel (a node in its own network
/// namespace); `cmdline`: the kernel command line, read once at start.
pub fn register(rt: &mut Runtime, apply: bool, cmdline: Cmdline) -> Result<(), RuntimeError> {
    rt.register(status::StatusController::default())?;
    rt.register(config::ConfigController { cmdline })?;
    rt.register(merge::MergeController::<AddressSpecSpec>::new(
        "network.AddressMergeController",
    ))?;
    rt.register(merge::MergeController::<RouteSpecSpec>::new(
        "network.RouteMergeController",
    ))?;
    rt.register(merge::MergeController::<LinkSpecSpec>::new(
        "network.LinkMergeController",
    ))?;
    rt.register(merge::MergeController::<ResolverSpecSpec>::new(
        "network.ResolverMergeController",
    ))?;
    rt.register(merge::MergeController::<TimeServerSpecSpec>::new(
        "network.TimeServerMergeController",
    ))?;
    rt.register(merge::MergeController::<OperatorSpecSpec>::new(
        "network.OperatorMergeController",
    ))?;
    rt.register(merge::MergeController::<HostnameSpecSpec>::new(
        "network.HostnameMergeController",
    ))?;
    rt.register(etc_files::EtcFilesController { apply })?;
    rt.register(dhcp::OperatorController::new(apply))?;
    rt.register(address::AddressSpecController::new(apply))?;
    rt.register(route::RouteSpecController::new(apply))?;
    rt.register(link::LinkSpecController::new(apply))?;
    rt.register(hostname::HostnameController {
        set: if apply {
            crate::sys::set_hostname
        } else {
            |_| {}
        },
    })?;
    Ok(())
}
