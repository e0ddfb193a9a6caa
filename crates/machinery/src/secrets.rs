//! The secrets bundle (`talosctl gen secrets`): cluster identity, tokens and the CAs from which
//! every node's certificates derive. Certificates and keys are stored base64-encoded PEM.

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Problem, Result};
use crate::pki::{self, CertAndKey, Key, KeyKind};
use crate::yaml;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsBundle {
    pub cluster: ClusterSecrets,
    pub secrets: TokenSecrets,
    pub trustdinfo: TrustdInfo,
    pub certs: Certs,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSecrets {
    pub id: String,
    pub secret: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSecrets {
    pub bootstraptoken: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub aescbcencryptionsecret: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub secretboxencryptionsecret: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustdInfo {
    pub token: String,
}

/// A certificate and key, each base64 of PEM (empty when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PemPair {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub crt: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Certs {
    pub etcd: PemPair,
    pub k8s: PemPair,
    pub k8saggregator: PemPair,
    pub k8sserviceaccount: PemPair,
    pub os: PemPair,
}

fn b64(pem_text: &str) -> String {
    STANDARD.encode(pem_text)
}

impl PemPair {
    fn from_pem(c: &CertAndKey) -> PemPair {
        PemPair {
            crt: b64(&c.crt),
            key: b64(&c.key),
        }
    }

    /// The PEM texts.
    pub fn decode(&self) -> Result<CertAndKey> {
        Ok(CertAndKey {
            crt: unb64(&self.crt)?,
            key: unb64(&self.key)?,
        })
    }
}

/// The machine (OS) CA a config carries, as PEM; the key only on nodes that hold it.
pub fn machine_ca(cfg: &crate::Config) -> Result<CertAndKey> {
    let get = |p: &str| {
        cfg.pointer(p)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::msg(format!("the machine config has no {p}")))
            .and_then(|b| unb64(b).map_err(|e| Error::msg(format!("{p}: {e}"))))
    };
    Ok(CertAndKey {
        crt: get("/machine/ca/crt")?,
        key: get("/machine/ca/key")?,
    })
}

/// A private key Talos can use; RSA keys (service accounts from kubeadm) are accepted as PEM.
fn check_key(text: &str) -> Result<()> {
    match pem::parse(text) {
        Ok(b) if b.tag() == "RSA PRIVATE KEY" => Ok(()),
        _ => Key::from_pem(text).map(|_| ()),
    }
}

pub fn unb64(s: &str) -> Result<String> {
    let bytes = STANDARD
        .decode(s.trim())
        .map_err(|e| Error::msg(format!("invalid base64: {e}")))?;
    String::from_utf8(bytes).map_err(|_| Error::msg("invalid PEM: not UTF-8"))
}

/// A bootstrap-style token: 6 and 16 characters of `[a-z0-9]`.
pub fn new_token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect()
    };
    format!("{}.{}", pick(6), pick(16))
}

fn random32() -> [u8; 32] {
    rand::random()
}

impl SecretsBundle {
    /// Fresh secrets: tokens, cluster identity and the five CAs/keys.
    pub fn generate() -> Result<SecretsBundle> {
        let sa_key = Key::generate(KeyKind::EcdsaP256)?;
        Ok(SecretsBundle {
            cluster: ClusterSecrets {
                id: URL_SAFE.encode(random32()),
                secret: STANDARD.encode(random32()),
            },
            secrets: TokenSecrets {
                bootstraptoken: new_token(),
                aescbcencryptionsecret: String::new(),
                secretboxencryptionsecret: STANDARD.encode(random32()),
            },
            trustdinfo: TrustdInfo { token: new_token() },
            certs: Certs {
                etcd: PemPair::from_pem(&pki::new_ca("etcd", KeyKind::EcdsaP256)?),
                k8s: PemPair::from_pem(&pki::new_ca("kubernetes", KeyKind::EcdsaP256)?),
                k8saggregator: PemPair::from_pem(&pki::new_ca("", KeyKind::EcdsaP256)?),
                k8sserviceaccount: PemPair {
                    crt: String::new(),
                    key: b64(&sa_key.to_pem()),
                },
                os: PemPair::from_pem(&pki::new_ca("talos", KeyKind::Ed25519)?),
            },
        })
    }

    /// Read a bundle (strict: unknown fields are errors) and validate it.
    pub fn parse(src: &str) -> Result<SecretsBundle> {
        let docs = yaml::parse_stream(src).map_err(|e| {
            Error::from(Problem::new(format!("invalid YAML: {}", e.message)).at(Some(e.pos)))
        })?;
        let doc = docs
            .into_iter()
            .next()
            .ok_or_else(|| Error::msg("the secrets bundle is empty"))?;
        let bundle: SecretsBundle = serde_path_to_error::deserialize(&doc.value).map_err(|e| {
            let path = e.path().to_string();
            Error::from(
                Problem::new(e.into_inner().to_string())
                    .path(path.clone())
                    .at(doc.positions.lookup(&path)),
            )
        })?;
        bundle.validate()?;
        Ok(bundle)
    }

    pub fn load(path: impl AsRef<Path>) -> Result<SecretsBundle> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let src = std::fs::read_to_string(path)
            .map_err(|e| Error::msg(format!("{name}: cannot read: {e}")))?;
        SecretsBundle::parse(&src).map_err(|e| e.in_file(&name))
    }

    /// Every missing or malformed secret, reported together.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        let mut need = |ok: bool, path: &str, what: &str| {
            if !ok {
                problems.push(Problem::new(what.to_string()).path(path));
            }
        };
        need(!self.cluster.id.is_empty(), "cluster.id", "is required");
        need(
            !self.cluster.secret.is_empty(),
            "cluster.secret",
            "is required",
        );
        need(
            !self.secrets.bootstraptoken.is_empty(),
            "secrets.bootstraptoken",
            "is required",
        );
        need(
            !self.secrets.secretboxencryptionsecret.is_empty()
                || !self.secrets.aescbcencryptionsecret.is_empty(),
            "secrets.secretboxencryptionsecret",
            "is required",
        );
        need(
            !self.trustdinfo.token.is_empty(),
            "trustdinfo.token",
            "is required",
        );
        let pairs = [
            ("certs.etcd", &self.certs.etcd, true),
            ("certs.k8s", &self.certs.k8s, true),
            ("certs.k8saggregator", &self.certs.k8saggregator, true),
            (
                "certs.k8sserviceaccount",
                &self.certs.k8sserviceaccount,
                false,
            ),
            ("certs.os", &self.certs.os, true),
        ];
        for (path, pair, with_crt) in pairs {
            if with_crt {
                match unb64(&pair.crt).and_then(|c| pki::cert_organizations(&c)) {
                    Ok(_) if !pair.crt.is_empty() => {}
                    Ok(_) => problems.push(Problem::new("is required").path(format!("{path}.crt"))),
                    Err(e) => problems.push(
                        Problem::new(format!("certificate: {e}")).path(format!("{path}.crt")),
                    ),
                }
            }
            if pair.key.is_empty() {
                problems.push(Problem::new("is required").path(format!("{path}.key")));
            } else if let Err(e) = unb64(&pair.key).and_then(|k| check_key(&k)) {
                problems.push(Problem::new(format!("key: {e}")).path(format!("{path}.key")));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.into())
        }
    }

    /// Recover the bundle from a control plane config (single- or multi-document).
    pub fn from_config(cfg: &crate::Config) -> Result<SecretsBundle> {
        use serde_json::Value;
        let get = |ptr: &str| -> String {
            cfg.pointer(ptr)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let kind_str = |kind: &str, ptr: &str| -> String {
            cfg.kind(kind)
                .find_map(|d| d.value.pointer(ptr).and_then(Value::as_str))
                .unwrap_or_default()
                .to_string()
        };
        let or_else = |a: String, b: String| if a.is_empty() { b } else { a };
        let pem_pair = |crt: &str, key: &str, kind: &str| -> PemPair {
            let from_kind = |ptr: &str| {
                let v = kind_str(kind, ptr);
                if v.is_empty() {
                    v
                } else {
                    b64(&v)
                }
            };
            PemPair {
                crt: or_else(get(crt), from_kind("/issuingCA/cert")),
                key: or_else(get(key), from_kind("/issuingCA/key")),
            }
        };
        let sa_key = {
            let v = kind_str("KubeServiceAccountConfig", "/issuer/privateKey");
            or_else(
                get("/cluster/serviceAccount/key"),
                if v.is_empty() { v } else { b64(&v) },
            )
        };
        let bundle = SecretsBundle {
            cluster: ClusterSecrets {
                id: or_else(
                    get("/cluster/id"),
                    kind_str("DiscoveryIdentityConfig", "/clusterID"),
                ),
                secret: or_else(
                    get("/cluster/secret"),
                    kind_str("DiscoveryIdentityConfig", "/clusterSecret"),
                ),
            },
            secrets: TokenSecrets {
                bootstraptoken: get("/cluster/token"),
                aescbcencryptionsecret: get("/cluster/aescbcEncryptionSecret"),
                secretboxencryptionsecret: or_else(
                    get("/cluster/secretboxEncryptionSecret"),
                    cfg.kind("KubeEtcdEncryptionConfig")
                        .find_map(|d| {
                            d.value
                                .pointer("/config/resources/0/providers/0/secretbox/keys/0/secret")
                                .and_then(Value::as_str)
                        })
                        .unwrap_or_default()
                        .to_string(),
                ),
            },
            trustdinfo: TrustdInfo {
                token: get("/machine/token"),
            },
            certs: Certs {
                etcd: pem_pair("/cluster/etcd/ca/crt", "/cluster/etcd/ca/key", "-"),
                k8s: pem_pair(
                    "/cluster/ca/crt",
                    "/cluster/ca/key",
                    "KubeAPIServerCAConfig",
                ),
                k8saggregator: pem_pair(
                    "/cluster/aggregatorCA/crt",
                    "/cluster/aggregatorCA/key",
                    "KubeAggregatorCAConfig",
                ),
                k8sserviceaccount: PemPair {
                    crt: String::new(),
                    key: sa_key,
                },
                os: pem_pair("/machine/ca/crt", "/machine/ca/key", "-"),
            },
        };
        bundle
            .validate()
            .map_err(|e| Error::msg(format!("the config does not hold a full secrets bundle (is it a control plane config?):\n{e}")))?;
        Ok(bundle)
    }

    /// Build a bundle from a Kubernetes PKI directory (kubeadm layout) with a fresh OS CA.
    pub fn from_kubernetes_pki(dir: &Path, bootstrap_token: Option<&str>) -> Result<SecretsBundle> {
        let read = |name: &str| -> Result<String> {
            let p = dir.join(name);
            std::fs::read_to_string(&p).map_err(|e| Error::msg(format!("{}: {e}", p.display())))
        };
        let pair = |base: &str| -> Result<PemPair> {
            Ok(PemPair {
                crt: b64(&read(&format!("{base}.crt"))?),
                key: b64(&read(&format!("{base}.key"))?),
            })
        };
        let mut bundle = SecretsBundle::generate()?;
        bundle.certs.k8s = pair("ca")?;
        bundle.certs.etcd = pair("etcd/ca")?;
        bundle.certs.k8saggregator = pair("front-proxy-ca")?;
        bundle.certs.k8sserviceaccount = PemPair {
            crt: String::new(),
            key: b64(&read("sa.key")?),
        };
        if let Some(t) = bootstrap_token.filter(|t| !t.is_empty()) {
            bundle.secrets.bootstraptoken = t.to_string();
        }
        bundle.validate()?;
        Ok(bundle)
    }

    pub fn encode(&self) -> String {
        yaml::to_string(&serde_json::to_value(self).expect("bundle serializes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_bundle_round_trips_and_validates() {
        let b = SecretsBundle::generate().unwrap();
        let text = b.encode();
        let back = SecretsBundle::parse(&text).unwrap();
        assert_eq!(back, b);
        assert_eq!(b.trustdinfo.token.len(), 23);
        assert!(text.starts_with("cluster:\n    id: "));
    }

    #[test]
    fn unknown_field_is_named() {
        let e = SecretsBundle::parse("cluster:\n    idd: x\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("2:10: cluster.idd: unknown field `idd`"),
            "{e}"
        );
    }
}
