//! Proxying: a call with a `node` metadata key goes to that node's apid; one with `nodes` goes to
//! each of them and the replies are merged, each message marked with its node (and, for a node
//! that failed, its error) in `metadata`, so one dead node does not fail the whole call.
//! Between nodes apid authenticates as `os:impersonator` and passes the caller's roles in
//! `talos-role` metadata.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use tonic::body::Body;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

pub const IMPERSONATOR: &str = "os:impersonator";
pub const ROLE_HEADER: &str = "talos-role";

pub struct Proxy {
    /// Names under which this node is addressed (its own calls are served locally).
    pub own: Vec<String>,
    tls: ClientTlsConfig,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Proxy {
    pub fn new(own: Vec<String>, ca_pem: &str, crt_pem: &str, key_pkcs8: &str) -> Proxy {
        Proxy {
            own,
            tls: ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .identity(Identity::from_pem(crt_pem, key_pkcs8)),
            channels: Mutex::default(),
        }
    }

    pub fn is_own(&self, target: &str) -> bool {
        self.own.iter().any(|o| o == target)
    }

    pub fn channel(&self, target: &str) -> Result<Channel, String> {
        let mut all = self.channels.lock().expect("channels");
        if let Some(c) = all.get(target) {
            return Ok(c.clone());
        }
        let has_port = target
            .rsplit_once(':')
            .is_some_and(|(h, p)| p.parse::<u16>().is_ok() && !h.is_empty());
        let uri = if has_port {
            format!("https://{target}")
        } else {
            format!("https://{target}:50000")
        };
        let ch = Channel::from_shared(uri)
            .map_err(|e| e.to_string())?
            .tls_config(self.tls.clone())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            // A node that rebooted or died leaves a connection nobody closes: pings find it
            // within seconds instead of TCP's retransmissions taking minutes.
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect_lazy();
        all.insert(target.to_string(), ch.clone());
        Ok(ch)
    }

    /// Send `req` to `target`; a connection that failed is dropped, so the next call dials anew.
    pub async fn send(
        &self,
        target: &str,
        req: http::Request<Body>,
    ) -> Result<http::Response<Body>, String> {
        let ch = self.channel(target)?;
        let resp = tower::ServiceExt::oneshot(ch, req).await;
        if resp.is_err() {
            self.channels.lock().expect("channels").remove(target);
        }
        resp.map_err(|e| e.to_string())
    }
}

/// The nodes a request names (`node`, or every `nodes` value, comma-separated too).
pub fn targets(headers: &http::HeaderMap) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for key in ["nodes", "node"] {
        for v in headers.get_all(key) {
            if let Ok(s) = v.to_str() {
                out.extend(
                    s.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from),
                );
            }
        }
    }
    out
}

/// The request to send on: routing keys removed, the caller's roles attached.
pub fn outgoing(mut req: http::Request<Body>, roles: &[String]) -> http::Request<Body> {
    let h = req.headers_mut();
    h.remove("node");
    h.remove("nodes");
    h.remove(ROLE_HEADER);
    for r in roles {
        if let Ok(v) = r.parse() {
            h.append(ROLE_HEADER, v);
        }
    }
    req
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn get_varint(buf: &mut Bytes) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return None;
        }
        let b = buf.get_u8();
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn put_bytes_field(out: &mut BytesMut, field: u64, data: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, data.len() as u64);
    out.put_slice(data);
}

/// `common.Metadata{hostname, error}` as bytes.
fn metadata(node: &str, error: Option<&str>) -> BytesMut {
    let mut m = BytesMut::new();
    put_bytes_field(&mut m, 1, node.as_bytes());
    if let Some(e) = error {
        put_bytes_field(&mut m, 2, e.as_bytes());
    }
    m
}

/// Mark every element of a reply's `messages` (field 1) with its node: appending a metadata
/// field to an element merges into whatever metadata it had.
pub fn mark(reply: Bytes, node: &str) -> Option<Bytes> {
    let meta = metadata(node, None);
    let mut buf = reply;
    let mut out = BytesMut::new();
    while buf.has_remaining() {
        let tag = get_varint(&mut buf)?;
        let (field, wire) = (tag >> 3, tag & 7);
        put_varint(&mut out, tag);
        match wire {
            0 => put_varint(&mut out, get_varint(&mut buf)?),
            1 if buf.remaining() >= 8 => out.put_slice(&buf.split_to(8)),
            5 if buf.remaining() >= 4 => out.put_slice(&buf.split_to(4)),
            2 => {
                let len = get_varint(&mut buf)? as usize;
                if buf.remaining() < len {
                    return None;
                }
                let data = buf.split_to(len);
                if field == 1 {
                    let mut element = BytesMut::from(&data[..]);
                    put_bytes_field(&mut element, 1, &meta);
                    put_varint(&mut out, element.len() as u64);
                    out.put_slice(&element);
                } else {
                    put_varint(&mut out, len as u64);
                    out.put_slice(&data);
                }
            }
            _ => return None,
        }
    }
    Some(out.freeze())
}

/// A reply holding one element that only says which node failed and why.
pub fn failure(node: &str, error: &str) -> Bytes {
    let mut element = BytesMut::new();
    put_bytes_field(&mut element, 1, &metadata(node, Some(error)));
    let mut out = BytesMut::new();
    put_bytes_field(&mut out, 1, &element);
    out.freeze()
}

/// The messages of a unary gRPC reply, or its error.
pub async fn read_reply(resp: http::Response<Body>) -> Result<Bytes, String> {
    let status_of = |h: &http::HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map(|code| {
                let msg = h
                    .get("grpc-message")
                    .and_then(|v| v.to_str().ok())
                    .map(percent_decode)
                    .unwrap_or_default();
                (code, msg)
            })
    };
    if let Some((code, msg)) = status_of(resp.headers()).filter(|(c, _)| *c != 0) {
        return Err(format!(
            "rpc error: code = {} desc = {msg}",
            code_name(code)
        ));
    }
    let collected = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if let Some((code, msg)) = collected
        .trailers()
        .and_then(status_of)
        .filter(|(c, _)| *c != 0)
    {
        return Err(format!(
            "rpc error: code = {} desc = {msg}",
            code_name(code)
        ));
    }
    let mut data = collected.to_bytes();
    let mut out = BytesMut::new();
    while data.remaining() >= 5 {
        let _compressed = data.get_u8();
        let len = data.get_u32() as usize;
        if data.remaining() < len {
            return Err("truncated reply".into());
        }
        out.put_slice(&data.split_to(len));
    }
    Ok(out.freeze())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn code_name(code: i32) -> String {
    format!("{:?}", tonic::Code::from_i32(code))
}

/// One gRPC reply frame with an OK status.
pub fn reply(message: Bytes) -> http::Response<Body> {
    let mut frame = BytesMut::with_capacity(message.len() + 5);
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(&message);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = futures::stream::iter([
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(frame.freeze())),
        Ok(http_body::Frame::trailers(trailers)),
    ]);
    let body = Body::new(http_body_util::StreamBody::new(frames));
    http::Response::builder()
        .header("content-type", "application/grpc")
        .body(body)
        .expect("response")
}

/// Keep a request's body so that it can be sent to several nodes.
pub async fn buffer(req: http::Request<Body>) -> Result<(http::request::Parts, Bytes), String> {
    let (parts, body) = req.into_parts();
    let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((parts, bytes))
}

pub fn rebuild(parts: &http::request::Parts, body: &Bytes) -> http::Request<Body> {
    let mut req = http::Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .version(parts.version)
        .body(Body::new(http_body_util::Full::new(body.clone())))
        .expect("request");
    *req.headers_mut() = parts.headers.clone();
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marking_sets_metadata_on_each_element() {
        use prost::Message;
        let reply = api::machine::VersionResponse {
            messages: vec![
                api::machine::Version {
                    metadata: None,
                    version: None,
                    platform: None,
                    features: None,
                },
                api::machine::Version {
                    metadata: Some(api::common::Metadata {
                        hostname: String::new(),
                        error: "x".into(),
                        status: None,
                    }),
                    version: None,
                    platform: None,
                    features: None,
                },
            ],
        };
        let marked = mark(Bytes::from(reply.encode_to_vec()), "10.5.0.2").unwrap();
        let back = api::machine::VersionResponse::decode(marked).unwrap();
        assert_eq!(back.messages.len(), 2);
        for m in &back.messages {
            assert_eq!(m.metadata.as_ref().unwrap().hostname, "10.5.0.2");
        }
        assert_eq!(back.messages[1].metadata.as_ref().unwrap().error, "x");
        let failed = api::machine::VersionResponse::decode(failure("10.5.0.3", "dead")).unwrap();
        assert_eq!(failed.messages[0].metadata.as_ref().unwrap().error, "dead");
    }
}
