//! Installing a machine booted from the image (kernel and initramfs, by PXE or a direct boot)
//! onto the disk `machine.install.disk` names: the kernel and initramfs come from the installer
//! image `machine.install.image` (pulled through the config's registries), the disk gets
//! Talos's partitions, the boot loader and boot slot A, and the config goes to the new STATE
//! (encrypted, as are EPHEMERAL's, when the config says so).
//! The machine then restarts into the installed system.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use machinery::config::Config;

use crate::sys::console;

/// The disk to install to, when this machine should install (booted from the image, not
/// from an installed disk, and the config names a disk it has).
pub fn pending(config: &Config, mode: crate::boot::mode::RunMode) -> Option<PathBuf> {
    if mode != (crate::boot::mode::RunMode::Machine { installed: false }) {
        return None;
    }
    let disk = match target(config) {
        Ok(d) => PathBuf::from(d?),
        Err(e) => {
            console(&format!("install: {e}"));
            return None;
        }
    };
    if !disk.exists() {
        console(&format!(
            "install: {} does not exist: nothing is installed, the machine runs from memory",
            disk.display()
        ));
        return None;
    }
    Some(disk)
}

/// The unattended install document, if the config has one.
fn unattended(config: &Config) -> Option<&serde_json::Value> {
    config
        .kind("UnattendedInstallConfig")
        .next()
        .map(|d| &d.value)
}

/// The disk the config installs to: `machine.install.disk`, or the `UnattendedInstallConfig`
/// document's disk selector (`disk.dev_path == "/dev/vda"`).
fn target(config: &Config) -> Result<Option<String>, String> {
    if let Some(selector) = unattended(config)
        .and_then(|u| u.pointer("/provisioning/diskSelector/match"))
        .and_then(|m| m.as_str())
    {
        let path = selector
            .trim()
            .strip_prefix("disk.dev_path")
            .map(str::trim_start)
            .and_then(|r| r.strip_prefix("=="))
            .map(|r| r.trim().trim_matches('"'))
            .filter(|p| p.starts_with("/dev/"));
        return match path {
            Some(p) => Ok(Some(p.to_string())),
            None => Err(format!(
                "the disk selector `{selector}` is not supported: select the disk with disk.dev_path == \"/dev/...\""
            )),
        };
    }
    Ok(config
        .pointer("/machine/install/disk")
        .and_then(|d| d.as_str())
        .filter(|d| !d.is_empty())
        .map(str::to_string))
}

/// The installer image: the `UnattendedInstallConfig`'s, or `machine.install.image`.
fn installer_image(config: &Config) -> Option<&str> {
    unattended(config)
        .and_then(|u| u.pointer("/installer/image"))
        .or_else(|| config.pointer("/machine/install/image"))
        .and_then(|v| v.as_str())
        .filter(|i| !i.is_empty())
}

/// The installed system's kernel command line: this boot's, without what only this boot
/// needed (where the config came from, the boot loader's own arguments), and the config's
/// extra arguments.
pub fn cmdline(current: &str, extra: &[String]) -> String {
    current
        .split_whitespace()
        .filter(|a| {
            !["talos.config=", "initrd=", "BOOT_IMAGE="]
                .iter()
                .any(|p| a.starts_with(p))
        })
        .map(str::to_string)
        .chain(extra.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where the installer's files are put.
const WORK: &str = "/tmp/install";

/// Pull the kernel and initramfs out of the installer `image` (through the config's
/// registries) into `work`: their paths there.
pub fn fetch(config: &Config, image: &str, work: &Path) -> Result<(PathBuf, PathBuf), String> {
    let reference = oci::Reference::parse(image)?;
    let registries = machinery::cri::Registries::from_config(config)?;
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let (kernel, initramfs) = (work.join("vmlinuz"), work.join("initramfs.img"));
    oci::registry::Client::new(registries).fetch_files(
        &reference,
        &[
            (disk::INSTALLER_KERNEL, &kernel),
            (disk::INSTALLER_INITRAMFS, &initramfs),
        ],
    )?;
    Ok((kernel, initramfs))
}

/// Pull the installer image the config names.
fn pull(config: &Config) -> Result<(), String> {
    let image = installer_image(config).ok_or(
        "an installer image is required to install (machine.install.image, or installer.image of UnattendedInstallConfig)",
    )?;
    console(&format!("install: pulling {image}"));
    fetch(config, image, Path::new(WORK))?;
    if let Some(names) = crate::sys::extensions::pull(config, &Path::new(WORK).join(EXTENSIONS))? {
        console(&format!("install: system extensions {}", names.join(", ")));
    }
    Ok(())
}

/// The system extensions' archive, beside the installer's files.
pub const EXTENSIONS: &str = "extensions.img";

/// The extra kernel arguments the config adds (`machine.install.extraKernelArgs`).
pub fn extra_kernel_args(config: &Config) -> Vec<String> {
    config
        .pointer("/machine/install/extraKernelArgs")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Write the disk from what [`pull`] fetched, and the config onto its STATE.
fn write(config: &Config, disk: &Path) -> Result<(), String> {
    let work = Path::new(WORK);
    let (kernel, initramfs) = (work.join("vmlinuz"), work.join("initramfs.img"));
    let extensions = work.join(EXTENSIONS);
    let extra = extra_kernel_args(config);
    let current = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let cmdline = cmdline(&current, &extra);
    console(&format!(
        "install: {}: partitions, file systems, boot loader, slot A ({cmdline})",
        disk.display()
    ));
    disk::install(
        disk,
        &disk::Boot {
            kernel: &kernel,
            initramfs: &initramfs,
            cmdline: &cmdline,
            extensions: extensions.exists().then_some(extensions.as_path()),
        },
    )?;
    let _ = std::fs::remove_dir_all(work);
    let partition = |label: &str| {
        let (n, _) = disk::part(label).expect("in the layout");
        disk::part_path(disk, n)
    };
    // An encrypted EPHEMERAL is made at the first boot (it formats an empty partition as its
    // config says).
    if crate::sys::luks::configured(config, disk::EPHEMERAL).is_some() {
        disk::erase(&partition(disk::EPHEMERAL))?;
    }
    // The config goes to the new STATE (encrypted first when the config says so, which META
    // then keeps), so that the installed system boots with it.
    let state = partition(disk::STATE);
    let enc = crate::sys::luks::configured(config, disk::STATE);
    let target = match &enc {
        Some(enc) => {
            disk::erase(&state)?;
            crate::sys::luks::prepare(&state, disk::STATE, Some(enc))?
        }
        None => state.clone(),
    };
    let m = disk::Mounted::new(&target, "xfs")?;
    machinery::fsutil::write_atomic(
        &m.path().join("config.yaml"),
        config.encode().as_bytes(),
        0o600,
    )
    .map_err(|e| format!("the config on {}: {e}", state.display()))?;
    drop(m);
    if enc.is_some() {
        disk::luks::close(&crate::sys::luks::mapping(disk::STATE))?;
    }
    crate::sys::luks::remember_state_at(&partition(disk::META), enc.as_ref())
}

/// Install, then restart into the installed system. A failure is told on the console and in
/// the log; the machine keeps running from memory (the next boot tries again).
pub async fn run(node: Arc<crate::node::Node>, config: Config, disk: PathBuf) {
    let started = std::time::Instant::now();
    // The registry may be out of reach until the network is up: tried for a minute.
    let mut last = String::new();
    for attempt in 1..=20 {
        let c = config.clone();
        match crate::sys::blocking(move || pull(&c)).await {
            Ok(()) => break,
            Err(e) if attempt == 20 => {
                console(&format!("install: {} failed: {e}", disk.display()));
                tracing::error!(error = %e, "install failed");
                return;
            }
            Err(e) => {
                if e != last {
                    console(&format!("install: {e}; trying again"));
                    last = e;
                }
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            }
        }
    }
    // The boot partition is ext4, a module of the node's.
    node.modules.loaded().await;
    let target = disk.clone();
    let result = crate::sys::blocking(move || write(&config, &target)).await;
    match result {
        Ok(()) => {
            console(&format!(
                "install: {} installed in {:.1} s; restarting into it",
                disk.display(),
                started.elapsed().as_secs_f64()
            ));
            node.install_done.store(true, Ordering::SeqCst);
            node.reboot.notify_one();
        }
        Err(e) => {
            console(&format!("install: {} failed: {e}", disk.display()));
            tracing::error!(error = %e, disk = %disk.display(), "install failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_and_installer_come_from_either_document() {
        let v1 = Config::parse("version: v1alpha1\nmachine:\n  type: worker\n  install:\n    disk: /dev/sda\n    image: reg/installer:v1\n").unwrap();
        assert_eq!(target(&v1).unwrap().as_deref(), Some("/dev/sda"));
        assert_eq!(installer_image(&v1), Some("reg/installer:v1"));
        let doc = |selector: &str| {
            Config::parse(&format!("version: v1alpha1\nmachine:\n  type: worker\n---\napiVersion: v1alpha1\nkind: UnattendedInstallConfig\ninstaller:\n  image: reg/installer:v2\nprovisioning:\n  diskSelector:\n    match: '{selector}'\n")).unwrap()
        };
        let multi = doc(r#"disk.dev_path == "/dev/vda""#);
        assert_eq!(target(&multi).unwrap().as_deref(), Some("/dev/vda"));
        assert_eq!(installer_image(&multi), Some("reg/installer:v2"));
        let err = target(&doc("disk.size > 10u * GB")).unwrap_err();
        assert!(err.contains("not supported"), "{err}");
    }

    #[test]
    fn the_installed_command_line_drops_what_only_this_boot_needed() {
        let got = cmdline(
            "BOOT_IMAGE=/A/vmlinuz console=ttyS0 talos.platform=metal talos.config=http://10.5.0.1/c.yaml ip=10.5.0.2::10.5.0.1:255.255.255.0::eth0:off initrd=/A/initramfs.img",
            &["net.ifnames=0".into()],
        );
        assert_eq!(
            got,
            "console=ttyS0 talos.platform=metal ip=10.5.0.2::10.5.0.1:255.255.255.0::eth0:off net.ifnames=0"
        );
    }
}
