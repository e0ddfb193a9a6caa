//! Where network specs come from. Three sources each write the unmerged specs of their layer
//! into `network-config` (`<layer>/<id>`), and the merge controllers in `network` pick by layer:
//!
//! - `default`: loopback addresses, public resolvers and time servers, a hostname made of the
//!   node's address (or the stable one when asked for), and DHCPv4 on every physical link when
//!   neither the command line nor the config configures any link;
//! - `cmdline`: the kernel command line: `ip=` (address, gateway, hostname, device, autoconf,
//!   resolvers, time server), `talos.hostname=`, `talos.network.interface.ignore=`;
//! - `configuration`: `machine.network` of the v1alpha1 document (interfaces with addresses,
//!   routes, MTU, DHCP, VIP, VLANs, bonds, bridges, dummies; nameservers; hostname) and the
//!   network documents (LinkConfig, VLANConfig, BondConfig, BridgeConfig, DummyLinkConfig,
//!   DHCPv4Config, Layer2VIPConfig, HostnameConfig, ResolverConfig, TimeSyncConfig).
//!
//! Links that are ignored (`ignore: true`, or on the command line) get no specs from anyone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use machinery::config::types as t;
use machinery::config::Config;

use crate::controllers::network::layers::Layered;
use types::network::{
    AddressSpecSpec, HostnameSpecSpec, LinkSpecSpec, LinkStatusSpec, OperatorSpecSpec,
    ResolverSpecSpec, RouteSpecSpec, SlaveSpec, TimeServerSpecSpec,
};

use crate::sys::cmdline::{Cmdline, IpParam};

/// A link as the node's NIC: Ethernet with a hardware address, not made by software (in a
/// container-mode node a veth is how a NIC arrives, so it counts).
pub fn physical(s: &LinkStatusSpec) -> bool {
    s.link_type == "ether"
        && (s.kind.is_empty() || s.kind == "veth")
        && !s.hardware_addr.is_empty()
        && s.hardware_addr != "00:00:00:00:00:00"
}

/// Unmerged specs of all layers.
#[derive(Debug, Default)]
pub struct Specs {
    pub addresses: Vec<AddressSpecSpec>,
    pub routes: Vec<RouteSpecSpec>,
    pub links: Vec<LinkSpecSpec>,
    pub resolvers: Vec<ResolverSpecSpec>,
    pub time_servers: Vec<TimeServerSpecSpec>,
    pub operators: Vec<OperatorSpecSpec>,
    pub hostnames: Vec<HostnameSpecSpec>,
    /// Links no source may touch.
    ignored: BTreeSet<String>,
    /// Problems with the sources (a bad `ip=`), for the log.
    pub warnings: Vec<String>,
}

/// `ip/prefix` as an address spec, or None when it is not one.
pub fn address_spec(address: &str, link: &str, layer: &str) -> Option<AddressSpecSpec> {
    let (ip, prefix) = address.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    prefix.parse::<u8>().ok()?;
    Some(AddressSpecSpec {
        address: format!("{ip}/{prefix}"),
        link_name: link.into(),
        family: family(&ip).into(),
        scope: if ip.is_loopback() { "host" } else { "global" }.into(),
        flags: "permanent".into(),
        announce_with_arp: false,
        layer: layer.into(),
    })
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "inet4"
    } else {
        "inet6"
    }
}

/// A link spec of a layer with nothing set but its name.
pub fn link_spec(name: &str, layer: &str) -> LinkSpecSpec {
    LinkSpecSpec {
        name: name.into(),
        logical: false,
        up: true,
        mtu: 0,
        kind: String::new(),
        parent_name: String::new(),
        vlan_id: 0,
        bond_slave: None,
        bridge_slave: None,
        bond_mode: String::new(),
        stp: None,
        layer: layer.into(),
    }
}

impl Specs {
    fn address(&mut self, cidr: &str, link: &str, layer: &str) {
        match address_spec(cidr, link, layer) {
            Some(a) => self.addresses.push(a),
            None => self
                .warnings
                .push(format!("{layer}: {cidr:?} on {link} is not ip/prefix")),
        }
    }

    /// A route on `link`: to `destination` (default route when absent) through `gateway`.
    fn route(
        &mut self,
        destination: Option<&str>,
        gateway: Option<&str>,
        link: &str,
        metric: Option<i64>,
        layer: &str,
    ) {
        let gateway = gateway.unwrap_or("");
        let (dest, fam) = match destination.filter(|d| !d.is_empty()) {
            Some(d) => match d
                .split_once('/')
                .and_then(|(ip, p)| Some((ip.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?)))
            {
                Some((ip, 0)) => (String::new(), family(&ip)),
                Some((ip, p)) => (format!("{ip}/{p}"), family(&ip)),
                None => {
                    self.warnings
                        .push(format!("{layer}: route {d:?} on {link} is not ip/prefix"));
                    return;
                }
            },
            None => (
                String::new(),
                match gateway.parse::<IpAddr>() {
                    Ok(ip) => family(&ip),
                    Err(_) => "inet4",
                },
            ),
        };
        self.routes.push(RouteSpecSpec {
            family: fam.into(),
            destination: dest,
            gateway: gateway.into(),
            out_link_name: link.into(),
            table: "main".into(),
            priority: metric.filter(|m| *m > 0).unwrap_or(1024) as u32,
            protocol: "static".into(),
            layer: layer.into(),
        });
    }

    /// A link spec; one for the same link in the same layer is merged into it.
    fn link(&mut self, spec: LinkSpecSpec) {
        match self
            .links
            .iter_mut()
            .find(|l| l.name == spec.name && l.layer == spec.layer)
        {
            Some(cur) => cur.merge(&spec),
            None => self.links.push(spec),
        }
    }

    fn operator(&mut self, operator: &str, link: &str, vip: &str, layer: &str) {
        self.operators.push(OperatorSpecSpec {
            operator: operator.into(),
            link_name: link.into(),
            require_up: true,
            vip: vip.into(),
            dhcp4: None,
            layer: layer.into(),
        });
    }

    /// DHCPv4 on `link`, its routes with `metric` (1024 when unset).
    fn dhcp(&mut self, link: &str, metric: Option<i64>, layer: &str) {
        self.operator("dhcp4", link, "", layer);
        let route_metric = metric.filter(|m| *m > 0).unwrap_or(1024) as u32;
        self.operators.last_mut().expect("pushed").dhcp4 =
            Some(types::network::Dhcp4Options { route_metric });
    }

    /// DHCP and the shared IP of a v1alpha1 interface or VLAN.
    fn v1_operators(
        &mut self,
        link: &str,
        dhcp: Option<bool>,
        options: Option<&t::DHCPOptions>,
        vip: Option<&t::VIP>,
    ) {
        const L: &str = "configuration";
        if dhcp == Some(true) {
            self.dhcp(link, options.and_then(|o| o.route_metric), L);
        }
        if let Some(ip) = vip.and_then(|v| v.ip.as_deref()) {
            self.operator("vip", link, ip, L);
        }
    }

    /// Addresses, routes, MTU and state of a link of the configuration layer.
    fn common(
        &mut self,
        spec: LinkSpecSpec,
        addresses: &[t::NetworkAddressConfig],
        routes: &[t::NetworkRouteConfig],
    ) {
        const L: &str = "configuration";
        for a in addresses.iter().filter_map(|a| a.address.as_deref()) {
            self.address(a, &spec.name, L);
        }
        for r in routes {
            self.route(
                r.destination.as_deref(),
                r.gateway.as_deref(),
                &spec.name,
                r.metric,
                L,
            );
        }
        self.link(spec);
    }

    /// Ports of a bond or bridge.
    fn ports(&mut self, master: &str, links: &[String], bond: bool) {
        for (i, port) in links.iter().enumerate() {
            let mut spec = link_spec(port, "configuration");
            let slave = SlaveSpec {
                master_name: master.into(),
                slave_index: if bond { i as u32 } else { 0 },
            };
            if bond {
                spec.bond_slave = Some(slave);
            } else {
                spec.bridge_slave = Some(slave);
            }
            self.link(spec);
        }
    }

    fn drop_ignored(&mut self) {
        let ignored = std::mem::take(&mut self.ignored);
        let keep = |link: &str| !ignored.contains(link);
        self.addresses.retain(|a| keep(&a.link_name));
        self.routes.retain(|r| keep(&r.out_link_name));
        self.links.retain(|l| keep(&l.name));
        self.operators.retain(|o| keep(&o.link_name));
        self.ignored = ignored;
    }
}

fn mtu(v: Option<i64>) -> u32 {
    v.unwrap_or(0).clamp(0, u32::MAX as i64) as u32
}

/// The links a v1alpha1 device selector picks.
fn select(sel: &t::DeviceSelector, links: &BTreeMap<String, LinkStatusSpec>) -> Vec<String> {
    links
        .iter()
        .filter(|(_, s)| {
            sel.hardware_addr
                .as_deref()
                .is_none_or(|want| glob(want, &s.hardware_addr))
                && sel.physical.is_none_or(|p| p == physical(s))
        })
        .map(|(n, _)| n.clone())
        .collect()
}

/// `*` matches any run of characters.
fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern.eq_ignore_ascii_case(s),
        Some((head, tail)) => {
            s.len() >= head.len()
                && s[..head.len()].eq_ignore_ascii_case(head)
                && (0..=s.len() - head.len()).any(|i| glob(tail, &s[head.len() + i..]))
        }
    }
}

/// The specs of the kernel command line.
fn cmdline(specs: &mut Specs, c: &Cmdline, links: &BTreeMap<String, LinkStatusSpec>) -> bool {
    const L: &str = "cmdline";
    specs.ignored.extend(c.ignore.iter().cloned());
    let mut explicit = false;
    let mut hostname = c.hostname.clone().unwrap_or_default();
    if let Some(v) = &c.ip {
        match IpParam::parse(v) {
            Err(e) => specs.warnings.push(format!("cmdline: ip={v}: {e}")),
            Ok(p) => {
                let device = if p.device.is_empty() {
                    links
                        .iter()
                        .find(|(n, s)| physical(s) && !specs.ignored.contains(*n))
                        .map(|(n, _)| n.clone())
                } else {
                    Some(p.device.clone())
                };
                if hostname.is_empty() {
                    hostname = p.hostname.clone();
                }
                if let Some(dev) = device.filter(|_| p.address.is_some() || !p.device.is_empty()) {
                    explicit = true;
                    specs.link(link_spec(&dev, L));
                    if let Some((ip, prefix)) = p.address {
                        specs.address(&format!("{ip}/{prefix}"), &dev, L);
                    }
                    if let Some(gw) = p.gateway {
                        specs.route(None, Some(&gw.to_string()), &dev, None, L);
                    }
                    if p.dhcp {
                        specs.dhcp(&dev, None, L);
                    }
                }
                if !p.dns.is_empty() {
                    specs.resolvers.push(ResolverSpecSpec {
                        dns_servers: p.dns.iter().map(|d| d.to_string()).collect(),
                        search_domains: Vec::new(),
                        layer: L.into(),
                    });
                }
                if !p.ntp.is_empty() {
                    specs.time_servers.push(TimeServerSpecSpec {
                        time_servers: p.ntp.iter().map(|d| d.to_string()).collect(),
                        use_nts: false,
                        layer: L.into(),
                    });
                }
            }
        }
    }
    if !hostname.is_empty() {
        specs.hostnames.push(hostname_spec(&hostname, L));
    }
    explicit
}

fn hostname_spec(full: &str, layer: &str) -> HostnameSpecSpec {
    let (host, domain) = full.split_once('.').unwrap_or((full, ""));
    HostnameSpecSpec {
        hostname: host.into(),
        domainname: domain.into(),
        layer: layer.into(),
    }
}

/// Typed documents of one kind.
fn docs<T: serde::de::DeserializeOwned>(cfg: &Config, kind: &str) -> Vec<T> {
    cfg.kind(kind)
        .filter_map(|d| serde_json::from_value(d.value.clone()).ok())
        .collect()
}

/// The specs of the machine config; whether it configures any link.
fn configuration(
    specs: &mut Specs,
    cfg: &Config,
    links: &BTreeMap<String, LinkStatusSpec>,
) -> bool {
    const L: &str = "configuration";
    let v1 = cfg.v1alpha1_typed().unwrap_or_default();
    let machine = v1.machine.unwrap_or_default();
    let network = machine.network.unwrap_or_default();
    if let Some(h) = configured_hostname(cfg) {
        specs.hostnames.push(hostname_spec(&h, L));
    }
    let mut nameservers = network.nameservers.unwrap_or_default();
    let mut search = network.search_domains.unwrap_or_default();
    for r in docs::<t::NetworkResolverConfigV1Alpha1>(cfg, "ResolverConfig") {
        nameservers.extend(
            r.nameservers
                .into_iter()
                .flatten()
                .filter_map(|n| n.address),
        );
        search.extend(
            r.search_domains
                .and_then(|s| s.domains)
                .into_iter()
                .flatten(),
        );
    }
    if !nameservers.is_empty() {
        specs.resolvers.push(ResolverSpecSpec {
            dns_servers: nameservers,
            search_domains: search,
            layer: L.into(),
        });
    }
    let mut servers = machine.time.and_then(|t| t.servers).unwrap_or_default();
    let mut nts = false;
    for d in docs::<t::NetworkTimeSyncConfigV1Alpha1>(cfg, "TimeSyncConfig") {
        if let Some(ntp) = d.ntp {
            servers.extend(ntp.servers.into_iter().flatten());
            nts |= ntp.use_nts.unwrap_or(false);
        }
    }
    if !servers.is_empty() {
        specs.time_servers.push(TimeServerSpecSpec {
            time_servers: servers,
            use_nts: nts,
            layer: L.into(),
        });
    }

    let before = specs.links.len();
    let v1_routes = |routes: Option<Vec<t::Route>>| -> Vec<t::NetworkRouteConfig> {
        routes
            .into_iter()
            .flatten()
            .map(|r| t::NetworkRouteConfig {
                destination: r.network,
                gateway: r.gateway,
                metric: r.metric,
                ..Default::default()
            })
            .collect()
    };
    let v1_addresses = |a: Option<Vec<String>>| -> Vec<t::NetworkAddressConfig> {
        a.into_iter()
            .flatten()
            .map(|a| t::NetworkAddressConfig {
                address: Some(a),
                ..Default::default()
            })
            .collect()
    };
    for dev in network.interfaces.into_iter().flatten() {
        let names = match (&dev.interface, &dev.device_selector) {
            (Some(name), _) => vec![name.clone()],
            (None, Some(sel)) => select(sel, links),
            (None, None) => Vec::new(),
        };
        for name in names {
            if dev.ignore == Some(true) {
                specs.ignored.insert(name);
                continue;
            }
            let mut spec = link_spec(&name, L);
            spec.mtu = mtu(dev.mtu);
            if dev.dummy == Some(true) {
                spec.logical = true;
                spec.kind = "dummy".into();
            }
            if let Some(bridge) = &dev.bridge {
                spec.logical = true;
                spec.kind = "bridge".into();
                spec.stp = bridge.stp.as_ref().and_then(|s| s.enabled);
                specs.ports(&name, bridge.interfaces.as_deref().unwrap_or(&[]), false);
            }
            if let Some(bond) = &dev.bond {
                spec.logical = true;
                spec.kind = "bond".into();
                spec.bond_mode = bond.mode.clone().unwrap_or_default();
                specs.ports(&name, bond.interfaces.as_deref().unwrap_or(&[]), true);
            }
            specs.common(
                spec,
                &v1_addresses(dev.addresses.clone()),
                &v1_routes(dev.routes.clone()),
            );
            specs.v1_operators(&name, dev.dhcp, dev.dhcp_options.as_ref(), dev.vip.as_ref());
            for vlan in dev.vlans.iter().flatten() {
                let Some(id) = vlan.vlan_id else { continue };
                let vname = format!("{name}.{id}");
                let mut spec = link_spec(&vname, L);
                spec.logical = true;
                spec.kind = "vlan".into();
                spec.parent_name = name.clone();
                spec.vlan_id = id as u16;
                spec.mtu = mtu(vlan.mtu);
                specs.common(
                    spec,
                    &v1_addresses(vlan.addresses.clone()),
                    &v1_routes(vlan.routes.clone()),
                );
                specs.v1_operators(
                    &vname,
                    vlan.dhcp,
                    vlan.dhcp_options.as_ref(),
                    vlan.vip.as_ref(),
                );
            }
        }
    }

    // The network documents: the fields links share, then each kind's own.
    macro_rules! link_docs {
        ($ty:ty, $kind:literal, |$d:ident, $spec:ident| $extra:block) => {
            for $d in docs::<$ty>(cfg, $kind) {
                let mut $spec = link_spec($d.name.as_deref().unwrap_or_default(), L);
                $spec.up = $d.up.unwrap_or(true);
                $spec.mtu = mtu($d.mtu);
                $extra
                specs.common(
                    $spec,
                    $d.addresses.as_deref().unwrap_or(&[]),
                    $d.routes.as_deref().unwrap_or(&[]),
                );
            }
        };
    }
    link_docs!(t::NetworkLinkConfigV1Alpha1, "LinkConfig", |d, spec| {});
    link_docs!(t::NetworkVLANConfigV1Alpha1, "VLANConfig", |d, spec| {
        spec.logical = true;
        spec.kind = "vlan".into();
        spec.parent_name = d.parent.clone().unwrap_or_default();
        spec.vlan_id = d.vlan_id.unwrap_or(0) as u16;
    });
    link_docs!(t::NetworkBridgeConfigV1Alpha1, "BridgeConfig", |d, spec| {
        spec.logical = true;
        spec.kind = "bridge".into();
        spec.stp = d.stp.as_ref().and_then(|s| s.enabled);
        specs.ports(&spec.name, d.links.as_deref().unwrap_or(&[]), false);
    });
    link_docs!(t::NetworkBondConfigV1Alpha1, "BondConfig", |d, spec| {
        spec.logical = true;
        spec.kind = "bond".into();
        spec.bond_mode = d.bond_mode.clone().unwrap_or_default();
        specs.ports(&spec.name, d.links.as_deref().unwrap_or(&[]), true);
    });
    link_docs!(
        t::NetworkDummyLinkConfigV1Alpha1,
        "DummyLinkConfig",
        |d, spec| {
            spec.logical = true;
            spec.kind = "dummy".into();
        }
    );
    for d in docs::<t::NetworkDHCPv4ConfigV1Alpha1>(cfg, "DHCPv4Config") {
        let name = d.name.unwrap_or_default();
        specs.link(link_spec(&name, L));
        specs.dhcp(&name, d.route_metric, L);
    }
    for d in docs::<t::NetworkLayer2VIPConfigV1Alpha1>(cfg, "Layer2VIPConfig") {
        let (ip, link) = (d.name.unwrap_or_default(), d.link.unwrap_or_default());
        specs.operator("vip", &link, &ip, L);
    }
    specs.links.len() > before
}

/// The default layer; `explicit`: some link is configured by the command line or the config.
fn defaults(
    specs: &mut Specs,
    cfg: Option<&Config>,
    links: &BTreeMap<String, LinkStatusSpec>,
    node_address: Option<IpAddr>,
    explicit: bool,
) {
    const L: &str = "default";
    // The loopback is up on every machine (the kernel starts it down).
    specs.link(link_spec("lo", L));
    specs.address("127.0.0.1/8", "lo", L);
    specs.address("::1/128", "lo", L);
    specs.resolvers.push(ResolverSpecSpec {
        dns_servers: vec!["8.8.8.8".into(), "1.1.1.1".into()],
        search_domains: Vec::new(),
        layer: L.into(),
    });
    specs.time_servers.push(TimeServerSpecSpec {
        time_servers: vec!["pool.ntp.org".into()],
        use_nts: false,
        layer: L.into(),
    });
    let auto = cfg
        .and_then(|c| docs::<t::NetworkHostnameConfigV1Alpha1>(c, "HostnameConfig").pop())
        .and_then(|h| h.auto);
    let stable = auto.as_deref() == Some("stable")
        || cfg
            .and_then(|c| c.pointer("/machine/features/stableHostname"))
            .and_then(|v| v.as_bool())
            == Some(true);
    if stable {
        if let Some(c) = cfg {
            specs.hostnames.push(hostname_spec(&stable_hostname(c), L));
        }
    } else if auto.as_deref() != Some("off") {
        if let Some(ip) = node_address {
            let name = format!("talos-{}", ip.to_string().replace(['.', ':'], "-"));
            specs.hostnames.push(hostname_spec(&name, L));
        }
    }
    if !explicit {
        let nics: Vec<String> = links
            .iter()
            .filter(|(n, s)| physical(s) && !specs.ignored.contains(*n))
            .map(|(n, _)| n.clone())
            .collect();
        for nic in nics {
            specs.link(link_spec(&nic, L));
            specs.dhcp(&nic, None, L);
        }
    }
}

/// All unmerged specs from the three sources.
pub fn gather(
    cfg: Option<&Config>,
    cmd: &Cmdline,
    links: &BTreeMap<String, LinkStatusSpec>,
    node_address: Option<IpAddr>,
) -> Specs {
    let mut specs = Specs::default();
    let mut explicit = cmdline(&mut specs, cmd, links);
    if let Some(c) = cfg {
        explicit |= configuration(&mut specs, c, links);
    }
    defaults(&mut specs, cfg, links, node_address, explicit);
    specs.drop_ignored();
    specs
}

/// Routes the config puts on links this node does not have and the config does not make:
/// one message per route, naming where it is.
pub fn unknown_route_links(cfg: &Config, kernel: &BTreeSet<String>) -> Vec<String> {
    let v1 = cfg.v1alpha1_typed().unwrap_or_default();
    let devices = v1
        .machine
        .and_then(|m| m.network)
        .and_then(|n| n.interfaces)
        .unwrap_or_default();
    let made: BTreeSet<String> = gather(Some(cfg), &Cmdline::default(), &BTreeMap::new(), None)
        .links
        .into_iter()
        .filter(|l| l.logical)
        .map(|l| l.name)
        .collect();
    let known = |l: &str| kernel.contains(l) || made.contains(l);
    let have = kernel.iter().cloned().collect::<Vec<_>>().join(", ");
    let mut out = Vec::new();
    let mut check = |path: String, link: &str, routes: usize| {
        if !known(link) {
            for j in 0..routes {
                out.push(format!(
                    "{path}.routes[{j}]: route to unknown link \"{link}\" (this node has: {have})"
                ));
            }
        }
    };
    for (i, dev) in devices.iter().enumerate() {
        let path = format!("machine.network.interfaces[{i}]");
        if let Some(name) = &dev.interface {
            check(path.clone(), name, dev.routes.as_ref().map_or(0, Vec::len));
            for (k, vlan) in dev.vlans.iter().flatten().enumerate() {
                if let Some(id) = vlan.vlan_id {
                    let routes = vlan.routes.as_ref().map_or(0, Vec::len);
                    check(
                        format!("{path}.vlans[{k}]"),
                        &format!("{name}.{id}"),
                        routes,
                    );
                }
            }
        }
    }
    for d in docs::<t::NetworkLinkConfigV1Alpha1>(cfg, "LinkConfig") {
        let name = d.name.unwrap_or_default();
        check(
            format!("LinkConfig {name:?}"),
            &name,
            d.routes.as_ref().map_or(0, Vec::len),
        );
    }
    out
}

/// The hostname the config sets, if any.
fn configured_hostname(cfg: &Config) -> Option<String> {
    cfg.pointer("/machine/network/hostname")
        .or_else(|| {
            cfg.kind("HostnameConfig")
                .find_map(|d| d.value.get("hostname"))
        })
        .and_then(|v| v.as_str())
        .filter(|h| !h.is_empty())
        .map(String::from)
}

/// A stable hostname derived from the machine token (the default layer).
fn stable_hostname(cfg: &Config) -> String {
    let seed = cfg
        .pointer("/machine/token")
        .and_then(|v| v.as_str())
        .unwrap_or("talos");
    let mut h: u32 = 2166136261;
    for b in seed.bytes() {
        h = (h ^ b as u32).wrapping_mul(16777619);
    }
    format!("talos-{:03x}-{:03x}", h >> 20, (h >> 8) & 0xfff)
}

#[cfg(test)]
#[path = "sources_tests.rs"]
mod tests;
