//! What a Talos node renders for Kubernetes, free of I/O: the control plane's static pods,
//! component command lines merged with `extraArgs`, quantities, and YAML as Kubernetes writes
//! it. machined's controllers feed these from resources and write the results.

pub mod args;
pub mod files;
pub mod flags;
pub mod manifests;
pub mod pods;
pub mod quantity;
pub mod yaml;
