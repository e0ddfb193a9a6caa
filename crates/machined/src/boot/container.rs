//! Container mode: the node is machined as PID 1 of fresh mount, PID and UTS namespaces, inside
//! a network namespace the provisioner prepared. The host root is seen read-only (`/etc` with a
//! writable layer of the node's own); `/run`, `/system` and `/tmp` are the node's own tmpfs;
//! `/var` and `/system/state` are the node's directories on the host, so they survive a reboot
//! of the node.
//!
//! `machined --container DIR --netns NAME` is started by the provisioner. That process (the
//! shim) enters the network namespace, unshares the rest and forks: the child is PID 1 of the
//! node; the shim stays in the host's PID namespace, forwards SIGTERM/SIGINT to it and exits
//! with its status. Killing the shim kills the node (PID 1 has a parent-death signal).
//! `DIR/cmdline`, when present, is the node's kernel command line (bound over `/proc/cmdline`).

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

/// Set once PID 1 has moved into the node's root, so that a reboot (re-exec) of the node does
/// not try again.
const ROOTED: &str = "TALOS_CONTAINER_ROOTED";

pub use crate::sys::{EPHEMERAL_DIR, LOG_DIR, STATE_DIR};

/// Where a container-mode node finds this binary.
pub const SELF_EXE: &str = "/system/bin/machined";

/// This binary, as this node sees it.
pub fn self_exe() -> std::io::Result<PathBuf> {
    if rooted() {
        Ok(PathBuf::from(SELF_EXE))
    } else {
        std::env::current_exe()
    }
}

/// Say that the node's root is in place (for this process and what it runs or re-executes).
pub fn mark_rooted() {
    std::env::set_var(ROOTED, "1");
}

/// Whether this process is the node's PID 1 with its root in place already.
pub fn rooted() -> bool {
    std::env::var_os(ROOTED).is_some()
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("container: {what}: {e}")
}

/// Become the node: returns in PID 1 (with the node's root mounted); the shim never returns,
/// it exits with PID 1's status.
pub fn enter(dir: &Path, netns: Option<&str>) -> Result<(), String> {
    if rooted() {
        return Ok(());
    }
    if let Some(name) = netns {
        let path = Path::new("/run/netns").join(name);
        let f = std::fs::File::open(&path).map_err(|e| err(&path.display().to_string(), e))?;
        nix::sched::setns(f, CloneFlags::CLONE_NEWNET).map_err(|e| err("setns", e))?;
    }
    nix::sched::unshare(
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWPID,
    )
    .map_err(|e| err("unshare", e))?;
    // SAFETY: single-threaded here (before any runtime or thread starts).
    match unsafe { fork() }.map_err(|e| err("fork", e))? {
        ForkResult::Parent { child } => shim(child),
        ForkResult::Child => {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| err("pdeathsig", e))?;
            make_root(dir)?;
            mark_rooted();
            Ok(())
        }
    }
}

/// The shim's life: pass termination signals to the node, exit when it exits.
fn shim(child: nix::unistd::Pid) -> ! {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGCHLD,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    let _ = set.thread_block();
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => match waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
            {
                Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => std::process::exit(128 + sig as i32),
                _ => {}
            },
            Ok(sig) => {
                let _ = nix::sys::signal::kill(child, sig);
            }
            Err(_) => {}
        }
    }
}

/// Build the node's root at `DIR/rootfs` and move into it.
fn make_root(dir: &Path) -> Result<(), String> {
    let none: Option<&str> = None;
    let at = |p: &str| -> PathBuf { dir.join("rootfs").join(p.trim_start_matches('/')) };
    let mnt = |src: Option<&Path>, target: &Path, fstype: Option<&str>, flags: MsFlags| {
        mount(src, target, fstype, flags, none)
            .map_err(|e| err(&format!("mount {}", target.display()), e))
    };
    // Nothing mounted here propagates back to the host.
    mnt(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
    )?;
    for d in ["rootfs", "var", "state"] {
        std::fs::create_dir_all(dir.join(d)).map_err(|e| err(d, e))?;
    }
    // The root is a tmpfs holding mountpoints: each top-level entry of the host's root is
    // bound read-only (symlinks copied), and the node's own filesystems go beside them.
    let root = at("/");
    mnt(
        Some(Path::new("tmpfs")),
        &root,
        Some("tmpfs"),
        MsFlags::empty(),
    )?;
    const OWN: [&str; 7] = ["dev", "proc", "sys", "run", "system", "tmp", "var"];
    for e in std::fs::read_dir("/").map_err(|e| err("/", e))?.flatten() {
        let name = e.file_name();
        let target = root.join(&name);
        let ft = e.file_type().map_err(|e| err("/", e))?;
        if ft.is_symlink() {
            let to = std::fs::read_link(e.path()).map_err(|e| err("readlink", e))?;
            std::os::unix::fs::symlink(to, &target).map_err(|e| err("symlink", e))?;
        } else if ft.is_dir() && !OWN.contains(&name.to_str().unwrap_or("")) {
            std::fs::create_dir(&target).map_err(|e| err("mkdir", e))?;
            mnt(
                Some(&e.path()),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
            )?;
            read_only_recursive(&target)?;
        }
    }
    for d in OWN {
        std::fs::create_dir_all(root.join(d)).map_err(|e| err(d, e))?;
    }
    mnt(
        Some(Path::new("/sys")),
        &at("/sys"),
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
    )?;
    read_only_recursive(&at("/sys"))?;
    // Container runtimes on the node make cgroups for what they run.
    if Path::new("/sys/fs/cgroup").is_dir() {
        mnt(
            Some(Path::new("/sys/fs/cgroup")),
            &at("/sys/fs/cgroup"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
        )?;
    }
    // Devices stay usable.
    mnt(
        Some(Path::new("/dev")),
        &at("/dev"),
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
    )?;
    for t in ["/run", "/system", "/tmp"] {
        mnt(
            Some(Path::new("tmpfs")),
            &at(t),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        )?;
    }
    // /etc is the host's, read-only, under a writable layer of the node's own (the CRI
    // configuration lives in /etc/cri).
    let layer = at("/system/overlays/etc");
    for d in ["upper", "work"] {
        std::fs::create_dir_all(layer.join(d)).map_err(|e| err("/system/overlays/etc", e))?;
    }
    let opts = format!(
        "lowerdir=/etc,upperdir={},workdir={}",
        layer.join("upper").display(),
        layer.join("work").display()
    );
    mount(
        Some("overlay"),
        &at("/etc"),
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| err("mount the /etc overlay", e))?;
    std::fs::create_dir_all(at(STATE_DIR)).map_err(|e| err(STATE_DIR, e))?;
    std::fs::create_dir_all(at("/system/secrets")).map_err(|e| err("/system/secrets", e))?;
    // This binary, wherever it lives on the host (even under /tmp, which the node hides): its
    // services and its reboots run it from here.
    let exe = std::env::current_exe().map_err(|e| err("own path", e))?;
    std::fs::create_dir_all(at("/system/bin")).map_err(|e| err("/system/bin", e))?;
    std::fs::write(at(SELF_EXE), "").map_err(|e| err(SELF_EXE, e))?;
    mnt(Some(&exe), &at(SELF_EXE), None, MsFlags::MS_BIND)?;
    // The node's resolver and hosts files, written by its network controllers.
    std::fs::create_dir_all(at("/system/etc")).map_err(|e| err("/system/etc", e))?;
    for f in ["resolv.conf", "hosts"] {
        let own = at(&format!("/system/etc/{f}"));
        std::fs::write(&own, "").map_err(|e| err(f, e))?;
        let target = at(&format!("/etc/{f}"));
        if target.is_file() {
            mnt(Some(&own), &target, None, MsFlags::MS_BIND)?;
        }
    }
    mnt(
        Some(&dir.join("state")),
        &at(STATE_DIR),
        None,
        MsFlags::MS_BIND,
    )?;
    mnt(Some(&dir.join("var")), &at("/var"), None, MsFlags::MS_BIND)?;
    mnt(
        Some(Path::new("proc")),
        &at("/proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
    )?;
    // The node's own kernel command line, as the provisioner wrote it (`ip=`, ...).
    let cmdline = dir.join("cmdline");
    if cmdline.is_file() {
        mnt(Some(&cmdline), &at("/proc/cmdline"), None, MsFlags::MS_BIND)?;
    }
    // The mountpoints are made: the root itself turns read-only too.
    mnt(
        None,
        &root,
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
    )?;
    std::env::set_current_dir(&root).map_err(|e| err("chdir", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| err("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| err("detach the old root", e))?;
    std::env::set_current_dir("/").map_err(|e| err("chdir /", e))?;
    Ok(())
}

/// `mount_setattr(AT_RECURSIVE, MOUNT_ATTR_RDONLY)`: the whole tree read-only, submounts too.
fn read_only_recursive(path: &Path) -> Result<(), String> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const AT_RECURSIVE: u32 = 0x8000;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let c =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| err("path", e))?;
    // SAFETY: valid path and attribute struct for the duration of the call.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_mount_setattr,
            nix::libc::AT_FDCWD,
            c.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(err("read-only root", std::io::Error::last_os_error()));
    }
    Ok(())
}
