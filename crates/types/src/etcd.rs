//! etcd on control planes: its settings from the config, the spec the service runs, and
//! the state of its PKI on disk.

use serde::Serialize;

use crate::{resource_type, ETCD_NS};

/// The id of etcd's resources.
pub const ETCD_ID: &str = "etcd";

/// `cluster.etcd` of the machine config.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdConfigSpec {
    /// Empty: Debian's etcd runs as a process; else the image runs as a container.
    pub image: String,
    pub extra_args: std::collections::BTreeMap<String, String>,
    pub advertised_subnets: Vec<String>,
    pub listen_subnets: Vec<String>,
}

/// What the etcd service runs: its name, addresses, image and every argument.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdSpecSpec {
    pub name: String,
    pub advertised_addresses: Vec<String>,
    pub listen_peer_addresses: Vec<String>,
    pub listen_client_addresses: Vec<String>,
    pub image: String,
    /// Where the member's data lives.
    pub data_dir: String,
    /// Where its certificates are written.
    pub pki_dir: String,
    /// The command line (`--flag=value`), extra arguments merged in.
    pub args: Vec<String>,
    /// Client URLs of control planes to join an existing cluster through.
    pub join_candidates: Vec<String>,
}

/// Whether etcd's certificates are on disk, and which version of EtcdSecrets they are.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PkiStatusSpec {
    pub ready: bool,
    pub version: String,
}

resource_type!(
    EtcdConfigSpec,
    "EtcdConfigs.etcd.talos.dev",
    ETCD_NS,
    columns[("Image", "{.image}")]
);
resource_type!(EtcdSpecSpec, "EtcdSpecs.etcd.talos.dev", ETCD_NS,
    columns [("Name", "{.name}"), ("AdvertisedAddresses", "{.advertisedAddresses}"),
        ("ListenPeerAddresses", "{.listenPeerAddresses}"),
        ("ListenClientAddresses", "{.listenClientAddresses}")]);
resource_type!(PkiStatusSpec, "PKIStatuses.etcd.talos.dev", ETCD_NS,
    columns [("Ready", "{.ready}"), ("Secrets Version", "{.version}")]);

/// This node's etcd member (id `local`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EtcdMemberSpec {
    /// The member ID, hex as etcdctl prints it.
    #[serde(rename = "memberID")]
    pub member_id: String,
}

resource_type!(
    EtcdMemberSpec,
    "EtcdMembers.etcd.talos.dev",
    ETCD_NS,
    columns[("Member ID", "{.memberID}")]
);
