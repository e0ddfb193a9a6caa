//! `talosctl netstat` (`ss`): the nodes' sockets, as upstream prints them.

use api::machine::netstat_request::{Feature, Filter, L4proto, NetNs};
use api::machine::{connect_record, NetstatRequest};
use clap::Args;
use machinery::{Error, Result};

use crate::client;
use crate::config_cmd::{table, ConnArgs};

#[derive(Args)]
#[command(
    after_help = "Examples:\n  talosctl -n 10.5.0.2 netstat -l          # listening sockets (apid on 50000)\n  talosctl -n 10.5.0.2 ss -tanp            # every TCP socket with its process\n  talosctl -n 10.5.0.2 netstat -k          # and those of the pods' network namespaces"
)]
pub struct NetstatArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// A pod's network namespace (as listed with -k) instead of the host's.
    pod: Option<String>,
    /// Sockets of every transport protocol (tcp, udp, udplite, raw).
    #[arg(short, long)]
    verbose: bool,
    /// Show the owner's uid and the socket's inode.
    #[arg(short = 'x', long)]
    extend: bool,
    /// Show the process holding each socket.
    #[arg(short, long)]
    programs: bool,
    /// Show the timers.
    #[arg(short = 'o', long)]
    timers: bool,
    /// Only listening sockets.
    #[arg(short, long)]
    listening: bool,
    /// Sockets in every state (default: connected only).
    #[arg(short, long)]
    all: bool,
    /// Also the sockets of the pods' network namespaces.
    #[arg(short = 'k', long)]
    pods: bool,
    /// Only TCP sockets.
    #[arg(short, long)]
    tcp: bool,
    /// Only UDP sockets.
    #[arg(short, long)]
    udp: bool,
    /// Only UDPLite sockets.
    #[arg(short = 'U', long)]
    udplite: bool,
    /// Only raw sockets.
    #[arg(short = 'w', long)]
    raw: bool,
    /// Only IPv4 sockets.
    #[arg(short = '4', long)]
    ipv4: bool,
    /// Only IPv6 sockets.
    #[arg(short = '6', long)]
    ipv6: bool,
}

fn request(a: &NetstatArgs) -> NetstatRequest {
    let (mut tcp, mut udp, mut udplite, mut raw) = (a.tcp, a.udp, a.udplite, a.raw);
    if a.verbose {
        (tcp, udp, udplite, raw) = (true, true, true, true);
    }
    if !(tcp || udp || udplite || raw) {
        (tcp, udp) = (true, true);
    }
    let v4 = !a.ipv6 || a.ipv4;
    let v6 = !a.ipv4 || a.ipv6;
    NetstatRequest {
        filter: match (a.all, a.listening) {
            (true, _) => Filter::All,
            (_, true) => Filter::Listening,
            _ => Filter::Connected,
        } as i32,
        feature: Some(Feature { pid: a.programs }),
        l4proto: Some(L4proto {
            tcp: tcp && v4,
            tcp6: tcp && v6,
            udp: udp && v4,
            udp6: udp && v6,
            udplite: udplite && v4,
            udplite6: udplite && v6,
            raw: raw && v4,
            raw6: raw && v6,
        }),
        netns: Some(NetNs {
            hostnetwork: a.pod.is_none(),
            netns: a.pod.iter().cloned().collect(),
            allnetns: a.pods,
        }),
    }
}

pub async fn run(a: NetstatArgs) -> Result<()> {
    if a.pods && a.pod.is_some() {
        return Err(Error::msg("cannot use --pods and specify a pod"));
    }
    let targets = client::connect(&a.conn).await?;
    let req = request(&a);
    let mut header = vec![
        "NODE",
        "Proto",
        "Recv-Q",
        "Send-Q",
        "Local Address",
        "Foreign Address",
        "State",
    ];
    if a.extend {
        header.extend(["Uid", "Inode"]);
    }
    if a.programs {
        header.push("PID/Program name");
    }
    if a.pods {
        header.push("Pod");
    }
    if a.timers {
        header.push("Timer");
    }
    let mut rows = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    let mut errors = Vec::new();
    for t in &targets {
        let resp = match client::machine(t).netstat(req.clone()).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                errors.push(client::call_error(&t.node, s).to_string());
                continue;
            }
        };
        for m in resp.messages {
            let node = client::node_of(m.metadata.as_ref(), t);
            for r in m.connectrecord {
                let state = connect_record::State::try_from(r.state)
                    .ok()
                    .filter(|s| *s != connect_record::State::Close)
                    .map(|s| s.as_str_name().to_string())
                    .unwrap_or_default();
                let remote_port = match r.remoteport {
                    0 => "*".to_string(),
                    p => p.to_string(),
                };
                let mut row = vec![
                    node.clone(),
                    r.l4proto.clone(),
                    r.rxqueue.to_string(),
                    r.txqueue.to_string(),
                    format!("{}:{}", r.localip, r.localport),
                    format!("{}:{remote_port}", r.remoteip),
                    state,
                ];
                if a.extend {
                    row.extend([r.uid.to_string(), r.inode.to_string()]);
                }
                if a.programs {
                    row.push(match &r.process {
                        Some(p) if p.pid != 0 => format!("{}/{}", p.pid, p.name),
                        _ => "-".into(),
                    });
                }
                if a.pods {
                    row.push(match r.netns.as_str() {
                        "" => "-".into(),
                        ns => ns.to_string(),
                    });
                }
                if a.timers {
                    let tr = connect_record::TimerActive::try_from(r.tr)
                        .map(|t| t.as_str_name().to_lowercase())
                        .unwrap_or_default();
                    row.push(format!(
                        "{tr} ({:.2}/{}/{})",
                        r.timerwhen as f64 / 100.0,
                        r.retrnsmt,
                        r.timeout
                    ));
                }
                rows.push(row);
            }
        }
    }
    if rows.len() > 1 {
        print!("{}", table(&rows));
    }
    client::per_node(errors)
}
