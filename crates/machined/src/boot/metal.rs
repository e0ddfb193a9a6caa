//! Metal mode: machined is the kernel's init, `/init` of the initramfs the imager built. It
//! mounts the kernel's filesystems, loads the modules it needs to reach the root filesystem,
//! checks the root filesystem (`/rootfs.sqsh`) against the digest the image records
//! (`/rootfs.sha256`) and refuses to boot when they differ, mounts it read-only through a loop
//! device with tmpfs `/system`, `/run`, `/var`, `/tmp` and a writable layer over `/etc`, moves
//! into it and loads the node's kernel modules in dependency order. An installed machine's
//! STATE (found by name, opened when encrypted) is mounted on `/system/state`; EPHEMERAL on
//! `/var` follows once the config is read ([`crate::volumes`]).
//! From there on the node is the same as in container mode ([`crate::boot::container::rooted`]).

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use nix::mount::{mount, MsFlags};

const ROOTFS: &str = "/rootfs.sqsh";
const ROOTFS_DIGEST: &str = "/rootfs.sha256";
/// The modules the initramfs carries, in load order (paths relative to `/lib/modules/<kver>`).
const EARLY_MODULES: &str = "/modules.load";
/// In the root filesystem: the node's modules in load order.
const NODE_MODULES: &str = "modules.load";

/// Set in the environment once the machine's root is in place (kept across re-executions).
const BOOTED: &str = "TALOS_METAL";

/// Whether this node is a machine booted from the image (not a container-mode node).
pub fn booted() -> bool {
    std::env::var_os(BOOTED).is_some()
}

/// Whether this process is the init of a machine booted from the image.
pub fn is_init() -> bool {
    std::process::id() == 1 && Path::new(ROOTFS).exists() && !crate::boot::container::rooted()
}

pub(crate) fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("boot: {what}: {e}")
}

fn mnt(
    src: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    std::fs::create_dir_all(target).map_err(|e| err(target, e))?;
    mount(src, target, fstype, flags, data).map_err(|e| err(&format!("mount {target}"), e))
}

/// The kernel's release (`uname -r`): where its modules are.
fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Load the modules listed (one path per line, relative to the modules folder) in order; a
/// module already loaded or built in is fine.
pub fn load_modules(dir: &Path, list: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let text = std::fs::read_to_string(list).unwrap_or_default();
    for rel in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = dir.join(rel);
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                problems.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        // SAFETY: a valid descriptor and an empty, NUL-terminated parameter string.
        let rc = unsafe {
            nix::libc::syscall(nix::libc::SYS_finit_module, f.as_raw_fd(), c"".as_ptr(), 0)
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(nix::libc::EEXIST) {
                problems.push(format!("{rel}: {e}"));
            }
        }
    }
    problems
}

/// Restart the machine for real (its state is on the disk, or it boots a new install).
pub fn restart() -> ! {
    nix::unistd::sync();
    for m in ["/var", "/system/state"] {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Whether this machine booted from the image has STATE on its system disk (installed), not
/// in memory. (A container-mode node's STATE is a bind mount: not this.)
pub fn installed() -> bool {
    booted()
        && std::fs::read_to_string("/proc/self/mountinfo")
            .map(|m| {
                m.lines()
                    .any(|l| l.split(' ').nth(4) == Some(crate::boot::container::STATE_DIR))
            })
            .unwrap_or(false)
}

/// Mount the system disk's STATE on `/system/state` when the machine is installed: opened
/// with the encryption META keeps when it is encrypted, formatted when empty; a reset's wipe
/// of STATE happens first. (EPHEMERAL follows once the config is read:
/// [`crate::sys::luks::mount_ephemeral`].)
fn mount_system_disk() -> Result<(), String> {
    let Some(state) = disk::find(disk::STATE) else {
        return Ok(());
    };
    let state_dir = crate::boot::container::STATE_DIR;
    let enc = crate::sys::luks::state_encryption_in_meta();
    let dev = crate::sys::luks::prepare(&state, disk::STATE, enc.as_ref())?;
    crate::sys::mount_xfs(&dev, state_dir)?;
    if crate::sys::wipe::take_wipe(disk::STATE) {
        // What else was to be wiped is still to be, on the new STATE.
        let rest = std::fs::read_to_string(crate::sys::wipe::WIPE).unwrap_or_default();
        crate::sys::console(&format!(
            "boot: wiping {} ({})",
            disk::STATE,
            state.display()
        ));
        nix::mount::umount(state_dir).map_err(|e| err("unmount STATE", e))?;
        crate::sys::luks::erase(&state, disk::STATE)?;
        if let Some(meta) = disk::find(disk::META) {
            disk::meta::set(&meta, disk::meta::STATE_ENCRYPTION, None)?;
        }
        let dev = crate::sys::luks::prepare(&state, disk::STATE, None)?;
        crate::sys::mount_xfs(&dev, state_dir)?;
        if !rest.trim().is_empty() {
            machinery::fsutil::write_atomic(
                Path::new(crate::sys::wipe::WIPE),
                rest.as_bytes(),
                0o600,
            )
            .map_err(|e| err(crate::sys::wipe::WIPE, e))?;
        }
    }
    Ok(())
}

/// Power the machine off (after a refusal to boot, or a shutdown).
pub fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// A boot that cannot go on. A machine started from its disk restarts: its boot loader starts
/// the default slot, which is the previous system when this one was an upgrade on trial.
/// Otherwise the machine powers off.
pub fn give_up(why: &str) -> ! {
    crate::sys::console(why);
    let from_disk =
        std::fs::read_to_string("/proc/cmdline").is_ok_and(|c| disk::booted_slot(&c).is_some());
    if from_disk {
        crate::sys::console("boot: restarting in 10 s");
        std::thread::sleep(std::time::Duration::from_secs(10));
        restart()
    }
    std::thread::sleep(std::time::Duration::from_secs(5));
    power_off()
}

/// From the initramfs into the image's root. Returns once the node's root is in place.
pub fn boot(self_exe: &str) -> Result<(), String> {
    let none = MsFlags::empty();
    let quiet = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt(Some("proc"), "/proc", Some("proc"), quiet, None)?;
    mnt(Some("sysfs"), "/sys", Some("sysfs"), quiet, None)?;
    mnt(
        Some("devtmpfs"),
        "/dev",
        Some("devtmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    let release = kernel_release();
    let modules = Path::new("/lib/modules").join(&release);
    for p in load_modules(&modules, Path::new(EARLY_MODULES)) {
        crate::sys::console(&format!("boot: module {p}"));
    }
    // The root filesystem must be the one the image was made with.
    let want = std::fs::read_to_string(ROOTFS_DIGEST)
        .map_err(|e| err(ROOTFS_DIGEST, e))?
        .trim()
        .to_string();
    let started = std::time::Instant::now();
    let have = std::fs::File::open(ROOTFS)
        .and_then(oci::sha256_of)
        .map_err(|e| err(ROOTFS, e))?;
    crate::sys::console(&format!(
        "boot: root filesystem checked in {} ms",
        started.elapsed().as_millis()
    ));
    if have != want {
        return Err(format!(
            "the root filesystem does not match the image: its digest is {have}, the image records {want}; refusing to boot"
        ));
    }
    let dev = disk::Loop::attach(Path::new(ROOTFS), false, 0, 0)?.keep();
    let dev = dev.to_string_lossy();
    let root = "/newroot";
    // The system extensions the boot loader brought.
    let extensions = crate::sys::extensions::folders(crate::sys::extensions::IN_INITRAMFS);
    let image_root = if extensions.is_empty() {
        root
    } else {
        "/image"
    };
    std::fs::create_dir_all(image_root).map_err(|e| err(image_root, e))?;
    mnt(
        Some(&*dev),
        image_root,
        Some("squashfs"),
        MsFlags::MS_RDONLY,
        None,
    )?;
    if !extensions.is_empty() {
        // The extensions over the image's root, the last one on top; read-only.
        let lower: Vec<String> = extensions
            .iter()
            .rev()
            .map(|d| d.join("rootfs").display().to_string())
            .chain([image_root.to_string()])
            .collect();
        mnt(
            Some("overlay"),
            root,
            Some("overlay"),
            MsFlags::MS_RDONLY,
            Some(&format!("lowerdir={}", lower.join(":"))),
        )?;
        let names: Vec<String> = extensions
            .iter()
            .filter_map(|d| Some(d.file_name()?.to_string_lossy().into_owned()))
            .collect();
        crate::sys::console(&format!("boot: system extensions {}", names.join(", ")));
    }
    let at = |p: &str| format!("{root}{p}");
    for (t, opts) in [
        ("/run", "mode=0755"),
        ("/system", "mode=0755"),
        ("/var", "mode=0755"),
        ("/tmp", "mode=1777"),
    ] {
        mount(
            Some("tmpfs"),
            at(t).as_str(),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts),
        )
        .map_err(|e| err(&format!("mount {t}"), e))?;
    }
    // /etc is the image's, under a writable layer.
    let layer = at("/system/overlays/etc");
    for d in ["upper", "work"] {
        std::fs::create_dir_all(format!("{layer}/{d}")).map_err(|e| err(&layer, e))?;
    }
    let opts = format!(
        "lowerdir={},upperdir={layer}/upper,workdir={layer}/work",
        at("/etc")
    );
    mount(
        Some("overlay"),
        at("/etc").as_str(),
        Some("overlay"),
        none,
        Some(opts.as_str()),
    )
    .map_err(|e| err("mount the /etc overlay", e))?;
    for d in [
        "/system/state",
        "/system/secrets",
        "/system/bin",
        "/system/etc",
    ] {
        std::fs::create_dir_all(at(d)).map_err(|e| err(d, e))?;
    }
    // What `get extensions` lists: each extension's manifest and image.
    for d in &extensions {
        let kept =
            Path::new(&at(crate::sys::extensions::BOOTED)).join(d.file_name().unwrap_or_default());
        std::fs::create_dir_all(&kept).map_err(|e| err(&kept.display().to_string(), e))?;
        for f in ["manifest.yaml", "image"] {
            std::fs::copy(d.join(f), kept.join(f)).map_err(|e| err(f, e))?;
        }
    }
    // This binary stays where services and reboots look for it.
    std::fs::write(at(self_exe), "").map_err(|e| err(self_exe, e))?;
    mount(
        Some("/init"),
        at(self_exe).as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| err(self_exe, e))?;
    for f in ["resolv.conf", "hosts"] {
        std::fs::write(at(&format!("/system/etc/{f}")), "").map_err(|e| err(f, e))?;
        std::fs::write(at(&format!("/etc/{f}")), "").map_err(|e| err(f, e))?;
        mount(
            Some(at(&format!("/system/etc/{f}")).as_str()),
            at(&format!("/etc/{f}")).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| err(f, e))?;
    }
    for m in ["/dev", "/proc", "/sys"] {
        mount(
            Some(m),
            at(m).as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(|e| err(&format!("move {m}"), e))?;
    }
    mnt(
        Some("devpts"),
        &at("/dev/pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("gid=5,mode=620,ptmxmode=666"),
    )?;
    mnt(
        Some("tmpfs"),
        &at("/dev/shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None,
    )?;
    if Path::new(&at("/sys/fs/cgroup")).is_dir() {
        let _ = mount(
            Some("cgroup2"),
            at("/sys/fs/cgroup").as_str(),
            Some("cgroup2"),
            quiet,
            None::<&str>,
        );
    }
    // Into the new root; the initramfs stays underneath (the loop device reads from it).
    std::env::set_current_dir(root).map_err(|e| err("chdir", e))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| err("move the root", e))?;
    nix::unistd::chroot(".").map_err(|e| err("chroot", e))?;
    std::env::set_current_dir("/").map_err(|e| err("chdir /", e))?;
    std::env::set_var(BOOTED, "1");
    std::env::set_var(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    mount_system_disk()?;
    Ok(())
}

/// Load the node's modules beside the boot (the network waits for its links anyway). Called
/// at every start of the machine's init: a re-execution (a reboot in place) ends the thread of
/// the start before, so the list is gone through again (loaded ones are skipped).
pub fn load_node_modules() -> Modules {
    let done = Modules::default();
    let set = done.clone();
    std::thread::spawn(move || {
        let modules = Path::new("/lib/modules").join(kernel_release());
        for p in load_modules(&modules, &modules.join(NODE_MODULES)) {
            crate::sys::console(&format!("boot: module {p}"));
        }
        let _ = set.1.set(());
        set.0.notify_waiters();
    });
    done
}

/// Whether the node's modules are loaded (or failed to load): what mounts the boot partition
/// (ext4, one of them) waits for them. Only a machine booted from the image loads them; for
/// any other node they count as loaded.
#[derive(Clone, Default)]
pub struct Modules(Arc<tokio::sync::Notify>, Arc<std::sync::OnceLock<()>>);

impl Modules {
    /// Modules that need no loading.
    pub fn none() -> Modules {
        let m = Modules::default();
        let _ = m.1.set(());
        m
    }

    pub async fn loaded(&self) {
        loop {
            let notified = self.0.notified();
            if self.1.get().is_some() {
                return;
            }
            notified.await;
        }
    }
}
