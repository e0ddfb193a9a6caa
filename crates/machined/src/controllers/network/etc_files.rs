//! network.EtcFilesController: resolvers, time servers, /etc files and NetworkStatus.

use resources::ResourceType;

use resources::{Controller, ControllerError, Input, Output, ReconcileContext};

use crate::controllers::inputs::node_ips;
use types::network::*;

/// Where the node's resolver and hosts files live (bound over /etc in container mode).
pub const RESOLV_CONF: &str = "/system/etc/resolv.conf";
pub const HOSTS: &str = "/system/etc/hosts";

/// `/etc/hosts` (written under /system, where a container-mode node has them bound over /etc),
/// and the overall NetworkStatus.
pub struct EtcFilesController {
    pub apply: bool,
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
            Input::of::<types::network::ResolverSpecSpec>(),
            Input::of::<types::network::TimeServerSpecSpec>(),
            Input::of::<types::network::HostnameStatusSpec>(),
            Input::of::<types::network::NodeAddressSpec>(),
            Input::of::<types::network::RouteStatusSpec>(),
            Input::of::<types::config::MachineConfigSpec>().id(types::config::MACHINE_CONFIG_ID),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::exclusive_of::<types::network::ResolverStatusSpec>(),
            Output::exclusive_of::<types::network::TimeServerStatusSpec>(),
            Output::exclusive_of::<types::network::NetworkStatusSpec>(),
        ]
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let resolver = ctx
            .get(&ResolverSpecSpec::pointer("resolvers"))?
            .and_then(|r| r.spec::<ResolverSpecSpec>().cloned());
        let time = ctx
            .get(&TimeServerSpecSpec::pointer("timeservers"))?
            .and_then(|r| r.spec::<TimeServerSpecSpec>().cloned());
        let hostname = ctx
            .get(&HostnameStatusSpec::pointer("hostname"))?
            .and_then(|r| r.spec::<types::network::HostnameStatusSpec>().cloned());
        let addresses = node_ips(ctx, "current")?;
        let default_route = ctx
            .specs_of::<RouteStatusSpec>()?
            .iter()
            .any(|(_, r)| r.dst.is_empty() && !r.gateway.is_empty());
        let mut etc_ready = false;
        if let (Some(r), Some(h)) = (&resolver, &hostname) {
            let status = ResolverStatusSpec {
                dns_servers: r.dns_servers.clone(),
                search_domains: r.search_domains.clone(),
            };
            ctx.put::<ResolverStatusSpec>("resolvers", status)?;
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
            for (ip, names) in
                extra_hosts(crate::controllers::inputs::machine_config(ctx)?.as_ref())
            {
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
            ctx.put::<TimeServerStatusSpec>("timeservers", status)?;
        }
        let status = NetworkStatusSpec {
            address_ready: !addresses.is_empty(),
            connectivity_ready: default_route,
            hostname_ready: hostname.is_some(),
            etc_files_ready: etc_ready,
        };
        ctx.put::<NetworkStatusSpec>("status", status)?;
        Ok(())
    }
}
