//! Upgrades and rollbacks of a machine installed on its disk, through its two boot slots.
//!
//! An upgrade pulls the installer image (through `machine.registries`) and writes its kernel
//! and initramfs into the slot the machine did not start from, which is started once (the
//! boot loader's boot-once, cleared as the slot starts). The slot the machine runs stays the
//! default until the new one proves itself: once the node is steadily healthy on the new slot,
//! that slot becomes the default. A new system that does not come up (a root file system that
//! fails its check, a node not healthy in time, a crash) restarts the machine, and the boot
//! loader starts the default slot again: the previous system, with the node's data.
//!
//! A rollback makes the other slot the default and reboots into it.

use crate::boot::mode::RunMode;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use machinery::Config;

/// How long a new system has to become healthy before the machine goes back to the previous.
const PROVE_WITHIN: Duration = Duration::from_secs(600);

/// Where the installer's files are put.
const WORK: &str = "/tmp/upgrade";

/// The BOOT partition and the slot this machine started from.
fn slots(mode: RunMode) -> Result<(PathBuf, &'static str), String> {
    if !mode.installed() {
        let how = if mode.machine() {
            "it runs from memory"
        } else {
            "it runs in a container"
        };
        return Err(format!(
            "upgrades need a machine installed on its disk: {how}"
        ));
    }
    let boot = disk::find(disk::BOOT).ok_or("the system disk has no BOOT partition")?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").map_err(|e| e.to_string())?;
    let slot = disk::booted_slot(&cmdline)
        .ok_or("the machine was not started by its disk's boot loader (no boot slot on its kernel command line)")?;
    Ok((boot, slot))
}

/// Check that this machine can be upgraded (before anything is done).
pub fn check(mode: RunMode) -> Result<(), String> {
    slots(mode).map(|_| ())
}

/// Install `image` into the slot this machine did not start from, to be started once at the
/// next boot. Returns the slot written.
pub fn install(config: &Config, image: &str, mode: RunMode) -> Result<&'static str, String> {
    let (boot, current) = slots(mode)?;
    let target = disk::other_slot(current);
    crate::log(&format!("upgrade: pulling {image}"));
    let work = Path::new(WORK);
    // The extensions first: one that does not fit is refused before the larger download.
    std::fs::create_dir_all(work).map_err(|e| format!("{WORK}: {e}"))?;
    let extensions = work.join(crate::boot::install::EXTENSIONS);
    if let Some(names) = crate::sys::extensions::pull(config, &extensions)? {
        crate::log(&format!("upgrade: system extensions {}", names.join(", ")));
    }
    let (kernel, initramfs) = crate::boot::install::fetch(config, image, work)?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let cmdline =
        crate::boot::install::cmdline(&cmdline, &crate::boot::install::extra_kernel_args(config));
    crate::log(&format!(
        "upgrade: writing {image} into boot slot {target} (slot {current} stays the default until {target} is healthy)"
    ));
    let written = disk::write_slot(
        &boot,
        target,
        &disk::Boot {
            kernel: &kernel,
            initramfs: &initramfs,
            cmdline: &cmdline,
            extensions: extensions.exists().then_some(extensions.as_path()),
        },
        disk::Start::Once,
    );
    let _ = std::fs::remove_dir_all(work);
    written.map(|()| target)
}

/// Make the slot this machine did not start from the default (it must hold a system).
pub fn rollback(mode: RunMode) -> Result<&'static str, String> {
    let (boot, current) = slots(mode)?;
    let target = disk::other_slot(current);
    disk::set_default(&boot, target).map_err(|e| format!("cannot roll back: {e}"))?;
    crate::log(&format!("rollback: boot slot {target} is the default"));
    Ok(target)
}

/// At boot: when the machine started from a slot that is not the default (the first boot
/// after an upgrade), that slot becomes the default once the node is steadily healthy; when
/// it is not healthy in time, the machine restarts into the default slot.
pub async fn prove(node: Arc<crate::node::Node>) {
    let Ok((boot, slot)) = slots(node.mode) else {
        return;
    };
    node.modules.loaded().await;
    let default = {
        let boot = boot.clone();
        crate::sys::blocking(move || disk::default_slot(&boot)).await
    };
    match default {
        Ok(d) if d == slot => return,
        Ok(d) => crate::log(&format!(
            "upgrade: started from boot slot {slot} (the default is {d}): it becomes the default once the node is healthy"
        )),
        Err(e) => {
            crate::log(&format!("upgrade: the boot slots: {e}"));
            return;
        }
    }
    if crate::boot::trial::steadily_healthy(&node, Instant::now() + PROVE_WITHIN, || true).await {
        let made = crate::sys::blocking(move || disk::set_default(&boot, slot)).await;
        match made {
            Ok(()) => crate::log(&format!(
                "upgrade: the node is healthy: boot slot {slot} is the default"
            )),
            Err(e) => crate::log(&format!("upgrade: boot slot {slot}: {e}")),
        }
    } else {
        crate::log(&format!(
            "upgrade: the node was not healthy on boot slot {slot} within {} s: restarting into the previous system",
            PROVE_WITHIN.as_secs()
        ));
        node.reboot.notify_one();
    }
}
