//! cluster.MemberController: Affiliates and Members for this node and every peer the
//! discovery service reports; a peer silent for 25 s is unreachable, one whose affiliate is
//! gone is removed.

use std::time::Duration;

use discovery::pb::client as plain;
use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use tokio::time::Instant;
use types::cluster::{AffiliateSpec, MemberSpec};

use crate::sys::discovery::{Handle, SILENCE};

/// Affiliates and members: this node and every peer the service reports.
pub struct MemberController {
    pub handle: Handle,
    /// Whether a first round was made (later rounds wait for news first).
    pub waiting: bool,
}

#[async_trait::async_trait]
impl Controller for MemberController {
    fn name(&self) -> &str {
        "cluster.MemberController"
    }
    fn inputs(&self) -> Vec<Input> {
        Vec::new()
    }
    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::exclusive_of::<types::cluster::AffiliateSpec>(),
            Output::exclusive_of::<types::cluster::MemberSpec>(),
        ]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        // Wait for news from the service, or 2 s to look for silent peers; what this round does
        // not write is removed right after it.
        if self.waiting {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.handle.changed()).await;
        }
        self.waiting = true;
        let local = self.handle.local();
        let now = Instant::now();
        let mut all: Vec<(plain::Affiliate, bool)> = self
            .handle
            .peers()
            .into_iter()
            .map(|(a, seen)| (a, now.duration_since(seen) < SILENCE))
            .collect();
        all.extend(local.map(|a| (a, true)));
        for (a, reachable) in all {
            let spec = crate::sys::discovery::affiliate_spec(&a);
            if spec.node_id.is_empty() {
                continue;
            }
            if !spec.nodename.is_empty() {
                let member = MemberSpec {
                    node_id: spec.node_id.clone(),
                    addresses: spec.addresses.clone(),
                    hostname: spec.hostname.clone(),
                    machine_type: spec.machine_type.clone(),
                    operating_system: spec.operating_system.clone(),
                    control_plane: spec.control_plane.clone(),
                    reachable,
                };
                ctx.put::<MemberSpec>(&spec.nodename.clone(), member)?;
            }
            ctx.put::<AffiliateSpec>(&spec.node_id.clone(), spec)?;
        }
        ctx.requeue_after(Duration::ZERO);
        Ok(())
    }
}
