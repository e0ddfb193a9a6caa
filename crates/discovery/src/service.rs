//! The discovery service, in memory. It never sees plaintext: affiliate data and endpoints are
//! opaque bytes to it (see [`crate::crypto`]).
//!
//! - An update sets an affiliate's data (when given) and adds its endpoints, each compared byte
//!   for byte with the stored ones; everything expires at `now + ttl` unless refreshed.
//! - Watchers get a snapshot, then every change: a full record, or an ID with `deleted`. A
//!   watcher that falls 32 messages behind is cut off (`ABORTED`), never slowing the others.
//! - Garbage collection drops what expired, and clusters with nothing left.
//! - Limits: IDs of 1 to 256 bytes, data up to 2 KiB, endpoints up to 32 bytes and 64 per
//!   affiliate, 1024 affiliates per cluster, a TTL up to 30 minutes, and per client address a
//!   token bucket (15 requests/s, bursts of 60); a request that would wait past four fifths of
//!   its deadline (1 s when it has none) is refused with `RESOURCE_EXHAUSTED`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::pb::server::cluster_server::{Cluster as ClusterApi, ClusterServer};
use crate::pb::server::*;

#[derive(Debug, Clone)]
pub struct Limits {
    pub id_len: usize,
    pub data_len: usize,
    pub endpoint_len: usize,
    pub endpoints: usize,
    pub affiliates: usize,
    pub ttl: Duration,
    /// Requests per second per client address, and the burst allowed.
    pub rate: f64,
    pub burst: f64,
    /// Messages a watcher may fall behind before it is cut off.
    pub watch_buffer: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            id_len: 256,
            data_len: 2048,
            endpoint_len: 32,
            endpoints: 64,
            affiliates: 1024,
            ttl: Duration::from_secs(30 * 60),
            rate: 15.0,
            burst: 60.0,
            watch_buffer: 32,
        }
    }
}

struct Record {
    data: Vec<u8>,
    expires: Instant,
    endpoints: Vec<(Vec<u8>, Instant)>,
}

impl Record {
    fn to_pb(&self, id: &str) -> Affiliate {
        Affiliate {
            id: id.into(),
            data: self.data.clone(),
            endpoints: self.endpoints.iter().map(|(e, _)| e.clone()).collect(),
        }
    }
}

struct Watcher {
    tx: mpsc::Sender<WatchResponse>,
    lost: Arc<AtomicBool>,
}

#[derive(Default)]
struct ClusterState {
    affiliates: HashMap<String, Record>,
    watchers: Vec<Watcher>,
}

impl ClusterState {
    fn notify(&mut self, msg: WatchResponse) {
        self.watchers.retain(|w| match w.tx.try_send(msg.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                w.lost.store(true, Ordering::SeqCst);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    limits: Limits,
    clusters: Mutex<HashMap<String, ClusterState>>,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

/// What the service holds, for tests and metrics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    pub clusters: usize,
    pub affiliates: usize,
    pub watchers: usize,
    /// Every stored data blob and endpoint.
    pub blobs: Vec<Vec<u8>>,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

fn check_id(what: &str, id: &str, max: usize) -> Result<(), Status> {
    if id.is_empty() || id.len() > max {
        return Err(Status::invalid_argument(format!(
            "{what} must be 1 to {max} bytes long, it is {}",
            id.len()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "{what} must not hold control characters"
        )));
    }
    Ok(())
}

/// The address a request comes from: `X-Real-IP`, the first `X-Forwarded-For`, or the peer.
fn client_ip<T>(req: &Request<T>) -> Option<IpAddr> {
    let header = |k: &str| req.metadata().get(k).and_then(|v| v.to_str().ok());
    header("x-real-ip")
        .and_then(|v| v.trim().parse().ok())
        .or_else(|| {
            header("x-forwarded-for")
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok())
        })
        .or_else(|| req.remote_addr().map(|a| a.ip()))
}

/// The deadline the caller gave (`grpc-timeout`), if any.
fn deadline<T>(req: &Request<T>) -> Option<Duration> {
    let v = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl Service {
    pub fn new(limits: Limits) -> Service {
        Service {
            inner: Arc::new(Inner {
                limits,
                clusters: Mutex::new(HashMap::new()),
                buckets: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn server(&self) -> ClusterServer<Service> {
        ClusterServer::new(self.clone())
    }

    /// Waits for the caller's turn under the rate limit, or refuses.
    async fn admit<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let wait = self.reserve(req)?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// Takes the caller's token: how long it must wait for it, or a refusal when that is past
    /// its deadline.
    fn reserve<T>(&self, req: &Request<T>) -> Result<Duration, Status> {
        let Some(ip) = client_ip(req) else {
            return Ok(Duration::ZERO);
        };
        let l = &self.inner.limits;
        let wait = {
            let mut buckets = self.inner.buckets.lock().expect("buckets");
            let now = Instant::now();
            let b = buckets.entry(ip).or_insert(Bucket {
                tokens: l.burst,
                at: now,
            });
            b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * l.rate).min(l.burst);
            b.at = now;
            let wait = Duration::from_secs_f64(((1.0 - b.tokens) / l.rate).max(0.0));
            // A fifth of the deadline is left for the call itself.
            let limit = deadline(req).unwrap_or(Duration::from_secs(1));
            if wait > limit - limit / 5 {
                return Err(Status::resource_exhausted(format!(
                    "rate limit exceeded for {ip}: {} requests/s, bursts of {}",
                    l.rate, l.burst
                )));
            }
            b.tokens -= 1.0;
            wait
        };
        Ok(wait)
    }

    /// Creates or refreshes an affiliate.
    pub fn update(&self, r: AffiliateUpdateRequest) -> Result<(), Status> {
        let l = &self.inner.limits;
        check_id("cluster ID", &r.cluster_id, l.id_len)?;
        check_id("affiliate ID", &r.affiliate_id, l.id_len)?;
        if let Some(d) = &r.affiliate_data {
            if d.len() > l.data_len {
                return Err(Status::invalid_argument(format!(
                    "affiliate data is {} bytes, the limit is {}",
                    d.len(),
                    l.data_len
                )));
            }
        }
        if let Some(e) = r
            .affiliate_endpoints
            .iter()
            .find(|e| e.len() > l.endpoint_len)
        {
            return Err(Status::invalid_argument(format!(
                "an endpoint is {} bytes, the limit is {}",
                e.len(),
                l.endpoint_len
            )));
        }
        let ttl = r
            .ttl
            .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
            .unwrap_or_default();
        if ttl > l.ttl {
            return Err(Status::invalid_argument(format!(
                "ttl {}s is longer than the limit of {}s",
                ttl.as_secs(),
                l.ttl.as_secs()
            )));
        }
        let expires = Instant::now() + ttl;
        let mut clusters = self.inner.clusters.lock().expect("clusters");
        let cluster = clusters.entry(r.cluster_id).or_default();
        if !cluster.affiliates.contains_key(&r.affiliate_id)
            && cluster.affiliates.len() >= l.affiliates
        {
            return Err(Status::resource_exhausted(format!(
                "the cluster has {} affiliates, the limit",
                l.affiliates
            )));
        }
        let rec = cluster
            .affiliates
            .entry(r.affiliate_id.clone())
            .or_insert(Record {
                data: Vec::new(),
                expires,
                endpoints: Vec::new(),
            });
        let mut changed = false;
        if let Some(d) = r.affiliate_data.filter(|d| !d.is_empty()) {
            rec.data = d;
            rec.expires = expires;
            changed = true;
        }
        let mut full = None;
        for e in r.affiliate_endpoints {
            let count = rec.endpoints.len();
            match rec.endpoints.iter_mut().find(|(have, _)| *have == e) {
                Some((_, exp)) => *exp = (*exp).max(expires),
                None if count >= l.endpoints => {
                    full = Some(Status::resource_exhausted(format!(
                        "the affiliate has {} endpoints, the limit",
                        l.endpoints
                    )));
                    break;
                }
                None => {
                    rec.endpoints.push((e, expires));
                    changed = true;
                }
            }
        }
        rec.expires = rec.expires.max(expires);
        if changed {
            let msg = WatchResponse {
                affiliates: vec![rec.to_pb(&r.affiliate_id)],
                deleted: false,
            };
            cluster.notify(msg);
        }
        full.map_or(Ok(()), Err)
    }

    pub fn delete(&self, cluster_id: &str, id: &str) -> Result<(), Status> {
        check_id("cluster ID", cluster_id, self.inner.limits.id_len)?;
        check_id("affiliate ID", id, self.inner.limits.id_len)?;
        let mut clusters = self.inner.clusters.lock().expect("clusters");
        if let Some(c) = clusters.get_mut(cluster_id) {
            if c.affiliates.remove(id).is_some() {
                c.notify(deleted(id));
            }
        }
        Ok(())
    }

    pub fn list(&self, cluster_id: &str) -> Result<Vec<Affiliate>, Status> {
        check_id("cluster ID", cluster_id, self.inner.limits.id_len)?;
        let clusters = self.inner.clusters.lock().expect("clusters");
        Ok(clusters
            .get(cluster_id)
            .map(|c| c.affiliates.iter().map(|(id, r)| r.to_pb(id)).collect())
            .unwrap_or_default())
    }

    /// A snapshot, then every change.
    pub fn watch(&self, cluster_id: String) -> Result<WatchStream, Status> {
        check_id("cluster ID", &cluster_id, self.inner.limits.id_len)?;
        let (tx, rx) = mpsc::channel(self.inner.limits.watch_buffer);
        let lost = Arc::new(AtomicBool::new(false));
        let snapshot = {
            let mut clusters = self.inner.clusters.lock().expect("clusters");
            let c = clusters.entry(cluster_id).or_default();
            c.watchers.push(Watcher {
                tx,
                lost: lost.clone(),
            });
            WatchResponse {
                affiliates: c.affiliates.iter().map(|(id, r)| r.to_pb(id)).collect(),
                deleted: false,
            }
        };
        let tail = futures::stream::once(async move {
            lost.load(Ordering::SeqCst)
                .then(|| Err(Status::aborted("subscription canceled: lost update")))
        })
        .filter_map(futures::future::ready);
        Ok(Box::pin(
            futures::stream::once(futures::future::ready(Ok(snapshot)))
                .chain(tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok))
                .chain(tail),
        ))
    }

    /// Drops what expired (watchers hear of it) and clusters with nothing left.
    pub fn gc(&self) {
        let now = Instant::now();
        let mut clusters = self.inner.clusters.lock().expect("clusters");
        for c in clusters.values_mut() {
            let expired: Vec<String> = c
                .affiliates
                .iter()
                .filter(|(_, r)| r.expires <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                c.affiliates.remove(&id);
                c.notify(deleted(&id));
            }
            let mut changed = Vec::new();
            for (id, r) in c.affiliates.iter_mut() {
                let before = r.endpoints.len();
                r.endpoints.retain(|(_, exp)| *exp > now);
                if r.endpoints.len() != before {
                    changed.push(r.to_pb(id));
                }
            }
            for a in changed {
                c.notify(WatchResponse {
                    affiliates: vec![a],
                    deleted: false,
                });
            }
            c.watchers.retain(|w| !w.tx.is_closed());
        }
        clusters.retain(|_, c| !c.affiliates.is_empty() || !c.watchers.is_empty());
        drop(clusters);
        let l = &self.inner.limits;
        self.inner
            .buckets
            .lock()
            .expect("buckets")
            .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * l.rate < l.burst);
    }

    pub fn snapshot(&self) -> Snapshot {
        let clusters = self.inner.clusters.lock().expect("clusters");
        let mut s = Snapshot {
            clusters: clusters.len(),
            ..Default::default()
        };
        for c in clusters.values() {
            s.affiliates += c.affiliates.len();
            s.watchers += c.watchers.len();
            for r in c.affiliates.values() {
                s.blobs.push(r.data.clone());
                s.blobs.extend(r.endpoints.iter().map(|(e, _)| e.clone()));
            }
        }
        s
    }
}

fn deleted(id: &str) -> WatchResponse {
    WatchResponse {
        affiliates: vec![Affiliate {
            id: id.into(),
            ..Default::default()
        }],
        deleted: true,
    }
}

#[tonic::async_trait]
impl ClusterApi for Service {
    async fn hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        self.admit(&req).await?;
        let ip = client_ip(&req);
        check_id(
            "cluster ID",
            &req.get_ref().cluster_id,
            self.inner.limits.id_len,
        )?;
        Ok(Response::new(HelloResponse {
            redirect: None,
            client_ip: match ip {
                Some(IpAddr::V4(v4)) => v4.octets().to_vec(),
                Some(IpAddr::V6(v6)) => v6.octets().to_vec(),
                None => Vec::new(),
            },
        }))
    }

    async fn affiliate_update(
        &self,
        req: Request<AffiliateUpdateRequest>,
    ) -> Result<Response<AffiliateUpdateResponse>, Status> {
        self.admit(&req).await?;
        self.update(req.into_inner())?;
        Ok(Response::new(AffiliateUpdateResponse {}))
    }

    async fn affiliate_delete(
        &self,
        req: Request<AffiliateDeleteRequest>,
    ) -> Result<Response<AffiliateDeleteResponse>, Status> {
        self.admit(&req).await?;
        let r = req.into_inner();
        self.delete(&r.cluster_id, &r.affiliate_id)?;
        Ok(Response::new(AffiliateDeleteResponse {}))
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        self.admit(&req).await?;
        let affiliates = Service::list(self, &req.get_ref().cluster_id)?;
        Ok(Response::new(ListResponse { affiliates }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.admit(&req).await?;
        Ok(Response::new(Service::watch(
            self,
            req.into_inner().cluster_id,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(
        cluster: &str,
        id: &str,
        data: &[u8],
        endpoints: &[&[u8]],
        ttl: u64,
    ) -> AffiliateUpdateRequest {
        AffiliateUpdateRequest {
            cluster_id: cluster.into(),
            affiliate_id: id.into(),
            affiliate_data: Some(data.to_vec()),
            affiliate_endpoints: endpoints.iter().map(|e| e.to_vec()).collect(),
            ttl: Some(prost_types::Duration {
                seconds: ttl as i64,
                nanos: 0,
            }),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn updates_dedupe_endpoints_expire_and_notify_watchers() {
        let s = Service::new(Limits::default());
        let mut w = s.watch("c1".into()).unwrap();
        assert!(w.next().await.unwrap().unwrap().affiliates.is_empty());
        s.update(update("c1", "a", b"one", &[b"e1", b"e2"], 10))
            .unwrap();
        s.update(update("c1", "a", b"one", &[b"e2", b"e3"], 10))
            .unwrap();
        let first = w.next().await.unwrap().unwrap();
        assert_eq!(first.affiliates[0].endpoints.len(), 2);
        let second = w.next().await.unwrap().unwrap();
        assert_eq!(
            second.affiliates[0].endpoints,
            [b"e1".to_vec(), b"e2".to_vec(), b"e3".to_vec()]
        );
        s.update(update("c1", "b", b"two", &[], 30)).unwrap();
        w.next().await.unwrap().unwrap();
        assert_eq!(s.list("c1").unwrap().len(), 2);
        tokio::time::advance(Duration::from_secs(11)).await;
        s.gc();
        let gone = w.next().await.unwrap().unwrap();
        assert!(gone.deleted && gone.affiliates[0].id == "a");
        assert_eq!(s.list("c1").unwrap().len(), 1);
        s.delete("c1", "b").unwrap();
        let gone = w.next().await.unwrap().unwrap();
        assert!(gone.deleted && gone.affiliates[0].id == "b");
        drop(w);
        s.gc();
        assert_eq!(s.snapshot().clusters, 0);
    }

    #[tokio::test]
    async fn bad_input_is_refused_with_clear_errors() {
        let s = Service::new(Limits::default());
        let e = s.update(update("", "a", b"x", &[], 1)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains("cluster ID must be 1 to 256 bytes"),
            "{e}"
        );
        let long = "x".repeat(257);
        assert!(s.update(update(&long, "a", b"x", &[], 1)).is_err());
        assert!(s
            .update(update("c\n1", "a", b"x", &[], 1))
            .unwrap_err()
            .message()
            .contains("control"));
        let big = s.update(update("c", "a", &[0; 2049], &[], 1)).unwrap_err();
        assert!(
            big.message().contains("2049 bytes, the limit is 2048"),
            "{big}"
        );
        let ep = s
            .update(update("c", "a", b"x", &[&[0; 33]], 1))
            .unwrap_err();
        assert!(ep.message().contains("endpoint is 33 bytes"), "{ep}");
        let ttl = s.update(update("c", "a", b"x", &[], 3600)).unwrap_err();
        assert!(ttl.message().contains("longer than the limit"), "{ttl}");
        let many: Vec<Vec<u8>> = (0..70u8).map(|i| vec![i]).collect();
        let refs: Vec<&[u8]> = many.iter().map(|v| v.as_slice()).collect();
        let too_many = s.update(update("c", "a", b"x", &refs, 10)).unwrap_err();
        assert_eq!(too_many.code(), tonic::Code::ResourceExhausted);
        assert_eq!(s.list("c").unwrap()[0].endpoints.len(), 64);
        let small = Service::new(Limits {
            affiliates: 2,
            ..Limits::default()
        });
        small.update(update("c", "a", b"x", &[], 10)).unwrap();
        small.update(update("c", "b", b"x", &[], 10)).unwrap();
        let full = small.update(update("c", "c", b"x", &[], 10)).unwrap_err();
        assert_eq!(full.code(), tonic::Code::ResourceExhausted);
        small.update(update("c", "a", b"y", &[], 10)).unwrap();
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_cut_off_alone() {
        let s = Service::new(Limits::default());
        let mut slow = s.watch("c".into()).unwrap();
        let mut fast = s.watch("c".into()).unwrap();
        slow.next().await.unwrap().unwrap();
        fast.next().await.unwrap().unwrap();
        for i in 0..40 {
            s.update(update("c", "a", &[i], &[], 10)).unwrap();
            fast.next().await.unwrap().unwrap();
        }
        let mut got = 0;
        let end = loop {
            match slow.next().await {
                Some(Ok(_)) => got += 1,
                Some(Err(e)) => break e,
                None => panic!("ended without an error"),
            }
        };
        assert_eq!(got, 32);
        assert_eq!(end.code(), tonic::Code::Aborted);
        s.update(update("c", "a", b"z", &[], 10)).unwrap();
        assert!(fast.next().await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_from_one_address_is_slowed_then_refused() {
        let s = Service::new(Limits::default());
        let req = || {
            let mut r = Request::new(ListRequest {
                cluster_id: "c".into(),
            });
            r.metadata_mut()
                .insert("x-real-ip", "192.0.2.1".parse().unwrap());
            r
        };
        for _ in 0..60 {
            s.admit(&req()).await.unwrap();
        }
        // Past the burst, callers wait their turn (15 per second) up to their deadline.
        let started = Instant::now();
        s.admit(&req()).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(60));
        for _ in 0..13 {
            s.admit(&req()).await.ok();
        }
        let mut refused = None;
        for _ in 0..40 {
            let r = req();
            // Reserve without waiting, as a flood of concurrent callers would.
            match s.reserve(&r) {
                Ok(_) => {}
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let e = refused.expect("refused");
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(
            e.message().contains("rate limit exceeded for 192.0.2.1"),
            "{e}"
        );
        // Another address is not affected.
        let mut other = req();
        other
            .metadata_mut()
            .insert("x-real-ip", "192.0.2.2".parse().unwrap());
        s.admit(&other).await.unwrap();
    }
}
