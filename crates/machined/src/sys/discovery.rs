//! The cluster discovery client: publishes this node's affiliate (sealed under the cluster
//! secret) to the discovery service and watches the others; it refreshes often enough that
//! peers notice silence (every `min(ttl/2, 8 s)`), so a node that dies without a word is marked
//! unreachable within 30 s and dropped when its TTL runs out. A node that is reset or shut
//! down deletes its affiliate at once ([`Handle::leave`]). Also the node's ID, kept in STATE.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use discovery::crypto::Cipher;
use discovery::pb::client as plain;
use discovery::pb::server::{
    cluster_client::ClusterClient, AffiliateDeleteRequest, AffiliateUpdateRequest, HelloRequest,
    WatchRequest,
};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use types::cluster::{AffiliateSpec, ControlPlane};

/// How long a peer may stay silent before it is marked unreachable.
pub const SILENCE: Duration = Duration::from_secs(25);
/// The TTL when the config names none (Talos uses the service's maximum, 30 minutes).
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);
const IDENTITY_FILE: &str = "node-identity.yaml";

/// This node's ID: read from STATE, or made and written there.
pub fn node_id(state_dir: Option<&std::path::Path>) -> String {
    let path = state_dir.map(|d| d.join(IDENTITY_FILE));
    if let Some(id) = path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("nodeId: ").map(|v| v.trim().to_string()))
        })
        .filter(|id| !id.is_empty())
    {
        return id;
    }
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    let id: String = (0..43)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    if let Some(p) = path {
        let text = format!("nodeId: {id}\n");
        if let Err(e) = machinery::fsutil::write_atomic(&p, text.as_bytes(), 0o600) {
            tracing::warn!(error = %e, "cannot keep the node identity");
        }
    }
    id
}

/// Where and how this node publishes itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub endpoint: String,
    pub ttl: Duration,
    pub cluster_id: String,
    pub secret: String,
    pub node_id: String,
    pub local: plain::Affiliate,
}

#[derive(Default)]
struct Shared {
    /// Peers by affiliate ID: what they said and when they last said it.
    peers: BTreeMap<String, (plain::Affiliate, Instant)>,
}

/// The client, shared by the controllers and the node (which calls [`Handle::leave`]).
#[derive(Clone)]
pub struct Handle {
    settings: watch::Sender<Option<Settings>>,
    shared: Arc<Mutex<Shared>>,
    changed: Arc<Notify>,
    started: Arc<std::sync::Once>,
    /// Set by [`Handle::leave`]: nothing is published any more.
    left: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for Handle {
    fn default() -> Handle {
        Handle {
            settings: watch::channel(None).0,
            shared: Arc::default(),
            changed: Arc::default(),
            started: Arc::new(std::sync::Once::new()),
            left: Arc::default(),
        }
    }
}

fn channel(endpoint: &str) -> Result<tonic::transport::Channel, String> {
    let url = endpoint.trim_end_matches('/');
    let mut ep = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("discovery endpoint {endpoint:?}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10));
    if url.starts_with("https://") {
        ep = ep
            .tls_config(tonic::transport::ClientTlsConfig::new().with_webpki_roots())
            .map_err(|e| e.to_string())?;
    }
    Ok(ep.connect_lazy())
}

impl Handle {
    /// Publish as `wanted` says (nothing when `None`); starts the client once.
    pub fn configure(&self, wanted: Option<Settings>) {
        let wanted = wanted.filter(|_| !self.has_left());
        self.settings.send_if_modified(|cur| {
            let changed = *cur != wanted;
            *cur = wanted;
            changed
        });
        self.start();
    }

    /// Whether this node left the cluster's discovery (it publishes nothing any more).
    pub fn has_left(&self) -> bool {
        self.left.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// This node's affiliate, as it is published.
    pub fn local(&self) -> Option<plain::Affiliate> {
        self.settings.borrow().as_ref().map(|s| s.local.clone())
    }

    /// The peers the service reported, with when each last spoke.
    pub fn peers(&self) -> Vec<(plain::Affiliate, Instant)> {
        self.shared
            .lock()
            .expect("peers")
            .peers
            .values()
            .cloned()
            .collect()
    }

    /// News from the service (or a change of this node's settings).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Deletes this node's affiliate (within a second) and stops publishing: every other node
    /// drops it from its members at once.
    pub async fn leave(&self) {
        self.left.store(true, std::sync::atomic::Ordering::SeqCst);
        let Some(s) = self.settings.send_replace(None) else {
            return;
        };
        let Ok(ch) = channel(&s.endpoint) else { return };
        let req = AffiliateDeleteRequest {
            cluster_id: s.cluster_id,
            affiliate_id: s.node_id,
        };
        match tokio::time::timeout(
            Duration::from_secs(1),
            ClusterClient::new(ch).affiliate_delete(req),
        )
        .await
        {
            Ok(Ok(_)) => tracing::info!("left the discovery service"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot delete this node's affiliate"),
            Err(_) => tracing::warn!("the discovery service did not answer the deletion in time"),
        }
    }

    fn start(&self) {
        let h = self.clone();
        self.started.call_once(|| {
            tokio::spawn(h.run());
        });
    }

    async fn run(self) {
        let mut rx = self.settings.subscribe();
        let mut backoff = Duration::from_millis(500);
        loop {
            let s = loop {
                if let Some(s) = rx.borrow_and_update().clone() {
                    break s;
                }
                self.shared.lock().expect("peers").peers.clear();
                self.changed.notify_one();
                if rx.changed().await.is_err() {
                    return;
                }
            };
            match self.session(s.clone(), &mut rx).await {
                Ok(()) => backoff = Duration::from_millis(500),
                Err(e) => {
                    tracing::warn!(endpoint = s.endpoint, error = %e, "discovery");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// One connection: publish, watch, refresh; returns when the endpoint or identity changes.
    async fn session(
        &self,
        mut s: Settings,
        rx: &mut watch::Receiver<Option<Settings>>,
    ) -> Result<(), String> {
        let cipher = Cipher::from_secret(&s.secret)?;
        let mut client = ClusterClient::new(channel(&s.endpoint)?);
        let e = |e: tonic::Status| e.message().to_string();
        client
            .hello(HelloRequest {
                cluster_id: s.cluster_id.clone(),
                client_version: types::TAG.into(),
            })
            .await
            .map_err(e)?;
        publish(&mut client, &s, &cipher).await?;
        let mut stream = client
            .watch(WatchRequest {
                cluster_id: s.cluster_id.clone(),
            })
            .await
            .map_err(e)?
            .into_inner();
        let mut tick = tokio::time::interval((s.ttl / 2).min(Duration::from_secs(8)));
        tick.tick().await;
        let mut first = true;
        loop {
            tokio::select! {
                msg = stream.message() => {
                    let msg = msg.map_err(e)?.ok_or("the watch ended")?;
                    let now = Instant::now();
                    let mut shared = self.shared.lock().expect("peers");
                    if first {
                        shared.peers.clear();
                        first = false;
                    }
                    for a in msg.affiliates {
                        if msg.deleted {
                            shared.peers.remove(&a.id);
                        } else if a.id != s.node_id {
                            if let Some(p) = cipher.open_affiliate(&a.data) {
                                shared.peers.insert(a.id, (p, now));
                            }
                        }
                    }
                    drop(shared);
                    self.changed.notify_one();
                }
                _ = tick.tick() => publish(&mut client, &s, &cipher).await?,
                changed = rx.changed() => {
                    changed.map_err(|_| "stopped")?;
                    let Some(new) = rx.borrow_and_update().clone() else { return Ok(()) };
                    if (&new.endpoint, &new.cluster_id, &new.secret, &new.node_id)
                        != (&s.endpoint, &s.cluster_id, &s.secret, &s.node_id)
                    {
                        return Ok(());
                    }
                    s = new;
                    publish(&mut client, &s, &cipher).await?;
                    self.changed.notify_one();
                }
            }
        }
    }
}

async fn publish(
    client: &mut ClusterClient<tonic::transport::Channel>,
    s: &Settings,
    cipher: &Cipher,
) -> Result<(), String> {
    client
        .affiliate_update(AffiliateUpdateRequest {
            cluster_id: s.cluster_id.clone(),
            affiliate_id: s.node_id.clone(),
            affiliate_data: Some(cipher.seal_affiliate(&s.local)),
            affiliate_endpoints: Vec::new(),
            ttl: Some(prost_types::Duration {
                seconds: s.ttl.as_secs() as i64,
                nanos: s.ttl.subsec_nanos() as i32,
            }),
        })
        .await
        .map(|_| ())
        .map_err(|e| e.message().to_string())
}

fn ip_text(b: &[u8]) -> Option<String> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?).to_string()),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?).to_string()),
        _ => None,
    }
}

pub fn affiliate_spec(a: &plain::Affiliate) -> AffiliateSpec {
    AffiliateSpec {
        node_id: a.node_id.clone(),
        addresses: a.addresses.iter().filter_map(|b| ip_text(b)).collect(),
        hostname: a.hostname.clone(),
        nodename: a.nodename.clone(),
        machine_type: a.machine_type.clone(),
        operating_system: a.operating_system.clone(),
        control_plane: a.control_plane.as_ref().map(|c| ControlPlane {
            api_server_port: c.api_server_port,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_id_is_kept_in_state() {
        let dir = std::env::temp_dir().join(format!("node-id-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let id = node_id(Some(&dir));
        assert_eq!(id.len(), 43);
        assert_eq!(node_id(Some(&dir)), id);
        assert_ne!(node_id(None), id);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
