//! The client configuration (talosconfig): named contexts, each with endpoints, default nodes
//! and the client's mTLS identity (CA, certificate, key as base64 PEM).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Problem, Result};
use crate::pki::{self, CertAndKey, Key, KeyKind, LeafSpec};
use crate::secrets::{unb64, SecretsBundle};
use crate::yaml;

/// One context of a talosconfig.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Context {
    pub endpoints: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ca: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub crt: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster: String,
}

/// A talosconfig file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    pub context: String,
    pub contexts: BTreeMap<String, Context>,
}

/// Where the talosconfig lives: `--talosconfig`, else `$TALOSCONFIG`, else
/// `$XDG_CONFIG_HOME/talos/config.yaml` when that file exists, else `~/.talos/config`.
pub fn default_path(flag: Option<&str>) -> PathBuf {
    if let Some(p) = flag.filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("TALOSCONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(xdg) = std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(xdg).join("talos/config.yaml");
        if p.exists() {
            return p;
        }
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".talos/config")
}

impl ClientConfig {
    pub fn parse(src: &str) -> Result<ClientConfig> {
        let docs = yaml::parse_stream(src).map_err(|e| {
            Error::from(Problem::new(format!("invalid YAML: {}", e.message)).at(Some(e.pos)))
        })?;
        let Some(doc) = docs.into_iter().next() else {
            return Ok(ClientConfig::default());
        };
        serde_path_to_error::deserialize(&doc.value).map_err(|e| {
            let path = e.path().to_string();
            Error::from(
                Problem::new(e.into_inner().to_string())
                    .path(path.clone())
                    .at(doc.positions.lookup(&path)),
            )
        })
    }

    /// Read a talosconfig; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<ClientConfig> {
        match std::fs::read_to_string(path) {
            Ok(src) => {
                ClientConfig::parse(&src).map_err(|e| e.in_file(&path.display().to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientConfig::default()),
            Err(e) => Err(Error::msg(format!("{}: {e}", path.display()))),
        }
    }

    pub fn encode(&self) -> String {
        yaml::to_string(&serde_json::to_value(self).expect("talosconfig serializes"))
    }

    /// Write atomically (temporary file, fsync, rename), creating parent directories.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::fsutil::write_atomic(path, self.encode().as_bytes(), 0o600)
    }

    /// The context named, or the current one.
    pub fn current(&self, name: Option<&str>) -> Result<(&str, &Context)> {
        let name = name.filter(|n| !n.is_empty()).unwrap_or(&self.context);
        if name.is_empty() {
            return Err(Error::msg("no context is selected in the talosconfig"));
        }
        self.contexts
            .get_key_value(name)
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| Error::msg(format!("context \"{name}\" is not defined")))
    }

    pub fn current_mut(&mut self, name: Option<&str>) -> Result<&mut Context> {
        let name = name
            .filter(|n| !n.is_empty())
            .map(String::from)
            .unwrap_or_else(|| self.context.clone());
        if name.is_empty() {
            return Err(Error::msg("no context is selected in the talosconfig"));
        }
        self.contexts
            .get_mut(&name)
            .ok_or_else(|| Error::msg(format!("context \"{name}\" is not defined")))
    }

    /// Merge another config's contexts without losing any: an identical context is skipped, a
    /// clashing name gets `-1`, `-2`, … appended. The other config's current context becomes
    /// current. Returns the names the merged contexts got.
    pub fn merge(&mut self, other: &ClientConfig) -> Vec<(String, String)> {
        let mut renames = Vec::new();
        for (name, ctx) in &other.contexts {
            let mut target = name.clone();
            let mut i = 1;
            loop {
                match self.contexts.get(&target) {
                    Some(existing) if existing == ctx => break,
                    Some(_) => {
                        target = format!("{name}-{i}");
                        i += 1;
                    }
                    None => {
                        self.contexts.insert(target.clone(), ctx.clone());
                        break;
                    }
                }
            }
            if *name == other.context {
                self.context = target.clone();
            }
            renames.push((name.clone(), target));
        }
        renames
    }
}

/// A new admin (or other role) client identity signed by the OS CA.
pub fn new_client_context(
    os_ca: &CertAndKey,
    roles: &[String],
    ttl: Duration,
    endpoints: Vec<String>,
) -> Result<Context> {
    let key = Key::generate(KeyKind::Ed25519)?;
    let spec = LeafSpec {
        organizations: roles.to_vec(),
        client: true,
        ttl: Some(ttl),
        ..Default::default()
    };
    let crt = pki::sign_leaf(os_ca, &key, &spec)?;
    Ok(Context {
        endpoints,
        ca: b64(&os_ca.crt),
        crt: b64(&crt),
        key: b64(&key.to_pem()),
        ..Default::default()
    })
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A talosconfig with one context for the cluster, from its secrets bundle.
pub fn from_secrets(
    secrets: &SecretsBundle,
    cluster: &str,
    roles: &[String],
    ttl: Duration,
    endpoints: Vec<String>,
) -> Result<ClientConfig> {
    let ca = secrets.certs.os.decode()?;
    let ctx = new_client_context(&ca, roles, ttl, endpoints)?;
    Ok(ClientConfig {
        context: cluster.to_string(),
        contexts: BTreeMap::from([(cluster.to_string(), ctx)]),
    })
}

/// The roles and expiry of a context's client certificate.
pub fn describe_certificate(ctx: &Context) -> Result<(Vec<String>, time::OffsetDateTime)> {
    let pem_text = unb64(&ctx.crt)?;
    let block = pem::parse(pem_text).map_err(|e| Error::msg(format!("invalid PEM: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(block.contents())
        .map_err(|e| Error::msg(format!("invalid certificate: {e}")))?;
    let roles = cert
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Ok((roles, cert.validity().not_after.to_datetime()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(ep: &str) -> Context {
        Context {
            endpoints: vec![ep.into()],
            ..Default::default()
        }
    }

    #[test]
    fn merge_never_loses_a_context() {
        let mut a = ClientConfig {
            context: "c".into(),
            contexts: BTreeMap::from([("c".into(), ctx("1.1.1.1"))]),
        };
        let b = ClientConfig {
            context: "c".into(),
            contexts: BTreeMap::from([("c".into(), ctx("2.2.2.2"))]),
        };
        let renames = a.merge(&b);
        assert_eq!(renames, [("c".to_string(), "c-1".to_string())]);
        assert_eq!(a.context, "c-1");
        assert_eq!(a.contexts.len(), 2);
        // Merging the same again renames once more; merging an identical context is a no-op.
        a.merge(&b);
        assert_eq!(a.contexts.len(), 2, "identical context is not duplicated");
        let c = ClientConfig {
            context: "c".into(),
            contexts: BTreeMap::from([("c".into(), ctx("3.3.3.3"))]),
        };
        a.merge(&c);
        assert!(a.contexts.contains_key("c-2"));
    }

    #[test]
    fn client_certificate_carries_roles_and_ttl() {
        let secrets = SecretsBundle::generate().unwrap();
        let cfg = from_secrets(
            &secrets,
            "demo",
            &["os:reader".into()],
            Duration::from_secs(3600),
            vec!["127.0.0.1".into()],
        )
        .unwrap();
        let (name, ctx) = cfg.current(None).unwrap();
        assert_eq!(name, "demo");
        let (roles, expires) = describe_certificate(ctx).unwrap();
        assert_eq!(roles, ["os:reader"]);
        let left = expires - time::OffsetDateTime::now_utc();
        assert!(
            left.whole_minutes() > 55 && left.whole_minutes() <= 60,
            "{left}"
        );
        let back = ClientConfig::parse(&cfg.encode()).unwrap();
        assert_eq!(back, cfg);
    }
}
