//! etcd on control planes: `config` (EtcdConfig from `cluster.etcd`) → `spec` (EtcdSpec,
//! with the node's name and address) → `pki` (certificates on disk, PKIStatus) → `service`
//! (the etcd service, restarted when its spec changes) → `member` (EtcdMember). The certificates themselves come from
//! secrets.EtcdController.

pub mod config;
pub mod member;
pub mod pki;
pub mod service;
pub mod spec;
