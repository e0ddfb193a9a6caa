//! Secret material: the API's certificate and etcd's PKI.

use serde::{Deserialize, Serialize};

use crate::{resource_type, SECRETS_NS};

/// A server certificate and key (PEM), with the CAs its clients' certificates must chain to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiCertsSpec {
    /// CAs accepted for client certificates (the machine CA and `machine.acceptedCAs`).
    pub ca: String,
    pub crt: String,
    pub key: String,
    /// Names and addresses the certificate is for.
    pub sans: Vec<String>,
    /// Validity, seconds since the epoch.
    #[serde(rename = "notBefore")]
    pub not_before: u64,
    #[serde(rename = "notAfter")]
    pub not_after: u64,
}

/// etcd's PKI on a control plane: the CA, this member's server and peer certificates, and
/// machined's own client certificate (PEM; keys PKCS#8).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdCertsSpec {
    pub ca: String,
    pub server_crt: String,
    pub server_key: String,
    pub peer_crt: String,
    pub peer_key: String,
    pub client_crt: String,
    pub client_key: String,
    /// When the member certificates are due for renewal, seconds since the epoch.
    pub renew_at: u64,
}

resource_type!(
    ApiCertsSpec,
    "ApiCertificates.secrets.talos.dev",
    SECRETS_NS,
    sensitive
);
resource_type!(
    EtcdCertsSpec,
    "EtcdSecrets.secrets.talos.dev",
    SECRETS_NS,
    sensitive
);
