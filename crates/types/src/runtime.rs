//! The node's own state: version, time, kernel parameters, services, volumes, extensions,
//! log shipping and machine files.

use serde::{Deserialize, Serialize};

use crate::{resource_type, FILES_NS, RUNTIME_NS};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionSpec {
    pub version: String,
}

/// Time sync: a node in container mode (and a process node) keeps the host's clock, which is
/// the host's to synchronize; `machine.time.disabled` turns reporting off.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeStatusSpec {
    pub synced: bool,
    pub epoch: u32,
    pub sync_disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KernelParamStatusSpec {
    pub current: String,
    pub default: String,
    pub unsupported: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogDestinationStatusSpec {
    pub endpoint: String,
    pub connected: bool,
    pub queued: usize,
    pub sent: u64,
    pub dropped: u64,
}

/// An extension's metadata (its manifest's).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExtensionMetadata {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub author: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compatibility: Option<Compatibility>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Compatibility {
    pub talos: Constraint,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Constraint {
    pub version: String,
}

/// What `get extensions` shows of one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExtensionStatusSpec {
    pub image: String,
    pub metadata: ExtensionMetadata,
}

/// What a volume's status says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatusSpec {
    #[serde(rename = "type")]
    pub kind: String,
    pub phase: String,
    pub location: String,
    pub mount_location: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub mount_point: String,
    pub filesystem: String,
    pub size: u64,
    pub pretty_size: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub encryption_provider: Option<String>,
    /// The key slots in use and the kind of key in each (as the config has it).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub encryption_key_slots: Vec<KeySlot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeySlot {
    pub slot: u32,
    #[serde(rename = "type")]
    pub kind: String,
}

/// The spec of a Service resource.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceStatusSpec {
    pub running: bool,
    pub healthy: bool,
    pub unknown: bool,
}

/// `talosctl bootstrap`'s intent: form a new etcd cluster on this node (from a snapshot when
/// recovering). Written by the API once it has checked that no cluster exists.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapRequestSpec {
    pub recover: bool,
    pub skip_hash_check: bool,
}

/// A file system the node mounted (EPHEMERAL on `/var`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MountStatusSpec {
    pub source: String,
    pub target: String,
    pub filesystem_type: String,
    pub encrypted: bool,
}

impl resources::ResourceType for MountStatusSpec {
    const TYPE: &'static str = "MountStatuses.runtime.talos.dev";
    const NAMESPACE: &'static str = RUNTIME_NS;
    const ALIASES: &'static [&'static str] = &["mounts"];
    const AUTOMATIC_ALIASES: bool = false;
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("Source", "{.source}"),
        ("Target", "{.target}"),
        ("Filesystem Type", "{.filesystemType}"),
    ];
}

/// A `machine.files` entry as written on the node.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineFileStatusSpec {
    pub path: String,
    pub op: String,
    /// Empty when written; else why not.
    pub error: String,
}

resource_type!(
    VersionSpec,
    "Versions.runtime.talos.dev",
    RUNTIME_NS,
    columns[("Name", "{.name}"), ("Version", "{.version}")]
);
resource_type!(
    TimeStatusSpec,
    "TimeStatuses.v1alpha1.talos.dev",
    RUNTIME_NS,
    columns[("Synced", "{.synced}")]
);
resource_type!(KernelParamStatusSpec, "KernelParamStatuses.runtime.talos.dev", RUNTIME_NS,
    aliases ["sysctls", "kernelparameters", "kernelparams"],
    columns [("Current", "{.current}"), ("Default", "{.default}"),
        ("Unsupported", "{.unsupported}")]);
resource_type!(LogDestinationStatusSpec, "LogDestinationStatuses.runtime.talos.dev", RUNTIME_NS,
    aliases ["logdestination", "logdestinations"],
    columns [("Connected", "{.connected}"), ("Queued", "{.queued}"), ("Sent", "{.sent}"),
        ("Dropped", "{.dropped}")]);
resource_type!(ExtensionStatusSpec, "ExtensionStatuses.runtime.talos.dev", RUNTIME_NS,
    aliases ["extensions"],
    columns [("Name", "{.metadata.name}"), ("Version", "{.metadata.version}")]);
resource_type!(VolumeStatusSpec, "VolumeStatuses.block.talos.dev", RUNTIME_NS,
    columns [("Type", "{.type}"), ("Phase", "{.phase}"), ("Location", "{.location}"),
        ("Size", "{.prettySize}")]);
resource_type!(ServiceStatusSpec, "Services.v1alpha1.talos.dev", RUNTIME_NS,
    aliases ["svc"],
    columns [("Running", "{.running}"), ("Healthy", "{.healthy}"),
        ("Health Unknown", "{.unknown}")]);
resource_type!(
    BootstrapRequestSpec,
    "BootstrapRequests.runtime.talos.dev",
    RUNTIME_NS
);
resource_type!(MachineFileStatusSpec, "MachineFileStatuses.files.talos.dev", FILES_NS,
    columns [("Path", "{.path}"), ("Op", "{.op}"), ("Error", "{.error}")]);
