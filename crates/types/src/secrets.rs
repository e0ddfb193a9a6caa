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

/// The id of the Kubernetes secrets resources.
pub const K8S_CERTS_ID: &str = "k8s-certs";
/// The id of the Kubernetes dynamic certificates.
pub const K8S_DYNAMIC_CERTS_ID: &str = "k8s-dynamic-certs";
/// The id of the kubelet's secrets.
pub const KUBELET_ID: &str = "kubelet";

/// A certificate and its key (PEM).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CertAndKeyPem {
    pub crt: String,
    pub key: String,
}

/// The root of a control plane's Kubernetes PKI and settings, from the config.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesRootSpec {
    pub name: String,
    /// The cluster endpoint (`https://…:6443`).
    pub endpoint: String,
    /// The local API server (`https://localhost:6443`).
    pub local_endpoint: String,
    #[serde(rename = "certSANs")]
    pub cert_sans: Vec<String>,
    pub dns_domain: String,
    /// The first address of each service CIDR (the `kubernetes` service).
    #[serde(rename = "apiServerIPs")]
    pub api_server_ips: Vec<String>,
    pub issuing_ca: CertAndKeyPem,
    #[serde(rename = "acceptedCAs")]
    pub accepted_cas: Vec<String>,
    pub aggregator_ca: CertAndKeyPem,
    pub service_account: String,
    pub bootstrap_token_id: String,
    pub bootstrap_token_secret: String,
    pub secretbox_encryption_secret: String,
    pub aescbc_encryption_secret: String,
    /// A KubeEtcdEncryptionConfig document's EncryptionConfiguration, when the config has one.
    pub etcd_encryption_config: serde_json::Value,
    /// `cluster.adminKubeconfig.certLifetime`, seconds.
    pub admin_cert_lifetime: u64,
}

/// Certificates issued for this node's names and addresses: the API server's serving
/// certificate, its client certificate to kubelets and the front proxy's.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesDynamicCertsSpec {
    pub api_server: CertAndKeyPem,
    pub api_server_kubelet_client: CertAndKeyPem,
    pub front_proxy: CertAndKeyPem,
    /// When they are issued again (seconds since the epoch): half their life.
    pub renew_at: u64,
}

/// The control plane components' kubeconfigs and the API server's etcd client certificate.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesCertsSpec {
    pub scheduler_kubeconfig: String,
    pub controller_manager_kubeconfig: String,
    pub localhost_admin_kubeconfig: String,
    pub admin_kubeconfig: String,
    pub etcd_client: CertAndKeyPem,
    pub etcd_ca: String,
    pub renew_at: u64,
}

/// What every node's kubelet needs to join: the endpoint, the CA and the bootstrap token.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletSecretsSpec {
    pub endpoint: String,
    pub ca: String,
    #[serde(rename = "acceptedCAs")]
    pub accepted_cas: Vec<String>,
    pub bootstrap_token_id: String,
    pub bootstrap_token_secret: String,
}

/// Names and addresses the API server's certificate is for.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertSansSpec {
    #[serde(rename = "IPs")]
    pub ips: Vec<String>,
    #[serde(rename = "DNSNames")]
    pub dns_names: Vec<String>,
    #[serde(rename = "FQDN")]
    pub fqdn: String,
}

resource_type!(
    KubernetesRootSpec,
    "KubernetesRootSecrets.secrets.talos.dev",
    SECRETS_NS,
    sensitive
);
resource_type!(
    KubernetesDynamicCertsSpec,
    "KubernetesDynamicCerts.secrets.talos.dev",
    SECRETS_NS,
    sensitive
);
resource_type!(
    KubernetesCertsSpec,
    "KubernetesSecrets.secrets.talos.dev",
    SECRETS_NS,
    sensitive
);
resource_type!(
    KubeletSecretsSpec,
    "KubeletSecrets.secrets.talos.dev",
    SECRETS_NS,
    sensitive
);
resource_type!(
    CertSansSpec,
    "CertSANs.secrets.talos.dev",
    SECRETS_NS,
    sensitive
);
