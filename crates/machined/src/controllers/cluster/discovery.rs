//! The node's side of cluster discovery.
//!
//! - `Identity` (`cluster/local`): the node's ID, 43 random base62 characters kept in STATE
//!   (`node-identity.yaml`), so it survives reboots and a reset forgets it.
//! - The client: publishes this node's affiliate (sealed under the cluster secret) to the
//!   discovery service and watches the others; it refreshes often enough that peers notice
//!   silence (every `min(ttl/2, 8 s)`), so a node that dies without a word is marked
//!   unreachable within 30 s and dropped when its TTL runs out (5 minutes unless configured).
//!   A node that is reset or shut down deletes its affiliate at once ([`Handle::leave`]).
//! - `Affiliate` and `Member` resources (`cluster` namespace) for this node and every peer.

use resources::ResourceType;
pub use types::cluster::{AffiliateSpec, ControlPlane, IdentitySpec, MemberSpec};
use types::network::HostnameStatusSpec;
pub use types::CLUSTER_NS;

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
use machinery::Config;
use resources::{Controller, ControllerError, Input, Output, Pointer, ReconcileContext};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::controllers::inputs::{self, machine_config};
use types::NETWORK_NS;

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

/// The discovery settings of a config, or why there are none.
pub fn settings(cfg: &Config) -> Result<(String, Duration, String, String), String> {
    let service = cfg.kind("DiscoveryServiceConfig").next().map(|d| &d.value);
    let v1 = |p: &str| cfg.pointer(&format!("/cluster/discovery{p}"));
    let enabled = service.is_some() || v1("/enabled").and_then(|v| v.as_bool()) == Some(true);
    if !enabled || v1("/registries/service/disabled").and_then(|v| v.as_bool()) == Some(true) {
        return Err("discovery is disabled".into());
    }
    let field = |k: &str| {
        service
            .and_then(|s| s.get(k))
            .or_else(|| v1(&format!("/registries/service/{k}")))
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    let endpoint = field("endpoint")
        .unwrap_or(machinery::generate::DISCOVERY_ENDPOINT)
        .to_string();
    let ttl = match field("ttl") {
        Some(t) => machinery::duration::parse(t).map_err(|e| e.to_string())?,
        None => DEFAULT_TTL,
    };
    let identity = cfg.kind("DiscoveryIdentityConfig").next().map(|d| &d.value);
    let pick = |doc: &str, v1: &str| {
        identity
            .and_then(|i| i.get(doc))
            .or_else(|| cfg.pointer(v1))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let cluster_id = pick("clusterID", "/cluster/id");
    let secret = pick("clusterSecret", "/cluster/secret");
    if cluster_id.is_empty() || secret.is_empty() {
        return Err("the config has no cluster ID and secret".into());
    }
    Ok((endpoint, ttl, cluster_id, secret))
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

fn affiliate_spec(a: &plain::Affiliate) -> AffiliateSpec {
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

/// Turns the config and the node's state into the client's settings.
pub struct ConfigController {
    pub handle: Handle,
}

#[async_trait::async_trait]
impl Controller for ConfigController {
    fn name(&self) -> &str {
        "cluster.DiscoveryController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            inputs::config(&[
                "/cluster/id",
                "/cluster/secret",
                "/cluster/discovery",
                "kind:DiscoveryIdentityConfig",
                "kind:DiscoveryServiceConfig",
            ]),
            Input::of::<types::cluster::IdentitySpec>(),
            Input::of::<types::network::HostnameStatusSpec>(),
            Input::of::<types::network::NodeAddressSpec>().id("current"),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        Vec::new()
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let spec = |ty: &str, ns: &str, id: &str| ctx.get(&Pointer::new(ns, ty, id));
        let identity = spec(IdentitySpec::TYPE, CLUSTER_NS, "local")?
            .and_then(|r| r.spec::<IdentitySpec>().map(|i| i.node_id.clone()));
        let hostname = spec(HostnameStatusSpec::TYPE, NETWORK_NS, "hostname")?
            .and_then(|r| r.spec::<HostnameStatusSpec>().map(|h| h.hostname.clone()));
        let addresses: Vec<Vec<u8>> = crate::controllers::inputs::node_ips(ctx, "current")?
            .into_iter()
            .map(|ip| match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            })
            .collect();
        let wanted = match (machine_config(ctx)?, identity, hostname) {
            (Some(cfg), Some(node_id), Some(hostname)) if !addresses.is_empty() => {
                match settings(&cfg) {
                    Ok((endpoint, ttl, cluster_id, secret)) => {
                        let ty = cfg.machine_type().to_string();
                        let control_plane = matches!(ty.as_str(), "controlplane" | "init")
                            .then_some(plain::ControlPlane {
                                api_server_port: cfg
                                    .control_plane_endpoint()
                                    .and_then(|e| e.rsplit_once(':'))
                                    .and_then(|(_, p)| p.trim_end_matches('/').parse().ok())
                                    .unwrap_or(6443),
                            });
                        Some(Settings {
                            endpoint,
                            ttl,
                            cluster_id,
                            secret,
                            local: plain::Affiliate {
                                node_id: node_id.clone(),
                                addresses,
                                hostname: hostname.clone(),
                                nodename: hostname,
                                machine_type: ty,
                                operating_system: format!("Talos ({})", types::TAG),
                                kubespan: None,
                                control_plane,
                            },
                            node_id,
                        })
                    }
                    Err(why) => {
                        tracing::debug!(why, "no cluster discovery");
                        None
                    }
                }
            }
            _ => None,
        };
        let wanted = wanted.filter(|_| !self.handle.left.load(std::sync::atomic::Ordering::SeqCst));
        self.handle.settings.send_if_modified(|cur| {
            let changed = *cur != wanted;
            *cur = wanted;
            changed
        });
        self.handle.start();
        Ok(())
    }
}

/// Affiliates and members: this node and every peer the service reports.
pub struct MemberController {
    pub handle: Handle,
    /// Whether a first round was made (later rounds wait for news first).
    pub waiting: bool,
}

#[async_trait::async_trait]
impl Controller for MemberController {
    fn name(&self) -> &str {
        "cluster.MemberController"
    }
    fn inputs(&self) -> Vec<Input> {
        Vec::new()
    }
    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::exclusive_of::<types::cluster::AffiliateSpec>(),
            Output::exclusive_of::<types::cluster::MemberSpec>(),
        ]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        // Wait for news from the service, or 2 s to look for silent peers; what this round does
        // not write is removed right after it.
        if self.waiting {
            let _ =
                tokio::time::timeout(Duration::from_secs(2), self.handle.changed.notified()).await;
        }
        self.waiting = true;
        let local = self
            .handle
            .settings
            .borrow()
            .as_ref()
            .map(|s| s.local.clone());
        let now = Instant::now();
        let mut all: Vec<(plain::Affiliate, bool)> = self
            .handle
            .shared
            .lock()
            .expect("peers")
            .peers
            .values()
            .map(|(a, seen)| (a.clone(), now.duration_since(*seen) < SILENCE))
            .collect();
        all.extend(local.map(|a| (a, true)));
        for (a, reachable) in all {
            let spec = affiliate_spec(&a);
            if spec.node_id.is_empty() {
                continue;
            }
            if !spec.nodename.is_empty() {
                let member = MemberSpec {
                    node_id: spec.node_id.clone(),
                    addresses: spec.addresses.clone(),
                    hostname: spec.hostname.clone(),
                    machine_type: spec.machine_type.clone(),
                    operating_system: spec.operating_system.clone(),
                    control_plane: spec.control_plane.clone(),
                    reachable,
                };
                ctx.put::<MemberSpec>(&spec.nodename.clone(), member)?;
            }
            ctx.put::<AffiliateSpec>(&spec.node_id.clone(), spec)?;
        }
        ctx.requeue_after(Duration::ZERO);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_v1alpha1_and_documents() {
        let v1 = "version: v1alpha1\nmachine:\n  type: worker\ncluster:\n  id: abc\n  secret: c2VjcmV0\n  discovery:\n    enabled: true\n    registries:\n      service:\n        endpoint: http://10.5.0.1:3000\n        ttl: 40s\n";
        let cfg = Config::parse(v1).unwrap();
        let (endpoint, ttl, id, secret) = settings(&cfg).unwrap();
        assert_eq!(
            (endpoint.as_str(), ttl, id.as_str(), secret.as_str()),
            (
                "http://10.5.0.1:3000",
                Duration::from_secs(40),
                "abc",
                "c2VjcmV0"
            )
        );
        let off = Config::parse(&v1.replace("enabled: true", "enabled: false")).unwrap();
        assert!(settings(&off).unwrap_err().contains("disabled"));
        let docs = "version: v1alpha1\nmachine:\n  type: worker\n---\napiVersion: v1alpha1\nkind: DiscoveryServiceConfig\nname: default\nendpoint: http://127.0.0.1:3000\n---\napiVersion: v1alpha1\nkind: DiscoveryIdentityConfig\nclusterID: xyz\nclusterSecret: c2VjcmV0\n";
        let (endpoint, ttl, id, _) = settings(&Config::parse(docs).unwrap()).unwrap();
        assert_eq!(
            (endpoint.as_str(), ttl, id.as_str()),
            ("http://127.0.0.1:3000", DEFAULT_TTL, "xyz")
        );
    }

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
