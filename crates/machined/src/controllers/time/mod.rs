//! Time: `status`.

pub mod status;
