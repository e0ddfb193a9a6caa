//! `MachineService/Netstat`: the node's sockets from the kernel's tables (`/proc/<pid>/net/*`),
//! in the host's network namespace and, on request, in every named one (`/run/netns`, where
//! the CRI keeps pods'), with the process that holds each socket.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;

use api::machine::netstat_request::Filter;
use api::machine::{connect_record, ConnectRecord, Netstat, NetstatRequest, NetstatResponse};
use tonic::Status;

/// The kernel's socket tables, by the name upstream gives their protocol.
const TABLES: [&str; 8] = [
    "tcp", "tcp6", "udp", "udp6", "udplite", "udplite6", "raw", "raw6",
];

/// An address of a table: little-endian 32-bit words in hex, then the port.
fn address(text: &str) -> Option<(IpAddr, u32)> {
    let (ip, port) = text.split_once(':')?;
    let port = u32::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).map(u32::from_be))
        .collect::<Result<_, _>>()
        .ok()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some((ip, port))
}

/// The records of one table's text.
pub fn parse(proto: &str, text: &str) -> Vec<ConnectRecord> {
    let hex = |s: &str| u64::from_str_radix(s, 16).unwrap_or(0);
    let dec = |s: &str| s.parse::<u64>().unwrap_or(0);
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 12 {
                return None;
            }
            let (local, local_port) = address(f[1])?;
            let (remote, remote_port) = address(f[2])?;
            let (tx, rx) = f[4].split_once(':')?;
            let (tr, when) = f[5].split_once(':')?;
            Some(ConnectRecord {
                l4proto: proto.to_string(),
                localip: local.to_string(),
                localport: local_port,
                remoteip: remote.to_string(),
                remoteport: remote_port,
                state: hex(f[3]) as i32,
                txqueue: hex(tx),
                rxqueue: hex(rx),
                tr: hex(tr) as i32,
                timerwhen: hex(when),
                retrnsmt: hex(f[6]),
                uid: dec(f[7]) as u32,
                timeout: dec(f[8]),
                inode: dec(f[9]),
                r#ref: dec(f[10]),
                pointer: hex(f[11]),
                process: None,
                netns: String::new(),
            })
        })
        .collect()
}

/// Listening: a TCP socket in LISTEN, or an unconnected datagram or raw socket.
fn listening(r: &ConnectRecord) -> bool {
    match r.l4proto.starts_with("tcp") {
        true => r.state == connect_record::State::Listen as i32,
        false => r.remoteport == 0 && r.state == connect_record::State::Close as i32,
    }
}

fn wanted(req: &NetstatRequest, proto: &str) -> bool {
    let p = req.l4proto.unwrap_or_default();
    match proto {
        "tcp" => p.tcp,
        "tcp6" => p.tcp6,
        "udp" => p.udp,
        "udp6" => p.udp6,
        "udplite" => p.udplite,
        "udplite6" => p.udplite6,
        "raw" => p.raw,
        _ => p.raw6,
    }
}

/// Socket inode → (pid, program) for every process.
fn owners() -> HashMap<u64, (u32, String)> {
    let mut out = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let name = std::fs::read_to_string(p.path().join("comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if let Some(inode) = t
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse().ok())
            {
                out.entry(inode).or_insert((pid, name.clone()));
            }
        }
    }
    out
}

/// The named network namespaces (`/run/netns/<name>`) and a process inside each, whose
/// `/proc/<pid>/net` shows that namespace's tables.
fn named_netns() -> Vec<(String, u32)> {
    let mut by_inode: HashMap<u64, u32> = HashMap::new();
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            if let (Ok(pid), Ok(m)) = (
                p.file_name().to_string_lossy().parse::<u32>(),
                std::fs::metadata(p.path().join("ns/net")),
            ) {
                by_inode.entry(m.ino()).or_insert(pid);
            }
        }
    }
    let mut out = Vec::new();
    for dir in ["/run/netns", "/var/run/netns"] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(pid) = std::fs::metadata(e.path())
                .ok()
                .and_then(|m| by_inode.get(&m.ino()))
            {
                if !out.iter().any(|(n, _)| *n == name) {
                    out.push((name, *pid));
                }
            }
        }
    }
    out
}

pub fn netstat(req: &NetstatRequest) -> Result<NetstatResponse, Status> {
    let ns = req.netns.clone().unwrap_or_default();
    // Which namespaces: (name, the /proc directory whose net/ shows it).
    let mut spaces: Vec<(String, String)> = Vec::new();
    if ns.hostnetwork || (!ns.allnetns && ns.netns.is_empty()) {
        spaces.push((String::new(), "/proc/self".into()));
    }
    if ns.allnetns || !ns.netns.is_empty() {
        for (name, pid) in named_netns() {
            if ns.allnetns || ns.netns.contains(&name) {
                spaces.push((name, format!("/proc/{pid}")));
            }
        }
        if let Some(missing) = ns
            .netns
            .iter()
            .find(|n| !spaces.iter().any(|(s, _)| s == *n))
        {
            return Err(Status::not_found(format!(
                "network namespace {missing} not found"
            )));
        }
    }
    let owners = req
        .feature
        .is_some_and(|f| f.pid)
        .then(owners)
        .unwrap_or_default();
    let filter = Filter::try_from(req.filter).unwrap_or(Filter::All);
    let mut records = Vec::new();
    for (name, dir) in &spaces {
        for proto in TABLES.iter().filter(|p| wanted(req, p)) {
            let Ok(text) = std::fs::read_to_string(format!("{dir}/net/{proto}")) else {
                continue; // a kernel without that protocol
            };
            for mut r in parse(proto, &text) {
                let keep = match filter {
                    Filter::All => true,
                    Filter::Listening => listening(&r),
                    Filter::Connected => !listening(&r),
                };
                if !keep {
                    continue;
                }
                if let Some((pid, program)) = owners.get(&r.inode) {
                    r.process = Some(connect_record::Process {
                        pid: *pid,
                        name: program.clone(),
                    });
                }
                r.netns = name.clone();
                records.push(r);
            }
        }
    }
    Ok(NetstatResponse {
        messages: vec![Netstat {
            metadata: None,
            connectrecord: records,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_parse() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:C350 00000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n";
        let r = &parse("tcp", tcp)[0];
        assert_eq!((r.localip.as_str(), r.localport), ("127.0.0.1", 50000));
        assert_eq!((r.remoteip.as_str(), r.remoteport), ("0.0.0.0", 0));
        assert_eq!(r.state, connect_record::State::Listen as i32);
        assert_eq!((r.rxqueue, r.inode), (2, 4242));
        assert!(listening(r));
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 77 1 0000000000000000 100 0 0 10 0\n";
        let r = &parse("tcp6", tcp6)[0];
        assert_eq!(
            (r.localip.as_str(), r.localport, r.uid),
            ("::1", 8080, 1000)
        );
    }

    #[test]
    fn this_process_listening_socket_is_found_with_its_program() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = u32::from(l.local_addr().unwrap().port());
        let resp = netstat(&NetstatRequest {
            filter: Filter::Listening as i32,
            feature: Some(api::machine::netstat_request::Feature { pid: true }),
            l4proto: Some(api::machine::netstat_request::L4proto {
                tcp: true,
                ..Default::default()
            }),
            netns: None,
        })
        .unwrap();
        let r = resp.messages[0]
            .connectrecord
            .iter()
            .find(|r| r.localport == port)
            .expect("the listener");
        assert_eq!(r.process.as_ref().unwrap().pid, std::process::id());
    }
}
