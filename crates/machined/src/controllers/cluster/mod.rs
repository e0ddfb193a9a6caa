//! Cluster membership: `discovery` (its settings, the affiliates and the members).

pub mod discovery;
