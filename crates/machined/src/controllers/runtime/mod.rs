//! Node runtime settings: `kernel_params` (sysctls), `log_shipping`.

pub mod kernel_params;
pub mod log_shipping;
