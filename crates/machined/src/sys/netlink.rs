//! Reading the kernel's links, addresses and routes through netlink.

use std::collections::BTreeMap;
use std::net::IpAddr;

use futures::TryStreamExt;
use resources::ControllerError;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::AddressFamily;

use types::network::*;

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
pub struct Kernel {
    pub links: BTreeMap<String, LinkStatusSpec>,
    pub addresses: BTreeMap<String, AddressStatusSpec>,
    pub routes: BTreeMap<String, RouteStatusSpec>,
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

pub fn route_status(m: &RouteMessage, links: &BTreeMap<u32, String>) -> (String, RouteStatusSpec) {
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
pub async fn dump_routes(h: &rtnetlink::Handle) -> Result<Vec<RouteMessage>, rtnetlink::Error> {
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
pub async fn link_names(h: &rtnetlink::Handle) -> Result<BTreeMap<u32, String>, rtnetlink::Error> {
    let mut names = BTreeMap::new();
    let mut links = h.link().get().execute();
    while let Some(m) = links.try_next().await? {
        let (name, spec) = link_status(&m);
        names.insert(spec.index, name);
    }
    Ok(names)
}

pub async fn read_kernel(h: &rtnetlink::Handle) -> Result<Kernel, rtnetlink::Error> {
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

pub type Events = futures::channel::mpsc::UnboundedReceiver<(
    rtnetlink::packet_core::NetlinkMessage<rtnetlink::packet_route::RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
)>;

pub fn connect() -> std::io::Result<(rtnetlink::Handle, Events)> {
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

/// A netlink handle, opened on first use.
pub fn handle(slot: &mut Option<rtnetlink::Handle>) -> std::io::Result<&rtnetlink::Handle> {
    if slot.is_none() {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        *slot = Some(handle);
    }
    Ok(slot.as_ref().expect("set"))
}

pub async fn link_state(
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
