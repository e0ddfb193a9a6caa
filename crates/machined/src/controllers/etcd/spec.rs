//! etcd.SpecController: what the etcd service runs, from EtcdConfig, the hostname and the
//! node's addresses: its name, addresses, data and PKI directories, image and full command
//! line (`cluster.etcd.extraArgs` merged over the defaults), and the control planes it may
//! join through.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use types::etcd::{EtcdConfigSpec, EtcdSpecSpec, ETCD_ID};
use types::network::{HostnameStatusSpec, NodeAddressSpec};

use crate::controllers::inputs;

pub struct SpecController {
    /// Where EPHEMERAL is (the data lives under `lib/etcd`).
    pub ephemeral: PathBuf,
    /// Where etcd's certificates are written.
    pub pki_dir: PathBuf,
}

/// etcd's command line: the defaults, then `extra` (replacing a default of the same name).
pub fn args(
    name: &str,
    ip: IpAddr,
    data_dir: &str,
    pki_dir: &str,
    extra: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let pki = |f: &str| format!("{pki_dir}/{f}");
    let peer = format!("https://{}", SocketAddr::new(ip, 2380));
    let client = format!("https://{}", SocketAddr::new(ip, 2379));
    let mut listen_client = vec![client.clone()];
    if !ip.is_loopback() {
        listen_client.push("https://127.0.0.1:2379".into());
    }
    let mut args: Vec<(String, String)> = [
        ("name", name.to_string()),
        ("data-dir", data_dir.to_string()),
        ("listen-peer-urls", peer.clone()),
        ("initial-advertise-peer-urls", peer),
        ("listen-client-urls", listen_client.join(",")),
        ("advertise-client-urls", client),
        ("cert-file", pki("server.crt")),
        ("key-file", pki("server.key")),
        ("trusted-ca-file", pki("ca.crt")),
        ("client-cert-auth", "true".into()),
        ("peer-cert-file", pki("peer.crt")),
        ("peer-key-file", pki("peer.key")),
        ("peer-trusted-ca-file", pki("ca.crt")),
        ("peer-client-cert-auth", "true".into()),
        ("auto-compaction-mode", "periodic".into()),
        ("auto-compaction-retention", "5m".into()),
        ("experimental-initial-corrupt-check", "true".into()),
        // Members join as learners (no effect on quorum) and are promoted only once in
        // sync, which etcd checks on its own; the strict check would additionally hold
        // every membership change for 5 s after any member connects.
        ("strict-reconfig-check", "false".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        match args.iter_mut().find(|(a, _)| a == k) {
            Some(slot) => slot.1 = v.clone(),
            None => args.push((k.clone(), v.clone())),
        }
    }
    args.into_iter()
        .map(|(k, v)| format!("--{k}={v}"))
        .collect()
}

#[async_trait::async_trait]
impl Controller for SpecController {
    fn name(&self) -> &str {
        "etcd.SpecController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::of::<EtcdConfigSpec>().id(ETCD_ID),
            Input::of::<HostnameStatusSpec>().id("hostname"),
            Input::of::<NodeAddressSpec>().id("current"),
            inputs::config(&["/cluster/controlPlane/endpoint"]),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<EtcdSpecSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let (Some(config), Some(host)) = (
            ctx.spec_of::<EtcdConfigSpec>(ETCD_ID)?,
            ctx.spec_of::<HostnameStatusSpec>("hostname")?,
        ) else {
            return Ok(());
        };
        let current = inputs::node_ips(ctx, "current")?;
        // The address in use stays while the node has it (a VIP coming or going does not
        // move etcd); else the node's first IPv4 address, else its first.
        let previous = ctx
            .spec_of::<EtcdSpecSpec>(ETCD_ID)?
            .and_then(|s| s.advertised_addresses.first()?.parse::<IpAddr>().ok());
        let Some(ip) = previous
            .filter(|p| current.contains(p))
            .or_else(|| current.iter().copied().find(IpAddr::is_ipv4))
            .or_else(|| current.first().copied())
        else {
            // No address yet: etcd waits for the network.
            return Ok(());
        };
        let name = host.hostname;
        let data_dir = self.ephemeral.join("lib/etcd").display().to_string();
        let pki_dir = self.pki_dir.display().to_string();
        let mut join_candidates = Vec::new();
        let cfg = inputs::machine_config(ctx)?;
        if let Some(ep) = cfg.as_ref().and_then(|c| c.control_plane_endpoint()) {
            if let Ok(host) = machinery::generate::endpoint_host(ep) {
                let own = host.parse::<IpAddr>().is_ok_and(|h| h == ip) || host == name;
                if !own {
                    let url = match host.parse::<IpAddr>() {
                        Ok(h) => format!("https://{}", SocketAddr::new(h, 2379)),
                        Err(_) => format!("https://{host}:2379"),
                    };
                    join_candidates.push(url);
                }
            }
        }
        let spec = EtcdSpecSpec {
            args: args(&name, ip, &data_dir, &pki_dir, &config.extra_args),
            advertised_addresses: vec![ip.to_string()],
            listen_peer_addresses: vec![SocketAddr::new(ip, 2380).to_string()],
            listen_client_addresses: vec![
                SocketAddr::new(ip, 2379).to_string(),
                "127.0.0.1:2379".into(),
            ],
            name,
            image: config.image,
            data_dir,
            pki_dir,
            join_candidates,
        };
        ctx.put(ETCD_ID, spec)?;
        Ok(())
    }
}
