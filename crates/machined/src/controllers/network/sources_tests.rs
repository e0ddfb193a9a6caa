//! Tests of the network spec sources.

use super::*;

fn nic(mac: &str, kind: &str) -> LinkStatusSpec {
    LinkStatusSpec {
        index: 2,
        link_type: "ether".into(),
        kind: kind.into(),
        hardware_addr: mac.into(),
        mtu: 1500,
        operational_state: "up".into(),
        link_state: true,
        flags: String::new(),
        master_index: 0,
    }
}

fn links() -> BTreeMap<String, LinkStatusSpec> {
    let mut lo = nic("00:00:00:00:00:00", "");
    lo.link_type = "loopback".into();
    BTreeMap::from([
        ("lo".to_string(), lo),
        ("eth0".to_string(), nic("aa:bb:cc:00:00:01", "veth")),
        ("eth1".to_string(), nic("aa:bb:cc:00:00:02", "")),
        ("br9".to_string(), nic("aa:bb:cc:00:00:03", "bridge")),
    ])
}

fn ids<S: Layered>(specs: &[S]) -> Vec<String> {
    let mut v: Vec<String> = specs
        .iter()
        .map(|s| format!("{}/{}", s.layer(), s.merged_id()))
        .collect();
    v.sort();
    v
}

#[test]
fn defaults_run_dhcp_on_nics_only_when_nothing_is_configured() {
    let s = gather(
        None,
        &Cmdline::default(),
        &links(),
        Some("10.5.0.2".parse().unwrap()),
    );
    assert_eq!(
        ids(&s.operators),
        ["default/dhcp4/eth0", "default/dhcp4/eth1"]
    );
    assert_eq!(
        ids(&s.addresses),
        ["default/lo/127.0.0.1/8", "default/lo/::1/128"]
    );
    assert_eq!(s.hostnames[0].hostname, "talos-10-5-0-2");
    // An explicit link anywhere turns the default DHCP off; ignored links get nothing.
    let cmd = Cmdline::parse(
        "quiet ip=10.5.0.2::10.5.0.1:24:cp-1::off:10.0.0.53 talos.network.interface.ignore=eth1",
    );
    let s = gather(None, &cmd, &links(), None);
    assert!(s.operators.is_empty(), "{:?}", s.operators);
    assert_eq!(
        ids(&s.addresses),
        [
            "cmdline/eth0/10.5.0.2/24",
            "default/lo/127.0.0.1/8",
            "default/lo/::1/128"
        ]
    );
    assert_eq!(ids(&s.routes), ["cmdline/inet4/10.5.0.1//1024"]);
    assert_eq!(ids(&s.hostnames), ["cmdline/hostname"]);
    assert_eq!(s.resolvers[0].dns_servers, ["10.0.0.53"]);
    let cmd = Cmdline::parse("talos.hostname=named ip=10.5.0.2/24::::other:eth1:off");
    let s = gather(None, &cmd, &links(), None);
    assert_eq!(s.hostnames[0].hostname, "named");
    assert_eq!(ids(&s.links), ["cmdline/eth1", "default/lo"]);
    let bad = gather(None, &Cmdline::parse("ip=nonsense::"), &links(), None);
    assert!(
        bad.warnings[0].contains("ip=nonsense"),
        "{:?}",
        bad.warnings
    );
    assert_eq!(bad.operators.len(), 2);
}

#[test]
fn routes_need_a_link_the_node_has_or_makes() {
    let cfg = config(
            "version: v1alpha1\nmachine:\n  network:\n    interfaces:\n      - interface: eth0\n        routes: [{network: 10.1.0.0/16, gateway: 10.5.0.1}]\n      - interface: eth7\n        routes: [{network: 10.2.0.0/16, gateway: 10.5.0.1}]\n      - interface: br0\n        bridge: {interfaces: [eth0]}\n        routes: [{network: 10.3.0.0/16}]\n---\napiVersion: v1alpha1\nkind: LinkConfig\nname: eth9\nroutes:\n  - destination: 10.4.0.0/16\n",
        );
    let kernel = BTreeSet::from(["lo".to_string(), "eth0".to_string()]);
    assert_eq!(
            unknown_route_links(&cfg, &kernel),
            [
                "machine.network.interfaces[1].routes[0]: route to unknown link \"eth7\" (this node has: eth0, lo)",
                "LinkConfig \"eth9\".routes[0]: route to unknown link \"eth9\" (this node has: eth0, lo)",
            ]
        );
}

fn config(text: &str) -> Config {
    Config::parse(text).unwrap()
}

#[test]
fn machine_config_and_network_documents() {
    let cfg = config(
        r#"version: v1alpha1
machine:
  type: worker
  network:
    nameservers: [10.0.0.53]
    interfaces:
      - interface: eth1
        ignore: true
      - interface: br0
        bridge:
          interfaces: [eth0]
          stp:
            enabled: true
        addresses: [192.168.5.2/24]
        routes:
          - network: 10.9.0.0/16
            gateway: 192.168.5.1
            metric: 50
        vlans:
          - vlanId: 7
            dhcp: true
      - deviceSelector:
          hardwareAddr: "aa:bb:cc:00:00:0*"
          physical: true
        mtu: 9000
---
apiVersion: v1alpha1
kind: LinkConfig
name: eth0
mtu: 1400
---
apiVersion: v1alpha1
kind: BondConfig
name: bond0
links: [eth2, eth3]
bondMode: active-backup
addresses:
  - address: 10.3.0.2/24
---
apiVersion: v1alpha1
kind: Layer2VIPConfig
name: 192.168.5.100
link: br0
---
apiVersion: v1alpha1
kind: DHCPv4Config
name: eth5
---
apiVersion: v1alpha1
kind: HostnameConfig
auto: stable
"#,
    );
    let s = gather(Some(&cfg), &Cmdline::default(), &links(), None);
    assert_eq!(
        ids(&s.links),
        [
            "configuration/bond0",
            "configuration/br0",
            "configuration/br0.7",
            "configuration/eth0",
            "configuration/eth2",
            "configuration/eth3",
            "configuration/eth5",
            "default/lo",
        ]
    );
    let link = |n: &str| s.links.iter().find(|l| l.name == n).unwrap();
    // eth0: a bridge port (from br0), MTU 1400 (LinkConfig) merged over 9000 (selector).
    let eth0 = link("eth0");
    assert_eq!(eth0.bridge_slave.as_ref().unwrap().master_name, "br0");
    assert_eq!(eth0.mtu, 1400);
    assert_eq!(
        (link("br0").kind.as_str(), link("br0").stp),
        ("bridge", Some(true))
    );
    assert_eq!(link("eth3").bond_slave.as_ref().unwrap().slave_index, 1);
    assert_eq!(link("bond0").bond_mode, "active-backup");
    assert_eq!(link("br0.7").parent_name, "br0");
    assert_eq!(
        ids(&s.operators),
        [
            "configuration/dhcp4/br0.7",
            "configuration/dhcp4/eth5",
            "configuration/vip/br0"
        ]
    );
    assert!(ids(&s.addresses).contains(&"configuration/br0/192.168.5.2/24".to_string()));
    assert!(ids(&s.addresses).contains(&"configuration/bond0/10.3.0.2/24".to_string()));
    assert!(!ids(&s.addresses).iter().any(|a| a.contains("eth1")));
    assert_eq!(
        ids(&s.routes),
        ["configuration/inet4/192.168.5.1/10.9.0.0/16/50"]
    );
    assert_eq!(ids(&s.resolvers)[1], "default/resolvers");
    assert!(s.hostnames[0].hostname.starts_with("talos-"));
    assert_eq!(s.hostnames[0].layer, "default");
}
