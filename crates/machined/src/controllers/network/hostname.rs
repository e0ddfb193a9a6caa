//! network.HostnameController: the merged hostname spec set on the node and published, with
//! the node's name in Kubernetes.

use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use types::k8s::NodenameSpec;
use types::network::{HostnameSpecSpec, HostnameStatusSpec};

use crate::controllers::inputs;

/// `set`: how the node's hostname is set (the UTS namespace of a container-mode node).
pub struct HostnameController {
    pub set: fn(&str),
}

#[async_trait::async_trait]
impl Controller for HostnameController {
    fn name(&self) -> &str {
        "network.HostnameController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::of::<HostnameSpecSpec>().id("hostname"),
            inputs::config(&[
                "/machine/kubelet/registerWithFQDN",
                "/machine/kubelet/skipNodeRegistration",
                "kind:KubeNodeConfig",
            ]),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::exclusive_of::<HostnameStatusSpec>(),
            Output::exclusive_of::<NodenameSpec>(),
        ]
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let Some(h) = ctx.spec_of::<HostnameSpecSpec>("hostname")? else {
            return Ok(());
        };
        (self.set)(&h.hostname);
        // The node's name in Kubernetes: its hostname, or its FQDN when asked for.
        let cfg = inputs::machine_config(ctx)?;
        let flag = |field: &str| {
            cfg.as_ref()
                .and_then(|c| {
                    machinery::kubernetes::setting(
                        c,
                        &format!("/machine/kubelet/{field}"),
                        "KubeNodeConfig",
                        &format!("/{field}"),
                    )
                })
                .and_then(|v| v.as_bool())
                == Some(true)
        };
        let fqdn = flag("registerWithFQDN");
        let nodename = NodenameSpec {
            nodename: if fqdn && !h.domainname.is_empty() {
                format!("{}.{}", h.hostname, h.domainname)
            } else {
                h.hostname.clone()
            }
            .to_lowercase(),
            skip_node_registration: flag("skipNodeRegistration"),
        };
        ctx.put("nodename", nodename)?;
        let spec = HostnameStatusSpec {
            hostname: h.hostname,
            domainname: h.domainname,
        };
        ctx.put("hostname", spec)?;
        Ok(())
    }
}
