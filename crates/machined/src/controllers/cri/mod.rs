//! The container runtime: `config` (the CRI configuration).

pub mod config;
