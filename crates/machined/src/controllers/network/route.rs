//! network.RouteSpecController.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use rtnetlink::packet_route::route::RouteMessage;

use crate::controllers::network::layers::{specs, Layered};
use crate::sys::netlink::{dump_routes, handle, link_names, link_state, route_status};
use types::network::*;
use types::NETWORK_NS;

/// Kernel routes of the main table, by the same ID as their specs and statuses.
async fn kernel_routes(
    h: &rtnetlink::Handle,
) -> Result<Vec<(String, RouteMessage)>, ControllerError> {
    let names = link_names(h).await?;
    Ok(dump_routes(h)
        .await?
        .into_iter()
        .filter(|m| m.header.table == 254)
        .map(|m| (route_status(&m, &names).0, m))
        .collect())
}

/// Puts merged route specs into the kernel's main table; removes the ones it added whose specs
/// are gone.
pub struct RouteSpecController {
    apply: bool,
    added: HashSet<String>,
    conn: Option<rtnetlink::Handle>,
}

impl RouteSpecController {
    pub fn new(apply: bool) -> RouteSpecController {
        RouteSpecController {
            apply,
            added: HashSet::new(),
            conn: None,
        }
    }
}

#[async_trait::async_trait]
impl Controller for RouteSpecController {
    fn name(&self) -> &str {
        "network.RouteSpecController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::of::<types::network::RouteSpecSpec>(),
            Input::of::<types::network::LinkStatusSpec>(),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        Vec::new()
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        if !self.apply {
            return Ok(());
        }
        let h = handle(&mut self.conn)?.clone();
        let wanted = specs::<RouteSpecSpec>(ctx, NETWORK_NS)?;
        let present = kernel_routes(&h).await?;
        let mut missing_links = Vec::new();
        for spec in &wanted {
            let id = spec.merged_id();
            if present.iter().any(|(p, _)| *p == id) {
                continue;
            }
            let Some(index) = link_state(&h, &spec.out_link_name).await?.map(|(i, _)| i) else {
                missing_links.push(format!("{id}: link {} not found", spec.out_link_name));
                continue;
            };
            let (dst, prefix) = match spec.destination.split_once('/') {
                Some((ip, p)) => (ip.parse::<IpAddr>()?, p.parse::<u8>()?),
                None if spec.family == "inet6" => ("::".parse()?, 0),
                None => ("0.0.0.0".parse()?, 0),
            };
            let mut b = rtnetlink::RouteMessageBuilder::<IpAddr>::new()
                .destination_prefix(dst, prefix)?
                .output_interface(index)
                .priority(spec.priority);
            if !spec.gateway.is_empty() {
                b = b.gateway(spec.gateway.parse()?)?;
            }
            h.route().add(b.build()).execute().await?;
            tracing::info!(route = id, "route added");
            self.added.insert(id);
        }
        let gone: Vec<String> = self
            .added
            .iter()
            .filter(|id| !wanted.iter().any(|s| s.merged_id() == **id))
            .cloned()
            .collect();
        for id in gone {
            for (p, m) in &present {
                if *p == id {
                    h.route().del(m.clone()).execute().await?;
                    tracing::info!(route = id, "route removed");
                }
            }
            self.added.remove(&id);
        }
        if !missing_links.is_empty() {
            tracing::warn!(?missing_links, "route specs not applied");
            ctx.requeue_after(Duration::from_secs(5));
        }
        Ok(())
    }
}
