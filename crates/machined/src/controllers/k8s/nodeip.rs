//! The addresses the kubelet registers. k8s.NodeIPConfigController reads the valid subnets
//! (`machine.kubelet.nodeIP.validSubnets` or KubeNodeConfig's; any address of the service
//! subnets' families when none are set) and what can never be a node's address: the pod and
//! service subnets and the shared IPs. k8s.NodeIPController picks from the node's current
//! addresses at most one of each family.

use std::net::IpAddr;

use machinery::kubernetes::{setting, strings};
use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use serde_json::Value;
use types::k8s::{NodeIpConfigSpec, NodeIpSpec, KUBELET_ID};

use crate::controllers::inputs;

/// The kubelet's node IP settings of a config.
pub fn node_ip_config_of(cfg: &machinery::Config) -> NodeIpConfigSpec {
    let subnets = |v1alpha1: &str, field: &str, default: &str| {
        let mut s = strings(setting(cfg, v1alpha1, "KubeNetworkConfig", field));
        if s.is_empty() {
            s.push(default.into());
        }
        s
    };
    let pods = subnets(
        "/cluster/network/podSubnets",
        "/podSubnets",
        "10.244.0.0/16",
    );
    let services = subnets(
        "/cluster/network/serviceSubnets",
        "/serviceSubnets",
        "10.96.0.0/12",
    );
    let mut valid = strings(setting(
        cfg,
        "/machine/kubelet/nodeIP/validSubnets",
        "KubeNodeConfig",
        "/nodeIP/validSubnets",
    ));
    if valid.is_empty() {
        // The families of the service subnets: the node's address is of the cluster's.
        valid = services
            .iter()
            .map(|s| match s.contains(':') {
                true => "::/0".to_string(),
                false => "0.0.0.0/0".to_string(),
            })
            .collect();
    }
    let mut exclude = pods;
    exclude.extend(services);
    // Shared IPs move between nodes: never a node's own.
    for link in cfg
        .pointer("/machine/network/interfaces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let vlans = link.get("vlans").and_then(Value::as_array);
        for holder in std::iter::once(link).chain(vlans.into_iter().flatten()) {
            if let Some(ip) = holder.pointer("/vip/ip").and_then(Value::as_str) {
                exclude.push(ip.to_string());
            }
        }
    }
    NodeIpConfigSpec {
        valid_subnets: valid,
        exclude_subnets: exclude,
    }
}

pub struct NodeIpConfigController;

#[async_trait::async_trait]
impl Controller for NodeIpConfigController {
    fn name(&self) -> &str {
        "k8s.NodeIPConfigController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![inputs::config(&[
            "kind:KubeNodeConfig",
            "kind:KubeNetworkConfig",
            "/machine/kubelet/nodeIP",
            "/machine/network/interfaces",
            "/cluster/network/podSubnets",
            "/cluster/network/serviceSubnets",
        ])]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<NodeIpConfigSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        if let Some(cfg) = inputs::machine_config(ctx)? {
            ctx.put(KUBELET_ID, node_ip_config_of(&cfg))?;
        }
        Ok(())
    }
}

/// Whether `ip` is in `cidr` (a bare address is a subnet of one).
fn in_subnet(ip: &IpAddr, cidr: &str) -> bool {
    let parsed = match cidr.parse::<IpAddr>() {
        Ok(single) => Some((single, if single.is_ipv4() { 32 } else { 128 })),
        Err(_) => machinery::validate::parse_cidr(cidr, true),
    };
    let Some((net, bits)) = parsed else {
        return false;
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - bits as u32).unwrap_or(0);
            u32::from(*a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - bits as u32).unwrap_or(0);
            u128::from(*a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// The first of `ips` of each family inside a valid subnet and outside every excluded one.
pub fn pick(ips: &[IpAddr], cfg: &NodeIpConfigSpec) -> Vec<IpAddr> {
    let (excluded, valid): (Vec<&str>, Vec<&str>) = cfg
        .valid_subnets
        .iter()
        .map(String::as_str)
        .partition(|c| c.starts_with('!'));
    let excluded: Vec<&str> = excluded
        .into_iter()
        .map(|c| c.trim_start_matches('!'))
        .chain(cfg.exclude_subnets.iter().map(String::as_str))
        .collect();
    let mut picked: Vec<IpAddr> = Vec::new();
    for ip in ips {
        let fits = (valid.is_empty() || valid.iter().any(|c| in_subnet(ip, c)))
            && !excluded.iter().any(|c| in_subnet(ip, c));
        if fits && !picked.iter().any(|p| p.is_ipv4() == ip.is_ipv4()) {
            picked.push(*ip);
        }
    }
    picked
}

pub struct NodeIpController;

#[async_trait::async_trait]
impl Controller for NodeIpController {
    fn name(&self) -> &str {
        "k8s.NodeIPController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::of::<NodeIpConfigSpec>().id(KUBELET_ID),
            Input::of::<types::network::NodeAddressSpec>(),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<NodeIpSpec>()]
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let Some(cfg) = ctx.spec_of::<NodeIpConfigSpec>(KUBELET_ID)? else {
            return Ok(());
        };
        let picked = pick(&inputs::node_ips(ctx, "current")?, &cfg);
        if picked.is_empty() {
            tracing::warn!("no address fits the kubelet's node IP subnets (machine.kubelet.nodeIP, the pod and service subnets)");
            return Ok(());
        }
        ctx.put(
            KUBELET_ID,
            NodeIpSpec {
                addresses: picked.iter().map(IpAddr::to_string).collect(),
            },
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_of_each_family_outside_the_cluster_subnets_and_shared_ips() {
        let cfg = machinery::Config::parse(
            "version: v1alpha1\nmachine:\n    type: controlplane\n    network:\n        interfaces:\n            - interface: eth0\n              vip:\n                  ip: 10.5.0.50\ncluster:\n    network:\n        podSubnets: [10.244.0.0/16]\n        serviceSubnets: [10.96.0.0/12]\n",
        )
        .unwrap();
        let spec = node_ip_config_of(&cfg);
        assert_eq!(spec.valid_subnets, ["0.0.0.0/0"]);
        assert_eq!(
            spec.exclude_subnets,
            ["10.244.0.0/16", "10.96.0.0/12", "10.5.0.50"]
        );
        let ips: Vec<IpAddr> = ["10.5.0.50", "10.244.1.1", "10.5.0.2", "10.5.0.9", "fd00::2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        // The v6 address is not of the service subnets' family.
        assert_eq!(pick(&ips, &spec), [ips[2]]);
        let both = NodeIpConfigSpec {
            valid_subnets: vec![
                "10.5.0.0/24".into(),
                "fd00::/64".into(),
                "!10.5.0.2/32".into(),
            ],
            exclude_subnets: Vec::new(),
        };
        // (No exclusions here but the valid subnets' own `!`: the shared IP is not listed.)
        assert_eq!(pick(&ips, &both), [ips[0], ips[4]]);
    }
}
