//! The system disk as Talos lays it out: a GPT with the partitions EFI, BIOS, BOOT, META, STATE
//! and EPHEMERAL (found again by those names), their file systems, and a BIOS boot loader
//! (SYSLINUX's GPT boot code in the protective MBR, EXTLINUX on BOOT) that starts one of two
//! boot slots, `A` or `B`, each a kernel, an initramfs and a kernel command line.
//!
//! The same code makes a disk image (through a loop device, see [`Loop`]) and installs a
//! machine onto its disk. It uses the file system tools of Debian (`mkfs.vfat`, `mkfs.ext4`,
//! `mkfs.xfs`) and EXTLINUX; the image's root file system carries them at the same paths.

mod cpio;
pub mod luks;
pub mod meta;
pub mod tpm;
pub use cpio::Cpio;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub type Result<T> = std::result::Result<T, String>;

const MIB: u64 = 1 << 20;

/// The file system a partition gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fs {
    Vfat,
    Ext4,
    Xfs,
    /// Left raw (zeroed).
    None,
}

/// A partition of the layout.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    pub label: &'static str,
    /// Size in MiB; 0 takes the rest of the disk.
    pub mib: u64,
    pub fs: Fs,
}

pub const EFI: &str = "EFI";
pub const BIOS: &str = "BIOS";
pub const BOOT: &str = "BOOT";
pub const META: &str = "META";
pub const STATE: &str = "STATE";
pub const EPHEMERAL: &str = "EPHEMERAL";

/// Talos's layout, in order (partition N is `LAYOUT[N - 1]`).
pub const LAYOUT: [Part; 6] = [
    Part {
        label: EFI,
        mib: 100,
        fs: Fs::Vfat,
    },
    Part {
        label: BIOS,
        mib: 1,
        fs: Fs::None,
    },
    Part {
        label: BOOT,
        mib: 1000,
        fs: Fs::Ext4,
    },
    Part {
        label: META,
        mib: 1,
        fs: Fs::None,
    },
    Part {
        label: STATE,
        mib: 100,
        fs: Fs::Xfs,
    },
    Part {
        label: EPHEMERAL,
        mib: 0,
        fs: Fs::Xfs,
    },
];

/// The smallest EPHEMERAL the layout accepts (XFS wants 300 MiB).
const EPHEMERAL_MIN_MIB: u64 = 300;

/// The smallest disk the layout fits on, in MiB.
pub fn min_disk_mib() -> u64 {
    LAYOUT.iter().map(|p| p.mib).sum::<u64>() + EPHEMERAL_MIN_MIB + 2
}

/// SYSLINUX's boot code for GPT disks: it starts the partition marked legacy-BIOS bootable.
pub const GPT_MBR: &str = "/usr/lib/syslinux/mbr/gptmbr.bin";

/// Where an installer image (`imager installer`) carries what goes into a boot slot.
pub const INSTALLER_KERNEL: &str = "usr/install/amd64/vmlinuz";
pub const INSTALLER_INITRAMFS: &str = "usr/install/amd64/initramfs.img";

/// What a boot slot holds.
pub struct Boot<'a> {
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    pub cmdline: &'a str,
    /// The system extensions: a cpio archive the boot loader loads after the initramfs.
    pub extensions: Option<&'a Path>,
}

/// A boot slot's system extensions (beside its kernel and initramfs).
const EXTENSIONS: &str = "extensions.img";

/// The partition labelled `label` in the layout.
pub fn part(label: &str) -> Option<(usize, Part)> {
    LAYOUT
        .iter()
        .enumerate()
        .find(|(_, p)| p.label == label)
        .map(|(i, p)| (i + 1, *p))
}

/// The device of partition `n` of `disk` (`/dev/vda` → `/dev/vda3`, `/dev/loop0` → `/dev/loop0p3`).
pub fn part_path(disk: &Path, n: usize) -> PathBuf {
    let s = disk.to_string_lossy();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{s}p{n}"))
    } else {
        PathBuf::from(format!("{s}{n}"))
    }
}

/// Install onto `disk` (a block device, or an image file): partitions, file systems, boot
/// loader and boot slot A. Everything on it is lost.
pub fn install(disk: &Path, boot: &Boot) -> Result<()> {
    let ranges = partition(disk)?;
    let file = std::fs::metadata(disk)
        .map_err(|e| format!("{}: {e}", disk.display()))?
        .is_file();
    for (i, (p, (offset, len))) in LAYOUT.iter().zip(ranges).enumerate() {
        // An image's partitions are reached through loop devices over their ranges.
        let lo = match file {
            true => Some(Loop::attach(disk, true, offset, len)?),
            false => None,
        };
        let dev = lo
            .as_ref()
            .map(|l| l.dev.clone())
            .unwrap_or_else(|| part_path(disk, i + 1));
        format(&dev, p)?;
        if p.label == BOOT {
            write_slot(&dev, "A", boot, Start::Always)?;
        }
    }
    Ok(())
}

/// Write the protective MBR (with the boot code) and the GPT of the layout; a block device's
/// kernel is made to read the new partitions. Returns each partition's range (offset, length
/// in bytes).
pub fn partition(disk: &Path) -> Result<Vec<(u64, u64)>> {
    let e = |what: &str, err: &dyn std::fmt::Display| format!("{}: {what}: {err}", disk.display());
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(|err| e("open", &err))?;
    let size = f.seek(SeekFrom::End(0)).map_err(|err| e("size", &err))?;
    if size / MIB < min_disk_mib() {
        return Err(format!(
            "{} has {} MiB: Talos's partitions need at least {} MiB",
            disk.display(),
            size / MIB,
            min_disk_mib()
        ));
    }
    let mut code = [0u8; 440];
    File::open(GPT_MBR)
        .and_then(|mut m| m.read_exact(&mut code))
        .map_err(|err| format!("{GPT_MBR}: {err}"))?;
    let sectors = size / 512;
    let mut mbr =
        gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX));
    mbr.set_bootcode(code);
    mbr.overwrite_lba0(&mut f)
        .map_err(|err| e("write the MBR", &err))?;
    let mut gpt = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(f, None)
        .map_err(|err| e("make the GPT", &err))?;
    const ALIGN: u64 = MIB / 512;
    let mut ranges = Vec::new();
    for p in LAYOUT {
        let bytes = if p.mib > 0 {
            p.mib * MIB
        } else {
            // The rest: the last free run, from its first aligned sector.
            let (start, len) = gpt
                .find_free_sectors()
                .into_iter()
                .last()
                .ok_or_else(|| e("no room left", &p.label))?;
            let skip = (ALIGN - start % ALIGN) % ALIGN;
            (len - skip) / ALIGN * ALIGN * 512
        };
        // BOOT is the partition the boot code starts (legacy-BIOS bootable).
        let flags = if p.label == BOOT {
            gpt::partition::PartitionAttributes::BOOTABLE.bits()
        } else {
            0
        };
        let kind = match p.label {
            EFI => gpt::partition_types::EFI,
            BIOS => gpt::partition_types::BIOS,
            _ => gpt::partition_types::LINUX_FS,
        };
        let id = gpt
            .add_partition(p.label, bytes, kind, flags, Some(ALIGN))
            .map_err(|err| e(&format!("add {}", p.label), &err))?;
        let first = gpt.partitions()[&id].first_lba;
        ranges.push((first * 512, bytes));
    }
    let f = gpt.write().map_err(|err| e("write the GPT", &err))?;
    f.sync_all().map_err(|err| e("sync", &err))?;
    if !f.metadata().map_err(|err| e("stat", &err))?.is_file() {
        reread(disk, &f)?;
        // devtmpfs makes the partitions' nodes as the kernel finds them.
        let last = part_path(disk, LAYOUT.len());
        let until = Instant::now() + Duration::from_secs(10);
        while !last.exists() {
            if Instant::now() > until {
                return Err(format!(
                    "{}: the kernel did not show the new partitions ({} is missing)",
                    disk.display(),
                    last.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(ranges)
}

/// Have the kernel read the partition table again (BLKRRPART); busy for a moment after a
/// write, so tried for a while.
fn reread(disk: &Path, f: &File) -> Result<()> {
    const BLKRRPART: u64 = 0x125F;
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        // SAFETY: an argument-less ioctl on an open block device.
        if unsafe { nix::libc::ioctl(f.as_raw_fd(), BLKRRPART as _) } == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(nix::libc::EBUSY) || Instant::now() > until {
            return Err(format!(
                "{}: read the partition table again: {err}",
                disk.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// For a child between fork and exec (`pre_exec`): put the descriptors `fds` at 3, 4, ...,
/// inheritable, whatever numbers they have now (one may be another's target). Only
/// async-signal-safe calls, no allocation; at most 16 descriptors.
pub fn place_descriptors(fds: &[i32]) -> std::io::Result<()> {
    let mut high = [0i32; 16];
    if fds.len() > high.len() {
        return Err(std::io::Error::from_raw_os_error(nix::libc::EMFILE));
    }
    // Out of the way first (closed at exec), then in place (dup2 leaves the copy inheritable).
    for (h, fd) in high.iter_mut().zip(fds) {
        // SAFETY: fcntl on a descriptor number; a bad one is an error, not undefined behaviour.
        *h = unsafe { nix::libc::fcntl(*fd, nix::libc::F_DUPFD_CLOEXEC, 100) };
        if *h < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    for (i, h) in high[..fds.len()].iter().enumerate() {
        // SAFETY: as above.
        if unsafe { nix::libc::dup2(*h, 3 + i as i32) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// How commands are run and waited for (`Command::output` unless set otherwise).
pub type Runner = fn(&mut Command) -> std::io::Result<std::process::Output>;

static RUNNER: std::sync::OnceLock<Runner> = std::sync::OnceLock::new();

/// Run the tools through `runner`: a process that reaps every child itself (an init) waits
/// for them its own way.
pub fn set_runner(runner: Runner) {
    let _ = RUNNER.set(runner);
}

fn run(cmd: &mut Command) -> Result<()> {
    run_out(cmd).map(drop)
}

/// Run a tool; what it printed on success.
fn run_out(cmd: &mut Command) -> Result<Vec<u8>> {
    let runner = RUNNER.get().copied().unwrap_or(Command::output);
    let out = runner(cmd).map_err(|e| format!("{}: {e}", cmd.get_program().to_string_lossy()))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    Err(format!(
        "{} {}: {}{}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        // Up to a usage text the tool may add.
        String::from_utf8_lossy(&out.stderr)
            .split("Usage")
            .next()
            .unwrap_or_default()
            .trim(),
        if out.stderr.is_empty() {
            out.status.to_string()
        } else {
            String::new()
        }
    ))
}

/// Make `p`'s file system on `dev`, labelled with the partition's name (a raw partition is
/// zeroed).
pub fn format(dev: &Path, p: &Part) -> Result<()> {
    match p.fs {
        Fs::Vfat => run(Command::new("mkfs.vfat")
            .args(["-F", "32", "-n", p.label])
            .arg(dev)),
        // 32-bit block numbers: what EXTLINUX reads.
        Fs::Ext4 => run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "^64bit", "-L", p.label])
            .arg(dev)),
        // No discards (a sparse image or a fresh disk has nothing to discard); XFS refuses
        // under 300 MiB unless told (STATE is 100 MiB, as upstream's).
        Fs::Xfs => run(Command::new("mkfs.xfs")
            .args(["-q", "-f", "-K", "-L", p.label])
            .args((p.mib > 0 && p.mib < 300).then_some("--unsupported"))
            .arg(dev)),
        Fs::None => {
            let mut f = OpenOptions::new()
                .write(true)
                .open(dev)
                .map_err(|e| format!("{}: {e}", dev.display()))?;
            f.write_all(&vec![0u8; (p.mib * MIB) as usize])
                .and_then(|_| f.sync_all())
                .map_err(|e| format!("{}: {e}", dev.display()))
        }
    }
}

/// What a partition holds, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// Nothing: zeroed (a new or wiped partition).
    Empty,
    Xfs,
    Luks,
    Other,
}

/// What `dev` holds.
pub fn content(dev: &Path) -> Result<Content> {
    let mut head = [0u8; 4096];
    File::open(dev)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| format!("{}: {e}", dev.display()))?;
    Ok(if head.starts_with(b"XFSB") {
        Content::Xfs
    } else if head.starts_with(b"LUKS\xba\xbe") {
        Content::Luks
    } else if head.iter().all(|b| *b == 0) {
        Content::Empty
    } else {
        Content::Other
    })
}

/// Make a partition empty: its first 16 MiB, where file systems and LUKS keep their headers,
/// zeroed.
pub fn erase(dev: &Path) -> Result<()> {
    let e = |err: std::io::Error| format!("erase {}: {err}", dev.display());
    let mut f = OpenOptions::new().write(true).open(dev).map_err(e)?;
    let size = f.seek(SeekFrom::End(0)).map_err(e)?;
    f.seek(SeekFrom::Start(0)).map_err(e)?;
    let zeros = vec![0u8; MIB as usize];
    for _ in 0..(size / MIB).min(16) {
        f.write_all(&zeros).map_err(e)?;
    }
    f.sync_all().map_err(e)
}

/// A file system mounted on a directory of its own for as long as this lives (synced and
/// unmounted when dropped).
pub struct Mounted(PathBuf);

impl Mounted {
    pub fn new(dev: &Path, fstype: &str) -> Result<Mounted> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "talos-{}-{}-{}",
            fstype,
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        nix::mount::mount(
            Some(dev),
            &dir,
            Some(fstype),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| {
            let _ = std::fs::remove_dir(&dir);
            format!("mount {} ({fstype}): {e}", dev.display())
        })?;
        Ok(Mounted(dir))
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        nix::unistd::sync();
        let _ = nix::mount::umount(&self.0);
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The boot loader's menu: every slot on BOOT, `default` first.
fn menu(root: &Path, default: &str) -> String {
    let mut text = format!("DEFAULT {default}\nPROMPT 0\nTIMEOUT 0\n");
    for slot in ["A", "B"] {
        let Ok(cmdline) = std::fs::read_to_string(root.join(slot).join("cmdline")) else {
            continue;
        };
        let extensions = if root.join(slot).join(EXTENSIONS).exists() {
            format!(",/{slot}/{EXTENSIONS}")
        } else {
            String::new()
        };
        text.push_str(&format!(
            "\nLABEL {slot}\n  KERNEL /{slot}/vmlinuz\n  INITRD /{slot}/initramfs.img{extensions}\n  APPEND {}\n",
            cmdline.trim()
        ));
    }
    text
}

/// The boot slots.
pub const SLOTS: [&str; 2] = ["A", "B"];

/// The slot a kernel command line was booted from (`BOOT_IMAGE=/B/vmlinuz`, as EXTLINUX puts
/// it); none when the kernel was not started from the disk.
pub fn booted_slot(cmdline: &str) -> Option<&'static str> {
    let image = cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("BOOT_IMAGE="))?;
    SLOTS
        .into_iter()
        .find(|s| image.trim_start_matches('/').starts_with(&format!("{s}/")))
}

/// The slot that is not `slot`.
pub fn other_slot(slot: &str) -> &'static str {
    if slot == "A" {
        "B"
    } else {
        "A"
    }
}

/// How a slot just written is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At every boot from now on (the menu's default).
    Always,
    /// At the next boot only (EXTLINUX's boot-once, which its loader clears as it starts the
    /// slot); later boots start the default again unless the slot is made the default.
    Once,
}

/// The menu's default slot on the mounted BOOT file system at `root`.
fn default_in(root: &Path) -> Result<String> {
    let conf = root.join("extlinux.conf");
    let text = std::fs::read_to_string(&conf).map_err(|e| format!("{}: {e}", conf.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("DEFAULT "))
        .map(|d| d.trim().to_string())
        .ok_or_else(|| format!("{}: no DEFAULT slot", conf.display()))
}

/// Rewrite the menu with `slot` as its default.
fn set_default_in(root: &Path, slot: &str) -> Result<()> {
    machinery::fsutil::write_atomic(
        &root.join("extlinux.conf"),
        menu(root, slot).as_bytes(),
        0o644,
    )
    .map_err(|err| err.to_string())
}

/// Put `boot` in `slot` (`A` or `B`) of the BOOT partition `dev`, (re)install EXTLINUX and
/// start the slot as `start` says.
pub fn write_slot(dev: &Path, slot: &str, boot: &Boot, start: Start) -> Result<()> {
    let m = Mounted::new(dev, "ext4")?;
    let dir = m.0.join(slot);
    let e = |p: &Path, err: std::io::Error| format!("{}: {err}", p.display());
    // A slot half written is never started: its command line, which the menu needs, goes last.
    let _ = std::fs::remove_file(dir.join("cmdline"));
    std::fs::create_dir_all(&dir).map_err(|err| e(&dir, err))?;
    for (from, name) in [(boot.kernel, "vmlinuz"), (boot.initramfs, "initramfs.img")] {
        std::fs::copy(from, dir.join(name)).map_err(|err| e(from, err))?;
    }
    match boot.extensions {
        Some(from) => std::fs::copy(from, dir.join(EXTENSIONS))
            .map(drop)
            .map_err(|err| e(from, err))?,
        None => match std::fs::remove_file(dir.join(EXTENSIONS)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(e(&dir.join(EXTENSIONS), err))
            }
            _ => {}
        },
    }
    machinery::fsutil::write_atomic(&dir.join("cmdline"), boot.cmdline.as_bytes(), 0o644)
        .map_err(|err| format!("{}: {err}", dir.display()))?;
    let default = match start {
        Start::Always => slot.to_string(),
        Start::Once => default_in(&m.0)?,
    };
    set_default_in(&m.0, &default)?;
    run(Command::new("extlinux").arg("--install").arg(&m.0))?;
    if start == Start::Once {
        run(Command::new("extlinux")
            .arg(format!("--once={slot}"))
            .arg(&m.0))?;
    }
    Ok(())
}

/// The default slot of the BOOT partition `dev`.
pub fn default_slot(dev: &Path) -> Result<String> {
    default_in(Mounted::new(dev, "ext4")?.path())
}

/// Make `slot` of the BOOT partition `dev` the default; it must hold a system.
pub fn set_default(dev: &Path, slot: &str) -> Result<()> {
    let m = Mounted::new(dev, "ext4")?;
    if !m.0.join(slot).join("cmdline").exists() {
        return Err(format!("boot slot {slot} holds no system"));
    }
    set_default_in(&m.0, slot)
}

/// The device of the partition named `label` on any disk (the name GPT gives it).
pub fn find(label: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/sys/class/block")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let uevent = std::fs::read_to_string(e.path().join("uevent")).ok()?;
            let field = |k: &str| {
                uevent
                    .lines()
                    .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                    .map(str::to_string)
            };
            if field("PARTNAME")? != label {
                return None;
            }
            Some(PathBuf::from("/dev").join(field("DEVNAME")?))
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// The names of the partitions in the GPT of `disk` (a device or an image file, read without
/// the kernel's help); none when it has no GPT.
pub fn labels(disk: &Path) -> Vec<String> {
    gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .open(disk)
        .map(|g| g.partitions().values().map(|p| p.name.clone()).collect())
        .unwrap_or_default()
}

/// A file (or a range of it) attached to a loop device; detached when dropped (unless kept).
pub struct Loop {
    pub dev: PathBuf,
    file: File,
}

impl Loop {
    /// Attach `len` bytes of `path` from `offset` (0: to its end) to a free loop device.
    pub fn attach(path: &Path, writable: bool, offset: u64, len: u64) -> Result<Loop> {
        const LOOP_CTL_GET_FREE: u64 = 0x4C82;
        const LOOP_SET_FD: u64 = 0x4C00;
        const LOOP_SET_STATUS64: u64 = 0x4C04;
        let e = |what: &str, err: std::io::Error| {
            format!("loop device for {}: {what}: {err}", path.display())
        };
        let backing = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|err| e("open", err))?;
        let ctl = File::open("/dev/loop-control").map_err(|err| e("/dev/loop-control", err))?;
        // Another process may take the free device first: try again.
        for _ in 0..20 {
            // SAFETY: an ioctl without arguments on the loop control device.
            let n = unsafe { nix::libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
            if n < 0 {
                return Err(e("a free device", std::io::Error::last_os_error()));
            }
            let dev = PathBuf::from(format!("/dev/loop{n}"));
            let file = OpenOptions::new()
                .read(true)
                .write(writable)
                .open(&dev)
                .map_err(|err| e(&dev.to_string_lossy(), err))?;
            // SAFETY: the loop device takes the backing descriptor.
            let rc = unsafe {
                nix::libc::ioctl(file.as_raw_fd(), LOOP_SET_FD as _, backing.as_raw_fd())
            };
            if rc < 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() == Some(nix::libc::EBUSY) {
                    continue;
                }
                return Err(e(&dev.to_string_lossy(), err));
            }
            let lo = Loop { dev, file };
            if offset != 0 || len != 0 {
                // struct loop_info64 (232 bytes): lo_offset at 24, lo_sizelimit at 32.
                let mut info = [0u8; 232];
                info[24..32].copy_from_slice(&offset.to_ne_bytes());
                info[32..40].copy_from_slice(&len.to_ne_bytes());
                // SAFETY: a loop_info64-sized buffer the kernel reads.
                let rc = unsafe {
                    nix::libc::ioctl(lo.file.as_raw_fd(), LOOP_SET_STATUS64 as _, info.as_ptr())
                };
                if rc < 0 {
                    return Err(e("set its range", std::io::Error::last_os_error()));
                }
            }
            return Ok(lo);
        }
        Err(format!(
            "loop device for {}: every free device was taken by another process",
            path.display()
        ))
    }

    /// Leave the device attached for good (the root file system of a machine).
    pub fn keep(self) -> PathBuf {
        let dev = self.dev.clone();
        std::mem::forget(self);
        dev
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        const LOOP_CLR_FD: u64 = 0x4C01;
        // SAFETY: an argument-less ioctl on the open loop device.
        unsafe { nix::libc::ioctl(self.file.as_raw_fd(), LOOP_CLR_FD as _) };
    }
}

/// Make a disk image of `mib` MiB at `out` (sparse), installed with `boot` in slot A.
pub fn image(out: &Path, mib: u64, boot: &Boot) -> Result<()> {
    let f = File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    f.set_len(mib * MIB)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    drop(f);
    install(out, boot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_named_like_the_kernel_names_them() {
        assert_eq!(part_path(Path::new("/dev/vda"), 3), Path::new("/dev/vda3"));
        assert_eq!(
            part_path(Path::new("/dev/nvme0n1"), 5),
            Path::new("/dev/nvme0n1p5")
        );
        assert_eq!(
            part_path(Path::new("/dev/loop7"), 1),
            Path::new("/dev/loop7p1")
        );
        assert_eq!(part(STATE).map(|(n, _)| n), Some(5));
    }

    #[test]
    fn the_booted_slot_comes_from_the_boot_loaders_argument() {
        assert_eq!(
            booted_slot("BOOT_IMAGE=/B/vmlinuz console=ttyS0"),
            Some("B")
        );
        assert_eq!(
            booted_slot("console=ttyS0 BOOT_IMAGE=/A/vmlinuz"),
            Some("A")
        );
        assert_eq!(booted_slot("console=ttyS0 talos.config=http://x"), None);
        assert_eq!(booted_slot("BOOT_IMAGE=/vmlinuz"), None);
        assert_eq!(other_slot("A"), "B");
        assert_eq!(other_slot("B"), "A");
    }

    #[test]
    fn the_default_is_read_back_and_changed_only_to_a_slot_with_a_system() {
        let dir = std::env::temp_dir().join(format!("disk-default-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("A")).unwrap();
        std::fs::write(dir.join("A").join("cmdline"), "console=ttyS0").unwrap();
        set_default_in(&dir, "A").unwrap();
        assert_eq!(default_in(&dir).unwrap(), "A");
        std::fs::create_dir_all(dir.join("B")).unwrap();
        std::fs::write(dir.join("B").join("cmdline"), "console=ttyS0 x=1").unwrap();
        set_default_in(&dir, "B").unwrap();
        assert_eq!(default_in(&dir).unwrap(), "B");
        std::fs::write(dir.join("extlinux.conf"), "PROMPT 0\n").unwrap();
        assert!(default_in(&dir).unwrap_err().contains("no DEFAULT slot"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_menu_lists_the_slots_with_the_default_first() {
        let dir = std::env::temp_dir().join(format!("disk-menu-{}", std::process::id()));
        for (slot, args) in [("A", "console=ttyS0"), ("B", "console=ttyS0 x=1")] {
            std::fs::create_dir_all(dir.join(slot)).unwrap();
            std::fs::write(dir.join(slot).join("cmdline"), args).unwrap();
        }
        let m = menu(&dir, "B");
        assert!(m.starts_with("DEFAULT B\n"), "{m}");
        assert!(m.contains(
            "LABEL A\n  KERNEL /A/vmlinuz\n  INITRD /A/initramfs.img\n  APPEND console=ttyS0\n"
        ));
        assert!(m.contains("APPEND console=ttyS0 x=1\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
