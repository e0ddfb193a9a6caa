//! System extensions: images holding a `manifest.yaml` (name, version, author, description,
//! the Talos versions they are compatible with) and a `rootfs/` laid out as on the machine.
//!
//! They are taken in only when a system is installed or upgraded (`machine.install.extensions`):
//! each image is pulled through the config's registries and checked (compatible with this
//! system, files only where extensions may put them, nothing special or world-writable), and
//! all of them go into one archive the boot loader loads after the slot's initramfs. At boot
//! they are layered over the read-only root (which stays read-only), and listed by
//! `talosctl get extensions`.

pub use types::runtime::{ExtensionMetadata as Metadata, ExtensionStatusSpec as StatusSpec};

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use machinery::Config;
use serde::{Deserialize, Serialize};

/// Where the boot finds the extensions in its initial root (the slot's extension archive).
pub const IN_INITRAMFS: &str = "/extensions";
/// Where the running system keeps what it booted with (a folder each: manifest, image).
pub const BOOTED: &str = "/system/extensions";

/// Where files of an extension may go (`/etc/ld.so.conf` and friends for its libraries).
const ALLOWED: &[&str] = &[
    "/etc/cri/conf.d",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/lib/firmware",
    "/usr/bin/ldconfig",
    "/usr/lib/firmware",
    "/usr/lib/ld-linux-x86-64.so.2",
    "/usr/lib/modules",
    "/usr/lib/udev/rules.d",
    "/usr/local",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub version: String,
    pub metadata: Metadata,
}

impl Manifest {
    /// Parse and check a manifest against the system `talos` (a tag such as `v1.2.3`).
    pub fn parse(text: &str, talos: &str) -> Result<Manifest, String> {
        let doc = machinery::yaml::parse_stream(text)
            .map_err(|e| {
                format!(
                    "manifest.yaml:{}:{}: {}",
                    e.pos.line, e.pos.column, e.message
                )
            })?
            .into_iter()
            .next()
            .ok_or("manifest.yaml is empty")?;
        let m: Manifest =
            serde_json::from_value(doc.value).map_err(|e| format!("manifest.yaml: {e}"))?;
        if m.version != "v1alpha1" {
            return Err(format!(
                "manifest.yaml: version {:?} is not supported (v1alpha1 is)",
                m.version
            ));
        }
        if m.metadata.name.is_empty() || m.metadata.name.contains(['/', '\0']) {
            return Err(format!(
                "manifest.yaml: {:?} is not an extension name",
                m.metadata.name
            ));
        }
        if let Some(c) = &m.metadata.compatibility {
            let want = &c.talos.version;
            let req = semver::VersionReq::parse(&without_v(want))
                .map_err(|e| format!("manifest.yaml: compatibility.talos.version {want:?}: {e}"))?;
            let have = semver::Version::parse(talos.trim_start_matches('v'))
                .map_err(|e| format!("this system's version {talos}: {e}"))?;
            if !req.matches(&have) {
                return Err(format!(
                    "{} {} is not compatible with this system: it needs Talos {want}, this is {talos}",
                    m.metadata.name, m.metadata.version
                ));
            }
        }
        Ok(m)
    }
}

/// A version constraint with its versions' `v` prefixes dropped (`>= v1.0.0` → `>= 1.0.0`).
fn without_v(req: &str) -> String {
    req.split(',')
        .map(|part| {
            let part = part.trim();
            let at = part
                .find(|c: char| c == 'v' || c.is_ascii_digit())
                .unwrap_or(part.len());
            let (op, version) = part.split_at(at);
            format!("{}{}", op.trim(), version.trim_start_matches('v'))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An entry of an image's layer, as [`oci::registry::layer_entries`] gives it.
type Entry<'a, 'd> = tar::Entry<'a, Box<dyn Read + 'd>>;

/// A file system entry of an extension's root.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Dir,
    File { mode: u32, data: Vec<u8> },
    Symlink(String),
}

/// An extension read from its image.
#[derive(Debug)]
pub struct Extension {
    pub image: String,
    pub manifest: Manifest,
    manifest_text: String,
    /// Paths inside its root (`/usr/local/...`), parents before children.
    files: BTreeMap<String, Node>,
}

/// Whether `path` (absolute) may hold an extension's file, or is a folder on the way there.
fn allowed(path: &str, dir: bool) -> bool {
    ALLOWED.iter().any(|a| {
        path == *a
            || path.strip_prefix(a).is_some_and(|r| r.starts_with('/'))
            || (dir && a.strip_prefix(path).is_some_and(|r| r.starts_with('/')))
    })
}

impl Extension {
    /// Read an extension from the entries of its image (`for_each` gives them, lower layers
    /// first) and check it against this system (`talos`).
    fn read(
        image: &str,
        talos: &str,
        for_each: impl FnOnce(
            &mut dyn FnMut(&str, &mut Entry<'_, '_>) -> Result<(), String>,
        ) -> Result<(), String>,
    ) -> Result<Extension, String> {
        let mut manifest_text = None;
        let mut files = BTreeMap::new();
        for_each(&mut |path, entry| {
            let path = path.trim_end_matches('/');
            if path == "manifest.yaml" {
                let mut text = String::new();
                entry
                    .read_to_string(&mut text)
                    .map_err(|e| format!("{image}: manifest.yaml: {e}"))?;
                manifest_text = Some(text);
                return Ok(());
            }
            let Some(inside) = path.strip_prefix("rootfs").filter(|p| p.starts_with('/')) else {
                return Ok(());
            };
            let name = inside.rsplit('/').next().unwrap_or_default();
            if let Some(hidden) = name.strip_prefix(".wh.") {
                // A later layer removed the file (and what was under it).
                let parent = &inside[..inside.len() - name.len()];
                let gone = format!("{parent}{hidden}");
                files.retain(|p: &String, _| {
                    p != &gone && !p.strip_prefix(&gone).is_some_and(|r| r.starts_with('/'))
                });
                return Ok(());
            }
            let mode = entry.header().mode().unwrap_or(0o644);
            let kind = entry.header().entry_type();
            let node = if kind.is_dir() {
                Node::Dir
            } else if kind.is_file() {
                let mut data = Vec::new();
                entry
                    .read_to_end(&mut data)
                    .map_err(|e| format!("{image}: {path}: {e}"))?;
                Node::File {
                    mode: mode & 0o7777,
                    data,
                }
            } else if kind.is_symlink() {
                let target = entry.link_name().ok().flatten().unwrap_or_default();
                Node::Symlink(target.to_string_lossy().into_owned())
            } else {
                return Err(format!(
                    "{image}: {inside} is a special file (extensions hold files, folders and symbolic links)"
                ));
            };
            if !allowed(inside, node == Node::Dir) {
                return Err(format!(
                    "{image}: {inside} is outside the places an extension may add files to ({})",
                    ALLOWED.join(", ")
                ));
            }
            if !matches!(node, Node::Symlink(_)) && mode & 0o002 != 0 {
                return Err(format!("{image}: {inside} is world-writable"));
            }
            files.insert(inside.to_string(), node);
            Ok(())
        })?;
        let manifest_text = manifest_text
            .ok_or_else(|| format!("{image} is not a system extension: it has no manifest.yaml"))?;
        let manifest =
            Manifest::parse(&manifest_text, talos).map_err(|e| format!("{image}: {e}"))?;
        Ok(Extension {
            image: image.to_string(),
            manifest,
            manifest_text,
            files,
        })
    }
}

/// The image references `machine.install.extensions` names.
pub fn configured(config: &Config) -> Vec<String> {
    config
        .pointer("/machine/install/extensions")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|e| e.get("image")?.as_str())
                .filter(|i| !i.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Pull and check the config's extensions; when it has any, write their archive to `out`
/// (else remove it) and name each: `name version`.
pub fn pull(config: &Config, out: &Path) -> Result<Option<Vec<String>>, String> {
    let images = configured(config);
    let _ = std::fs::remove_file(out);
    if images.is_empty() {
        return Ok(None);
    }
    let registries = machinery::cri::Registries::from_config(config)?;
    let client = oci::registry::Client::new(registries);
    let mut extensions = Vec::new();
    for image in &images {
        let reference = oci::Reference::parse(image)?;
        extensions.push(Extension::read(image, types::TAG, |f| {
            client.for_each_entry(&reference, |path, entry| f(path, entry))
        })?);
    }
    let mut seen = std::collections::HashSet::new();
    for e in &extensions {
        if !seen.insert(&e.manifest.metadata.name) {
            return Err(format!(
                "the extension {} is named twice in machine.install.extensions",
                e.manifest.metadata.name
            ));
        }
    }
    machinery::fsutil::write_atomic(out, &archive(&extensions), 0o644)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(Some(
        extensions
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e.manifest.metadata.name, e.manifest.metadata.version
                )
            })
            .collect(),
    ))
}

/// The archive the boot unpacks: `extensions/NN-name/{manifest.yaml,image,rootfs/...}`, in
/// the config's order (later ones over earlier ones).
fn archive(extensions: &[Extension]) -> Vec<u8> {
    let mut c = disk::Cpio::default();
    c.dir(IN_INITRAMFS);
    for (i, e) in extensions.iter().enumerate() {
        let top = format!("{IN_INITRAMFS}/{i:02}-{}", e.manifest.metadata.name);
        c.dir(&top);
        c.file(
            &format!("{top}/manifest.yaml"),
            0o644,
            e.manifest_text.as_bytes(),
        );
        c.file(&format!("{top}/image"), 0o644, e.image.as_bytes());
        c.dir(&format!("{top}/rootfs"));
        let mut made = std::collections::HashSet::new();
        for (path, node) in &e.files {
            // Folders the image left implicit.
            let mut at = 0;
            while let Some(i) = path[at + 1..].find('/') {
                at += i + 1;
                if !e.files.contains_key(&path[..at]) && made.insert(path[..at].to_string()) {
                    c.dir(&format!("{top}/rootfs{}", &path[..at]));
                }
            }
            let name = format!("{top}/rootfs{path}");
            match node {
                Node::Dir => c.dir(&name),
                Node::File { mode, data } => c.file(&name, *mode, data),
                Node::Symlink(target) => c.symlink(&name, target),
            }
        }
    }
    c.finish()
}

/// The extensions' folders in `dir` (`NN-name`), in order; none when it does not exist.
pub fn folders(dir: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    found.sort();
    found
}

/// The extensions the running system booted with (kept by the boot in [`BOOTED`]).
pub fn booted() -> Vec<StatusSpec> {
    folders(BOOTED)
        .into_iter()
        .filter_map(|d| {
            let text = std::fs::read_to_string(d.join("manifest.yaml")).ok()?;
            let image = std::fs::read_to_string(d.join("image")).unwrap_or_default();
            let doc = machinery::yaml::parse_stream(&text)
                .ok()?
                .into_iter()
                .next()?;
            let m: Manifest = serde_json::from_value(doc.value).ok()?;
            Some(StatusSpec {
                image,
                metadata: m.metadata,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "version: v1alpha1\nmetadata:\n  name: hello\n  version: 1.0.0\n  author: Someone\n  description: Says hello.\n  compatibility:\n    talos:\n      version: \">= v0.1.0\"\n";

    fn file(path: &str, data: &str, mode: u32) -> oci::Entry {
        oci::Entry::File {
            path: path.into(),
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    /// Read an extension from one layer made of `entries`, or holding only a FIFO at `fifo`.
    fn read(entries: &[oci::Entry], fifo: Option<&str>, talos: &str) -> Result<Extension, String> {
        let layer = match fifo {
            None => oci::layer(entries),
            Some(path) => {
                let mut tar = tar::Builder::new(Vec::new());
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o644);
                h.set_size(0);
                tar.append_data(&mut h, path, &[][..]).unwrap();
                tar.into_inner().unwrap()
            }
        };
        Extension::read("registry.test/hello:1", talos, |f| {
            oci::registry::layer_entries("layer", Box::new(layer.as_slice()), &mut |p, e| f(p, e))
        })
    }

    #[test]
    fn an_extension_is_read_checked_and_archived() {
        let e = read(
            &[
                file("manifest.yaml", MANIFEST, 0o644),
                oci::Entry::Dir("rootfs".into()),
                oci::Entry::Dir("rootfs/usr".into()),
                file("rootfs/usr/local/share/hello/hello.txt", "hello", 0o644),
                file("rootfs/usr/local/share/hello/old.txt", "old", 0o644),
                file("rootfs/usr/local/share/hello/.wh.old.txt", "", 0o644),
                oci::Entry::Symlink {
                    path: "rootfs/usr/local/bin/hi".into(),
                    target: "../share/hello/hello.txt".into(),
                },
                file("README", "ignored", 0o644),
            ],
            None,
            "v0.1.0",
        )
        .unwrap();
        assert_eq!(e.manifest.metadata.name, "hello");
        assert_eq!(e.manifest.metadata.author, "Someone");
        assert_eq!(
            e.files.keys().collect::<Vec<_>>(),
            [
                "/usr",
                "/usr/local/bin/hi",
                "/usr/local/share/hello/hello.txt"
            ]
        );
        let text = String::from_utf8_lossy(&archive(&[e])).into_owned();
        for want in [
            "extensions/00-hello/manifest.yaml",
            "extensions/00-hello/image",
            "extensions/00-hello/rootfs/usr/local/share",
            "extensions/00-hello/rootfs/usr/local/share/hello/hello.txt",
            "registry.test/hello:1",
            "TRAILER!!!",
        ] {
            assert!(text.contains(want), "{want}");
        }
    }

    #[test]
    fn bad_extensions_are_refused_with_a_reason() {
        let manifest = file("manifest.yaml", MANIFEST, 0o644);
        let err = read(std::slice::from_ref(&manifest), None, "v0.0.9").unwrap_err();
        assert!(
            err.contains(
                "not compatible with this system: it needs Talos >= v0.1.0, this is v0.0.9"
            ),
            "{err}"
        );
        let err = read(
            &[manifest.clone(), file("rootfs/usr/bin/sh", "", 0o755)],
            None,
            "v0.1.0",
        )
        .unwrap_err();
        assert!(err.contains("/usr/bin/sh is outside the places"), "{err}");
        let err = read(&[file("rootfs/usr/local/x", "", 0o666)], None, "v0.1.0").unwrap_err();
        assert!(err.contains("/usr/local/x is world-writable"), "{err}");
        let err = read(&[], Some("rootfs/usr/local/fifo"), "v0.1.0").unwrap_err();
        assert!(err.contains("special file"), "{err}");
        let err = read(&[file("rootfs/usr/local/x", "", 0o644)], None, "v0.1.0").unwrap_err();
        assert!(err.contains("has no manifest.yaml"), "{err}");
        let err = read(
            &[file(
                "manifest.yaml",
                "version: v2\nmetadata: {name: a, version: '1'}\n",
                0o644,
            )],
            None,
            "v0.1.0",
        )
        .unwrap_err();
        assert!(err.contains("version \"v2\" is not supported"), "{err}");
    }

    #[test]
    fn constraints_take_versions_with_or_without_v() {
        assert_eq!(without_v(">= v1.0.0"), ">=1.0.0");
        assert_eq!(without_v(">=v1.2.0, <v2.0.0"), ">=1.2.0, <2.0.0");
        let m = MANIFEST.replace(">= v0.1.0", ">= 0.1.0, < v1.0.0");
        assert!(Manifest::parse(&m, "v0.1.0").is_ok());
        assert!(Manifest::parse(&m, "v1.0.0").is_err());
    }
}
