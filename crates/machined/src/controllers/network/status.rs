//! network.StatusController: what the kernel has, as statuses.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use resources::{Controller, ControllerError, Input, Output, ReconcileContext};

use crate::sys::netlink::{connect, read_kernel, Events, Kernel};
use types::network::*;

/// Publishes what the kernel has; runs again on every netlink change.
#[derive(Default)]
pub struct StatusController {
    conn: Option<(rtnetlink::Handle, Events)>,
    accumulative: BTreeSet<String>,
}

/// Addresses that identify the node: global scope, not loopback, not link-local.
fn node_addresses(k: &Kernel) -> Vec<String> {
    let mut out: Vec<String> = k
        .addresses
        .values()
        .filter(|a| a.scope == "global" && a.link_name != "lo")
        .map(|a| a.address.clone())
        .collect();
    out.sort();
    out
}

#[async_trait::async_trait]
impl Controller for StatusController {
    fn name(&self) -> &str {
        "network.StatusController"
    }
    fn inputs(&self) -> Vec<Input> {
        Vec::new()
    }
    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::exclusive_of::<types::network::LinkStatusSpec>(),
            Output::exclusive_of::<types::network::AddressStatusSpec>(),
            Output::exclusive_of::<types::network::RouteStatusSpec>(),
            Output::exclusive_of::<types::network::NodeAddressSpec>(),
        ]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let first = self.conn.is_none();
        if first {
            self.conn = Some(connect()?);
        }
        let (handle, events) = self.conn.as_mut().expect("connected");
        // Wait for the kernel to say something changed; look again within 5 s anyway
        // (netlink notifications can be lost when the socket's buffer overflows). What this
        // round does not write is removed right after it.
        if !first {
            let _ = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
        }
        // Changes that arrive while reading are caught by the next round.
        while events.try_recv().is_ok() {}
        let k = read_kernel(handle).await?;
        for (id, spec) in &k.links {
            let spec = spec.clone();
            ctx.put::<LinkStatusSpec>(id, spec)?;
        }
        for (id, spec) in &k.addresses {
            let spec = spec.clone();
            ctx.put::<AddressStatusSpec>(id, spec)?;
        }
        for (id, spec) in &k.routes {
            let spec = spec.clone();
            ctx.put::<RouteStatusSpec>(id, spec)?;
        }
        let current = node_addresses(&k);
        self.accumulative.extend(current.iter().cloned());
        for (id, addresses) in [
            (
                "default",
                current.iter().take(1).cloned().collect::<Vec<_>>(),
            ),
            ("current", current.clone()),
            ("accumulative", self.accumulative.iter().cloned().collect()),
        ] {
            let spec = NodeAddressSpec {
                addresses,
                sort_algorithm: "v1".into(),
            };
            ctx.put::<NodeAddressSpec>(id, spec)?;
        }
        ctx.requeue_after(Duration::ZERO);
        Ok(())
    }
}
