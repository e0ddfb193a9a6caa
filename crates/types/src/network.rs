//! Networking: links, addresses and routes as the kernel has them (statuses) and as the node
//! wants them (specs, merged by layer from `network-config` into `network`), the node's
//! addresses, resolvers, time servers, hostname and operators.

use serde::{Deserialize, Serialize};

use crate::{resource_type, NETWORK_NS};

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

/// The node's hostname as set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostnameStatusSpec {
    pub hostname: String,
    pub domainname: String,
}

resource_type!(LinkStatusSpec, "LinkStatuses.net.talos.dev", NETWORK_NS,
    aliases ["link", "links"],
    columns [("Alias", "{.alias}"), ("Type", "{.type}"), ("Kind", "{.kind}"),
        ("Hw Addr", "{.hardwareAddr}"), ("Oper State", "{.operationalState}"),
        ("Link State", "{.linkState}")]);
resource_type!(AddressStatusSpec, "AddressStatuses.net.talos.dev", NETWORK_NS,
    aliases ["address", "addresses"],
    columns [("Address", "{.address}"), ("Link", "{.linkName}")]);
resource_type!(RouteStatusSpec, "RouteStatuses.net.talos.dev", NETWORK_NS,
    aliases ["route", "routes"],
    columns [("Destination", "{.dst}"), ("Gateway", "{.gateway}"),
        ("Link", "{.outLinkName}"), ("Metric", "{.priority}")]);
resource_type!(AddressSpecSpec, "AddressSpecs.net.talos.dev", NETWORK_NS);
resource_type!(RouteSpecSpec, "RouteSpecs.net.talos.dev", NETWORK_NS);
resource_type!(
    LinkSpecSpec,
    "LinkSpecs.net.talos.dev",
    NETWORK_NS,
    sensitive
);
resource_type!(HostnameSpecSpec, "HostnameSpecs.net.talos.dev", NETWORK_NS);
resource_type!(
    OperatorSpecSpec,
    "OperatorSpecs.net.talos.dev",
    NETWORK_NS,
    sensitive
);
resource_type!(ResolverSpecSpec, "ResolverSpecs.net.talos.dev", NETWORK_NS,
    columns [("Layer", "{.layer}"), ("Resolvers", "{.dnsServers}"),
        ("Search Domains", "{.searchDomains}")]);
resource_type!(ResolverStatusSpec, "ResolverStatuses.net.talos.dev", NETWORK_NS,
    aliases ["resolvers"],
    columns [("Resolvers", "{.dnsServers}"), ("Search Domains", "{.searchDomains}")]);
resource_type!(TimeServerSpecSpec, "TimeServerSpecs.net.talos.dev", NETWORK_NS,
    columns [("Timeservers", "{.timeServers}"), ("UseNTS", "{.useNTS}")]);
resource_type!(TimeServerStatusSpec, "TimeServerStatuses.net.talos.dev", NETWORK_NS,
    aliases ["timeserver", "timeservers"],
    columns [("Timeservers", "{.timeServers}"), ("UseNTS", "{.useNTS}")]);
resource_type!(NetworkStatusSpec, "NetworkStatuses.net.talos.dev", NETWORK_NS,
    aliases ["netstatus", "netstatuses"],
    columns [("Address", "{.addressReady}"), ("Connectivity", "{.connectivityReady}"),
        ("Hostname", "{.hostnameReady}"), ("Etc", "{.etcFilesReady}")]);
resource_type!(NodeAddressSpec, "NodeAddresses.net.talos.dev", NETWORK_NS,
    columns [("Addresses", "{.addresses}"), ("SortAlgorithm", "{.sortAlgorithm}")]);
resource_type!(HostnameStatusSpec, "HostnameStatuses.net.talos.dev", NETWORK_NS,
    aliases ["hostname"],
    columns [("Hostname", "{.hostname}"), ("Domainname", "{.domainname}")]);
