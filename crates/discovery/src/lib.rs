//! Cluster discovery: the service where a cluster's nodes meet, and the encryption that keeps
//! what they publish unreadable to it.
//!
//! - [`service`]: the discovery service (in memory): affiliates per cluster with a time to live,
//!   endpoints de-duplicated byte for byte, limits, a per-client rate limit, watchers,
//!   garbage collection.
//! - [`crypto`]: affiliate data sealed with AES-256-GCM under the cluster secret, endpoints
//!   encrypted block by block (deterministic, so the service can de-duplicate them).

pub mod crypto;
pub mod service;

pub mod pb {
    pub mod server {
        tonic::include_proto!("sidero.discovery.server");
    }
    pub mod client {
        tonic::include_proto!("sidero.discovery.client");
    }
}
