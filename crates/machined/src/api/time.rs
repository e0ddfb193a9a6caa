//! `TimeService`: the node's clock, and (with a server) the time an NTP server gives, read with
//! one SNTP request (RFC 4330) from the node's own network.

use std::net::{ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use api::time::time_service_server::TimeService;
use api::time::{Time, TimeRequest, TimeResponse};
use tonic::{Request, Response, Status};
use types::network::TimeServerStatusSpec;

use crate::node::Node;

/// Seconds from 1900 (NTP's era) to 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// The transmit time of an SNTP reply.
pub fn reply_time(reply: &[u8]) -> Result<SystemTime, String> {
    if reply.len() < 48 {
        return Err(format!("a reply of {} bytes is not NTP", reply.len()));
    }
    let mode = reply[0] & 0x7;
    let stratum = reply[1];
    if mode != 4 || stratum == 0 {
        return Err(format!(
            "not a server's answer (mode {mode}, stratum {stratum})"
        ));
    }
    let secs = u64::from(u32::from_be_bytes(
        reply[40..44].try_into().expect("4 bytes"),
    ));
    let frac = u64::from(u32::from_be_bytes(
        reply[44..48].try_into().expect("4 bytes"),
    ));
    let unix = secs
        .checked_sub(NTP_UNIX_OFFSET)
        .ok_or("a time before 1970")?;
    Ok(SystemTime::UNIX_EPOCH
        + Duration::from_secs(unix)
        + Duration::from_nanos((frac * 1_000_000_000) >> 32))
}

/// Ask `server` (`host` or `host:port`, port 123 by default) for the time.
pub fn query(server: &str) -> Result<SystemTime, String> {
    let addr = match server.rsplit_once(':') {
        Some((_, p)) if p.parse::<u16>().is_ok() && !server.ends_with(']') => server.to_string(),
        _ => format!("{server}:123"),
    };
    let target = addr
        .to_socket_addrs()
        .map_err(|e| format!("{server}: {e}"))?
        .next()
        .ok_or_else(|| format!("{server}: no address"))?;
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    let mut request = [0u8; 48];
    request[0] = 0x23; // no leap warning, version 4, client
    sock.send_to(&request, target)
        .map_err(|e| format!("{server}: {e}"))?;
    let mut reply = [0u8; 64];
    let (n, _) = sock
        .recv_from(&mut reply)
        .map_err(|e| format!("{server}: no answer: {e}"))?;
    reply_time(&reply[..n]).map_err(|e| format!("{server}: {e}"))
}

pub struct TimeApi {
    pub node: Arc<Node>,
}

impl TimeApi {
    async fn answer(&self, server: String, check: bool) -> Result<Response<TimeResponse>, Status> {
        let remote = match check {
            true => {
                let s = server.clone();
                let got = tokio::task::spawn_blocking(move || query(&s))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?
                    .map_err(Status::unavailable)?;
                Some(timestamp(got))
            }
            false => None,
        };
        Ok(Response::new(TimeResponse {
            messages: vec![Time {
                metadata: None,
                server,
                localtime: Some(timestamp(SystemTime::now())),
                remotetime: remote,
            }],
        }))
    }
}

#[tonic::async_trait]
impl TimeService for TimeApi {
    /// The node's clock and the time server it is configured with.
    async fn time(&self, _req: Request<()>) -> Result<Response<TimeResponse>, Status> {
        let server = self
            .node
            .state
            .spec_of::<TimeServerStatusSpec>("timeservers")
            .and_then(|s| s.time_servers.into_iter().next())
            .unwrap_or_default();
        self.answer(server, false).await
    }

    /// The node's clock against `server`'s.
    async fn time_check(
        &self,
        req: Request<TimeRequest>,
    ) -> Result<Response<TimeResponse>, Status> {
        let server = req.into_inner().server;
        if server.is_empty() {
            return Err(Status::invalid_argument(
                "a server to check against is required",
            ));
        }
        self.answer(server, true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot SNTP server on loopback answering with a fixed time.
    #[test]
    fn a_server_answer_is_read() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let answering = std::thread::spawn(move || {
            let mut buf = [0u8; 48];
            let (_, from) = server.recv_from(&mut buf).unwrap();
            assert_eq!(buf[0], 0x23);
            let mut reply = [0u8; 48];
            reply[0] = 0x24; // version 4, server
            reply[1] = 2;
            reply[40..44].copy_from_slice(&((NTP_UNIX_OFFSET + 1_000_000) as u32).to_be_bytes());
            reply[44..48].copy_from_slice(&(1u32 << 31).to_be_bytes());
            server.send_to(&reply, from).unwrap();
        });
        let t = query(&addr.to_string()).unwrap();
        answering.join().unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
            Duration::from_millis(1_000_000_500)
        );
        assert!(reply_time(&[0u8; 48])
            .unwrap_err()
            .contains("not a server's answer"));
    }
}
