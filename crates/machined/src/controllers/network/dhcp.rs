//! A DHCPv4 client (discover, offer, request, ack) and the operator that turns leases into
//! specs of the `operator` layer: `dhcp4/<link>/<address>` addresses and a default route via
//! the lease's router. Leases are renewed halfway through (by asking again).

use resources::ResourceType;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use dhcproto::v4::{
    Decodable, Decoder, DhcpOption, Encodable, Encoder, Flags, Message, MessageType, OptionCode,
};
use resources::{Controller, ControllerError, Input, Output, ReconcileContext};

use crate::controllers::network::layers::Layered;
use types::network::{AddressSpecSpec, RouteSpecSpec};
use types::NETWORK_CONFIG_NS;

#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub duration: Duration,
    pub server: Ipv4Addr,
}

/// A UDP socket on port 68 of `link` that may broadcast.
fn client_socket(link: &str) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    s.bind_device(Some(link.as_bytes()))?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)).into())?;
    s.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(s.into())
}

fn encode(m: &Message) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf))
        .map_err(|e| e.to_string())?;
    Ok(buf)
}

fn request_message(xid: u32, mac: &[u8], kind: MessageType) -> Message {
    let mut m = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        mac,
    );
    // Replies come by broadcast: the link has no address yet.
    m.set_flags(Flags::default().set_broadcast());
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::AddressLeaseTime,
    ]));
    m
}

/// Send `m` and wait for the reply of type `want` to this transaction.
async fn exchange(
    sock: &tokio::net::UdpSocket,
    m: &Message,
    want: MessageType,
) -> Result<Message, String> {
    let bytes = encode(m)?;
    let mut buf = vec![0u8; 1500];
    for _attempt in 0..3 {
        sock.send_to(&bytes, (Ipv4Addr::BROADCAST, 67))
            .await
            .map_err(|e| format!("send: {e}"))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let recv = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await;
            let Ok(Ok((n, _))) = recv else { break };
            let Ok(reply) = Message::decode(&mut Decoder::new(&buf[..n])) else {
                continue;
            };
            if reply.xid() != m.xid() {
                continue;
            }
            match reply.opts().msg_type() {
                Some(t) if t == want => return Ok(reply),
                Some(MessageType::Nak) => return Err("the server refused the request (NAK)".into()),
                _ => continue,
            }
        }
    }
    Err(format!("no {want:?} from a DHCP server"))
}

fn prefix_of(mask: Ipv4Addr) -> u8 {
    u32::from(mask).count_ones() as u8
}

/// Obtain a lease on `link` (whose hardware address is `mac`).
pub async fn acquire(link: &str, mac: &[u8]) -> Result<Lease, String> {
    let sock = client_socket(link).map_err(|e| format!("{link}: {e}"))?;
    let xid: u32 = rand::random();
    let offer = exchange(
        &sock,
        &request_message(xid, mac, MessageType::Discover),
        MessageType::Offer,
    )
    .await?;
    let server = match offer.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => return Err("the offer names no server".into()),
    };
    let mut req = request_message(xid, mac, MessageType::Request);
    req.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
    req.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    let ack = exchange(&sock, &req, MessageType::Ack).await?;
    let o = ack.opts();
    let prefix = match o.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(m)) => prefix_of(*m),
        _ => 24,
    };
    let router = match o.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.first().copied(),
        _ => None,
    };
    let dns = match o.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(d)) => d.clone(),
        _ => Vec::new(),
    };
    let duration = match o.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(s)) => Duration::from_secs(u64::from(*s)),
        _ => Duration::from_secs(3600),
    };
    Ok(Lease {
        address: ack.yiaddr(),
        prefix,
        router,
        dns,
        duration,
        server,
    })
}

/// Runs DHCPv4 on the links the machine config asks it for (`dhcp: true`).
pub struct OperatorController {
    leases: std::collections::BTreeMap<String, (Lease, tokio::time::Instant)>,
    apply: bool,
}

impl OperatorController {
    pub fn new(apply: bool) -> OperatorController {
        OperatorController {
            leases: Default::default(),
            apply,
        }
    }
}

#[async_trait::async_trait]
impl Controller for OperatorController {
    fn name(&self) -> &str {
        "network.OperatorSpecController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::of::<types::network::OperatorSpecSpec>(),
            Input::of::<types::network::LinkStatusSpec>(),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::shared_in::<AddressSpecSpec>(NETWORK_CONFIG_NS),
            Output::shared_in::<RouteSpecSpec>(NETWORK_CONFIG_NS),
        ]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        if !self.apply {
            return Ok(());
        }
        let ops = crate::controllers::network::layers::operators(ctx, "dhcp4")?;
        let links: Vec<String> = ops.iter().map(|o| o.link_name.clone()).collect();
        self.leases.retain(|l, _| links.contains(l));
        let mut next = Duration::from_secs(3600);
        for link in &links {
            let status = ctx
                .get(&types::network::LinkStatusSpec::pointer(link))?
                .and_then(|r| r.spec::<types::network::LinkStatusSpec>().cloned());
            let fresh = self
                .leases
                .get(link)
                .is_some_and(|(l, at)| at.elapsed() < l.duration / 2);
            if !fresh {
                match status.filter(|s| s.link_state) {
                    None => next = next.min(Duration::from_secs(1)),
                    Some(s) => {
                        let mac: Vec<u8> = s
                            .hardware_addr
                            .split(':')
                            .filter_map(|b| u8::from_str_radix(b, 16).ok())
                            .collect();
                        match acquire(link, &mac).await {
                            Ok(lease) => {
                                tracing::info!(link, address = %lease.address, "DHCP lease");
                                self.leases
                                    .insert(link.clone(), (lease, tokio::time::Instant::now()));
                            }
                            Err(e) => {
                                tracing::warn!(link, error = %e, "DHCP");
                                next = next.min(Duration::from_secs(2));
                            }
                        }
                    }
                }
            }
            if let Some((lease, at)) = self.leases.get(link) {
                next = next.min((lease.duration / 2).saturating_sub(at.elapsed()));
                let address = crate::controllers::network::sources::address_spec(
                    &format!("{}/{}", lease.address, lease.prefix),
                    link,
                    "operator",
                )
                .expect("an address");
                let id = format!("dhcp4/{link}/{}", address.address);
                ctx.put_in::<AddressSpecSpec>(NETWORK_CONFIG_NS, &id, address)?;
                if let Some(router) = lease.router {
                    let route = RouteSpecSpec {
                        family: "inet4".into(),
                        destination: String::new(),
                        gateway: router.to_string(),
                        out_link_name: link.clone(),
                        table: "main".into(),
                        priority: ops
                            .iter()
                            .find(|o| &o.link_name == link)
                            .and_then(|o| o.dhcp4.as_ref())
                            .map_or(1024, |d| d.route_metric),
                        protocol: "dhcp".into(),
                        layer: "operator".into(),
                    };
                    let id = format!("dhcp4/{link}/{}", route.merged_id());
                    ctx.put_in::<RouteSpecSpec>(NETWORK_CONFIG_NS, &id, route)?;
                }
            }
        }
        if !links.is_empty() {
            ctx.requeue_after(next.max(Duration::from_millis(500)));
        }
        Ok(())
    }
}
