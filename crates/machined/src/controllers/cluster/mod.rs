//! Cluster membership: `config` (DiscoveryConfig from the machine config), `service` (the
//! discovery client's settings), `members` (Affiliates and Members).

pub mod config;
pub mod members;
pub mod service;
