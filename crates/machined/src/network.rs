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

use crate::node::{machine_config, CONFIG_NS, MACHINE_CONFIG, MACHINE_CONFIG_ID, NETWORK_NS};

pub const NETWORK_CONFIG_NS: &str = "network-config";
pub const LINK_STATUS: &str = "LinkStatuses.net.talos.dev";
pub const ADDRESS_STATUS: &str = "AddressStatuses.net.talos.dev";
pub const ROUTE_STATUS: &str = "RouteStatuses.net.talos.dev";
pub const ADDRESS_SPEC: &str = "AddressSpecs.net.talos.dev";
pub const NODE_ADDRESS: &str = "NodeAddresses.net.talos.dev";

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
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Mtu(v) => spec.mtu = *v,
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
    for family in [rtnetlink::IpVersion::V4, rtnetlink::IpVersion::V6] {
        let msg = match family {
            rtnetlink::IpVersion::V4 => {
                rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
            }
            rtnetlink::IpVersion::V6 => {
                rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
            }
        };
        let mut routes = h.route().get(msg).execute();
        while let Some(m) = routes.try_next().await? {
            // The local table is the kernel's own bookkeeping.
            if m.header.table == 255 {
                continue;
            }
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
    let (mut conn, handle, events) = rtnetlink::new_connection()?;
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
        if self.conn.is_none() {
            self.conn = Some(connect()?);
        }
        let (handle, events) = self.conn.as_mut().expect("connected");
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
        // Wait for the kernel to say something changed; look again within a second anyway
        // (netlink notifications can be lost when the socket's buffer overflows).
        let _ = tokio::time::timeout(Duration::from_secs(1), events.next()).await;
        ctx.requeue_after(Duration::ZERO);
        Ok(())
    }
}

/// Address specs from the defaults and the machine config, in `network-config`.
pub struct AddressConfigController;

fn address_spec(address: &str, link: &str, layer: &str) -> Option<AddressSpecSpec> {
    let (ip, prefix) = address.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    prefix.parse::<u8>().ok()?;
    Some(AddressSpecSpec {
        address: format!("{ip}/{prefix}"),
        link_name: link.into(),
        family: if ip.is_ipv4() { "inet4" } else { "inet6" }.into(),
        scope: if ip.is_loopback() { "host" } else { "global" }.into(),
        flags: "permanent".into(),
        announce_with_arp: false,
        layer: layer.into(),
    })
}

#[async_trait::async_trait]
impl Controller for AddressConfigController {
    fn name(&self) -> &str {
        "network.AddressConfigController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![Input::weak(CONFIG_NS, MACHINE_CONFIG).id(MACHINE_CONFIG_ID)]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive(NETWORK_CONFIG_NS, ADDRESS_SPEC)]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let mut specs = vec![
            address_spec("127.0.0.1/8", "lo", "default"),
            address_spec("::1/128", "lo", "default"),
        ];
        if let Some(cfg) = machine_config(ctx)? {
            for iface in cfg
                .pointer("/machine/network/interfaces")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                let Some(link) = iface.get("interface").and_then(|v| v.as_str()) else {
                    continue;
                };
                for a in iface
                    .get("addresses")
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str())
                {
                    specs.push(address_spec(a, link, "configuration"));
                }
            }
        }
        for spec in specs.into_iter().flatten() {
            let id = format!("{}/{}/{}", spec.layer, spec.link_name, spec.address);
            ctx.modify(NETWORK_CONFIG_NS, ADDRESS_SPEC, &id, |_| spec)?;
        }
        Ok(())
    }
}

/// Merges `network-config` address specs into `network`: for the same link and address, the
/// highest layer wins.
pub struct AddressMergeController;

fn layer_rank(layer: &str) -> usize {
    LAYERS.iter().position(|l| *l == layer).unwrap_or(0)
}

#[async_trait::async_trait]
impl Controller for AddressMergeController {
    fn name(&self) -> &str {
        "network.AddressMergeController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![Input::weak(NETWORK_CONFIG_NS, ADDRESS_SPEC)]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive(NETWORK_NS, ADDRESS_SPEC)]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let mut merged: BTreeMap<String, AddressSpecSpec> = BTreeMap::new();
        for r in ctx.list(NETWORK_CONFIG_NS, ADDRESS_SPEC, &LabelQuery::all())? {
            let Some(spec) = r.spec::<AddressSpecSpec>() else {
                continue;
            };
            let id = format!("{}/{}", spec.link_name, spec.address);
            match merged.get(&id) {
                Some(cur) if layer_rank(&cur.layer) >= layer_rank(&spec.layer) => {}
                _ => {
                    merged.insert(id, spec.clone());
                }
            }
        }
        for (id, spec) in merged {
            ctx.modify(NETWORK_NS, ADDRESS_SPEC, &id, |_| spec)?;
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

async fn link_index(h: &rtnetlink::Handle, name: &str) -> Result<Option<u32>, rtnetlink::Error> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(l) => Ok(l.map(|l| l.header.index)),
        // No such device.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -19 => Ok(None),
        Err(e) => Err(e),
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
        vec![Input::weak(NETWORK_NS, ADDRESS_SPEC)]
    }
    fn outputs(&self) -> Vec<Output> {
        Vec::new()
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        if !self.apply {
            return Ok(());
        }
        if self.conn.is_none() {
            let (conn, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(conn);
            self.conn = Some(handle);
        }
        let h = self.conn.as_ref().expect("connected");
        let wanted: Vec<AddressSpecSpec> = ctx
            .list(NETWORK_NS, ADDRESS_SPEC, &LabelQuery::all())?
            .iter()
            .filter_map(|r| r.spec::<AddressSpecSpec>().cloned())
            .collect();
        let mut problems = Vec::new();
        for spec in &wanted {
            let Some(index) = link_index(h, &spec.link_name).await? else {
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
                h.address()
                    .add(index, ip, prefix.parse()?)
                    .execute()
                    .await?;
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
            if let Some(index) = link_index(h, &link).await? {
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
