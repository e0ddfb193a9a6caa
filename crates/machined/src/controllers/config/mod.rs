//! The machine config itself: `machine_type`.

pub mod machine_type;
