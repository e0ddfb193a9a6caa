//! The node's own view of itself: memory, mounts, files (list, read).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use api::common::Data;
use api::machine::{FileInfo, MemInfo, Memory, MemoryResponse, MountStat, Mounts, MountsResponse};
use tonic::Status;

use super::services::DataStream;

pub fn memory() -> Result<MemoryResponse, Status> {
    let text =
        std::fs::read_to_string("/proc/meminfo").map_err(|e| Status::internal(e.to_string()))?;
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(MemoryResponse {
        messages: vec![Memory {
            metadata: None,
            meminfo: Some(MemInfo {
                memtotal: get("MemTotal"),
                memfree: get("MemFree"),
                memavailable: get("MemAvailable"),
                buffers: get("Buffers"),
                cached: get("Cached"),
                swapcached: get("SwapCached"),
                active: get("Active"),
                inactive: get("Inactive"),
                activeanon: get("Active(anon)"),
                inactiveanon: get("Inactive(anon)"),
                activefile: get("Active(file)"),
                inactivefile: get("Inactive(file)"),
                unevictable: get("Unevictable"),
                mlocked: get("Mlocked"),
                swaptotal: get("SwapTotal"),
                swapfree: get("SwapFree"),
                dirty: get("Dirty"),
                writeback: get("Writeback"),
                anonpages: get("AnonPages"),
                mapped: get("Mapped"),
                shmem: get("Shmem"),
                slab: get("Slab"),
                sreclaimable: get("SReclaimable"),
                sunreclaim: get("SUnreclaim"),
                kernelstack: get("KernelStack"),
                pagetables: get("PageTables"),
                nfsunstable: get("NFS_Unstable"),
                bounce: get("Bounce"),
                writebacktmp: get("WritebackTmp"),
                commitlimit: get("CommitLimit"),
                committedas: get("Committed_AS"),
                vmalloctotal: get("VmallocTotal"),
                vmallocused: get("VmallocUsed"),
                vmallocchunk: get("VmallocChunk"),
                hardwarecorrupted: get("HardwareCorrupted"),
                anonhugepages: get("AnonHugePages"),
                shmemhugepages: get("ShmemHugePages"),
                shmempmdmapped: get("ShmemPmdMapped"),
                cmatotal: get("CmaTotal"),
                cmafree: get("CmaFree"),
                hugepagestotal: get("HugePages_Total"),
                hugepagesfree: get("HugePages_Free"),
                hugepagesrsvd: get("HugePages_Rsvd"),
                hugepagessurp: get("HugePages_Surp"),
                hugepagesize: get("Hugepagesize"),
                directmap4k: get("DirectMap4k"),
                directmap2m: get("DirectMap2M"),
                directmap1g: get("DirectMap1G"),
            }),
        }],
    })
}

pub fn mounts() -> Result<MountsResponse, Status> {
    let text = std::fs::read_to_string("/proc/self/mounts")
        .map_err(|e| Status::internal(e.to_string()))?;
    let mut stats = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(fs), Some(on)) = (f.next(), f.next()) else {
            continue;
        };
        let on = on.replace("\\040", " ");
        let Ok(st) = nix::sys::statvfs::statvfs(Path::new(&on)) else {
            continue;
        };
        let block = st.fragment_size();
        stats.push(MountStat {
            filesystem: fs.to_string(),
            size: st.blocks() * block,
            available: st.blocks_available() * block,
            mounted_on: on,
        });
    }
    Ok(MountsResponse {
        messages: vec![Mounts {
            metadata: None,
            stats,
        }],
    })
}

/// A file's contents, in chunks.
pub fn read(path: &str) -> Result<DataStream, Status> {
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        return Err(Status::invalid_argument(format!(
            "\"{path}\" is not an absolute path"
        )));
    }
    let meta = std::fs::metadata(&p).map_err(|e| Status::not_found(format!("{path}: {e}")))?;
    if meta.is_dir() {
        return Err(Status::invalid_argument(format!("{path} is a directory")));
    }
    let bytes = std::fs::read(&p).map_err(|e| Status::permission_denied(format!("{path}: {e}")))?;
    let chunks: Vec<Result<Data, Status>> = bytes
        .chunks(64 * 1024)
        .map(|c| {
            Ok(Data {
                metadata: None,
                bytes: c.to_vec(),
            })
        })
        .collect();
    Ok(Box::pin(futures::stream::iter(chunks)))
}

fn info(path: &Path, root: &Path) -> FileInfo {
    let rel = path
        .strip_prefix(root)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let rel = if rel.is_empty() { ".".to_string() } else { rel };
    match std::fs::symlink_metadata(path) {
        Ok(m) => FileInfo {
            metadata: None,
            name: path.display().to_string(),
            size: m.len() as i64,
            mode: m.mode(),
            modified: m.mtime(),
            is_dir: m.is_dir(),
            error: String::new(),
            link: std::fs::read_link(path)
                .map(|l| l.display().to_string())
                .unwrap_or_default(),
            relative_name: rel,
            uid: m.uid(),
            gid: m.gid(),
        },
        Err(e) => FileInfo {
            name: path.display().to_string(),
            relative_name: rel,
            error: e.to_string(),
            ..Default::default()
        },
    }
}

/// Entries of a directory (the root itself first), depth-first in name order, down to `depth`
/// levels when recursing (no limit when `depth` is not positive).
pub fn list(root: &str, recurse: bool, depth: i32) -> Result<Vec<FileInfo>, Status> {
    let root = PathBuf::from(if root.is_empty() { "/" } else { root });
    if !root.is_absolute() {
        return Err(Status::invalid_argument(format!(
            "\"{}\" is not an absolute path",
            root.display()
        )));
    }
    if !root.exists() {
        return Err(Status::not_found(format!(
            "{}: no such file or directory",
            root.display()
        )));
    }
    let max = match (recurse, depth) {
        (false, _) => 1,
        (true, d) if d > 0 => d as usize,
        (true, _) => usize::MAX,
    };
    fn walk(dir: &Path, root: &Path, level: usize, max: usize, out: &mut Vec<FileInfo>) {
        if level >= max {
            return;
        }
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for e in entries {
            out.push(info(&e, root));
            if e.is_dir() && !e.is_symlink() {
                walk(&e, root, level + 1, max, out);
            }
        }
    }
    let mut out = vec![info(&root, &root)];
    if root.is_dir() {
        walk(&root, &root, 0, max, &mut out);
    }
    Ok(out)
}

/// Every process the node sees (its own PID namespace in container mode).
pub fn processes() -> Vec<api::machine::ProcessInfo> {
    let page = 4096u64;
    let ticks = 100.0;
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let dir = e.path();
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // comm is in parentheses and may hold spaces: split after the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let command = head
            .split_once('(')
            .map(|x| x.1)
            .unwrap_or_default()
            .to_string();
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let args = String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .trim()
            .to_string();
        out.push(api::machine::ProcessInfo {
            pid,
            ppid: num(1) as i32,
            state: f.first().unwrap_or(&"?").to_string(),
            threads: num(17) as i32,
            cpu_time: (num(11) + num(12)) as f64 / ticks,
            virtual_memory: num(20),
            resident_memory: num(21) * page,
            command,
            executable: std::fs::read_link(dir.join("exe"))
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            args,
            label: String::new(),
        });
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// The kernel log (`/dev/kmsg`): what is there now, then, when following, new messages.
pub fn dmesg(follow: bool) -> Result<DataStream, Status> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open("/dev/kmsg")
        .map_err(|e| Status::unavailable(format!("/dev/kmsg: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Data, Status>>(64);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 8192];
        loop {
            match f.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let line = kmsg_line(&buf[..n]);
                    if tx
                        .blocking_send(Ok(Data {
                            metadata: None,
                            bytes: line,
                        }))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) if e.raw_os_error() == Some(32) => continue, // EPIPE: overwritten records
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && follow => {
                    if tx.is_closed() {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                _ => return,
            }
        }
    });
    Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    })))
}

/// `prio,seq,usec,flags;message` → `[   12.345678]: message\n`.
fn kmsg_line(record: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(record);
    let (meta, msg) = text.split_once(';').unwrap_or(("", &text));
    let usec: u64 = meta
        .split(',')
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let msg = msg.lines().next().unwrap_or_default();
    format!("[{:>5}.{:06}]: {msg}\n", usec / 1_000_000, usec % 1_000_000).into_bytes()
}

/// A file or directory as a gzipped tar stream (built on a thread, sent in chunks).
pub fn copy(root: &str) -> Result<DataStream, Status> {
    let path = PathBuf::from(root);
    if !path.is_absolute() {
        return Err(Status::invalid_argument(format!(
            "\"{root}\" is not an absolute path"
        )));
    }
    let meta =
        std::fs::symlink_metadata(&path).map_err(|e| Status::not_found(format!("{root}: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Data, Status>>(16);
    struct Sender(tokio::sync::mpsc::Sender<Result<Data, Status>>);
    impl std::io::Write for Sender {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .blocking_send(Ok(Data {
                    metadata: None,
                    bytes: buf.to_vec(),
                }))
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "receiver gone")
                })?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    std::thread::spawn(move || {
        let errors = tx.clone();
        let gz = flate2::write::GzEncoder::new(
            std::io::BufWriter::with_capacity(64 * 1024, Sender(tx)),
            flate2::Compression::fast(),
        );
        let mut archive = tar::Builder::new(gz);
        archive.follow_symlinks(false);
        let name = path
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let result = if meta.is_dir() {
            archive.append_dir_all(&name, &path)
        } else {
            archive.append_path_with_name(&path, &name)
        }
        .and_then(|_| archive.into_inner())
        .and_then(|gz| gz.finish())
        .and_then(|mut w| std::io::Write::flush(&mut w));
        if let Err(e) = result {
            let _ = errors.blocking_send(Err(Status::internal(format!("copy: {e}"))));
        }
    });
    Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    })))
}

fn size_of(path: &Path) -> u64 {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            std::fs::read_dir(path)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| size_of(&e.path()))
                .sum::<u64>()
                + m.len()
        }
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// Sizes of the given paths and, down to `depth` levels, of what they hold.
pub fn disk_usage(
    paths: &[String],
    depth: i32,
    all: bool,
    threshold: i64,
) -> Vec<api::machine::DiskUsageInfo> {
    fn keep(size: u64, threshold: i64) -> bool {
        match threshold {
            t if t > 0 => size >= t as u64,
            t if t < 0 => size <= (-t) as u64,
            _ => true,
        }
    }
    fn walk(
        p: &Path,
        root: &Path,
        level: i32,
        depth: i32,
        all: bool,
        threshold: i64,
        out: &mut Vec<api::machine::DiskUsageInfo>,
    ) {
        let is_dir = p.is_dir() && !p.is_symlink();
        if is_dir && level < depth {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect();
            entries.sort();
            for e in entries {
                walk(&e, root, level + 1, depth, all, threshold, out);
            }
        }
        if level > 0 && !is_dir && !all {
            return;
        }
        let size = size_of(p);
        if keep(size, threshold) {
            let rel = p
                .strip_prefix(root)
                .map(|r| r.display().to_string())
                .unwrap_or_default();
            out.push(api::machine::DiskUsageInfo {
                metadata: None,
                name: p.display().to_string(),
                size: size as i64,
                error: String::new(),
                relative_name: if rel.is_empty() { ".".into() } else { rel },
            });
        }
    }
    let mut out = Vec::new();
    for root in paths {
        let p = PathBuf::from(root);
        if !p.exists() {
            out.push(api::machine::DiskUsageInfo {
                name: root.clone(),
                error: format!("{root}: no such file or directory"),
                ..Default::default()
            });
            continue;
        }
        walk(&p, &p, 0, depth.max(0), all, threshold, &mut out);
    }
    out
}

pub fn load_avg() -> Result<api::machine::LoadAvgResponse, Status> {
    let text =
        std::fs::read_to_string("/proc/loadavg").map_err(|e| Status::internal(e.to_string()))?;
    let f: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0.0);
    Ok(api::machine::LoadAvgResponse {
        messages: vec![api::machine::LoadAvg {
            metadata: None,
            load1: get(0),
            load5: get(1),
            load15: get(2),
        }],
    })
}

pub fn cpu_info() -> Result<api::machine::CpuInfoResponse, Status> {
    let text =
        std::fs::read_to_string("/proc/cpuinfo").map_err(|e| Status::internal(e.to_string()))?;
    let cpus = text
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let get = |key: &str| {
                block
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        (k.trim() == key).then(|| v.trim().to_string())
                    })
                    .unwrap_or_default()
            };
            let list = |key: &str| get(key).split_whitespace().map(String::from).collect();
            api::machine::CpuInfo {
                processor: get("processor").parse().unwrap_or(0),
                vendor_id: get("vendor_id"),
                cpu_family: get("cpu family"),
                model: get("model"),
                model_name: get("model name"),
                stepping: get("stepping"),
                microcode: get("microcode"),
                cpu_mhz: get("cpu MHz").parse().unwrap_or(0.0),
                cache_size: get("cache size"),
                physical_id: get("physical id"),
                siblings: get("siblings").parse().unwrap_or(0),
                core_id: get("core id"),
                cpu_cores: get("cpu cores").parse().unwrap_or(0),
                flags: list("flags"),
                bugs: list("bugs"),
                bogo_mips: get("bogomips").parse().unwrap_or(0.0),
                address_sizes: get("address sizes"),
            }
        })
        .collect();
    Ok(api::machine::CpuInfoResponse {
        messages: vec![api::machine::CpUsInfo {
            metadata: None,
            cpu_info: cpus,
        }],
    })
}

/// The node's own services as the system namespace's containers (they run as processes).
pub fn service_containers(
    services: &crate::services::supervisor::Supervisor,
) -> Vec<api::machine::ContainerInfo> {
    services
        .list()
        .into_iter()
        .map(|s| api::machine::ContainerInfo {
            namespace: crate::sys::cri::SYSTEM_NS.into(),
            id: s.id.clone(),
            internal_id: s.id.clone(),
            image: String::new(),
            pid: s.pid.unwrap_or(0),
            status: if s.pid.is_some() {
                "RUNNING"
            } else {
                "STOPPED"
            }
            .into(),
            name: s.id,
            ..Default::default()
        })
        .collect()
}

/// Memory (resident bytes) and CPU time (nanoseconds) of a process, from /proc.
fn process_usage(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as u64;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split(' ').nth(1)?.parse().ok()?;
    // SAFETY: as above.
    let page = unsafe { nix::libc::sysconf(nix::libc::_SC_PAGESIZE) }.max(1) as u64;
    Some((pages * page, ticks * 1_000_000_000 / hz))
}

/// Stats of the system services (namespace "system"; the CRI's are asked of the CRI).
pub fn stats(
    services: &crate::services::supervisor::Supervisor,
    namespace: &str,
) -> api::machine::StatsResponse {
    let stats = if namespace == "system" {
        services
            .list()
            .into_iter()
            .filter_map(|s| {
                let (memory_usage, cpu_usage) = process_usage(s.pid?)?;
                Some(api::machine::Stat {
                    namespace: namespace.into(),
                    id: s.id.clone(),
                    memory_usage,
                    cpu_usage,
                    pod_id: String::new(),
                    name: s.id,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    api::machine::StatsResponse {
        messages: vec![api::machine::Stats {
            metadata: None,
            stats,
        }],
    }
}

/// This build's version information.
pub fn version_info() -> api::machine::VersionInfo {
    api::machine::VersionInfo {
        tag: crate::node::TAG.into(),
        sha: option_env!("TALOS_SHA").unwrap_or("unknown").into(),
        built: String::new(),
        go_version: "rust".into(),
        os: std::env::consts::OS.into(),
        arch: match std::env::consts::ARCH {
            "x86_64" => "amd64".into(),
            "aarch64" => "arm64".into(),
            other => other.into(),
        },
    }
}
