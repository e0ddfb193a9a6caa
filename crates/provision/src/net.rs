//! Namespaces, links and addresses (through iproute2's `ip`), and cgroup limits.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::Result;

/// An IPv4 network, `10.5.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr> {
        let bad = || format!("invalid CIDR \"{s}\": expected an IPv4 network such as 10.5.0.0/24");
        let (ip, len) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(format!(
                "invalid CIDR \"{s}\": the prefix must be between /8 and /30"
            ));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Cidr {
            network: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Cidr> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Cidr {
    /// Host addresses, lowest first (network and broadcast excluded).
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let base = u32::from(self.network);
        let size = 1u32 << (32 - self.prefix);
        (1..size - 1).map(move |i| Ipv4Addr::from(base + i))
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e} (is iproute2 installed?)", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

pub fn add_netns(name: &str) -> Result<()> {
    ip(&["netns", "add", name])?;
    ip(&["-n", name, "link", "set", "lo", "up"])
}

pub fn del_netns(name: &str) -> Result<()> {
    ip(&["netns", "del", name])
}

pub fn del_link(netns: &str, link: &str) -> Result<()> {
    ip(&["-n", netns, "link", "del", link])
}

/// The cluster's bridge with the gateway address.
pub fn bridge(netns: &str, name: &str, gateway: Ipv4Addr, prefix: u8, mtu: u32) -> Result<()> {
    let mtu = mtu.to_string();
    ip(&[
        "-n", netns, "link", "add", name, "mtu", &mtu, "type", "bridge",
    ])?;
    ip(&[
        "-n",
        netns,
        "addr",
        "add",
        &format!("{gateway}/{prefix}"),
        "dev",
        name,
    ])?;
    ip(&["-n", netns, "link", "set", name, "up"])
}

/// A node's link: `eth0` in its namespace (the node configures it from its kernel command
/// line), the other end on the bridge.
pub fn link_node(
    cluster_ns: &str,
    bridge: &str,
    veth: &str,
    node_ns: &str,
    mtu: u32,
) -> Result<()> {
    let mtu = mtu.to_string();
    ip(&[
        "-n", cluster_ns, "link", "add", veth, "mtu", &mtu, "type", "veth", "peer", "name", "eth0",
        "netns", node_ns,
    ])?;
    ip(&[
        "-n", cluster_ns, "link", "set", veth, "master", bridge, "up",
    ])
}

/// A machine's tap device on the bridge (QEMU opens it by name).
pub fn tap(netns: &str, bridge: &str, tap: &str, mtu: u32) -> Result<()> {
    ip(&["-n", netns, "tuntap", "add", "dev", tap, "mode", "tap"])?;
    ip(&[
        "-n",
        netns,
        "link",
        "set",
        tap,
        "mtu",
        &mtu.to_string(),
        "master",
        bridge,
        "up",
    ])
}

pub fn link_exists(netns: &str, link: &str) -> bool {
    Command::new("ip")
        .args(["-n", netns, "link", "show", link])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Every cgroup of a node: the ones made for its limits and those its container runtimes
/// made under the same name in the other hierarchies (cgroup v1).
pub fn node_cgroups(cluster: &str, node: &str) -> Vec<PathBuf> {
    let name = format!("talos-{cluster}-{node}");
    let root = Path::new("/sys/fs/cgroup");
    let mut out: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(&name))
        .filter(|p| p.is_dir())
        .collect();
    if root.join(&name).is_dir() {
        out.push(root.join(&name));
    }
    out
}

/// Cgroups for a node's CPU and memory limits, where the host offers them (cgroup v2, or the
/// v1 `cpu` and `memory` hierarchies). Returns the cgroups made; their `cgroup.procs` files
/// are what the node's process joins.
pub fn cgroups(cluster: &str, node: &str, cpus: f64, memory: u64) -> Vec<PathBuf> {
    let name = format!("talos-{cluster}-{node}");
    let root = PathBuf::from("/sys/fs/cgroup");
    let quota = (cpus * 100_000.0).round() as u64;
    let mut made = Vec::new();
    let mut make = |dir: PathBuf, files: &[(&str, String)]| {
        if std::fs::create_dir(&dir).is_err() && !dir.is_dir() {
            return;
        }
        let ok = files
            .iter()
            .all(|(f, v)| std::fs::write(dir.join(f), v).is_ok());
        if ok {
            made.push(dir);
        } else {
            let _ = std::fs::remove_dir(&dir);
        }
    };
    if root.join("cgroup.controllers").exists() {
        let mut files = vec![("memory.max", memory.to_string())];
        if quota > 0 {
            files.push(("cpu.max", format!("{quota} 100000")));
        }
        make(root.join(&name), &files);
    } else {
        make(
            root.join("memory").join(&name),
            &[("memory.limit_in_bytes", memory.to_string())],
        );
        if quota > 0 {
            make(
                root.join("cpu").join(&name),
                &[
                    ("cpu.cfs_period_us", "100000".into()),
                    ("cpu.cfs_quota_us", quota.to_string()),
                ],
            );
        }
    }
    made
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_lists_hosts() {
        let c: Cidr = "10.5.0.7/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.5.0.0/24");
        let hosts: Vec<_> = c.hosts().take(2).collect();
        assert_eq!(
            hosts,
            [
                "10.5.0.1".parse::<Ipv4Addr>().unwrap(),
                "10.5.0.2".parse().unwrap()
            ]
        );
        assert_eq!(c.hosts().count(), 254);
        assert!("10.5.0.0"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("expected an IPv4 network"));
        assert!("10.5.0.0/31"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("prefix"));
    }
}
