//! The imager: images made from the build host's Debian packages. `etcd` is an OCI image of
//! Debian's etcd (the binary and the shared libraries it loads, nothing else), which nodes run
//! in their system containerd when `cluster.etcd.image` names it.

use std::path::Path;
use std::process::Command;

use disk::Cpio;
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

/// The installer image: the kernel and initramfs a machine installs onto its disk (and, later,
/// upgrades to).
pub fn installer(kernel: &Path, initramfs: &Path) -> Result<Image, String> {
    let files = [
        (kernel, disk::INSTALLER_KERNEL),
        (initramfs, disk::INSTALLER_INITRAMFS),
    ]
    .map(|(host, inside)| (host.display().to_string(), inside.to_string()));
    let layer = files_layer(&files, &[])?;
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("org.opencontainers.image.title".into(), "installer".into());
    labels.insert(
        "org.opencontainers.image.version".into(),
        env!("CARGO_PKG_VERSION").into(),
    );
    Ok(Image::build(
        &[layer],
        RunConfig {
            labels,
            ..Default::default()
        },
    ))
}

/// Modules with everything they depend on, dependencies first (paths as `modules.dep` names
/// them, relative to the kernel's modules folder).
pub fn modules_in_order(modules_dir: &Path, names: &[&str]) -> Result<Vec<String>, String> {
    let dep_file = modules_dir.join("modules.dep");
    let text = std::fs::read_to_string(&dep_file)
        .map_err(|e| format!("{}: {e} (Debian: linux-image-amd64)", dep_file.display()))?;
    let deps: std::collections::BTreeMap<String, Vec<String>> = text
        .lines()
        .filter_map(|l| {
            let (m, d) = l.split_once(':')?;
            Some((
                m.to_string(),
                d.split_whitespace().map(String::from).collect(),
            ))
        })
        .collect();
    let norm = |s: &str| s.replace('-', "_");
    let by_name: std::collections::BTreeMap<String, String> = deps
        .keys()
        .map(|p| {
            let stem = Path::new(p)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let stem = stem.split(".ko").next().unwrap_or_default().to_string();
            (norm(&stem), p.clone())
        })
        .collect();
    fn visit(
        p: &str,
        deps: &std::collections::BTreeMap<String, Vec<String>>,
        out: &mut Vec<String>,
    ) {
        if out.iter().any(|o| o == p) {
            return;
        }
        for d in deps.get(p).into_iter().flatten() {
            visit(d, deps, out);
        }
        out.push(p.to_string());
    }
    let mut out = Vec::new();
    for n in names {
        let p = by_name
            .get(&norm(n))
            .ok_or_else(|| format!("no kernel module {n} in {}", modules_dir.display()))?;
        visit(p, &deps, &mut out);
    }
    Ok(out)
}

/// Modules the initramfs loads to reach the root filesystem and the system disk's STATE and
/// EPHEMERAL (XFS on virtio, SATA or NVMe disks).
pub const EARLY_MODULES: &[&str] = &[
    "loop",
    "squashfs",
    "overlay",
    "crc32c_generic",
    "virtio_pci",
    // Entropy from the host, before anything asks for random bytes (cryptsetup opening STATE
    // blocks until the kernel's pool is ready, which takes half a minute under emulation).
    "virtio_rng",
    "virtio_blk",
    "ahci",
    "sd_mod",
    "nvme",
    "xfs",
    // Encrypted STATE and EPHEMERAL (LUKS2, AES-XTS; cryptsetup reads key slots through the
    // kernel's crypto API). No modprobe asks for them later.
    "dm_mod",
    "dm_crypt",
    "ecb",
    "xts",
    "algif_skcipher",
    "algif_hash",
];
/// Modules the node loads from its root filesystem.
pub const NODE_MODULES: &[&str] = &[
    // What libcrc32c asks the kernel for (a soft dependency: no modprobe to load it later).
    "crc32c_generic",
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_console",
    "e1000",
    "bridge",
    "veth",
    "nf_tables",
    "wireguard",
    "ext4",
    "xfs",
    "vfat",
];
/// The services' programs the root filesystem holds (with the libraries they load).
pub const PROGRAMS: &[&str] = &[
    "/usr/bin/etcd",
    "/usr/bin/etcdctl",
    "/usr/bin/containerd",
    "/usr/bin/containerd-shim-runc-v2",
    "/usr/sbin/runc",
    // Installing to disk, and wiping its partitions.
    "/usr/sbin/mkfs.xfs",
    "/usr/sbin/mkfs.ext4",
    "/usr/sbin/mkfs.vfat",
    "/usr/bin/extlinux",
    // Encrypted partitions, and keys sealed by the TPM.
    "/usr/sbin/cryptsetup",
    "/usr/bin/tpm2",
];
/// Data files the root filesystem holds at the same paths.
pub const DATA: &[&str] = &[
    disk::GPT_MBR,
    // What tpm2-tools loads to reach /dev/tpmrm0 (by name, at run time: ldd does not list it).
    "/usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0",
];

/// What `imager boot` made.
#[derive(Debug)]
pub struct BootAssets {
    pub kernel: std::path::PathBuf,
    pub initramfs: std::path::PathBuf,
    pub rootfs: std::path::PathBuf,
    pub rootfs_digest: String,
}

/// The newest kernel whose modules are installed.
pub fn installed_kernel() -> Result<String, String> {
    let mut releases: Vec<String> = std::fs::read_dir("/lib/modules")
        .map_err(|e| format!("/lib/modules: {e} (Debian: linux-image-amd64)"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|r| Path::new("/boot").join(format!("vmlinuz-{r}")).exists())
        .collect();
    releases.sort();
    releases
        .pop()
        .ok_or_else(|| "no kernel in /boot (Debian: linux-image-amd64)".into())
}

fn copy_into(stage: &Path, host: &str, inside: &str) -> Result<(), String> {
    let to = stage.join(inside.trim_start_matches('/'));
    if let Some(d) = to.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    std::fs::copy(host, &to).map_err(|e| format!("{host}: {e}"))?;
    Ok(())
}

/// Build the kernel and initramfs of a node: the initramfs holds machined as `/init`, the
/// modules it needs to mount the root, and the read-only root filesystem (squashfs: the
/// services' programs and their libraries, the node's kernel modules, nothing else) with its
/// digest.
pub fn boot_assets(machined: &Path, release: &str, out: &Path) -> Result<BootAssets, String> {
    let modules_dir = Path::new("/lib/modules").join(release);
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let stage = out.join("rootfs.stage");
    let _ = std::fs::remove_dir_all(&stage);
    for d in [
        "dev", "proc", "sys", "run", "system", "tmp", "var", "etc", "usr/bin", "usr/sbin",
    ] {
        std::fs::create_dir_all(stage.join(d)).map_err(|e| format!("{d}: {e}"))?;
    }
    std::fs::write(
        stage.join("etc/os-release"),
        format!(
            "NAME=\"Talos\"\nID=talos\nVERSION_ID={v}\nPRETTY_NAME=\"Talos ({v})\"\n",
            v = env!("CARGO_PKG_VERSION")
        ),
    )
    .map_err(|e| format!("os-release: {e}"))?;
    for program in PROGRAMS {
        if !Path::new(program).exists() {
            return Err(format!(
                "{program} is missing (Debian: etcd-server, etcd-client, containerd, runc, xfsprogs, e2fsprogs, dosfstools, extlinux, cryptsetup-bin, tpm2-tools)"
            ));
        }
        copy_into(&stage, program, program)?;
        for lib in shared_libraries(Path::new(program))? {
            copy_into(&stage, &lib, &lib)?;
        }
    }
    for f in DATA {
        copy_into(&stage, f, f)
            .map_err(|e| format!("{e} (Debian: syslinux-common, libtss2-tcti-device0)"))?;
    }
    let node_modules = modules_in_order(&modules_dir, NODE_MODULES)?;
    for m in &node_modules {
        let inside = format!("lib/modules/{release}/{m}");
        copy_into(&stage, &modules_dir.join(m).display().to_string(), &inside)?;
    }
    std::fs::write(
        stage.join(format!("lib/modules/{release}/modules.load")),
        node_modules.join("\n") + "\n",
    )
    .map_err(|e| format!("modules.load: {e}"))?;
    let rootfs = out.join("rootfs.sqsh");
    let _ = std::fs::remove_file(&rootfs);
    let made = Command::new("mksquashfs")
        .arg(&stage)
        .arg(&rootfs)
        .args([
            "-comp",
            "zstd",
            "-noappend",
            "-all-root",
            "-quiet",
            "-no-progress",
        ])
        .output()
        .map_err(|e| format!("mksquashfs: {e} (Debian: squashfs-tools)"))?;
    if !made.status.success() {
        return Err(format!(
            "mksquashfs: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        ));
    }
    let _ = std::fs::remove_dir_all(&stage);
    let squash = std::fs::read(&rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
    let rootfs_digest = oci::sha256(&squash);

    // The initramfs: a compressed archive of the small things, then the root filesystem
    // uncompressed (it is compressed already); the kernel unpacks both.
    let mut early = Cpio::default();
    for d in ["dev", "proc", "sys", "newroot", "lib", "lib/modules"] {
        early.dir(d);
    }
    early.char_device("dev/console", 0o600, 5, 1);
    let init = std::fs::read(machined).map_err(|e| format!("{}: {e}", machined.display()))?;
    early.file("init", 0o755, &init);
    early.file("rootfs.sha256", 0o444, rootfs_digest.as_bytes());
    let early_modules = modules_in_order(&modules_dir, EARLY_MODULES)?;
    let mut dirs = std::collections::BTreeSet::new();
    for m in &early_modules {
        let mut p = Path::new(m).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_path_buf());
            p = d.parent();
        }
    }
    early.dir(&format!("lib/modules/{release}"));
    for d in dirs {
        early.dir(&format!("lib/modules/{release}/{}", d.display()));
    }
    for m in &early_modules {
        let data = std::fs::read(modules_dir.join(m)).map_err(|e| format!("{m}: {e}"))?;
        early.file(&format!("lib/modules/{release}/{m}"), 0o644, &data);
    }
    early.file(
        "modules.load",
        0o444,
        (early_modules.join("\n") + "\n").as_bytes(),
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &early.finish()).map_err(|e| e.to_string())?;
    let mut initramfs = gz.finish().map_err(|e| e.to_string())?;
    // The next archive starts on a 4-byte boundary (the kernel skips zeros between archives).
    initramfs.resize(initramfs.len().div_ceil(4) * 4, 0);
    let mut root = Cpio::default();
    root.file("rootfs.sqsh", 0o444, &squash);
    initramfs.extend_from_slice(&root.finish());
    let initramfs_path = out.join("initramfs.img");
    std::fs::write(&initramfs_path, &initramfs)
        .map_err(|e| format!("{}: {e}", initramfs_path.display()))?;
    let kernel = out.join("vmlinuz");
    std::fs::copy(format!("/boot/vmlinuz-{release}"), &kernel)
        .map_err(|e| format!("/boot/vmlinuz-{release}: {e}"))?;
    Ok(BootAssets {
        kernel,
        initramfs: initramfs_path,
        rootfs,
        rootfs_digest,
    })
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

    #[test]
    fn modules_come_after_their_dependencies() {
        let Ok(release) = installed_kernel() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "needs a kernel"
            );
            return;
        };
        let dir = Path::new("/lib/modules").join(release);
        let order = modules_in_order(&dir, &["virtio_net", "dm-crypt"]).unwrap();
        let at = |m: &str| order.iter().position(|p| p.ends_with(m)).unwrap();
        assert!(at("/virtio.ko") < at("/virtio_net.ko"), "{order:?}");
        assert!(at("/dm-mod.ko") < at("/dm-crypt.ko"), "{order:?}");
        assert!(modules_in_order(&dir, &["no_such_module"]).is_err());
    }
}
