//! What a Talos node renders for Kubernetes: the control plane's static pods, the bootstrap
//! manifests, component command lines merged with `extraArgs`, quantities, and YAML as
//! Kubernetes writes it, all free of I/O; machined's controllers feed these from resources and
//! write the results. `client` is the one part that talks to the cluster's API.

pub mod args;
pub mod client;
pub mod files;
pub mod flags;
pub mod manifests;
pub mod pods;
pub mod quantity;
pub mod yaml;
