//! The machine configuration as the node runs it.

use serde::Serialize;

use crate::{resource_type, CONFIG_NS};

/// The id of the active machine config.
pub const MACHINE_CONFIG_ID: &str = "v1alpha1";

/// The active machine config, as its canonical text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MachineConfigSpec(pub String);

/// The machine's type (`controlplane`, `worker`, `init`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MachineTypeSpec(pub String);

resource_type!(
    MachineConfigSpec,
    "MachineConfigs.config.talos.dev",
    CONFIG_NS,
    sensitive
);
resource_type!(
    MachineTypeSpec,
    "MachineTypes.config.talos.dev",
    CONFIG_NS,
    columns[("Type", "{@}")]
);
