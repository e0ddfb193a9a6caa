//! KubePrism, the node's own way to the API servers. k8s.KubePrismEndpointsController lists
//! them: the cluster endpoint, the local API server on a control plane, and every control
//! plane discovery knows; k8s.KubePrismConfigController says where KubePrism listens when
//! the config turns it on; k8s.KubePrismController runs the load balancer on 127.0.0.1 and
//! reports whether any API server behind it answers.

use std::time::Duration;

use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use serde_json::Value;
use types::cluster::MemberSpec;
use types::k8s::{
    KubePrismConfigSpec, KubePrismEndpoint, KubePrismEndpointsSpec, KubePrismStatusesSpec,
    KUBEPRISM_ID,
};

use crate::controllers::inputs;
use crate::sys::lb::Balancer;

/// How often KubePrism checks its API servers.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// `host` and `port` of an `https://host:port` URL (port 443 when not given).
fn host_port(url: &str) -> Option<KubePrismEndpoint> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && p.parse::<u32>().is_ok() => {
            (h, p.parse().unwrap_or(443))
        }
        _ => (authority, 443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| KubePrismEndpoint {
        host: host.into(),
        port,
    })
}

pub struct KubePrismEndpointsController;

#[async_trait::async_trait]
impl Controller for KubePrismEndpointsController {
    fn name(&self) -> &str {
        "k8s.KubePrismEndpointsController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            inputs::config(&[
                "kind:KubeClusterConfig",
                "kind:KubeAPIServerConfig",
                "/cluster/controlPlane",
                "/machine/type",
            ]),
            Input::of::<MemberSpec>(),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<KubePrismEndpointsSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let Some(cfg) = inputs::machine_config(ctx)? else {
            return Ok(());
        };
        let mut endpoints: Vec<KubePrismEndpoint> = Vec::new();
        let mut add = |e: KubePrismEndpoint| {
            if !endpoints.contains(&e) {
                endpoints.push(e);
            }
        };
        if let Some(e) = cfg.control_plane_endpoint().and_then(host_port) {
            add(e);
        }
        if cfg.is_control_plane() {
            let port = machinery::kubernetes::setting(
                &cfg,
                "/cluster/controlPlane/localAPIServerPort",
                "KubeAPIServerConfig",
                "/apiPort",
            )
            .and_then(Value::as_u64)
            .unwrap_or(6443);
            add(KubePrismEndpoint {
                host: "localhost".into(),
                port: port as u32,
            });
        }
        for (_, member) in ctx.specs_of::<MemberSpec>()? {
            let Some(cp) = member.control_plane else {
                continue;
            };
            for addr in &member.addresses {
                let ip = addr.split('/').next().unwrap_or(addr);
                add(KubePrismEndpoint {
                    host: ip.into(),
                    port: cp.api_server_port,
                });
            }
        }
        if !endpoints.is_empty() {
            ctx.put(KUBEPRISM_ID, KubePrismEndpointsSpec { endpoints })?;
        }
        Ok(())
    }
}

pub struct KubePrismConfigController;

#[async_trait::async_trait]
impl Controller for KubePrismConfigController {
    fn name(&self) -> &str {
        "k8s.KubePrismConfigController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            inputs::config(&["kind:KubePrismConfig", "/machine/features/kubePrism"]),
            Input::of::<KubePrismEndpointsSpec>().id(KUBEPRISM_ID),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<KubePrismConfigSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let (Some(cfg), Some(endpoints)) = (
            inputs::machine_config(ctx)?,
            ctx.spec_of::<KubePrismEndpointsSpec>(KUBEPRISM_ID)?,
        ) else {
            return Ok(());
        };
        if let Some(port) = machinery::kubernetes::kube_prism_port(&cfg) {
            ctx.put(
                KUBEPRISM_ID,
                KubePrismConfigSpec {
                    host: "localhost".into(),
                    port: port.into(),
                    endpoints: endpoints.endpoints,
                },
            )?;
        }
        Ok(())
    }
}

/// Runs the load balancer KubePrismConfig describes.
#[derive(Default)]
pub struct KubePrismController {
    running: Option<(u32, Balancer)>,
}

#[async_trait::async_trait]
impl Controller for KubePrismController {
    fn name(&self) -> &str {
        "k8s.KubePrismController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![Input::of::<KubePrismConfigSpec>().id(KUBEPRISM_ID)]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<KubePrismStatusesSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let Some(cfg) = ctx.spec_of::<KubePrismConfigSpec>(KUBEPRISM_ID)? else {
            self.running = None;
            return Ok(());
        };
        let upstreams: Vec<String> = cfg
            .endpoints
            .iter()
            .map(|e| match e.host.contains(':') {
                true => format!("[{}]:{}", e.host, e.port),
                false => format!("{}:{}", e.host, e.port),
            })
            .collect();
        match &self.running {
            Some((port, lb)) if *port == cfg.port => lb.set_upstreams(upstreams),
            _ => {
                self.running = None;
                let listen = format!("127.0.0.1:{}", cfg.port);
                let lb = Balancer::start(&listen, upstreams, HEALTH_INTERVAL)
                    .await
                    .map_err(|e| format!("KubePrism on {listen}: {e}"))?;
                tracing::info!(listen = %lb.local_addr(), "KubePrism is listening");
                self.running = Some((cfg.port, lb));
            }
        }
        let healthy = self.running.as_ref().is_some_and(|(_, lb)| lb.healthy());
        ctx.put(
            KUBEPRISM_ID,
            KubePrismStatusesSpec {
                host: format!("{}:{}", cfg.host, cfg.port),
                healthy,
            },
        )?;
        // Health changes outside any input: look again.
        ctx.requeue_after(HEALTH_INTERVAL);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_from_urls() {
        let e = |h: &str, p| {
            Some(KubePrismEndpoint {
                host: h.into(),
                port: p,
            })
        };
        assert_eq!(host_port("https://10.5.0.2:6443"), e("10.5.0.2", 6443));
        assert_eq!(
            host_port("https://api.example.com"),
            e("api.example.com", 443)
        );
        assert_eq!(host_port("https://[fd00::1]:6443/"), e("fd00::1", 6443));
        assert_eq!(host_port("https://"), None);
    }
}
