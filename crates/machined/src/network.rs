//! Networking as resources, through netlink in the node's own network namespace.
//!
//! - Status: links, addresses and routes as the kernel has them (whoever added them), and the
//!   node's addresses (`NodeAddress` default/current/accumulative), refreshed on every netlink
//!   change notification.
//! - Specs: configuration sources write unmerged `AddressSpec`s into `network-config` with IDs
//!   prefixed by their layer (`default/lo/127.0.0.1/8`, `configuration/eth0/10.5.0.10/24`); they
//!   are merged into `network` by layer precedence (default < cmdline < platform < operator <
//!   configuration), recording the winning `layer`; merged specs are applied to the kernel, and
//!   what a removed spec had added is removed again.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use resources::{Controller, ControllerError, Input, LabelQuery, Output, ReconcileContext};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::AddressFamily;
use serde::{Deserialize, Serialize};

use crate::node::NETWORK_NS;

pub const NETWORK_CONFIG_NS: &str = "network-config";
pub const LINK_STATUS: &str = "LinkStatuses.net.talos.dev";
pub const ADDRESS_STATUS: &str = "AddressStatuses.net.talos.dev";
pub const ROUTE_STATUS: &str = "RouteStatuses.net.talos.dev";
pub const ADDRESS_SPEC: &str = "AddressSpecs.net.talos.dev";
pub const NODE_ADDRESS: &str = "NodeAddresses.net.talos.dev";
pub const ROUTE_SPEC: &str = "RouteSpecs.net.talos.dev";
pub const LINK_SPEC: &str = "LinkSpecs.net.talos.dev";
pub const RESOLVER_SPEC: &str = "ResolverSpecs.net.talos.dev";
pub const RESOLVER_STATUS: &str = "ResolverStatuses.net.talos.dev";
pub const TIME_SERVER_SPEC: &str = "TimeServerSpecs.net.talos.dev";
pub const TIME_SERVER_STATUS: &str = "TimeServerStatuses.net.talos.dev";
pub const NETWORK_STATUS: &str = "NetworkStatuses.net.talos.dev";
pub const OPERATOR_SPEC: &str = "OperatorSpecs.net.talos.dev";
pub const HOSTNAME_SPEC: &str = "HostnameSpecs.net.talos.dev";

/// Where the node's resolver and hosts files live (bound over /etc in container mode).
pub const RESOLV_CONF: &str = "/system/etc/resolv.conf";
pub const HOSTS: &str = "/system/etc/hosts";

/// The network controllers; `apply`: whether specs go to the kernel (a node in its own network
/// namespace); `cmdline`: the kernel command line, read once at start.
pub fn register(
    rt: &mut resources::Runtime,
    apply: bool,
    cmdline: crate::netconfig::Cmdline,
) -> Result<(), String> {
    fn merge<S: Layered>(
        rt: &mut resources::Runtime,
        name: &'static str,
        ty: &'static str,
    ) -> Result<(), resources::RuntimeError> {
        rt.register(MergeController::<S>::new(name, ty))
    }
    let e = |e: resources::RuntimeError| e.to_string();
    rt.register(StatusController::default()).map_err(e)?;
    rt.register(crate::netconfig::ConfigController { cmdline })
        .map_err(e)?;
    merge::<AddressSpecSpec>(rt, "network.AddressMergeController", ADDRESS_SPEC).map_err(e)?;
    merge::<RouteSpecSpec>(rt, "network.RouteMergeController", ROUTE_SPEC).map_err(e)?;
    merge::<LinkSpecSpec>(rt, "network.LinkMergeController", LINK_SPEC).map_err(e)?;
    merge::<ResolverSpecSpec>(rt, "network.ResolverMergeController", RESOLVER_SPEC).map_err(e)?;
    merge::<TimeServerSpecSpec>(rt, "network.TimeServerMergeController", TIME_SERVER_SPEC)
        .map_err(e)?;
    merge::<OperatorSpecSpec>(rt, "network.OperatorMergeController", OPERATOR_SPEC).map_err(e)?;
    merge::<HostnameSpecSpec>(rt, "network.HostnameMergeController", HOSTNAME_SPEC).map_err(e)?;
    rt.register(EtcFilesController { apply }).map_err(e)?;
    rt.register(crate::dhcp::OperatorController::new(apply))
        .map_err(e)?;
    rt.register(AddressSpecController::new(apply)).map_err(e)?;
    rt.register(RouteSpecController::new(apply)).map_err(e)?;
    rt.register(LinkSpecController::new(apply)).map_err(e)?;
    Ok(())
}

/// Configuration layers, lowest precedence first.
pub const LAYERS: [&str; 5] = [
    "default",
    "cmdline",
    "platform",
    "operator",
    "configuration",
];

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkStatusSpec {
    pub index: u32,
    #[serde(rename = "type")]
    pub link_type: String,
    pub kind: String,
    pub hardware_addr: String,
    pub mtu: u32,
    pub operational_state: String,
    pub link_state: bool,
    pub flags: String,
    /// The bridge or bond this link is a port of (0: none).
    pub master_index: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressStatusSpec {
    pub address: String,
    pub local: String,
    pub broadcast: String,
    pub link_index: u32,
    pub link_name: String,
    pub family: String,
    pub scope: String,
    pub flags: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatusSpec {
    pub family: String,
    pub dst: String,
    pub src: String,
    pub gateway: String,
    pub out_link_index: u32,
    pub out_link_name: String,
    pub table: String,
    pub priority: u32,
    pub scope: String,
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressSpecSpec {
    /// `ip/prefix`.
    pub address: String,
    pub link_name: String,
    pub family: String,
    pub scope: String,
    pub flags: String,
    #[serde(rename = "announceWithARP")]
    pub announce_with_arp: bool,
    pub layer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpecSpec {
    pub family: String,
    /// `ip/prefix`; empty for the default route.
    pub destination: String,
    pub gateway: String,
    pub out_link_name: String,
    pub table: String,
    pub priority: u32,
    pub protocol: String,
    pub layer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkSpecSpec {
    pub name: String,
    /// Made by Talos (a VLAN) rather than found in the machine.
    pub logical: bool,
    pub up: bool,
    /// 0 keeps the link's MTU.
    pub mtu: u32,
    /// `vlan` for a logical VLAN link; empty for a physical one.
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent_name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub vlan_id: u16,
    /// A port of this bond.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bond_slave: Option<SlaveSpec>,
    /// A port of this bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge_slave: Option<SlaveSpec>,
    /// For a bond: its mode (`balance-rr`, `active-backup`, `802.3ad`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bond_mode: String,
    /// For a bridge: whether it runs the spanning tree protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stp: Option<bool>,
    pub layer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlaveSpec {
    pub master_name: String,
    #[serde(default)]
    pub slave_index: u32,
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostnameSpecSpec {
    pub hostname: String,
    pub domainname: String,
    pub layer: String,
}

impl Layered for HostnameSpecSpec {
    fn layer(&self) -> &str {
        &self.layer
    }
    fn merged_id(&self) -> String {
        "hostname".into()
    }
}

/// An operator to run on a link: `dhcp4`, or `vip` (the shared IP of control planes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorSpecSpec {
    pub operator: String,
    pub link_name: String,
    pub require_up: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp4: Option<Dhcp4Options>,
    pub layer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dhcp4Options {
    /// The metric of the routes the lease brings.
    pub route_metric: u32,
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
fn specs<S: Clone + Send + Sync + std::fmt::Debug + 'static>(
    ctx: &ReconcileContext,
    ns: &str,
    ty: &str,
) -> Result<Vec<S>, ControllerError> {
    Ok(ctx
        .list(ns, ty, &LabelQuery::all())?
        .iter()
        .filter_map(|r| r.spec::<S>().cloned())
        .collect())
}

/// The IPs (prefixes dropped) of one of the node's NodeAddresses: `default`, `current` or
/// `accumulative`.
pub fn node_ips(ctx: &ReconcileContext, id: &str) -> Result<Vec<IpAddr>, ControllerError> {
    Ok(ctx
        .get(&resources::Pointer::new(NETWORK_NS, NODE_ADDRESS, id))?
        .and_then(|r| r.spec::<NodeAddressSpec>().map(|a| a.addresses.clone()))
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect())
}

/// The merged operator specs of one kind.
pub fn operators(
    ctx: &ReconcileContext,
    operator: &str,
) -> Result<Vec<OperatorSpecSpec>, ControllerError> {
    Ok(specs::<OperatorSpecSpec>(ctx, NETWORK_NS, OPERATOR_SPEC)?
        .into_iter()
        .filter(|o| o.operator == operator)
        .collect())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolverSpecSpec {
    pub dns_servers: Vec<String>,
    pub search_domains: Vec<String>,
    pub layer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeServerSpecSpec {
    pub time_servers: Vec<String>,
    #[serde(rename = "useNTS")]
    pub use_nts: bool,
    pub layer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolverStatusSpec {
    pub dns_servers: Vec<String>,
    pub search_domains: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeServerStatusSpec {
    pub time_servers: Vec<String>,
    #[serde(rename = "useNTS")]
    pub use_nts: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatusSpec {
    pub address_ready: bool,
    pub connectivity_ready: bool,
    pub hostname_ready: bool,
    pub etc_files_ready: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAddressSpec {
    pub addresses: Vec<String>,
    pub sort_algorithm: String,
}

fn family_name(f: AddressFamily) -> &'static str {
    match f {
        AddressFamily::Inet => "inet4",
        AddressFamily::Inet6 => "inet6",
        _ => "unknown",
    }
}

fn scope_name(s: AddressScope) -> String {
    match s {
        AddressScope::Universe => "global".into(),
        AddressScope::Site => "site".into(),
        AddressScope::Link => "link".into(),
        AddressScope::Host => "host".into(),
        AddressScope::Nowhere => "nowhere".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn route_address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// What the kernel has, read through netlink.
#[derive(Default)]
struct Kernel {
    links: BTreeMap<String, LinkStatusSpec>,
    addresses: BTreeMap<String, AddressStatusSpec>,
    routes: BTreeMap<String, RouteStatusSpec>,
}

fn link_status(m: &LinkMessage) -> (String, LinkStatusSpec) {
    let mut name = String::new();
    let mut spec = LinkStatusSpec {
        index: m.header.index,
        link_type: format!("{:?}", m.header.link_layer_type).to_lowercase(),
        kind: String::new(),
        hardware_addr: String::new(),
        mtu: 0,
        operational_state: String::new(),
        link_state: m.header.flags.contains(LinkFlags::Up),
        flags: format!("{:?}", m.header.flags),
        master_index: 0,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Mtu(v) => spec.mtu = *v,
            LinkAttribute::Controller(i) => spec.master_index = *i,
            LinkAttribute::Address(mac) => {
                spec.hardware_addr = mac
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            }
            LinkAttribute::OperState(s) => spec.operational_state = format!("{s:?}").to_lowercase(),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        spec.kind = k.to_string();
                    }
                }
            }
            _ => {}
        }
    }
    (name, spec)
}

fn address_status(
    m: &AddressMessage,
    links: &BTreeMap<u32, String>,
) -> Option<(String, AddressStatusSpec)> {
    let mut address = None;
    let mut local = String::new();
    let mut broadcast = String::new();
    for a in &m.attributes {
        match a {
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Local(ip) => local = ip.to_string(),
            AddressAttribute::Broadcast(ip) => broadcast = ip.to_string(),
            _ => {}
        }
    }
    let ip = address?;
    let link_name = links.get(&m.header.index).cloned().unwrap_or_default();
    let cidr = format!("{ip}/{}", m.header.prefix_len);
    let spec = AddressStatusSpec {
        address: cidr.clone(),
        local,
        broadcast,
        link_index: m.header.index,
        link_name: link_name.clone(),
        family: family_name(m.header.family).into(),
        scope: scope_name(m.header.scope),
        flags: format!("{:?}", m.header.flags).to_lowercase(),
    };
    Some((format!("{link_name}/{cidr}"), spec))
}

fn route_status(m: &RouteMessage, links: &BTreeMap<u32, String>) -> (String, RouteStatusSpec) {
    let mut spec = RouteStatusSpec {
        family: family_name(m.header.address_family).into(),
        dst: String::new(),
        src: String::new(),
        gateway: String::new(),
        out_link_index: 0,
        out_link_name: String::new(),
        table: match m.header.table {
            254 => "main".into(),
            255 => "local".into(),
            t => t.to_string(),
        },
        priority: 0,
        scope: format!("{:?}", m.header.scope).to_lowercase(),
        protocol: format!("{:?}", m.header.protocol).to_lowercase(),
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => {
                if let Some(ip) = route_address(d) {
                    spec.dst = format!("{ip}/{}", m.header.destination_prefix_length);
                }
            }
            RouteAttribute::PrefSource(s) => {
                spec.src = route_address(s).map(|i| i.to_string()).unwrap_or_default()
            }
            RouteAttribute::Gateway(g) => {
                spec.gateway = route_address(g).map(|i| i.to_string()).unwrap_or_default()
            }
            RouteAttribute::Oif(i) => {
                spec.out_link_index = *i;
                spec.out_link_name = links.get(i).cloned().unwrap_or_default();
            }
            RouteAttribute::Priority(p) => spec.priority = *p,
            _ => {}
        }
    }
    let prefix = if spec.table == "main" {
        String::new()
    } else {
        format!("{}/", spec.table)
    };
    let id = format!(
        "{prefix}{}/{}/{}/{}",
        spec.family, spec.gateway, spec.dst, spec.priority
    );
    (id, spec)
}

/// Every route of both families, all tables.
async fn dump_routes(h: &rtnetlink::Handle) -> Result<Vec<RouteMessage>, rtnetlink::Error> {
    let mut out = Vec::new();
    for msg in [
        rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
        rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    ] {
        let routes: Vec<RouteMessage> = h.route().get(msg).execute().try_collect().await?;
        out.extend(routes);
    }
    Ok(out)
}

/// Link names by index.
async fn link_names(h: &rtnetlink::Handle) -> Result<BTreeMap<u32, String>, rtnetlink::Error> {
    let mut names = BTreeMap::new();
    let mut links = h.link().get().execute();
    while let Some(m) = links.try_next().await? {
        let (name, spec) = link_status(&m);
        names.insert(spec.index, name);
    }
    Ok(names)
}

async fn read_kernel(h: &rtnetlink::Handle) -> Result<Kernel, rtnetlink::Error> {
    let mut k = Kernel::default();
    let mut names = BTreeMap::new();
    let mut links = h.link().get().execute();
    while let Some(m) = links.try_next().await? {
        let (name, spec) = link_status(&m);
        names.insert(spec.index, name.clone());
        k.links.insert(name, spec);
    }
    let mut addrs = h.address().get().execute();
    while let Some(m) = addrs.try_next().await? {
        if let Some((id, spec)) = address_status(&m, &names) {
            k.addresses.insert(id, spec);
        }
    }
    for m in dump_routes(h).await? {
        // The local table is the kernel's own bookkeeping.
        if m.header.table != 255 {
            let (id, spec) = route_status(&m, &names);
            k.routes.insert(id, spec);
        }
    }
    Ok(k)
}

type Events = futures::channel::mpsc::UnboundedReceiver<(
    rtnetlink::packet_core::NetlinkMessage<rtnetlink::packet_route::RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
)>;

/// Publishes what the kernel has; runs again on every netlink change.
#[derive(Default)]
pub struct StatusController {
    conn: Option<(rtnetlink::Handle, Events)>,
    accumulative: BTreeSet<String>,
}

fn connect() -> std::io::Result<(rtnetlink::Handle, Events)> {
    use rtnetlink::constants::{
        RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE, RTMGRP_LINK,
    };
    use rtnetlink::sys::AsyncSocket;
    // Requests go over a socket of their own: a notification caused by another socket's
    // request carries that request's sequence number, which this one could mistake for a reply.
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    let (mut conn, _, events) = rtnetlink::new_connection()?;
    let groups = RTMGRP_LINK
        | RTMGRP_IPV4_IFADDR
        | RTMGRP_IPV4_ROUTE
        | RTMGRP_IPV6_IFADDR
        | RTMGRP_IPV6_ROUTE;
    conn.socket_mut()
        .socket_mut()
        .bind(&rtnetlink::sys::SocketAddr::new(0, groups))?;
    tokio::spawn(conn);
    Ok((handle, events))
}

/// Addresses that identify the node: global scope, not loopback, not link-local.
fn node_addresses(k: &Kernel) -> Vec<String> {
    let mut out: Vec<String> = k
        .addresses
        .values()
        .filter(|a| a.scope == "global" && a.link_name != "lo")
        .map(|a| a.address.clone())
        .collect();
    out.sort();
    out
}

#[async_trait::async_trait]
impl Controller for StatusController {
    fn name(&self) -> &str {
        "network.StatusController"
    }
    fn inputs(&self) -> Vec<Input> {
        Vec::new()
    }
    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::exclusive(NETWORK_NS, LINK_STATUS),
            Output::exclusive(NETWORK_NS, ADDRESS_STATUS),
            Output::exclusive(NETWORK_NS, ROUTE_STATUS),
            Output::exclusive(NETWORK_NS, NODE_ADDRESS),
        ]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let first = self.conn.is_none();
        if first {
            self.conn = Some(connect()?);
        }
        let (handle, events) = self.conn.as_mut().expect("connected");
        // Wait for the kernel to say something changed; look again within 5 s anyway
        // (netlink notifications can be lost when the socket's buffer overflows). What this
        // round does not write is removed right after it.
        if !first {
            let _ = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
        }
        // Changes that arrive while reading are caught by the next round.
        while events.try_recv().is_ok() {}
        let k = read_kernel(handle).await?;
        for (id, spec) in &k.links {
            let spec = spec.clone();
            ctx.modify(NETWORK_NS, LINK_STATUS, id, |_| spec)?;
        }
        for (id, spec) in &k.addresses {
            let spec = spec.clone();
            ctx.modify(NETWORK_NS, ADDRESS_STATUS, id, |_| spec)?;
        }
        for (id, spec) in &k.routes {
            let spec = spec.clone();
            ctx.modify(NETWORK_NS, ROUTE_STATUS, id, |_| spec)?;
        }
        let current = node_addresses(&k);
        self.accumulative.extend(current.iter().cloned());
        for (id, addresses) in [
            (
                "default",
                current.iter().take(1).cloned().collect::<Vec<_>>(),
            ),
            ("current", current.clone()),
            ("accumulative", self.accumulative.iter().cloned().collect()),
        ] {
            let spec = NodeAddressSpec {
                addresses,
                sort_algorithm: "v1".into(),
            };
            ctx.modify(NETWORK_NS, NODE_ADDRESS, id, |_| spec)?;
        }
        ctx.requeue_after(Duration::ZERO);
        Ok(())
    }
}

/// A spec from a configuration layer.
pub trait Layered: Clone + PartialEq + Serialize + std::fmt::Debug + Send + Sync + 'static {
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

/// Merges a spec type from `network-config` into `network`: the highest layer wins.
pub struct MergeController<S> {
    name: &'static str,
    ty: &'static str,
    _spec: std::marker::PhantomData<fn() -> S>,
}

impl<S> MergeController<S> {
    pub fn new(name: &'static str, ty: &'static str) -> MergeController<S> {
        MergeController {
            name,
            ty,
            _spec: std::marker::PhantomData,
        }
    }
}

fn layer_rank(layer: &str) -> usize {
    LAYERS.iter().position(|l| *l == layer).unwrap_or(0)
}

#[async_trait::async_trait]
impl<S: Layered> Controller for MergeController<S> {
    fn name(&self) -> &str {
        self.name
    }
    fn inputs(&self) -> Vec<Input> {
        vec![Input::weak(NETWORK_CONFIG_NS, self.ty)]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive(NETWORK_NS, self.ty)]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let mut merged: BTreeMap<String, S> = BTreeMap::new();
        let mut specs = Vec::new();
        for r in ctx.list(NETWORK_CONFIG_NS, self.ty, &LabelQuery::all())? {
            let Some(spec) = r.spec::<S>() else { continue };
            specs.push(spec.clone());
        }
        // Lowest layer first, each higher one merged over it.
        specs.sort_by_key(|s| layer_rank(s.layer()));
        for spec in specs {
            match merged.entry(spec.merged_id()) {
                std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().merge(&spec),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(spec);
                }
            }
        }
        for (id, spec) in merged {
            ctx.modify(NETWORK_NS, self.ty, &id, |_| spec)?;
        }
        Ok(())
    }
}

/// Puts merged address specs into the kernel and takes out again what it put there for specs
/// that are gone. Only a node in its own network namespace touches the kernel.
pub struct AddressSpecController {
    pub apply: bool,
    added: HashSet<(String, String)>,
    conn: Option<rtnetlink::Handle>,
}

impl AddressSpecController {
    pub fn new(apply: bool) -> AddressSpecController {
        AddressSpecController {
            apply,
            added: HashSet::new(),
            conn: None,
        }
    }
}

async fn kernel_addresses(
    h: &rtnetlink::Handle,
    index: u32,
) -> Result<Vec<AddressMessage>, rtnetlink::Error> {
    h.address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
}

fn message_cidr(m: &AddressMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(format!("{ip}/{}", m.header.prefix_len)),
        _ => None,
    })
}

#[async_trait::async_trait]
impl Controller for AddressSpecController {
    fn name(&self) -> &str {
        "network.AddressSpecController"
    }
    fn inputs(&self) -> Vec<Input> {
        // Links that appear (a VLAN made a moment ago) let waiting specs apply.
        vec![
            Input::weak(NETWORK_NS, ADDRESS_SPEC),
            Input::weak(NETWORK_NS, LINK_STATUS),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        Vec::new()
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        if !self.apply {
            return Ok(());
        }
        let h = &handle(&mut self.conn)?.clone();
        let wanted: Vec<AddressSpecSpec> = specs(ctx, NETWORK_NS, ADDRESS_SPEC)?;
        let mut problems = Vec::new();
        for spec in &wanted {
            let Some(index) = link_state(h, &spec.link_name).await?.map(|(i, _)| i) else {
                problems.push(format!(
                    "{}: link {} not found",
                    spec.address, spec.link_name
                ));
                continue;
            };
            let present = kernel_addresses(h, index)
                .await?
                .iter()
                .any(|m| message_cidr(m).as_deref() == Some(spec.address.as_str()));
            if !present {
                let (ip, prefix) = spec.address.split_once('/').expect("validated");
                let ip: IpAddr = ip.parse()?;
                let mut req = h.address().add(index, ip, prefix.parse()?);
                // Loopback addresses are host-scoped, as the kernel makes them: a global one
                // would be picked as the source of broadcasts on other links (DHCP).
                if ip.is_loopback() {
                    req.message_mut().header.scope = AddressScope::Host;
                }
                req.execute().await?;
                tracing::info!(
                    address = spec.address,
                    link = spec.link_name,
                    "address added"
                );
                self.added
                    .insert((spec.link_name.clone(), spec.address.clone()));
            }
        }
        // Addresses this controller added whose specs are gone.
        let gone: Vec<(String, String)> = self
            .added
            .iter()
            .filter(|(l, a)| !wanted.iter().any(|s| s.link_name == *l && s.address == *a))
            .cloned()
            .collect();
        for (link, address) in gone {
            if let Some(index) = link_state(h, &link).await?.map(|(i, _)| i) {
                for m in kernel_addresses(h, index).await? {
                    if message_cidr(&m).as_deref() == Some(address.as_str()) {
                        h.address().del(m).execute().await?;
                        tracing::info!(address, link, "address removed");
                    }
                }
            }
            self.added.remove(&(link, address));
        }
        if !problems.is_empty() {
            // Links come and go: look again later.
            tracing::warn!(?problems, "address specs not applied");
            ctx.requeue_after(Duration::from_secs(5));
        }
        Ok(())
    }
}

/// A netlink handle, opened on first use.
fn handle(slot: &mut Option<rtnetlink::Handle>) -> std::io::Result<&rtnetlink::Handle> {
    if slot.is_none() {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        *slot = Some(handle);
    }
    Ok(slot.as_ref().expect("set"))
}

/// Kernel routes of the main table, by the same ID as their specs and statuses.
async fn kernel_routes(
    h: &rtnetlink::Handle,
) -> Result<Vec<(String, RouteMessage)>, ControllerError> {
    let names = link_names(h).await?;
    Ok(dump_routes(h)
        .await?
        .into_iter()
        .filter(|m| m.header.table == 254)
        .map(|m| (route_status(&m, &names).0, m))
        .collect())
}

/// Puts merged route specs into the kernel's main table; removes the ones it added whose specs
/// are gone.
pub struct RouteSpecController {
    apply: bool,
    added: HashSet<String>,
    conn: Option<rtnetlink::Handle>,
}

impl RouteSpecController {
    pub fn new(apply: bool) -> RouteSpecController {
        RouteSpecController {
            apply,
            added: HashSet::new(),
            conn: None,
        }
    }
}

#[async_trait::async_trait]
impl Controller for RouteSpecController {
    fn name(&self) -> &str {
        "network.RouteSpecController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::weak(NETWORK_NS, ROUTE_SPEC),
            Input::weak(NETWORK_NS, LINK_STATUS),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        Vec::new()
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        if !self.apply {
            return Ok(());
        }
        let h = handle(&mut self.conn)?.clone();
        let wanted: Vec<RouteSpecSpec> = specs(ctx, NETWORK_NS, ROUTE_SPEC)?;
        let present = kernel_routes(&h).await?;
        let mut missing_links = Vec::new();
        for spec in &wanted {
            let id = spec.merged_id();
            if present.iter().any(|(p, _)| *p == id) {
                continue;
            }
            let Some(index) = link_state(&h, &spec.out_link_name).await?.map(|(i, _)| i) else {
                missing_links.push(format!("{id}: link {} not found", spec.out_link_name));
                continue;
            };
            let (dst, prefix) = match spec.destination.split_once('/') {
                Some((ip, p)) => (ip.parse::<IpAddr>()?, p.parse::<u8>()?),
                None if spec.family == "inet6" => ("::".parse()?, 0),
                None => ("0.0.0.0".parse()?, 0),
            };
            let mut b = rtnetlink::RouteMessageBuilder::<IpAddr>::new()
                .destination_prefix(dst, prefix)?
                .output_interface(index)
                .priority(spec.priority);
            if !spec.gateway.is_empty() {
                b = b.gateway(spec.gateway.parse()?)?;
            }
            h.route().add(b.build()).execute().await?;
            tracing::info!(route = id, "route added");
            self.added.insert(id);
        }
        let gone: Vec<String> = self
            .added
            .iter()
            .filter(|id| !wanted.iter().any(|s| s.merged_id() == **id))
            .cloned()
            .collect();
        for id in gone {
            for (p, m) in &present {
                if *p == id {
                    h.route().del(m.clone()).execute().await?;
                    tracing::info!(route = id, "route removed");
                }
            }
            self.added.remove(&id);
        }
        if !missing_links.is_empty() {
            tracing::warn!(?missing_links, "route specs not applied");
            ctx.requeue_after(Duration::from_secs(5));
        }
        Ok(())
    }
}

/// Brings configured links up and sets their MTU; a link whose spec is gone gets its MTU back.
pub struct LinkSpecController {
    apply: bool,
    /// MTUs links had before this controller changed them.
    original_mtu: BTreeMap<String, u32>,
    /// Logical links this controller made.
    created: BTreeSet<String>,
    /// Links this controller made ports of a bridge or bond.
    ports: BTreeSet<String>,
    /// Links this controller set down.
    downed: BTreeSet<String>,
    conn: Option<rtnetlink::Handle>,
}

impl LinkSpecController {
    pub fn new(apply: bool) -> LinkSpecController {
        LinkSpecController {
            apply,
            original_mtu: BTreeMap::new(),
            created: BTreeSet::new(),
            ports: BTreeSet::new(),
            downed: BTreeSet::new(),
            conn: None,
        }
    }
}

fn bond_mode(mode: &str) -> Option<rtnetlink::packet_route::link::BondMode> {
    use rtnetlink::packet_route::link::BondMode;
    Some(match mode {
        "" | "balance-rr" => BondMode::BalanceRr,
        "active-backup" => BondMode::ActiveBackup,
        "balance-xor" => BondMode::BalanceXor,
        "broadcast" => BondMode::Broadcast,
        "802.3ad" => BondMode::Ieee8023Ad,
        "balance-tlb" => BondMode::BalanceTlb,
        "balance-alb" => BondMode::BalanceAlb,
        _ => return None,
    })
}

async fn link_state(
    h: &rtnetlink::Handle,
    name: &str,
) -> Result<Option<(u32, LinkStatusSpec)>, ControllerError> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(m)) => Ok(Some((m.header.index, link_status(&m).1))),
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -19 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[async_trait::async_trait]
impl Controller for LinkSpecController {
    fn name(&self) -> &str {
        "network.LinkSpecController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![Input::weak(NETWORK_NS, LINK_SPEC)]
    }
    fn outputs(&self) -> Vec<Output> {
        Vec::new()
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        if !self.apply {
            return Ok(());
        }
        let h = handle(&mut self.conn)?.clone();
        let wanted: Vec<LinkSpecSpec> = specs(ctx, NETWORK_NS, LINK_SPEC)?;
        let mut missing = false;
        for spec in wanted.iter().filter(|s| s.logical) {
            if link_state(&h, &spec.name).await?.is_some() {
                continue;
            }
            let message = match spec.kind.as_str() {
                "vlan" => {
                    let Some((parent, _)) = link_state(&h, &spec.parent_name).await? else {
                        tracing::warn!(
                            link = spec.name,
                            parent = spec.parent_name,
                            "VLAN parent not found"
                        );
                        missing = true;
                        continue;
                    };
                    rtnetlink::LinkVlan::new(&spec.name, parent, spec.vlan_id).build()
                }
                "bridge" => {
                    use rtnetlink::packet_route::link::BridgeStpState;
                    let stp = if spec.stp == Some(true) {
                        BridgeStpState::KernelStp
                    } else {
                        BridgeStpState::Disabled
                    };
                    rtnetlink::LinkBridge::new(&spec.name)
                        .stp_state(stp)
                        .build()
                }
                "bond" => {
                    let Some(mode) = bond_mode(&spec.bond_mode) else {
                        tracing::warn!(
                            link = spec.name,
                            mode = spec.bond_mode,
                            "unknown bond mode"
                        );
                        continue;
                    };
                    rtnetlink::LinkBond::new(&spec.name).mode(mode).build()
                }
                "dummy" => rtnetlink::LinkDummy::new(&spec.name).build(),
                kind => {
                    tracing::warn!(link = spec.name, kind, "links of this kind are not made");
                    continue;
                }
            };
            match h.link().add(message).execute().await {
                Ok(()) => {
                    tracing::info!(link = spec.name, kind = spec.kind, "logical link created");
                    self.created.insert(spec.name.clone());
                }
                // A kernel without 802.1Q or bonding, say: the other links still get configured.
                Err(e) => {
                    tracing::warn!(link = spec.name, kind = spec.kind, error = %e, "cannot create the link");
                    missing = true;
                }
            }
        }
        let gone: Vec<String> = self
            .created
            .iter()
            .filter(|n| !wanted.iter().any(|s| s.name == **n))
            .cloned()
            .collect();
        for name in gone {
            if let Some((index, _)) = link_state(&h, &name).await? {
                h.link().del(index).execute().await?;
                tracing::info!(link = name, "logical link removed");
            }
            self.created.remove(&name);
        }
        for spec in &wanted {
            let Some((index, status)) = link_state(&h, &spec.name).await? else {
                tracing::warn!(link = spec.name, "configured link not found");
                missing = true;
                continue;
            };
            let master = spec.bond_slave.as_ref().or(spec.bridge_slave.as_ref());
            if let Some(m) = master {
                match link_state(&h, &m.master_name).await? {
                    Some((mi, _)) if mi == status.master_index => {}
                    Some((mi, _)) => {
                        // A bond takes only ports that are down.
                        let mut b = rtnetlink::LinkUnspec::new_with_index(index).controller(mi);
                        if spec.bond_slave.is_some() {
                            h.link()
                                .set(rtnetlink::LinkUnspec::new_with_index(index).down().build())
                                .execute()
                                .await?;
                            b = b.up();
                        }
                        h.link().set(b.build()).execute().await?;
                        self.ports.insert(spec.name.clone());
                        tracing::info!(link = spec.name, master = m.master_name, "link joined");
                    }
                    None => missing = true,
                }
            }
            let mut b = rtnetlink::LinkUnspec::new_with_index(index);
            let mut change = false;
            if spec.mtu != 0 && spec.mtu != status.mtu {
                self.original_mtu
                    .entry(spec.name.clone())
                    .or_insert(status.mtu);
                b = b.mtu(spec.mtu);
                change = true;
            }
            if spec.up != status.link_state {
                b = if spec.up { b.up() } else { b.down() };
                if !spec.up {
                    self.downed.insert(spec.name.clone());
                }
                change = true;
            }
            if change {
                h.link().set(b.build()).execute().await?;
                tracing::info!(
                    link = spec.name,
                    mtu = spec.mtu,
                    up = spec.up,
                    "link configured"
                );
            }
        }
        let released: Vec<String> = self
            .ports
            .iter()
            .filter(|n| {
                !wanted
                    .iter()
                    .any(|s| s.name == **n && (s.bond_slave.is_some() || s.bridge_slave.is_some()))
            })
            .cloned()
            .collect();
        for name in released {
            if let Some((index, status)) = link_state(&h, &name).await? {
                if status.master_index != 0 {
                    h.link()
                        .set(
                            rtnetlink::LinkUnspec::new_with_index(index)
                                .nocontroller()
                                .build(),
                        )
                        .execute()
                        .await?;
                    tracing::info!(link = name, "link released from its master");
                }
            }
            self.ports.remove(&name);
        }
        // Links set down by a spec that is gone come back up.
        let raise: Vec<String> = self
            .downed
            .iter()
            .filter(|n| !wanted.iter().any(|s| s.name == **n && !s.up))
            .cloned()
            .collect();
        for name in raise {
            if let Some((index, _)) = link_state(&h, &name).await? {
                h.link()
                    .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
                    .execute()
                    .await?;
            }
            self.downed.remove(&name);
        }
        let restore: Vec<(String, u32)> = self
            .original_mtu
            .iter()
            .filter(|(name, _)| !wanted.iter().any(|s| s.name == **name && s.mtu != 0))
            .map(|(n, m)| (n.clone(), *m))
            .collect();
        for (name, mtu) in restore {
            if let Some((index, _)) = link_state(&h, &name).await? {
                h.link()
                    .set(
                        rtnetlink::LinkUnspec::new_with_index(index)
                            .mtu(mtu)
                            .build(),
                    )
                    .execute()
                    .await?;
            }
            self.original_mtu.remove(&name);
        }
        if missing {
            ctx.requeue_after(Duration::from_secs(5));
        }
        Ok(())
    }
}

/// The merged resolvers and time servers as statuses, the node's `/etc/resolv.conf` and
/// `/etc/hosts` (written under /system, where a container-mode node has them bound over /etc),
/// and the overall NetworkStatus.
pub struct EtcFilesController {
    apply: bool,
}

/// Extra `/etc/hosts` lines of a config: `machine.network.extraHostEntries` and the
/// StaticHostConfig documents.
fn extra_hosts(cfg: Option<&machinery::Config>) -> Vec<(String, Vec<String>)> {
    let Some(cfg) = cfg else { return Vec::new() };
    let names = |v: Option<&serde_json::Value>| -> Vec<String> {
        v.and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(String::from))
            .collect()
    };
    let mut out: Vec<(String, Vec<String>)> = cfg
        .pointer("/machine/network/extraHostEntries")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e.get("ip")?.as_str()?.to_string(), names(e.get("aliases")))))
        .collect();
    out.extend(cfg.kind("StaticHostConfig").filter_map(|d| {
        Some((
            d.value.get("name")?.as_str()?.to_string(),
            names(d.value.get("hostnames")),
        ))
    }));
    out.retain(|(_, n)| !n.is_empty());
    out
}

/// Write in place: the file is a bind-mount target, which a rename would leave behind.
fn write_in_place(path: &str, text: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|cur| cur == text) {
        return Ok(());
    }
    std::fs::write(path, text)
}

#[async_trait::async_trait]
impl Controller for EtcFilesController {
    fn name(&self) -> &str {
        "network.EtcFileController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::weak(NETWORK_NS, RESOLVER_SPEC),
            Input::weak(NETWORK_NS, TIME_SERVER_SPEC),
            Input::weak(NETWORK_NS, crate::node::HOSTNAME_STATUS),
            Input::weak(NETWORK_NS, NODE_ADDRESS),
            Input::weak(NETWORK_NS, ROUTE_STATUS),
            Input::weak(crate::node::CONFIG_NS, crate::node::MACHINE_CONFIG)
                .id(crate::node::MACHINE_CONFIG_ID),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::exclusive(NETWORK_NS, RESOLVER_STATUS),
            Output::exclusive(NETWORK_NS, TIME_SERVER_STATUS),
            Output::exclusive(NETWORK_NS, NETWORK_STATUS),
        ]
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        use resources::Pointer;
        let resolver = ctx
            .get(&Pointer::new(NETWORK_NS, RESOLVER_SPEC, "resolvers"))?
            .and_then(|r| r.spec::<ResolverSpecSpec>().cloned());
        let time = ctx
            .get(&Pointer::new(NETWORK_NS, TIME_SERVER_SPEC, "timeservers"))?
            .and_then(|r| r.spec::<TimeServerSpecSpec>().cloned());
        let hostname = ctx
            .get(&Pointer::new(
                NETWORK_NS,
                crate::node::HOSTNAME_STATUS,
                "hostname",
            ))?
            .and_then(|r| r.spec::<crate::node::HostnameSpec>().cloned());
        let addresses = node_ips(ctx, "current")?;
        let default_route = ctx
            .list(NETWORK_NS, ROUTE_STATUS, &LabelQuery::all())?
            .iter()
            .filter_map(|r| r.spec::<RouteStatusSpec>())
            .any(|r| r.dst.is_empty() && !r.gateway.is_empty());
        let mut etc_ready = false;
        if let (Some(r), Some(h)) = (&resolver, &hostname) {
            let status = ResolverStatusSpec {
                dns_servers: r.dns_servers.clone(),
                search_domains: r.search_domains.clone(),
            };
            ctx.modify(NETWORK_NS, RESOLVER_STATUS, "resolvers", |_| status)?;
            let mut resolv: String = r
                .dns_servers
                .iter()
                .map(|s| format!("nameserver {s}\n"))
                .collect();
            if !r.search_domains.is_empty() {
                resolv.push_str(&format!("search {}\n", r.search_domains.join(" ")));
            }
            let fqdn = if h.domainname.is_empty() {
                h.hostname.clone()
            } else {
                format!("{}.{}", h.hostname, h.domainname)
            };
            let mut hosts =
                String::from("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n");
            if let Some(ip) = addresses.first() {
                hosts.push_str(&format!("{ip} {fqdn} {}\n", h.hostname));
            }
            for (ip, names) in extra_hosts(crate::node::machine_config(ctx)?.as_ref()) {
                hosts.push_str(&format!("{ip} {}\n", names.join(" ")));
            }
            etc_ready = if self.apply {
                let written = std::fs::create_dir_all("/system/etc")
                    .and_then(|_| write_in_place(RESOLV_CONF, &resolv))
                    .and_then(|_| write_in_place(HOSTS, &hosts));
                if let Err(e) = &written {
                    tracing::warn!(error = %e, "cannot write the node's /etc files");
                }
                written.is_ok()
            } else {
                true
            };
        }
        if let Some(t) = time {
            let status = TimeServerStatusSpec {
                time_servers: t.time_servers,
                use_nts: t.use_nts,
            };
            ctx.modify(NETWORK_NS, TIME_SERVER_STATUS, "timeservers", |_| status)?;
        }
        let status = NetworkStatusSpec {
            address_ready: !addresses.is_empty(),
            connectivity_ready: default_route,
            hostname_ready: hostname.is_some(),
            etc_files_ready: etc_ready,
        };
        ctx.modify(NETWORK_NS, NETWORK_STATUS, "status", |_| status)?;
        Ok(())
    }
}
