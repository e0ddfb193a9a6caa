//! Image registries and the CRI: what `machine.registries` and the Registry*Config documents
//! say, and the containerd configuration that follows from them.
//!
//! Mirrors become containerd `hosts.toml` files (one folder per registry, `_default` for `*`),
//! tried in order and then the registry itself unless `skipFallback` (containerd 1.6 falls back
//! to the registry whatever the file says: there, `skipFallback` only leaves out the explicit
//! entry); credentials go into the CRI
//! plugin's `registry.configs` keyed by the endpoint host, TLS settings beside each endpoint. The
//! CRI configuration is made of parts (`*.part`, merged in name order, later tables winning),
//! so that `/etc/cri/conf.d/20-customization.part` and CRICustomizationConfig documents change
//! what they name and keep the rest.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;

use crate::Config;

/// Where the CRI containerd finds the per-registry `hosts.toml` folders.
pub const HOSTS_DIR: &str = "/etc/cri/conf.d/hosts";
/// The pause image when nothing else is said.
pub const DEFAULT_SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.10";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registries {
    /// Registry name (`docker.io`, `*`) → its mirrors.
    pub mirrors: BTreeMap<String, Mirror>,
    /// Endpoint host (`mirror.local:5000`) → how to talk to it.
    pub hosts: BTreeMap<String, HostConfig>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mirror {
    pub endpoints: Vec<Endpoint>,
    pub skip_fallback: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Endpoint {
    pub url: String,
    pub override_path: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostConfig {
    pub auth: Option<Auth>,
    pub tls: Option<Tls>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Auth {
    pub username: String,
    pub password: String,
    pub auth: String,
    pub identity_token: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tls {
    /// PEM.
    pub ca: Option<String>,
    /// PEM certificate and key.
    pub client: Option<(String, String)>,
    pub insecure_skip_verify: bool,
}

fn s(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn flag(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn nonempty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Base64-encoded PEM (the v1alpha1 form) to PEM.
pub fn decode_pem(b64: &str) -> Result<String, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "not PEM text".to_string())
}

/// A PEM bundle holding at least one certificate, each of which parses.
pub fn check_certificates(pem_text: &str) -> Result<(), String> {
    let blocks = pem::parse_many(pem_text).map_err(|e| format!("not PEM: {e}"))?;
    let certs: Vec<_> = blocks.iter().filter(|b| b.tag() == "CERTIFICATE").collect();
    if certs.is_empty() {
        return Err("no PEM certificate found".into());
    }
    for c in certs {
        x509_parser::parse_x509_certificate(c.contents())
            .map_err(|e| format!("certificate does not parse: {e}"))?;
    }
    Ok(())
}

/// A PEM private key.
pub fn check_key(pem_text: &str) -> Result<(), String> {
    let block = pem::parse(pem_text).map_err(|e| format!("not PEM: {e}"))?;
    if block.tag().ends_with("PRIVATE KEY") {
        Ok(())
    } else {
        Err(format!(
            "a PRIVATE KEY block is expected, not {}",
            block.tag()
        ))
    }
}

/// `auth`: base64 of `username:password`.
pub fn check_auth(auth: &str) -> Result<(), String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| "auth must be base64 of username:password".to_string())?;
    match String::from_utf8(bytes) {
        Ok(t) if t.contains(':') => Ok(()),
        _ => Err("auth must be base64 of username:password".into()),
    }
}

/// A registry name or endpoint host: `host`, `host:port`, or `*` where `star` allows it.
pub fn check_registry_name(name: &str, star: bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("a registry name is required".into());
    }
    if name == "*" {
        return if star {
            Ok(())
        } else {
            Err("\"*\" names every registry and is only allowed for mirrors".into())
        };
    }
    if name.contains("://") || name.contains('/') {
        return Err(format!(
            "\"{name}\" must be a host (and port), not a URL or path"
        ));
    }
    if name.chars().any(char::is_whitespace) {
        return Err(format!("\"{name}\" is not a host name"));
    }
    Ok(())
}

/// The host (and port) of a URL: `http://10.5.0.1:5000/v2/x` → `10.5.0.1:5000`.
pub fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

impl Registries {
    /// Everything the config says about registries: v1alpha1 `machine.registries` first, the
    /// Registry*Config documents over it.
    pub fn from_config(cfg: &Config) -> Result<Registries, String> {
        let mut r = Registries::default();
        if let Some(m) = cfg
            .pointer("/machine/registries/mirrors")
            .and_then(Value::as_object)
        {
            for (name, v) in m {
                let override_path = flag(v, "overridePath");
                let endpoints = v
                    .get("endpoints")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|u| Endpoint {
                        url: u.to_string(),
                        override_path,
                    })
                    .collect();
                r.mirrors.insert(
                    name.clone(),
                    Mirror {
                        endpoints,
                        skip_fallback: flag(v, "skipFallback"),
                    },
                );
            }
        }
        if let Some(c) = cfg
            .pointer("/machine/registries/config")
            .and_then(Value::as_object)
        {
            for (host, v) in c {
                let at =
                    |what: &str, e: String| format!("machine.registries.config.{host}.{what}: {e}");
                let mut hc = HostConfig::default();
                if let Some(a) = v.get("auth").filter(|a| a.is_object()) {
                    hc.auth = Some(auth_of(a));
                }
                if let Some(t) = v.get("tls").filter(|t| t.is_object()) {
                    let ca = match nonempty(s(t, "ca")) {
                        Some(b64) => Some(decode_pem(&b64).map_err(|e| at("tls.ca", e))?),
                        None => None,
                    };
                    let client = match t.get("clientIdentity") {
                        Some(id) if !s(id, "crt").is_empty() => Some((
                            decode_pem(&s(id, "crt"))
                                .map_err(|e| at("tls.clientIdentity.crt", e))?,
                            decode_pem(&s(id, "key"))
                                .map_err(|e| at("tls.clientIdentity.key", e))?,
                        )),
                        _ => None,
                    };
                    hc.tls = Some(Tls {
                        ca,
                        client,
                        insecure_skip_verify: flag(t, "insecureSkipVerify"),
                    });
                }
                r.hosts.insert(host.clone(), hc);
            }
        }
        for d in cfg.kind("RegistryMirrorConfig") {
            let v = &d.value;
            let endpoints = v
                .get("endpoints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|e| Endpoint {
                    url: s(e, "url"),
                    override_path: flag(e, "overridePath"),
                })
                .collect();
            r.mirrors.insert(
                s(v, "name"),
                Mirror {
                    endpoints,
                    skip_fallback: flag(v, "skipFallback"),
                },
            );
        }
        for d in cfg.kind("RegistryAuthConfig") {
            r.hosts.entry(s(&d.value, "name")).or_default().auth = Some(auth_of(&d.value));
        }
        for d in cfg.kind("RegistryTLSConfig") {
            let v = &d.value;
            let client = v
                .get("clientIdentity")
                .filter(|id| !s(id, "cert").is_empty())
                .map(|id| (s(id, "cert"), s(id, "key")));
            r.hosts.entry(s(v, "name")).or_default().tls = Some(Tls {
                ca: nonempty(s(v, "ca")),
                client,
                insecure_skip_verify: flag(v, "insecureSkipVerify"),
            });
        }
        Ok(r)
    }

    /// The `hosts.toml` folders: (path relative to [`HOSTS_DIR`], contents). TLS material is
    /// written beside the `hosts.toml` that names it.
    pub fn hosts_files(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut names: Vec<&String> = self.mirrors.keys().collect();
        // A registry with TLS settings but no mirror still needs its folder.
        for (h, c) in &self.hosts {
            if c.tls.is_some() && !self.mirrors.contains_key(h) {
                names.push(h);
            }
        }
        for name in names {
            let dir = if name == "*" {
                "_default"
            } else {
                name.as_str()
            };
            let mut files: Vec<(String, String)> = Vec::new();
            let mut toml = String::new();
            let mut host_entry = |url: &str, override_path: bool| -> String {
                let mut t = String::from("capabilities = [\"pull\", \"resolve\"]\n");
                if override_path {
                    t.push_str("override_path = true\n");
                }
                let endpoint_host = url_host(url);
                if let Some(tls) = self.hosts.get(endpoint_host).and_then(|c| c.tls.as_ref()) {
                    let stem = endpoint_host.replace([':', '[', ']'], "_");
                    if tls.insecure_skip_verify {
                        t.push_str("skip_verify = true\n");
                    }
                    if let Some(ca) = &tls.ca {
                        let f = format!("{stem}-ca.crt");
                        t.push_str(&format!(
                            "ca = {}\n",
                            quote(&format!("{HOSTS_DIR}/{dir}/{f}"))
                        ));
                        files.push((f, ca.clone()));
                    }
                    if let Some((crt, key)) = &tls.client {
                        let (fc, fk) = (format!("{stem}-client.crt"), format!("{stem}-client.key"));
                        t.push_str(&format!(
                            "client = [[{}, {}]]\n",
                            quote(&format!("{HOSTS_DIR}/{dir}/{fc}")),
                            quote(&format!("{HOSTS_DIR}/{dir}/{fk}"))
                        ));
                        files.push((fc, crt.clone()));
                        files.push((fk, key.clone()));
                    }
                }
                t
            };
            let mirror = self.mirrors.get(name).cloned().unwrap_or_default();
            let mut endpoints = mirror.endpoints.clone();
            // The registry itself comes last unless `skipFallback`: as `server`, and as an
            // explicit entry when it has TLS settings (containerd 1.6 reads only `host` entries).
            if !mirror.skip_fallback && name != "*" {
                let upstream = if name == "docker.io" {
                    "registry-1.docker.io"
                } else {
                    name
                };
                toml.push_str(&format!(
                    "server = {}\n",
                    quote(&format!("https://{upstream}"))
                ));
                if self.hosts.get(name).is_some_and(|c| c.tls.is_some()) {
                    endpoints.push(Endpoint {
                        url: format!("https://{upstream}"),
                        override_path: false,
                    });
                }
            }
            for e in &endpoints {
                toml.push_str(&format!("\n[host.{}]\n", quote(&e.url)));
                for line in host_entry(&e.url, e.override_path).lines() {
                    toml.push_str(&format!("  {line}\n"));
                }
            }
            out.push((format!("{dir}/hosts.toml"), toml));
            out.extend(files.into_iter().map(|(f, c)| (format!("{dir}/{f}"), c)));
        }
        out
    }

    /// The CRI part holding the credentials, keyed by endpoint host.
    pub fn auth_part(&self) -> String {
        let mut t = String::new();
        for (host, c) in &self.hosts {
            let Some(a) = &c.auth else { continue };
            t.push_str(&format!(
                "[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.{}.auth]\n",
                quote(host)
            ));
            for (k, v) in [
                ("username", &a.username),
                ("password", &a.password),
                ("auth", &a.auth),
                ("identitytoken", &a.identity_token),
            ] {
                if !v.is_empty() {
                    t.push_str(&format!("  {k} = {}\n", quote(v)));
                }
            }
        }
        t
    }
}

fn auth_of(v: &Value) -> Auth {
    Auth {
        username: s(v, "username"),
        password: s(v, "password"),
        auth: s(v, "auth"),
        identity_token: s(v, "identityToken"),
    }
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The CRI plugin's base part: runc, the pause image, registries from [`HOSTS_DIR`].
pub fn base_part() -> String {
    format!(
        r#"version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{DEFAULT_SANDBOX_IMAGE}"
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  # No container gets a lower OOM score than the CRI itself (a node in a container cannot lower
  # scores at all).
  restrict_oom_score_adj = true

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{HOSTS_DIR}"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    discard_unpacked_layers = true

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"#
    )
}

/// The parts from the config itself: CRICustomizationConfig documents, by name.
pub fn customization_parts(cfg: &Config) -> Vec<(String, String)> {
    cfg.kind("CRICustomizationConfig")
        .map(|d| {
            (
                format!("50-{}.part", s(&d.value, "name")),
                s(&d.value, "content"),
            )
        })
        .collect()
}

/// Merge TOML parts in the order given: tables merge key by key, any other value of a later
/// part replaces the earlier one. Errors name the part.
pub fn merge_parts(parts: &[(String, String)]) -> Result<String, String> {
    let mut merged = toml::Table::new();
    for (name, text) in parts {
        let t: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| format!("{name}: {}", e.message()))?;
        merge(&mut merged, t);
    }
    toml::to_string(&merged).map_err(|e| e.to_string())
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        Config::parse(&format!(
            "version: v1alpha1\nmachine:\n    type: worker\n    token: t\n    ca:\n        crt: x\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn mirrors_become_hosts_files_in_order_with_fallback() {
        let c = cfg("    registries:\n        mirrors:\n            docker.io:\n                endpoints: [http://10.5.0.1:5000, https://cache.local/v2/dockerhub]\n                overridePath: true\n            \"*\":\n                endpoints: [http://all.local]\n        config:\n            10.5.0.1:5000:\n                auth:\n                    username: u\n                    password: p\n---\napiVersion: v1alpha1\nkind: RegistryMirrorConfig\nname: ghcr.io\nendpoints:\n    - url: http://first.local:5000\n    - url: http://last.local/v2/ghcr\n      overridePath: true\nskipFallback: true\n");
        let r = Registries::from_config(&c).unwrap();
        let files: BTreeMap<_, _> = r.hosts_files().into_iter().collect();
        assert_eq!(
            files["docker.io/hosts.toml"],
            "server = \"https://registry-1.docker.io\"\n\n[host.\"http://10.5.0.1:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n\n[host.\"https://cache.local/v2/dockerhub\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n"
        );
        assert_eq!(
            files["_default/hosts.toml"],
            "\n[host.\"http://all.local\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        );
        // No fallback: only the mirrors.
        assert_eq!(
            files["ghcr.io/hosts.toml"],
            "\n[host.\"http://first.local:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n[host.\"http://last.local/v2/ghcr\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n"
        );
        let auth = r.auth_part();
        assert!(auth.contains("registry.configs.\"10.5.0.1:5000\".auth]\n  username = \"u\"\n  password = \"p\"\n"), "{auth}");
    }

    #[test]
    fn tls_files_sit_beside_hosts_toml() {
        let (ca, key) = {
            let k = rcgen::KeyPair::generate().unwrap();
            let c = rcgen::CertificateParams::new(vec!["r".into()])
                .unwrap()
                .self_signed(&k)
                .unwrap();
            (c.pem(), k.serialize_pem())
        };
        let doc = format!(
            "---\napiVersion: v1alpha1\nkind: RegistryTLSConfig\nname: secure.local:5443\nca: |\n{}clientIdentity:\n    cert: |\n{}    key: |\n{}insecureSkipVerify: true\n",
            indent(&ca, 4), indent(&ca, 8), indent(&key, 8)
        );
        let r = Registries::from_config(&cfg(&doc)).unwrap();
        let files: BTreeMap<_, _> = r.hosts_files().into_iter().collect();
        assert_eq!(
            files["secure.local:5443/hosts.toml"],
            format!("server = \"https://secure.local:5443\"\n\n[host.\"https://secure.local:5443\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n  ca = \"{HOSTS_DIR}/secure.local:5443/secure.local_5443-ca.crt\"\n  client = [[\"{HOSTS_DIR}/secure.local:5443/secure.local_5443-client.crt\", \"{HOSTS_DIR}/secure.local:5443/secure.local_5443-client.key\"]]\n")
        );
        assert_eq!(files["secure.local:5443/secure.local_5443-ca.crt"], ca);
        check_certificates(&ca).unwrap();
        check_key(&key).unwrap();
        assert!(check_key(&ca).is_err());
    }

    fn indent(s: &str, n: usize) -> String {
        s.lines()
            .map(|l| format!("{}{l}\n", " ".repeat(n)))
            .collect()
    }

    #[test]
    fn parts_merge_table_by_table() {
        let custom = "[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.local/pause:1\"\n[metrics]\n  address = \"0.0.0.0:11234\"\n";
        let merged = merge_parts(&[
            ("00-base.part".into(), base_part()),
            ("20-customization.part".into(), custom.into()),
        ])
        .unwrap();
        let t: toml::Table = merged.parse().unwrap();
        let cri = &t["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(
            cri["sandbox_image"].as_str(),
            Some("registry.local/pause:1")
        );
        assert_eq!(cri["registry"]["config_path"].as_str(), Some(HOSTS_DIR));
        assert_eq!(t["metrics"]["address"].as_str(), Some("0.0.0.0:11234"));
        let e = merge_parts(&[("20-customization.part".into(), "[x\n".into())]).unwrap_err();
        assert!(e.starts_with("20-customization.part: "), "{e}");
    }

    #[test]
    fn names_and_auth_are_checked() {
        assert!(check_registry_name("http://x", true)
            .unwrap_err()
            .contains("not a URL"));
        assert!(check_registry_name("*", false).is_err());
        check_registry_name("*", true).unwrap();
        check_registry_name("10.5.0.1:5000", false).unwrap();
        check_auth("dTpw").unwrap();
        assert!(check_auth("nope!").is_err());
        assert_eq!(url_host("http://10.5.0.1:5000/v2/x"), "10.5.0.1:5000");
    }
}
