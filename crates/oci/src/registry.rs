//! A registry client (OCI distribution API) that follows the machine config's registry
//! settings as containerd does: a registry's mirrors in order (or those of `*`), each path
//! under `/v2` unless `overridePath`, then the registry itself unless `skipFallback`;
//! credentials (basic, or a bearer token fetched with them) and TLS by endpoint host.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use machinery::cri::{url_host, Registries};

use crate::{Descriptor, Image, Index, Manifest, Reference};

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Where an image was found: an endpoint (its URL up to the repository).
#[derive(Debug, Clone)]
pub struct Source {
    /// `http://mirror:5000/v2/library/alpine` (no trailing slash).
    pub base: String,
    pub host: String,
}

/// A reference resolved to one manifest (for this platform).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub source: Source,
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
}

pub struct Client {
    registries: Registries,
    agents: Mutex<HashMap<String, ureq::Agent>>,
    /// `Authorization` values that worked, by endpoint host.
    authorizations: Mutex<HashMap<String, String>>,
}

fn upstream(registry: &str) -> &str {
    if registry == "docker.io" {
        "registry-1.docker.io"
    } else {
        registry
    }
}

impl Client {
    pub fn new(registries: Registries) -> Client {
        Client {
            registries,
            agents: Mutex::default(),
            authorizations: Mutex::default(),
        }
    }

    /// The endpoints to try for an image, in order.
    pub fn sources(&self, r: &Reference) -> Vec<Source> {
        let mirror = self
            .registries
            .mirrors
            .get(&r.registry)
            .or_else(|| self.registries.mirrors.get("*"));
        let mut out = Vec::new();
        for e in mirror.map(|m| m.endpoints.as_slice()).unwrap_or_default() {
            let url = e.url.trim_end_matches('/');
            let base = if e.override_path {
                format!("{url}/{}", r.repository)
            } else {
                format!("{url}/v2/{}", r.repository)
            };
            out.push(Source {
                base,
                host: url_host(url).to_string(),
            });
        }
        if !mirror.is_some_and(|m| m.skip_fallback) {
            let host = upstream(&r.registry);
            out.push(Source {
                base: format!("https://{host}/v2/{}", r.repository),
                host: r.registry.clone(),
            });
        }
        out
    }

    fn agent(&self, host: &str) -> Result<ureq::Agent, String> {
        let mut agents = self.agents.lock().expect("agents");
        if let Some(a) = agents.get(host) {
            return Ok(a.clone());
        }
        let tls = self.registries.hosts.get(host).and_then(|h| h.tls.as_ref());
        let config = crate::tls::client_config(tls).map_err(|e| format!("{host}: {e}"))?;
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout_read(Duration::from_secs(60))
            .tls_config(Arc::new(config))
            .build();
        agents.insert(host.to_string(), agent.clone());
        Ok(agent)
    }

    /// `Basic …` from the host's configured credentials, if any.
    fn basic(&self, host: &str) -> Option<String> {
        let auth = self.registries.hosts.get(host)?.auth.as_ref()?;
        let b64 = base64::engine::general_purpose::STANDARD;
        if !auth.auth.is_empty() {
            Some(format!("Basic {}", auth.auth))
        } else if !auth.username.is_empty() {
            Some(format!(
                "Basic {}",
                b64.encode(format!("{}:{}", auth.username, auth.password))
            ))
        } else {
            None
        }
    }

    /// A bearer token from the challenge's realm, asked with the host's credentials.
    fn token(&self, src: &Source, challenge: &str) -> Result<String, String> {
        let params = challenge_params(challenge);
        let realm = params
            .get("realm")
            .ok_or_else(|| format!("{}: token challenge without a realm", src.host))?;
        let agent = self.agent(url_host(realm))?;
        let identity = self
            .registries
            .hosts
            .get(&src.host)
            .and_then(|h| h.auth.as_ref())
            .map(|a| a.identity_token.clone())
            .filter(|t| !t.is_empty());
        let response = match identity {
            // An identity token is an OAuth2 refresh token.
            Some(refresh) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("refresh_token", refresh),
                    ("client_id", "talos".to_string()),
                ];
                for k in ["service", "scope"] {
                    if let Some(v) = params.get(k) {
                        form.push((k, v.clone()));
                    }
                }
                let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
                agent.post(realm).send_form(&form)
            }
            None => {
                let mut req = agent.get(realm);
                for k in ["service", "scope"] {
                    if let Some(v) = params.get(k) {
                        req = req.query(k, v);
                    }
                }
                if let Some(b) = self.basic(&src.host) {
                    req = req.set("Authorization", &b);
                }
                req.call()
            }
        };
        let body = read_all(response.map_err(|e| describe(&src.host, e))?, 1 << 20)
            .map_err(|e| format!("{}: token: {e}", src.host))?;
        let body: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("{}: token: {e}", src.host))?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .map(|t| format!("Bearer {t}"))
            .ok_or_else(|| format!("{}: the token service answered without a token", src.host))
    }

    /// Send a request, answering one authentication challenge.
    fn send(
        &self,
        src: &Source,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<ureq::Response, String> {
        let agent = self.agent(&src.host)?;
        let attempt = |authorization: Option<&str>| {
            let mut req = agent.request(method, url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if let Some(a) = authorization {
                req = req.set("Authorization", a);
            }
            match body {
                Some(b) => req.send_bytes(b),
                None => req.call(),
            }
            .map_err(Box::new)
        };
        let known = self
            .authorizations
            .lock()
            .expect("authorizations")
            .get(&src.host)
            .cloned();
        let first = attempt(known.as_deref()).map_err(|e| *e);
        match first {
            Err(ureq::Error::Status(401, r)) => {
                let challenge = r.header("WWW-Authenticate").unwrap_or("").to_string();
                let authorization = if challenge.to_ascii_lowercase().starts_with("bearer") {
                    self.token(src, &challenge)?
                } else {
                    self.basic(&src.host).ok_or_else(|| {
                        format!("{}: 401 Unauthorized (no credentials configured)", src.host)
                    })?
                };
                let r = attempt(Some(&authorization)).map_err(|e| describe(&src.host, *e))?;
                self.authorizations
                    .lock()
                    .expect("authorizations")
                    .insert(src.host.clone(), authorization);
                Ok(r)
            }
            r => r.map_err(|e| describe(&src.host, e)),
        }
    }

    fn fetch_manifest(&self, src: &Source, version: &str) -> Result<Resolved, String> {
        let url = format!("{}/manifests/{version}", src.base);
        let r = self.send(src, "GET", &url, &[("Accept", ACCEPT)], None)?;
        let media_type = r.content_type().to_string();
        let bytes = read_all(r, 64 << 20).map_err(|e| format!("{url}: {e}"))?;
        let digest = crate::sha256(&bytes);
        if version.starts_with("sha256:") && digest != version {
            return Err(format!("{url}: the manifest does not match its digest"));
        }
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("{url}: {e}"))?;
        let kind = value
            .get("mediaType")
            .and_then(|m| m.as_str())
            .unwrap_or(&media_type)
            .to_string();
        if kind == crate::INDEX || kind == crate::DOCKER_LIST || value.get("manifests").is_some() {
            let index: Index = serde_json::from_value(value).map_err(|e| format!("{url}: {e}"))?;
            let d = index.for_this_platform().ok_or_else(|| {
                format!("{url}: no image for linux/{} in the index", crate::arch())
            })?;
            return self.fetch_manifest(src, &d.digest.clone());
        }
        let manifest: Manifest =
            serde_json::from_value(value).map_err(|e| format!("{url}: {e}"))?;
        Ok(Resolved {
            source: src.clone(),
            digest,
            media_type: kind,
            bytes,
            manifest,
        })
    }

    /// Find an image's manifest, trying each endpoint in order. The error names every endpoint
    /// tried and why it failed.
    pub fn resolve(&self, r: &Reference) -> Result<Resolved, String> {
        let mut errors = Vec::new();
        for src in self.sources(r) {
            match self.fetch_manifest(&src, r.version()) {
                Ok(found) => return Ok(found),
                Err(e) => errors.push(e),
            }
        }
        Err(format!("pull {r}: {}", errors.join("; ")))
    }

    /// A blob's content as it comes (the caller checks the digest).
    pub fn blob(&self, src: &Source, d: &Descriptor) -> Result<Box<dyn Read + Send>, String> {
        let url = format!("{}/blobs/{}", src.base, d.digest);
        Ok(self.send(src, "GET", &url, &[], None)?.into_reader())
    }

    /// Push an image to `r`'s registry itself (no mirrors): blobs the registry lacks, then
    /// the manifest under the tag. Returns the manifest digest.
    pub fn push(&self, r: &Reference, image: &Image, plain_http: bool) -> Result<String, String> {
        let scheme = if plain_http { "http" } else { "https" };
        let src = Source {
            base: format!("{scheme}://{}/v2/{}", upstream(&r.registry), r.repository),
            host: r.registry.clone(),
        };
        for (digest, data) in &image.blobs {
            let head = format!("{}/blobs/{digest}", src.base);
            if self.send(&src, "HEAD", &head, &[], None).is_ok() {
                continue;
            }
            let started = self.send(
                &src,
                "POST",
                &format!("{}/blobs/uploads/", src.base),
                &[],
                Some(&[]),
            )?;
            let location = started
                .header("Location")
                .ok_or_else(|| format!("{}: upload without a location", src.host))?;
            let location = if location.starts_with('/') {
                format!("{scheme}://{}{location}", upstream(&r.registry))
            } else {
                location.to_string()
            };
            let sep = if location.contains('?') { '&' } else { '?' };
            self.send(
                &src,
                "PUT",
                &format!("{location}{sep}digest={digest}"),
                &[("Content-Type", "application/octet-stream")],
                Some(data),
            )?;
        }
        let m = image.manifest()?;
        let tag = r.tag.as_deref().unwrap_or("latest");
        self.send(
            &src,
            "PUT",
            &format!("{}/manifests/{tag}", src.base),
            &[("Content-Type", m.media_type.as_str())],
            Some(&image.manifest),
        )?;
        Ok(crate::sha256(&image.manifest))
    }

    /// Go through an image's files layer by layer (each layer's digest checked, lower layers
    /// first): `f` gets each entry with its path (without a leading `./`).
    pub fn for_each_entry(
        &self,
        r: &Reference,
        mut f: impl FnMut(&str, &mut tar::Entry<'_, Box<dyn Read + '_>>) -> Result<(), String>,
    ) -> Result<(), String> {
        let found = self.resolve(r)?;
        for d in &found.manifest.layers {
            let mut data = Vec::new();
            self.blob(&found.source, d)?
                .take(4 << 30)
                .read_to_end(&mut data)
                .map_err(|e| format!("{r}: layer {}: {e}", d.digest))?;
            if crate::sha256(&data) != d.digest {
                return Err(format!("{r}: layer {} does not match its digest", d.digest));
            }
            let plain: Box<dyn Read> = if d.media_type.ends_with("gzip") {
                Box::new(flate2::read::GzDecoder::new(data.as_slice()))
            } else {
                Box::new(data.as_slice())
            };
            layer_entries(&r.to_string(), plain, &mut f)?;
        }
        Ok(())
    }

    /// Copy files out of an image (`want`: path inside → where it goes); a later layer's copy
    /// wins. Errors name what is missing.
    pub fn fetch_files(
        &self,
        r: &Reference,
        want: &[(&str, &std::path::Path)],
    ) -> Result<(), String> {
        let mut got = vec![false; want.len()];
        self.for_each_entry(r, |path, entry| {
            if let Some(i) = want.iter().position(|(inside, _)| *inside == path) {
                let to = want[i].1;
                let mut out =
                    std::fs::File::create(to).map_err(|e| format!("{}: {e}", to.display()))?;
                std::io::copy(entry, &mut out)
                    .and_then(|_| out.sync_all())
                    .map_err(|e| format!("{}: {e}", to.display()))?;
                got[i] = true;
            }
            Ok(())
        })?;
        let missing: Vec<&str> = want
            .iter()
            .zip(&got)
            .filter(|(_, g)| !**g)
            .map(|((p, _), _)| *p)
            .collect();
        if !missing.is_empty() {
            return Err(format!("{r} has no {}", missing.join(", ")));
        }
        Ok(())
    }
}

/// Go through the entries of one uncompressed layer tar (errors of the tar name `what`): `f`
/// gets each entry with its path (without a leading `./`).
pub fn layer_entries<'d>(
    what: &str,
    layer: Box<dyn Read + 'd>,
    f: &mut impl FnMut(&str, &mut tar::Entry<'_, Box<dyn Read + 'd>>) -> Result<(), String>,
) -> Result<(), String> {
    let mut archive = tar::Archive::new(layer);
    for entry in archive.entries().map_err(|e| format!("{what}: {e}"))? {
        let mut entry = entry.map_err(|e| format!("{what}: {e}"))?;
        let path = entry.path().map_err(|e| format!("{what}: {e}"))?;
        let path = path.to_string_lossy().trim_start_matches("./").to_string();
        f(&path, &mut entry)?;
    }
    Ok(())
}

/// Read a response body up to `limit` bytes.
fn read_all(r: ureq::Response, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    r.into_reader().take(limit).read_to_end(&mut out)?;
    Ok(out)
}

/// An error as the user should see it: the host and the status, or the transport failure.
fn describe(host: &str, e: ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, r) => {
            format!("{host}: {code} {}", r.status_text())
        }
        ureq::Error::Transport(t) => format!("{host}: {t}"),
    }
}

/// `Bearer realm="…",service="…",scope="…"` → its parameters.
fn challenge_params(challenge: &str) -> HashMap<String, String> {
    let rest = challenge
        .split_once(' ')
        .map(|(_, r)| r)
        .unwrap_or_default();
    let mut out = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, v)) = s.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (value, next) = if let Some(quoted) = v.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match v.find(',') {
                Some(end) => (&v[..end], &v[end..]),
                None => (v, ""),
            }
        };
        out.insert(k, value.to_string());
        s = next.trim_start_matches(',').trim();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use machinery::cri::{Endpoint, Mirror};

    #[test]
    fn challenges_are_parsed() {
        let p = challenge_params(
            r#"Bearer realm="https://auth.example.test/token",service="registry.example.test",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p["realm"], "https://auth.example.test/token");
        assert_eq!(p["service"], "registry.example.test");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
    }

    #[test]
    fn sources_follow_mirrors_override_path_and_fallback() {
        let mut reg = Registries::default();
        reg.mirrors.insert(
            "docker.io".into(),
            Mirror {
                endpoints: vec![
                    Endpoint {
                        url: "http://10.5.0.1:5000/".into(),
                        override_path: false,
                    },
                    Endpoint {
                        url: "https://cache.local/v2/proxy".into(),
                        override_path: true,
                    },
                ],
                skip_fallback: false,
            },
        );
        reg.mirrors.insert(
            "*".into(),
            Mirror {
                endpoints: vec![Endpoint {
                    url: "http://any.local".into(),
                    override_path: false,
                }],
                skip_fallback: true,
            },
        );
        let c = Client::new(reg);
        let bases = |s: &str| -> Vec<(String, String)> {
            c.sources(&Reference::parse(s).unwrap())
                .into_iter()
                .map(|s| (s.base, s.host))
                .collect()
        };
        assert_eq!(
            bases("alpine"),
            [
                (
                    "http://10.5.0.1:5000/v2/library/alpine".into(),
                    "10.5.0.1:5000".into()
                ),
                (
                    "https://cache.local/v2/proxy/library/alpine".into(),
                    "cache.local".into()
                ),
                (
                    "https://registry-1.docker.io/v2/library/alpine".into(),
                    "docker.io".into()
                ),
            ]
        );
        assert_eq!(
            bases("ghcr.io/x/y:1"),
            [("http://any.local/v2/x/y".into(), "any.local".into())]
        );
    }
}
