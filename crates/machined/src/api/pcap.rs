//! `MachineService/PacketCapture`: the packets of one of the node's interfaces, captured on a
//! packet socket (optionally promiscuous, filtered by a classic BPF program as `tcpdump -dd`
//! prints it) and streamed as a pcap file until the caller stops reading.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::SystemTime;

use api::machine::PacketCaptureRequest;
use tonic::Status;

/// pcap link types: Ethernet frames, or bare IP packets (tunnels such as WireGuard).
const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
/// The snap length when the request gives none (upstream's default).
const DEFAULT_SNAPLEN: u32 = 65536;

/// The pcap file header.
pub fn file_header(snaplen: u32, linktype: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend(0xa1b2_c3d4u32.to_le_bytes());
    h.extend(2u16.to_le_bytes());
    h.extend(4u16.to_le_bytes());
    h.extend(0i32.to_le_bytes());
    h.extend(0u32.to_le_bytes());
    h.extend(snaplen.to_le_bytes());
    h.extend(linktype.to_le_bytes());
    h
}

/// One packet record: its time, captured bytes and original length.
pub fn record(at: SystemTime, data: &[u8], original: usize) -> Vec<u8> {
    let t = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut r = Vec::with_capacity(16 + data.len());
    r.extend((t.as_secs() as u32).to_le_bytes());
    r.extend(t.subsec_micros().to_le_bytes());
    r.extend((data.len() as u32).to_le_bytes());
    r.extend((original as u32).to_le_bytes());
    r.extend(data);
    r
}

fn os(what: &str) -> impl Fn(std::io::Error) -> Status + '_ {
    move |e| Status::internal(format!("{what}: {e}"))
}

/// A packet socket bound to `iface`, set up as the request asks; and the link type.
fn open(req: &PacketCaptureRequest) -> Result<(OwnedFd, u32), Status> {
    let name = std::ffi::CString::new(req.interface.as_str())
        .map_err(|_| Status::invalid_argument("interface name"))?;
    // SAFETY: a plain C string; 0 means no such interface.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(Status::not_found(format!(
            "interface {:?} not found on this node",
            req.interface
        )));
    }
    let arphrd = std::fs::read_to_string(format!("/sys/class/net/{}/type", req.interface))
        .ok()
        .and_then(|t| t.trim().parse::<u16>().ok())
        .unwrap_or(libc::ARPHRD_ETHER);
    let linktype = match arphrd {
        libc::ARPHRD_ETHER | libc::ARPHRD_LOOPBACK => LINKTYPE_ETHERNET,
        _ => LINKTYPE_RAW,
    };
    // SOCK_RAW keeps the link-layer header; SOCK_DGRAM strips it (for links without one).
    let kind = match linktype {
        LINKTYPE_ETHERNET => libc::SOCK_RAW,
        _ => libc::SOCK_DGRAM,
    };
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: socket(2) with constant arguments; the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, kind | libc::SOCK_CLOEXEC, i32::from(all)) };
    if fd < 0 {
        return Err(os("packet socket")(std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let setopt = |level, opt, value: *const libc::c_void, len: usize, what: &'static str| {
        // SAFETY: value points to a live value of len bytes for the call's duration.
        let r = unsafe { libc::setsockopt(fd.as_raw_fd(), level, opt, value, len as u32) };
        match r {
            0 => Ok(()),
            _ => Err(os(what)(std::io::Error::last_os_error())),
        }
    };
    if !req.bpf_filter.is_empty() {
        let program: Vec<libc::sock_filter> = req
            .bpf_filter
            .iter()
            .map(|i| libc::sock_filter {
                code: i.op as u16,
                jt: i.jt as u8,
                jf: i.jf as u8,
                k: i.k,
            })
            .collect();
        let fprog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr() as *mut _,
        };
        setopt(
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &fprog as *const _ as *const _,
            std::mem::size_of::<libc::sock_fprog>(),
            "the BPF filter",
        )
        .map_err(|s| Status::invalid_argument(s.message().to_string()))?;
    }
    // SAFETY: an all-zero sockaddr_ll is valid; the fields set are plain integers.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = all;
    addr.sll_ifindex = index as i32;
    // SAFETY: addr is a sockaddr_ll of the size given.
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if bound != 0 {
        return Err(os("binding the packet socket")(
            std::io::Error::last_os_error(),
        ));
    }
    if req.promiscuous {
        let mreq = libc::packet_mreq {
            mr_ifindex: index as i32,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        setopt(
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mreq as *const _ as *const _,
            std::mem::size_of::<libc::packet_mreq>(),
            "promiscuous mode",
        )?;
    }
    // Reads wake up twice a second to notice a caller who stopped reading.
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 500_000,
    };
    setopt(
        libc::SOL_SOCKET,
        libc::SO_RCVTIMEO,
        &timeout as *const _ as *const _,
        std::mem::size_of::<libc::timeval>(),
        "receive timeout",
    )?;
    Ok((fd, linktype))
}

/// The capture as a stream of pcap bytes (the file header first).
pub fn capture(req: PacketCaptureRequest) -> Result<super::services::DataStream, Status> {
    let (fd, linktype) = open(&req)?;
    let snaplen = match req.snap_len {
        0 => DEFAULT_SNAPLEN,
        n => n,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, Status>>(256);
    let _ = tx.try_send(Ok(file_header(snaplen, linktype)));
    std::thread::spawn(move || {
        let mut buf = vec![0u8; snaplen as usize];
        while !tx.is_closed() {
            // SAFETY: buf is writable for its length; MSG_TRUNC returns the packet's length.
            let n = unsafe {
                libc::recv(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut _,
                    buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) {
                    continue;
                }
                let _ = tx.blocking_send(Err(Status::internal(format!("capture: {e}"))));
                break;
            }
            let original = n as usize;
            let got = original.min(buf.len());
            if tx
                .blocking_send(Ok(record(SystemTime::now(), &buf[..got], original)))
                .is_err()
            {
                break;
            }
        }
    });
    Ok(Box::pin(futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|m| {
            m.map(|r| {
                r.map(|bytes| api::common::Data {
                    metadata: None,
                    bytes,
                })
            })
        })
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_framing() {
        let h = file_header(65536, LINKTYPE_ETHERNET);
        assert_eq!(&h[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(h.len(), 24);
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::new(10, 5_000);
        let r = record(at, b"abc", 70);
        assert_eq!(
            &r[..16],
            &[10, 0, 0, 0, 5, 0, 0, 0, 3, 0, 0, 0, 70, 0, 0, 0]
        );
        assert_eq!(&r[16..], b"abc");
    }
}
