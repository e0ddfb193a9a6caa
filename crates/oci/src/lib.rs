//! OCI images: references, manifests and configs, images built from files (what the imager
//! makes), OCI archives (an image layout in one tar), and a registry client that follows the
//! machine config's registry settings (mirrors in order, `overridePath`, fallback, credentials,
//! TLS). The node uses it to bring images into its system containerd; the imager to publish.

pub mod registry;
pub mod tls;

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};

pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The annotation naming an image in an OCI layout's index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

fn digest_string(d: ring::digest::Digest) -> String {
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in d.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// `sha256:<hex>` of these bytes.
pub fn sha256(data: &[u8]) -> String {
    digest_string(ring::digest::digest(&ring::digest::SHA256, data))
}

/// `sha256:<hex>` of what a reader gives, read in large chunks.
pub fn sha256_of(mut r: impl Read) -> std::io::Result<String> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(digest_string(ctx.finish()));
        }
        ctx.update(&buf[..n]);
    }
}

/// A parsed image reference: `registry/repository[:tag][@digest]`, normalized the way Docker
/// does (`alpine` is `docker.io/library/alpine:latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, String> {
        let s = s.trim();
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d.to_string())),
            None => (s, None),
        };
        let first = name.split('/').next().unwrap_or("");
        let has_registry = name.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost");
        let (registry, path) = if has_registry {
            let (r, p) = name.split_once('/').unwrap_or((name, ""));
            (r.to_string(), p.to_string())
        } else if name.contains('/') {
            ("docker.io".to_string(), name.to_string())
        } else {
            ("docker.io".to_string(), format!("library/{name}"))
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), Some(t.to_string())),
            _ => (path, None),
        };
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c);
        if repository.is_empty()
            || !repository.chars().all(ok_char)
            || repository.starts_with('/')
            || repository.ends_with('/')
        {
            return Err(format!("invalid image reference {s:?}"));
        }
        if let Some(d) = &digest {
            if !d.starts_with("sha256:") || d.len() != 71 {
                return Err(format!("invalid digest in image reference {s:?}"));
            }
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What to ask the registry for: the digest if there is one, else the tag.
    pub fn version(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    pub fn of(media_type: &str, data: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: sha256(data),
            size: data.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

impl Index {
    /// The manifest for linux on this machine's architecture.
    pub fn for_this_platform(&self) -> Option<&Descriptor> {
        self.manifests.iter().find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch())
        })
    }
}

/// The architecture as OCI names it.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The parts of an image config this project reads and writes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: RunConfig,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

/// The chain IDs of a stack of layers (the names of their unpacked snapshots).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// One entry of a layer made here.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir(String),
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
}

/// An uncompressed layer tar from entries (owned by root, time zero: reproducible).
pub fn layer(entries: &[Entry]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        let result = match e {
            Entry::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(if p.trim_end_matches('/') == "tmp" {
                    0o1777
                } else {
                    0o755
                });
                h.set_size(0);
                tar.append_data(&mut h, format!("{}/", p.trim_end_matches('/')), &[][..])
            }
            Entry::File { path, data, mode } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                tar.append_data(&mut h, path, data.as_slice())
            }
            Entry::Symlink { path, target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                tar.append_link(&mut h, path, target)
            }
        };
        result.expect("writing a tar to memory");
    }
    tar.into_inner().expect("writing a tar to memory")
}

/// An image held in memory: its manifest and the blobs it names (config, layers).
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Vec<u8>,
    pub blobs: BTreeMap<String, Vec<u8>>,
}

impl Image {
    /// An image of these uncompressed layers (gzipped here) with this run config.
    pub fn build(layers: &[Vec<u8>], run: RunConfig) -> Image {
        let mut blobs = BTreeMap::new();
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for l in layers {
            diff_ids.push(sha256(l));
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut gz, l).expect("compressing in memory");
            let gz = gz.finish().expect("compressing in memory");
            descs.push(Descriptor::of(LAYER_GZIP, &gz));
            blobs.insert(sha256(&gz), gz);
        }
        let config = serde_json::to_vec(&ImageConfig {
            architecture: arch().into(),
            os: "linux".into(),
            config: run,
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids,
            },
        })
        .expect("an image config serializes");
        let manifest = serde_json::to_vec(&Manifest {
            schema_version: 2,
            media_type: MANIFEST.into(),
            config: Descriptor::of(CONFIG, &config),
            layers: descs,
        })
        .expect("a manifest serializes");
        blobs.insert(sha256(&config), config);
        Image { manifest, blobs }
    }

    pub fn manifest(&self) -> Result<Manifest, String> {
        serde_json::from_slice(&self.manifest).map_err(|e| format!("image manifest: {e}"))
    }

    pub fn config(&self) -> Result<ImageConfig, String> {
        let m = self.manifest()?;
        let data = self
            .blobs
            .get(&m.config.digest)
            .ok_or_else(|| format!("image config {} is missing", m.config.digest))?;
        serde_json::from_slice(data).map_err(|e| format!("image config: {e}"))
    }

    /// Write as an OCI archive: `oci-layout`, `index.json` naming the image, `blobs/sha256/…`.
    pub fn write_archive(&self, name: &str, out: impl std::io::Write) -> std::io::Result<()> {
        let mut tar = tar::Builder::new(out);
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            h.set_mtime(0);
            tar.append_data(&mut h, path, data)
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let mut desc = Descriptor::of(MANIFEST, &self.manifest);
        desc.annotations.insert(REF_NAME.into(), name.into());
        let index = serde_json::to_vec(&Index {
            schema_version: 2,
            media_type: INDEX.into(),
            manifests: vec![desc],
        })
        .expect("an index serializes");
        add("index.json", &index)?;
        let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
        add(
            &format!("blobs/sha256/{}", hex(&sha256(&self.manifest))),
            &self.manifest,
        )?;
        for (d, data) in &self.blobs {
            add(&format!("blobs/sha256/{}", hex(d)), data)?;
        }
        tar.into_inner()?.flush()
    }

    /// Read an OCI archive holding one image: (its name, the image). Every blob's digest is
    /// checked.
    pub fn read_archive(input: impl Read) -> Result<(String, Image), String> {
        let mut files = BTreeMap::new();
        let mut tar = tar::Archive::new(input);
        for e in tar.entries().map_err(|e| format!("OCI archive: {e}"))? {
            let mut e = e.map_err(|e| format!("OCI archive: {e}"))?;
            let path = e
                .path()
                .map_err(|e| format!("OCI archive: {e}"))?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data)
                .map_err(|e| format!("OCI archive {path}: {e}"))?;
            files.insert(path, data);
        }
        let index: Index = serde_json::from_slice(
            files
                .get("index.json")
                .ok_or("OCI archive: no index.json (not an OCI image layout)")?,
        )
        .map_err(|e| format!("OCI archive index.json: {e}"))?;
        let [desc] = index.manifests.as_slice() else {
            return Err(format!(
                "OCI archive holds {} images, expected one",
                index.manifests.len()
            ));
        };
        let blob = |d: &str| -> Result<Vec<u8>, String> {
            let data = files
                .get(&format!("blobs/sha256/{}", d.trim_start_matches("sha256:")))
                .ok_or_else(|| format!("OCI archive: blob {d} is missing"))?;
            if sha256(data) != d {
                return Err(format!("OCI archive: blob {d} does not match its digest"));
            }
            Ok(data.clone())
        };
        let manifest = blob(&desc.digest)?;
        let m: Manifest =
            serde_json::from_slice(&manifest).map_err(|e| format!("image manifest: {e}"))?;
        let mut blobs = BTreeMap::new();
        for d in std::iter::once(&m.config).chain(&m.layers) {
            blobs.insert(d.digest.clone(), blob(&d.digest)?);
        }
        let name = desc.annotations.get(REF_NAME).cloned().unwrap_or_default();
        Ok((name, Image { manifest, blobs }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_normalized() {
        let r = |s: &str| Reference::parse(s).unwrap().to_string();
        assert_eq!(r("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(r("user/app:1"), "docker.io/user/app:1");
        assert_eq!(r("reg:5000/x"), "reg:5000/x:latest");
        assert_eq!(r("localhost/a/b:v2"), "localhost/a/b:v2");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(r(&format!("ghcr.io/x@{d}")), format!("ghcr.io/x@{d}"));
        let p = Reference::parse("10.5.0.1:5000/talos/etcd:v3.4.23").unwrap();
        assert_eq!(
            (p.registry.as_str(), p.repository.as_str(), p.version()),
            ("10.5.0.1:5000", "talos/etcd", "v3.4.23")
        );
        assert!(Reference::parse("Upper/Case").is_err());
        assert!(Reference::parse("x@sha256:short").is_err());
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = sha256(b"a");
        let b = sha256(b"b");
        assert_eq!(sha256_of(&b"a"[..]).unwrap(), a);
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], sha256(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn an_image_round_trips_through_an_archive() {
        let l = layer(&[
            Entry::Dir("bin".into()),
            Entry::File {
                path: "bin/tool".into(),
                data: b"#!".to_vec(),
                mode: 0o755,
            },
            Entry::Symlink {
                path: "bin/alias".into(),
                target: "tool".into(),
            },
        ]);
        let image = Image::build(
            std::slice::from_ref(&l),
            RunConfig {
                entrypoint: vec!["/bin/tool".into()],
                ..Default::default()
            },
        );
        let cfg = image.config().unwrap();
        assert_eq!(cfg.rootfs.diff_ids, vec![sha256(&l)]);
        assert_eq!(cfg.config.entrypoint, vec!["/bin/tool"]);
        let mut tar = Vec::new();
        image
            .write_archive("example.test/tool:1", &mut tar)
            .unwrap();
        let (name, back) = Image::read_archive(tar.as_slice()).unwrap();
        assert_eq!(name, "example.test/tool:1");
        assert_eq!(back.manifest, image.manifest);
        assert_eq!(back.blobs, image.blobs);

        // A blob that does not match its digest is refused.
        let mut bad = image.clone();
        let layer_digest = image.manifest().unwrap().layers[0].digest.clone();
        bad.blobs.insert(layer_digest, b"tampered".to_vec());
        let mut tar = Vec::new();
        bad.write_archive("x", &mut tar).unwrap();
        let err = Image::read_archive(tar.as_slice()).unwrap_err();
        assert!(err.contains("does not match its digest"), "{err}");
    }
}
