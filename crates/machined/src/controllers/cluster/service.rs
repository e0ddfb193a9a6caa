//! cluster.DiscoveryServiceController: the discovery client (sys::discovery) told where to
//! publish this node and what it says of itself, from DiscoveryConfig, the node's identity,
//! hostname and addresses.

use std::net::IpAddr;
use std::time::Duration;

use discovery::pb::client as plain;
use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use types::cluster::{DiscoveryConfigSpec, IdentitySpec, DISCOVERY_ID};
use types::network::HostnameStatusSpec;

use crate::controllers::inputs;
use crate::sys::discovery::{Handle, Settings};

/// Turns DiscoveryConfig and the node's state into the client's settings.
pub struct ServiceController {
    pub handle: Handle,
}

#[async_trait::async_trait]
impl Controller for ServiceController {
    fn name(&self) -> &str {
        "cluster.DiscoveryServiceController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::of::<DiscoveryConfigSpec>().id(DISCOVERY_ID),
            inputs::config(&["/machine/type", "/cluster/controlPlane/endpoint"]),
            Input::of::<types::cluster::IdentitySpec>(),
            Input::of::<types::network::HostnameStatusSpec>(),
            Input::of::<types::network::NodeAddressSpec>().id("current"),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        Vec::new()
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let identity = ctx.spec_of::<IdentitySpec>("local")?.map(|i| i.node_id);
        let hostname = ctx
            .spec_of::<HostnameStatusSpec>("hostname")?
            .map(|h| h.hostname);
        let discovery = ctx
            .spec_of::<DiscoveryConfigSpec>(DISCOVERY_ID)?
            .filter(|d| d.discovery_enabled && d.registry_service_enabled);
        let addresses: Vec<Vec<u8>> = crate::controllers::inputs::node_ips(ctx, "current")?
            .into_iter()
            .map(|ip| match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            })
            .collect();
        let wanted = match (inputs::machine_config(ctx)?, discovery, identity, hostname) {
            (Some(cfg), Some(d), Some(node_id), Some(hostname)) if !addresses.is_empty() => {
                let (endpoint, ttl, cluster_id, secret) = (
                    d.service_endpoint,
                    Duration::from_secs(d.ttl_seconds),
                    d.service_cluster_id,
                    d.service_encryption_key,
                );
                {
                    {
                        let ty = cfg.machine_type().to_string();
                        let control_plane = cfg.is_control_plane().then_some(plain::ControlPlane {
                            api_server_port: cfg
                                .control_plane_endpoint()
                                .and_then(|e| e.rsplit_once(':'))
                                .and_then(|(_, p)| p.trim_end_matches('/').parse().ok())
                                .unwrap_or(6443),
                        });
                        Some(Settings {
                            endpoint,
                            ttl,
                            cluster_id,
                            secret,
                            local: plain::Affiliate {
                                node_id: node_id.clone(),
                                addresses,
                                hostname: hostname.clone(),
                                nodename: hostname,
                                machine_type: ty,
                                operating_system: format!("Talos ({})", types::TAG),
                                kubespan: None,
                                control_plane,
                            },
                            node_id,
                        })
                    }
                }
            }
            _ => None,
        };
        let wanted = wanted.filter(|_| !self.handle.has_left());
        self.handle.configure(wanted);
        Ok(())
    }
}
