//! network.LinkSpecController.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use resources::{Controller, ControllerError, Input, Output, ReconcileContext};

use crate::controllers::network::layers::specs;
use crate::sys::netlink::{handle, link_state};
use types::network::*;
use types::NETWORK_NS;

/// Brings configured links up and sets their MTU; a link whose spec is gone gets its MTU back.
pub struct LinkSpecController {
    apply: bool,
    /// MTUs links had before this controller changed them.
    original_mtu: BTreeMap<String, u32>,
    /// Logical links this controller made.
    created: BTreeSet<String>,
    /// Links this controller made ports of a bridge or bond.
    ports: BTreeSet<String>,
    /// Links this controller set down.
    downed: BTreeSet<String>,
    conn: Option<rtnetlink::Handle>,
}

impl LinkSpecController {
    pub fn new(apply: bool) -> LinkSpecController {
        LinkSpecController {
            apply,
            original_mtu: BTreeMap::new(),
            created: BTreeSet::new(),
            ports: BTreeSet::new(),
            downed: BTreeSet::new(),
            conn: None,
        }
    }
}

fn bond_mode(mode: &str) -> Option<rtnetlink::packet_route::link::BondMode> {
    use rtnetlink::packet_route::link::BondMode;
    Some(match mode {
        "" | "balance-rr" => BondMode::BalanceRr,
        "active-backup" => BondMode::ActiveBackup,
        "balance-xor" => BondMode::BalanceXor,
        "broadcast" => BondMode::Broadcast,
        "802.3ad" => BondMode::Ieee8023Ad,
        "balance-tlb" => BondMode::BalanceTlb,
        "balance-alb" => BondMode::BalanceAlb,
        _ => return None,
    })
}

#[async_trait::async_trait]
impl Controller for LinkSpecController {
    fn name(&self) -> &str {
        "network.LinkSpecController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![Input::of::<types::network::LinkSpecSpec>()]
    }
    fn outputs(&self) -> Vec<Output> {
        Vec::new()
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        if !self.apply {
            return Ok(());
        }
        let h = handle(&mut self.conn)?.clone();
        let wanted = specs::<LinkSpecSpec>(ctx, NETWORK_NS)?;
        let mut missing = false;
        for spec in wanted.iter().filter(|s| s.logical) {
            if link_state(&h, &spec.name).await?.is_some() {
                continue;
            }
            let message = match spec.kind.as_str() {
                "vlan" => {
                    let Some((parent, _)) = link_state(&h, &spec.parent_name).await? else {
                        tracing::warn!(
                            link = spec.name,
                            parent = spec.parent_name,
                            "VLAN parent not found"
                        );
                        missing = true;
                        continue;
                    };
                    rtnetlink::LinkVlan::new(&spec.name, parent, spec.vlan_id).build()
                }
                "bridge" => {
                    use rtnetlink::packet_route::link::BridgeStpState;
                    let stp = if spec.stp == Some(true) {
                        BridgeStpState::KernelStp
                    } else {
                        BridgeStpState::Disabled
                    };
                    rtnetlink::LinkBridge::new(&spec.name)
                        .stp_state(stp)
                        .build()
                }
                "bond" => {
                    let Some(mode) = bond_mode(&spec.bond_mode) else {
                        tracing::warn!(
                            link = spec.name,
                            mode = spec.bond_mode,
                            "unknown bond mode"
                        );
                        continue;
                    };
                    rtnetlink::LinkBond::new(&spec.name).mode(mode).build()
                }
                "dummy" => rtnetlink::LinkDummy::new(&spec.name).build(),
                kind => {
                    tracing::warn!(link = spec.name, kind, "links of this kind are not made");
                    continue;
                }
            };
            match h.link().add(message).execute().await {
                Ok(()) => {
                    tracing::info!(link = spec.name, kind = spec.kind, "logical link created");
                    self.created.insert(spec.name.clone());
                }
                // A kernel without 802.1Q or bonding, say: the other links still get configured.
                Err(e) => {
                    tracing::warn!(link = spec.name, kind = spec.kind, error = %e, "cannot create the link");
                    missing = true;
                }
            }
        }
        let gone: Vec<String> = self
            .created
            .iter()
            .filter(|n| !wanted.iter().any(|s| s.name == **n))
            .cloned()
            .collect();
        for name in gone {
            if let Some((index, _)) = link_state(&h, &name).await? {
                h.link().del(index).execute().await?;
                tracing::info!(link = name, "logical link removed");
            }
            self.created.remove(&name);
        }
        for spec in &wanted {
            let Some((index, status)) = link_state(&h, &spec.name).await? else {
                tracing::warn!(link = spec.name, "configured link not found");
                missing = true;
                continue;
            };
            let master = spec.bond_slave.as_ref().or(spec.bridge_slave.as_ref());
            if let Some(m) = master {
                match link_state(&h, &m.master_name).await? {
                    Some((mi, _)) if mi == status.master_index => {}
                    Some((mi, _)) => {
                        // A bond takes only ports that are down.
                        let mut b = rtnetlink::LinkUnspec::new_with_index(index).controller(mi);
                        if spec.bond_slave.is_some() {
                            h.link()
                                .set(rtnetlink::LinkUnspec::new_with_index(index).down().build())
                                .execute()
                                .await?;
                            b = b.up();
                        }
                        h.link().set(b.build()).execute().await?;
                        self.ports.insert(spec.name.clone());
                        tracing::info!(link = spec.name, master = m.master_name, "link joined");
                    }
                    None => missing = true,
                }
            }
            let mut b = rtnetlink::LinkUnspec::new_with_index(index);
            let mut change = false;
            if spec.mtu != 0 && spec.mtu != status.mtu {
                self.original_mtu
                    .entry(spec.name.clone())
                    .or_insert(status.mtu);
                b = b.mtu(spec.mtu);
                change = true;
            }
            if spec.up != status.link_state {
                b = if spec.up { b.up() } else { b.down() };
                if !spec.up {
                    self.downed.insert(spec.name.clone());
                }
                change = true;
            }
            if change {
                h.link().set(b.build()).execute().await?;
                tracing::info!(
                    link = spec.name,
                    mtu = spec.mtu,
                    up = spec.up,
                    "link configured"
                );
            }
        }
        let released: Vec<String> = self
            .ports
            .iter()
            .filter(|n| {
                !wanted
                    .iter()
                    .any(|s| s.name == **n && (s.bond_slave.is_some() || s.bridge_slave.is_some()))
            })
            .cloned()
            .collect();
        for name in released {
            if let Some((index, status)) = link_state(&h, &name).await? {
                if status.master_index != 0 {
                    h.link()
                        .set(
                            rtnetlink::LinkUnspec::new_with_index(index)
                                .nocontroller()
                                .build(),
                        )
                        .execute()
                        .await?;
                    tracing::info!(link = name, "link released from its master");
                }
            }
            self.ports.remove(&name);
        }
        // Links set down by a spec that is gone come back up.
        let raise: Vec<String> = self
            .downed
            .iter()
            .filter(|n| !wanted.iter().any(|s| s.name == **n && !s.up))
            .cloned()
            .collect();
        for name in raise {
            if let Some((index, _)) = link_state(&h, &name).await? {
                h.link()
                    .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
                    .execute()
                    .await?;
            }
            self.downed.remove(&name);
        }
        let restore: Vec<(String, u32)> = self
            .original_mtu
            .iter()
            .filter(|(name, _)| !wanted.iter().any(|s| s.name == **name && s.mtu != 0))
            .map(|(n, m)| (n.clone(), *m))
            .collect();
        for (name, mtu) in restore {
            if let Some((index, _)) = link_state(&h, &name).await? {
                h.link()
                    .set(
                        rtnetlink::LinkUnspec::new_with_index(index)
                            .mtu(mtu)
                            .build(),
                    )
                    .execute()
                    .await?;
            }
            self.original_mtu.remove(&name);
        }
        if missing {
            ctx.requeue_after(Duration::from_secs(5));
        }
        Ok(())
    }
}
