//! network.AddressSpecController.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use futures::TryStreamExt;
use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};

use crate::controllers::network::layers::specs;
use crate::sys::netlink::{handle, link_state};
use types::network::*;
use types::NETWORK_NS;

/// Puts merged address specs into the kernel and takes out again what it put there for specs
/// that are gone. Only a node in its own network namespace touches the kernel.
pub struct AddressSpecController {
    pub apply: bool,
    added: HashSet<(String, String)>,
    conn: Option<rtnetlink::Handle>,
}

impl AddressSpecController {
    pub fn new(apply: bool) -> AddressSpecController {
        AddressSpecController {
            apply,
            added: HashSet::new(),
            conn: None,
        }
    }
}

async fn kernel_addresses(
    h: &rtnetlink::Handle,
    index: u32,
) -> Result<Vec<AddressMessage>, rtnetlink::Error> {
    h.address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
}

fn message_cidr(m: &AddressMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(format!("{ip}/{}", m.header.prefix_len)),
        _ => None,
    })
}

#[async_trait::async_trait]
impl Controller for AddressSpecController {
    fn name(&self) -> &str {
        "network.AddressSpecController"
    }
    fn inputs(&self) -> Vec<Input> {
        // Links that appear (a VLAN made a moment ago) let waiting specs apply.
        vec![
            Input::of::<types::network::AddressSpecSpec>(),
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
        let h = &handle(&mut self.conn)?.clone();
        let wanted = specs::<AddressSpecSpec>(ctx, NETWORK_NS)?;
        let mut problems = Vec::new();
        for spec in &wanted {
            let Some(index) = link_state(h, &spec.link_name).await?.map(|(i, _)| i) else {
                problems.push(format!(
                    "{}: link {} not found",
                    spec.address, spec.link_name
                ));
                continue;
            };
            let present = kernel_addresses(h, index)
                .await?
                .iter()
                .any(|m| message_cidr(m).as_deref() == Some(spec.address.as_str()));
            if !present {
                let (ip, prefix) = spec.address.split_once('/').expect("validated");
                let ip: IpAddr = ip.parse()?;
                let mut req = h.address().add(index, ip, prefix.parse()?);
                // Loopback addresses are host-scoped, as the kernel makes them: a global one
                // would be picked as the source of broadcasts on other links (DHCP).
                if ip.is_loopback() {
                    req.message_mut().header.scope = AddressScope::Host;
                }
                req.execute().await?;
                tracing::info!(
                    address = spec.address,
                    link = spec.link_name,
                    "address added"
                );
                self.added
                    .insert((spec.link_name.clone(), spec.address.clone()));
            }
        }
        // Addresses this controller added whose specs are gone.
        let gone: Vec<(String, String)> = self
            .added
            .iter()
            .filter(|(l, a)| !wanted.iter().any(|s| s.link_name == *l && s.address == *a))
            .cloned()
            .collect();
        for (link, address) in gone {
            if let Some(index) = link_state(h, &link).await?.map(|(i, _)| i) {
                for m in kernel_addresses(h, index).await? {
                    if message_cidr(&m).as_deref() == Some(address.as_str()) {
                        h.address().del(m).execute().await?;
                        tracing::info!(address, link, "address removed");
                    }
                }
            }
            self.added.remove(&(link, address));
        }
        if !problems.is_empty() {
            // Links come and go: look again later.
            tracing::warn!(?problems, "address specs not applied");
            ctx.requeue_after(Duration::from_secs(5));
        }
        Ok(())
    }
}
