//! The Layer 2 shared virtual IP of control planes (`machine.network.interfaces[].vip.ip`): the
//! control planes campaign for an etcd key under a short lease; the holder keeps the lease
//! alive, puts the address on its link (an `operator` layer address spec) and announces it with
//! gratuitous ARP. When the holder dies or leaves, its lease expires and another takes over.

use resources::ResourceType;
use std::net::Ipv4Addr;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp};
use resources::{Controller, ControllerError, Input, Output, ReconcileContext};

use crate::services::etcd::Etcd;
use types::network::{AddressSpecSpec, LinkStatusSpec};
use types::NETWORK_CONFIG_NS;

/// Seconds a holder's lease lives without keep-alives: the bound on failover, with an etcd
/// election when the holder also led etcd.
const LEASE_TTL: i64 = 2;
const ROUND: Duration = Duration::from_millis(300);

struct Held {
    lease: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
    /// The last keep-alive etcd confirmed.
    kept_at: tokio::time::Instant,
}

pub struct VipController {
    etcd: crate::services::etcd::Handle,
    held: Option<Held>,
    announced: u32,
    /// Since when the current holder (by lease) has not answered.
    silent: Option<(i64, tokio::time::Instant)>,
}

/// How long a holder may not answer before the others take its lease away (instead of waiting
/// for the lease to run out, which after an etcd leader change takes its TTL plus an election).
const SILENCE: Duration = Duration::from_millis(900);

impl VipController {
    pub fn new(etcd: crate::services::etcd::Handle) -> VipController {
        VipController {
            etcd,
            held: None,
            announced: 0,
            silent: None,
        }
    }

    /// Keep the lease alive; false once it has surely expired (a keep-alive that fails or is
    /// slow is tried again while the lease can still be alive).
    async fn keep(&mut self) -> bool {
        let Some(h) = self.held.as_mut() else {
            return false;
        };
        let answered = if h.keeper.keep_alive().await.is_ok() {
            tokio::time::timeout(ROUND, h.stream.message()).await
        } else {
            Ok(Ok(None))
        };
        match answered {
            Ok(Ok(Some(r))) if r.ttl() > 0 => {
                h.kept_at = tokio::time::Instant::now();
                true
            }
            // etcd says the lease is gone.
            Ok(Ok(Some(r))) => {
                tracing::warn!(ttl = r.ttl(), "the shared IP's lease expired");
                false
            }
            other => {
                let alive = h.kept_at.elapsed() < Duration::from_secs(LEASE_TTL as u64);
                if !alive {
                    tracing::warn!(answer = ?other.map(|r| r.map(|m| m.map(|x| x.ttl()))), "no keep-alive answer");
                }
                alive
            }
        }
    }

    /// Try to become the holder of `key`.
    async fn campaign(&mut self, e: &Etcd, key: &str, me: &str) -> Result<bool, String> {
        let mut c = e.client().await?;
        // A read first: only a free key is worth a lease (each grant is a raft write).
        let current = c
            .get(key, None)
            .await
            .map_err(|x| crate::services::etcd::describe(&x))?;
        if let Some(kv) = current.kvs().first() {
            // Held: is the holder still there? Its apid answers while it lives.
            let holder = kv.value_str().unwrap_or_default().to_string();
            let alive = match holder
                .rsplit_once(' ')
                .and_then(|(_, ip)| ip.parse::<std::net::IpAddr>().ok())
            {
                Some(ip) => tokio::time::timeout(
                    Duration::from_millis(300),
                    tokio::net::TcpStream::connect((ip, 50000)),
                )
                .await
                .is_ok_and(|r| r.is_ok()),
                None => true,
            };
            if alive {
                self.silent = None;
            } else {
                let since = match self.silent {
                    Some((lease, at)) if lease == kv.lease() => at,
                    _ => {
                        let now = tokio::time::Instant::now();
                        self.silent = Some((kv.lease(), now));
                        now
                    }
                };
                if since.elapsed() >= SILENCE {
                    tracing::info!(holder, "the shared IP's holder is gone: revoking its lease");
                    let _ = c.lease_revoke(kv.lease()).await;
                    self.silent = None;
                }
            }
            return Ok(false);
        }
        let lease = c
            .lease_grant(LEASE_TTL, None)
            .await
            .map_err(|x| crate::services::etcd::describe(&x))?
            .id();
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                me,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let won = c
            .txn(txn)
            .await
            .map_err(|x| crate::services::etcd::describe(&x))?
            .succeeded();
        if !won {
            let _ = c.lease_revoke(lease).await;
            return Ok(false);
        }
        let (keeper, stream) = c
            .lease_keep_alive(lease)
            .await
            .map_err(|x| crate::services::etcd::describe(&x))?;
        self.held = Some(Held {
            lease,
            keeper,
            stream,
            kept_at: tokio::time::Instant::now(),
        });
        self.announced = 0;
        Ok(true)
    }

    async fn release(&mut self) {
        let etcd = self.etcd.read().expect("etcd").clone();
        if let (Some(h), Some(e)) = (self.held.take(), etcd) {
            if let Ok(mut c) = e.client().await {
                let _ = c.lease_revoke(h.lease).await;
            }
        }
    }
}

#[async_trait::async_trait]
impl Controller for VipController {
    fn name(&self) -> &str {
        "network.OperatorVIPController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::of::<types::network::OperatorSpecSpec>(),
            Input::of::<types::network::LinkStatusSpec>(),
            Input::of::<types::network::HostnameStatusSpec>().id("hostname"),
            // The node's own address, as etcd advertises it (stable while the VIP comes and
            // goes on the same link).
            Input::of::<types::etcd::EtcdSpecSpec>().id(types::etcd::ETCD_ID),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::shared_in::<AddressSpecSpec>(NETWORK_CONFIG_NS)]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let want = crate::controllers::network::layers::operators(ctx, "vip")?
            .into_iter()
            .find_map(|o| Some((o.vip.parse::<Ipv4Addr>().ok()?, o.link_name)));
        let Some((ip, link)) = want else {
            self.release().await;
            return Ok(());
        };
        // Every round, also while etcd is still being set up at boot.
        ctx.requeue_after(ROUND);
        let Some(e) = self.etcd.read().expect("etcd").clone() else {
            return Ok(());
        };
        let hostname = ctx
            .spec_of::<types::network::HostnameStatusSpec>("hostname")?
            .map(|h| h.hostname)
            .unwrap_or_default();
        let address = ctx
            .spec_of::<types::etcd::EtcdSpecSpec>(types::etcd::ETCD_ID)?
            .and_then(|s| s.advertised_addresses.first().cloned())
            .unwrap_or_default();
        let me = format!("{hostname} {address}");
        let key = format!("/talos/vip/{ip}");
        let holding = if self.held.is_some() {
            let kept = self.keep().await;
            if !kept {
                tracing::warn!(%ip, "lost the shared IP's lease");
                self.held = None;
            }
            kept
        } else {
            // Bounded: while etcd elects a leader, requests hang; the next round tries again.
            let attempt =
                tokio::time::timeout(Duration::from_secs(1), self.campaign(&e, &key, &me));
            match attempt.await.unwrap_or_else(|_| Err("timed out".into())) {
                Ok(won) => {
                    if won {
                        tracing::info!(%ip, "holding the shared IP");
                    }
                    won
                }
                // etcd not ready yet (or no quorum): try again next round.
                Err(_) => false,
            }
        };
        if !holding {
            return Ok(());
        }
        let spec = AddressSpecSpec {
            announce_with_arp: true,
            ..crate::controllers::network::sources::address_spec(
                &format!("{ip}/32"),
                &link,
                "operator",
            )
            .expect("an address")
        };
        ctx.put_in::<AddressSpecSpec>(NETWORK_CONFIG_NS, &format!("vip/{link}/{ip}/32"), spec)?;
        // Tell the segment a few times that the address moved here.
        if self.announced < 3 {
            let status = ctx
                .get(&LinkStatusSpec::pointer(&link))?
                .and_then(|r| r.spec::<LinkStatusSpec>().cloned());
            if let Some(s) = status {
                match gratuitous_arp(s.index, &s.hardware_addr, ip) {
                    Ok(()) => self.announced += 1,
                    Err(err) => tracing::warn!(%ip, error = %err, "gratuitous ARP"),
                }
            }
        }
        Ok(())
    }
}

/// Broadcast an ARP request for `ip` from `ip` (gratuitous ARP) on link `index`.
fn gratuitous_arp(index: u32, mac: &str, ip: Ipv4Addr) -> std::io::Result<()> {
    use nix::libc;
    let mac: Vec<u8> = mac
        .split(':')
        .filter_map(|b| u8::from_str_radix(b, 16).ok())
        .collect();
    if mac.len() != 6 {
        return Err(std::io::Error::other("the link has no hardware address"));
    }
    let mut frame = Vec::with_capacity(42);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&[0x08, 0x06]); // ARP
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet/IPv4, request
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ip.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&ip.octets());
    // SAFETY: a packet socket used for one sendto with a valid buffer and address, then closed.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, (0x0806u16).to_be() as i32);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (0x0806u16).to_be();
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        let rc = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(err);
        }
    }
    Ok(())
}
