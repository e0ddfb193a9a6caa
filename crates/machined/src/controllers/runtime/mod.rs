//! Node runtime settings: `kernel_params` (sysctls).

pub mod kernel_params;
