//! `talosctl pcap` (`tcpdump`): capture packets on a node's interface; raw pcap to a file (or
//! stdout with `-o -`) that tcpdump and tshark read, or a line per packet.

use std::io::Write;
use std::time::Duration;

use api::machine::{BpfInstruction, PacketCaptureRequest};
use clap::Args;
use machinery::{Error, Result};

use crate::client;
use crate::config_cmd::ConnArgs;
use crate::util::parse_duration;

#[derive(Args)]
#[command(
    after_help = "Examples:\n  talosctl -n 10.5.0.2 pcap -i eth0                      # a line per packet\n  talosctl -n 10.5.0.2 pcap -i eth0 -o eth0.pcap --duration 10s\n  talosctl -n 10.5.0.2 pcap -i eth0 -o - | tcpdump -vvv -r -\n  talosctl -n 10.5.0.2 pcap -i eth0 --bpf-filter \"$(tcpdump -dd -y EN10MB 'tcp and not port 50000')\"\n\nThe capture crosses the Talos API: filter out its own traffic (port 50000)."
)]
pub struct PcapArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The interface to capture on.
    #[arg(short, long, default_value = "eth0")]
    interface: String,
    /// Put the interface into promiscuous mode.
    #[arg(long)]
    promiscuous: bool,
    /// Write the raw pcap to this file ('-' for stdout) instead of a line per packet.
    #[arg(short, long, default_value = "")]
    output: String,
    /// A BPF program as `tcpdump -dd` prints it.
    #[arg(long = "bpf-filter", default_value = "")]
    bpf_filter: String,
    /// Stop after this long (0: until interrupted).
    #[arg(long, default_value = "0s")]
    duration: String,
    /// Deprecated: ignored.
    #[arg(short = 's', long, default_value_t = 4096, hide = true)]
    snaplen: i64,
}

/// A BPF program in `tcpdump -dd` form: `{ 0x28, 0, 0, 0x0000000c },` per line.
pub fn parse_bpf(text: &str) -> Result<Vec<BpfInstruction>> {
    let number = |s: &str| -> Option<u32> {
        let s = s.trim();
        match s.strip_prefix("0x") {
            Some(h) => u32::from_str_radix(h, 16).ok(),
            None => s.parse().ok(),
        }
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, line)| {
            let inner = line
                .trim_end_matches(',')
                .trim()
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'));
            let fields: Vec<Option<u32>> = inner
                .map(|l| l.split(',').map(number).collect())
                .unwrap_or_default();
            match fields.as_slice() {
                [Some(op), Some(jt), Some(jf), Some(k)] => Ok(BpfInstruction {
                    op: *op,
                    jt: *jt,
                    jf: *jf,
                    k: *k,
                }),
                _ => Err(Error::msg(format!(
                    "--bpf-filter line {}: {line:?} is not a `tcpdump -dd` instruction like {{ 0x28, 0, 0, 0x0000000c }},",
                    i + 1
                ))),
            }
        })
        .collect()
}

/// One line for a captured frame.
fn describe(linktype: u32, data: &[u8], original: u32) -> String {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let sliced = match linktype {
        1 => SlicedPacket::from_ethernet(data),
        _ => SlicedPacket::from_ip(data),
    };
    let Ok(p) = sliced else {
        return format!("length {original}: not decoded");
    };
    let (src, dst, proto) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => (
            ip.header().source_addr().to_string(),
            ip.header().destination_addr().to_string(),
            "IP",
        ),
        Some(NetSlice::Ipv6(ip)) => (
            ip.header().source_addr().to_string(),
            ip.header().destination_addr().to_string(),
            "IP6",
        ),
        _ => return format!("non-IP frame, length {original}"),
    };
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let mut flags = String::new();
            for (set, c) in [
                (t.syn(), 'S'),
                (t.fin(), 'F'),
                (t.rst(), 'R'),
                (t.psh(), 'P'),
                (t.ack(), '.'),
            ] {
                if set {
                    flags.push(c);
                }
            }
            format!(
                "{proto} {src}.{} > {dst}.{}: TCP [{flags}] seq {}, length {original}",
                t.source_port(),
                t.destination_port(),
                t.sequence_number()
            )
        }
        Some(TransportSlice::Udp(u)) => format!(
            "{proto} {src}.{} > {dst}.{}: UDP, length {original}",
            u.source_port(),
            u.destination_port()
        ),
        Some(TransportSlice::Icmpv4(i)) => {
            use etherparse::Icmpv4Type::*;
            let what = match i.icmp_type() {
                EchoRequest(e) => format!("echo request, id {}, seq {}", e.id, e.seq),
                EchoReply(e) => format!("echo reply, id {}, seq {}", e.id, e.seq),
                other => format!("{other:?}"),
            };
            format!("{proto} {src} > {dst}: ICMP {what}, length {original}")
        }
        Some(TransportSlice::Icmpv6(i)) => {
            format!(
                "{proto} {src} > {dst}: ICMP6 {:?}, length {original}",
                i.icmp_type()
            )
        }
        _ => format!("{proto} {src} > {dst}, length {original}"),
    }
}

/// Print a line per packet of a pcap byte stream, as the bytes come.
struct Decoder {
    pending: Vec<u8>,
    linktype: Option<u32>,
}

impl Decoder {
    fn feed(&mut self, bytes: &[u8], out: &mut impl Write) -> std::io::Result<()> {
        self.pending.extend_from_slice(bytes);
        if self.linktype.is_none() {
            if self.pending.len() < 24 {
                return Ok(());
            }
            self.linktype = Some(u32::from_le_bytes(self.pending[20..24].try_into().unwrap()));
            self.pending.drain(..24);
        }
        let linktype = self.linktype.unwrap_or(1);
        while self.pending.len() >= 16 {
            let word = |i: usize| u32::from_le_bytes(self.pending[i..i + 4].try_into().unwrap());
            let (secs, micros, len, original) = (word(0), word(4), word(8), word(12));
            let end = 16 + len as usize;
            if self.pending.len() < end {
                break;
            }
            let when = time::OffsetDateTime::from_unix_timestamp(i64::from(secs))
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            writeln!(
                out,
                "{:02}:{:02}:{:02}.{micros:06} {}",
                when.hour(),
                when.minute(),
                when.second(),
                describe(linktype, &self.pending[16..end], original)
            )?;
            self.pending.drain(..end);
        }
        Ok(())
    }
}

pub async fn run(a: PcapArgs) -> Result<()> {
    let filter = parse_bpf(&a.bpf_filter)?;
    let duration = parse_duration(&a.duration)?;
    let targets = client::connect(&a.conn).await?;
    let [t] = targets.as_slice() else {
        return Err(Error::msg(
            "pcap captures on one node at a time: pass a single -n",
        ));
    };
    let req = PacketCaptureRequest {
        interface: a.interface.clone(),
        promiscuous: a.promiscuous,
        snap_len: 0,
        bpf_filter: filter,
    };
    let mut stream = client::machine(t)
        .packet_capture(req)
        .await
        .map_err(|s| client::call_error(&t.node, s))?
        .into_inner();
    let mut out: Box<dyn Write> = match a.output.as_str() {
        "" | "-" => Box::new(std::io::stdout()),
        path => {
            Box::new(std::fs::File::create(path).map_err(|e| Error::msg(format!("{path}: {e}")))?)
        }
    };
    let mut decoder = (a.output.is_empty()).then(|| Decoder {
        pending: Vec::new(),
        linktype: None,
    });
    let deadline = (duration > Duration::ZERO).then(|| tokio::time::Instant::now() + duration);
    loop {
        let next = stream.message();
        let msg = match deadline {
            Some(d) => match tokio::time::timeout_at(d, next).await {
                Ok(m) => m,
                Err(_) => break,
            },
            None => next.await,
        };
        let Some(data) = msg.map_err(|s| client::call_error(&t.node, s))? else {
            break;
        };
        let written = match decoder.as_mut() {
            Some(d) => d.feed(&data.bytes, &mut out),
            None => out.write_all(&data.bytes),
        };
        written
            .and_then(|_| out.flush())
            .map_err(|e| Error::msg(format!("writing the capture: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcpdump_dd_programs() {
        let p = parse_bpf("{ 0x28, 0, 0, 0x0000000c },\n{ 0x15, 0, 1, 0x00000800 },\n{ 0x6, 0, 0, 0x00040000 },\n").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!((p[1].op, p[1].jt, p[1].jf, p[1].k), (0x15, 0, 1, 0x800));
        let e = parse_bpf("tcp port 80").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("tcpdump -dd"), "{e}");
    }
}
