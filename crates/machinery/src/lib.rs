//! Machinery: the Talos machine configuration as a library.
//!
//! Load (strict, with positions), validate, patch (strategic merge and RFC 6902), encode in
//! Talos's canonical form, generate configs and secrets, and handle the client config
//! (talosconfig). Synchronous and free of network access, so other tools can embed it.

pub mod clientconfig;
pub mod config;
pub mod configdiff;
pub mod cri;
pub mod docs;
pub mod duration;
pub mod error;
pub mod fsutil;
pub mod generate;
pub mod kubernetes;
pub mod manifest;
pub mod patch;
pub mod pki;
pub mod secrets;
pub mod suggest;
pub mod validate;
pub mod yaml;

pub use config::{Config, DocId, Document};
pub use error::{Error, Pos, Problem, Result};
pub use patch::{apply as apply_patches, load_patches, Patch};
