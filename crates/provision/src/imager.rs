//! The imager: images made from the build host's Debian packages. `etcd` is an OCI image of
//! Debian's etcd (the binary and the shared libraries it loads, nothing else), which nodes run
//! in their system containerd when `cluster.etcd.image` names it.

use std::path::Path;
use std::process::Command;

use oci::{Entry, Image, RunConfig};

/// Where the etcd binary sits in the image.
pub const ETCD_PATH: &str = "/usr/local/bin/etcd";

/// `etcd --version` → `3.4.23`.
pub fn etcd_version(binary: &Path) -> Result<String, String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| format!("{}: {e} (Debian: etcd-server)", binary.display()))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version:"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| format!("{}: no version in its --version output", binary.display()))
}

/// The shared libraries a binary loads (with the dynamic loader), as `ldd` lists them.
pub fn shared_libraries(binary: &Path) -> Result<Vec<String>, String> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => l,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_string())
        })
        .collect())
}

/// A layer holding these host files at the same paths (their contents, following links),
/// with every parent folder.
fn files_layer(files: &[(String, String)], extra: &[Entry]) -> Result<Vec<u8>, String> {
    let mut entries = Vec::new();
    let mut dirs = std::collections::BTreeSet::new();
    for (_, inside) in files {
        let mut p = Path::new(inside.trim_start_matches('/')).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.display().to_string());
            p = d.parent();
        }
    }
    entries.extend(dirs.into_iter().map(Entry::Dir));
    entries.extend_from_slice(extra);
    for (host, inside) in files {
        let data = std::fs::read(host).map_err(|e| format!("{host}: {e}"))?;
        entries.push(Entry::File {
            path: inside.trim_start_matches('/').to_string(),
            data,
            mode: 0o755,
        });
    }
    Ok(oci::layer(&entries))
}

/// The etcd image: (its version, the image).
pub fn etcd(binary: &Path) -> Result<(String, Image), String> {
    let version = etcd_version(binary)?;
    let mut files = vec![(binary.display().to_string(), ETCD_PATH.to_string())];
    for lib in shared_libraries(binary)? {
        files.push((lib.clone(), lib));
    }
    let layer = files_layer(&files, &[Entry::Dir("tmp".into())])?;
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("org.opencontainers.image.title".into(), "etcd".into());
    labels.insert("org.opencontainers.image.version".into(), version.clone());
    let image = Image::build(
        &[layer],
        RunConfig {
            entrypoint: vec![ETCD_PATH.into()],
            env: vec!["PATH=/usr/local/bin".into()],
            labels,
            ..Default::default()
        },
    );
    Ok((version, image))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etcd_image_holds_etcd_and_its_libraries_only() {
        let etcd = Path::new("/usr/bin/etcd");
        if !etcd.exists() {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "needs etcd");
            return;
        }
        let (version, image) = super::etcd(etcd).unwrap();
        assert!(version.starts_with("3."), "{version}");
        let cfg = image.config().unwrap();
        assert_eq!(cfg.config.entrypoint, [ETCD_PATH]);
        let m = image.manifest().unwrap();
        let gz = &image.blobs[&m.layers[0].digest];
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(gz.as_slice()));
        let names: Vec<String> = tar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(
            names.contains(&"usr/local/bin/etcd".to_string()),
            "{names:?}"
        );
        assert!(names.iter().any(|n| n.contains("libc.so")), "{names:?}");
        assert!(!names
            .iter()
            .any(|n| n.ends_with("/sh") || n.contains("busybox")));
    }
}
