//! Services: the supervisor (start, stop, restart, health, logs, status) and the services
//! with logic of their own (`etcd`, `kubelet`). Controllers decide which services run.

pub mod container;
pub mod containerd;
pub mod etcd;
pub mod kubelet;
pub mod own;
pub mod supervisor;
