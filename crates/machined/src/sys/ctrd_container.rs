//! Service containers of the system containerd: made from an image (`sys::ctrd`), with the
//! mounts, capabilities and cgroup limits a service needs, its output through FIFOs into the
//! service's log like any other service.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use containerd_client::services::v1 as ctrd;
use containerd_client::services::v1::snapshots as snap;
use machinery::cri::Registries;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::sys::cri::{channel, SYSTEM_SOCKET};
use crate::sys::Task;

use crate::sys::ctrd::{local_image, pull, request, SNAPSHOTTER};

/// Where a container's output FIFOs live.
const FIFO_DIR: &str = "/system/run/containers";

/// A bind mount into a service container.
#[derive(Debug, Clone)]
pub struct Bind {
    pub source: PathBuf,
    pub destination: PathBuf,
    pub writable: bool,
}

/// A mount of any type into a service container, with its own options.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    pub kind: String,
    pub source: PathBuf,
    pub destination: PathBuf,
    pub options: Vec<String>,
}

/// How a service runs as a container.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub id: String,
    pub image: String,
    pub binds: Vec<Bind>,
    /// Mounts after the binds (type and options as given).
    pub mounts: Vec<Mount>,
    /// Capabilities kept (all others are dropped); ignored when privileged.
    pub capabilities: Vec<String>,
    pub pids_limit: i64,
    /// CPU shares relative to other services (1024 is the default).
    pub cpu_shares: u64,
    /// Memory limit in bytes; 0 for none.
    pub memory_limit: i64,
    /// Share the node's PID namespace (its network it always shares).
    pub host_pid: bool,
    /// Every capability and device, nothing masked, sysfs writable: what the kubelet needs
    /// to manage the node's pods.
    pub privileged: bool,
    pub oom_score_adj: Option<i32>,
    /// Environment beyond the image's.
    pub env: Vec<String>,
    /// The cgroup under the node's (`system/<id>` when empty).
    pub cgroup: String,
}

/// Every capability a process may be granted (Linux 5.9+).
const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The cgroup machined itself runs in (the node's, in container mode), where service
/// containers go under `system/`.
fn own_cgroup() -> String {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| *p != "/")
        .or_else(|| {
            text.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
                ctrls.split(',').any(|c| c == "memory").then_some(path)
            })
        })
        .unwrap_or("/");
    path.trim_end_matches('/').to_string()
}

/// The OCI runtime spec of a service container: its own mount, PID and IPC namespaces, the
/// node's network and hostname, a read-only root.
pub fn runtime_spec(spec: &ContainerSpec, args: &[String], env: &[String]) -> serde_json::Value {
    use serde_json::json;
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if spec.privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}),
    ];
    for b in &spec.binds {
        mounts.push(json!({
            "destination": b.destination,
            "type": "bind",
            "source": b.source,
            "options": ["rbind", "nosuid", "nodev", if b.writable { "rw" } else { "ro" }],
        }));
    }
    for m in &spec.mounts {
        mounts.push(json!({
            "destination": m.destination,
            "type": m.kind,
            "source": m.source,
            "options": m.options,
        }));
    }
    let caps: Vec<&str> = if spec.privileged {
        // All the node may grant: a capability outside machined's own bounding set cannot be.
        let bounding = own_bounding_set();
        ALL_CAPABILITIES
            .iter()
            .enumerate()
            .filter(|(bit, _)| bounding & (1 << bit) != 0)
            .map(|(_, c)| *c)
            .collect()
    } else {
        spec.capabilities.iter().map(String::as_str).collect()
    };
    // As many open files as the node may have (raising it needs CAP_SYS_RESOURCE).
    let mut limit = nix::libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let nofile = if unsafe { nix::libc::getrlimit(nix::libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_max
    } else {
        1024
    };
    let mut resources = json!({
        "devices": [{"allow": spec.privileged, "access": "rwm"}],
        "pids": {"limit": spec.pids_limit},
        "cpu": {"shares": spec.cpu_shares},
    });
    if spec.memory_limit > 0 {
        resources["memory"] = json!({"limit": spec.memory_limit});
    }
    let mut namespaces = vec![json!({"type": "ipc"}), json!({"type": "mount"})];
    if !spec.host_pid {
        namespaces.insert(0, json!({"type": "pid"}));
    }
    let cgroup = match spec.cgroup.as_str() {
        "" => format!("system/{}", spec.id),
        c => c.to_string(),
    };
    let mut s = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": env,
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": !spec.privileged,
        },
        "root": {"path": "rootfs", "readonly": true},
        "mounts": mounts,
        "linux": {
            "cgroupsPath": format!("{}/{cgroup}", own_cgroup()),
            "resources": resources,
            "namespaces": namespaces,
        },
    });
    if spec.privileged {
        // Mounts made for pods must reach the node, and the node's the kubelet.
        s["linux"]["rootfsPropagation"] = json!("shared");
    } else {
        s["linux"]["maskedPaths"] = json!([
            "/proc/acpi",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware"
        ]);
        s["linux"]["readonlyPaths"] = json!([
            "/proc/asound",
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger"
        ]);
    }
    s
}

/// The capabilities this process may pass on (CapBnd of /proc/self/status).
fn own_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Give a started container's process its OOM score adjustment. Lowering it needs
/// CAP_SYS_RESOURCE, which a node in a container may lack: then it keeps the default, said.
fn adjust_oom_score(id: &str, pid: u32, adj: i32) {
    let path = format!("/proc/{pid}/oom_score_adj");
    if let Err(e) = std::fs::write(&path, adj.to_string()) {
        tracing::warn!(container = id, error = %e, "cannot set the OOM score adjustment {adj}");
    }
}

/// Remove what a previous run of a container left (task, container, snapshot).
async fn remove_container(ch: &Channel, id: &str) {
    let mut tasks = ctrd::tasks_client::TasksClient::new(ch.clone());
    let _ = tasks
        .kill(request(
            ctrd::KillRequest {
                container_id: id.into(),
                exec_id: String::new(),
                signal: 9,
                all: true,
            },
            None,
        ))
        .await;
    let _ = tasks
        .wait(request(
            ctrd::WaitRequest {
                container_id: id.into(),
                exec_id: String::new(),
            },
            None,
        ))
        .await;
    let _ = tasks
        .delete(request(
            ctrd::DeleteTaskRequest {
                container_id: id.into(),
            },
            None,
        ))
        .await;
    let _ = ctrd::containers_client::ContainersClient::new(ch.clone())
        .delete(request(
            ctrd::DeleteContainerRequest { id: id.into() },
            None,
        ))
        .await;
    let _ = snap::snapshots_client::SnapshotsClient::new(ch.clone())
        .remove(request(
            snap::RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.into(),
            },
            None,
        ))
        .await;
    let _ = std::fs::remove_dir_all(Path::new(FIFO_DIR).join(id));
}

fn fifo(path: &Path) -> Result<tokio::net::unix::pipe::Receiver, String> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // Read-write: opening never waits for the writer, and the shim's end may come and go.
    tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub async fn start_container(
    spec: &ContainerSpec,
    argv: &[String],
    registries: Registries,
) -> Result<Task, Status> {
    let ch = channel(SYSTEM_SOCKET).await?;
    let (config, top) = match local_image(&ch, &spec.image).await {
        Ok(found) => found,
        Err(s) if s.code() == Code::NotFound => {
            let name = pull(registries, &spec.image, None).await?;
            local_image(&ch, &name).await?
        }
        Err(s) => return Err(s),
    };
    remove_container(&ch, &spec.id).await;
    for b in spec
        .binds
        .iter()
        .filter(|b| b.writable && !b.source.exists())
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&b.source)
            .map_err(|e| Status::internal(format!("{}: {e}", b.source.display())))?;
    }
    let mounts = snap::snapshots_client::SnapshotsClient::new(ch.clone())
        .prepare(request(
            snap::PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: spec.id.clone(),
                parent: top,
                labels: HashMap::new(),
            },
            None,
        ))
        .await?
        .into_inner()
        .mounts;
    // The image says which program; the service says with which arguments.
    let mut args = if config.config.entrypoint.is_empty() {
        config.config.cmd.clone()
    } else {
        config.config.entrypoint.clone()
    };
    if args.is_empty() {
        args.push(argv.first().cloned().unwrap_or_default());
    }
    args.extend(argv.iter().skip(1).cloned());
    let mut env = config.config.env.clone();
    env.extend(spec.env.iter().cloned());
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    let oci_spec = runtime_spec(spec, &args, &env);
    let mut labels = HashMap::new();
    labels.insert("talos.dev/service".to_string(), spec.id.clone());
    ctrd::containers_client::ContainersClient::new(ch.clone())
        .create(request(
            ctrd::CreateContainerRequest {
                container: Some(ctrd::Container {
                    id: spec.id.clone(),
                    labels,
                    image: spec.image.clone(),
                    runtime: Some(ctrd::container::Runtime {
                        name: "io.containerd.runc.v2".into(),
                        options: None,
                    }),
                    spec: Some(prost_types::Any {
                        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                        value: serde_json::to_vec(&oci_spec).expect("a spec serializes"),
                    }),
                    snapshotter: SNAPSHOTTER.into(),
                    snapshot_key: spec.id.clone(),
                    ..Default::default()
                }),
            },
            None,
        ))
        .await?;
    let dir = Path::new(FIFO_DIR).join(&spec.id);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Status::internal(format!("{}: {e}", dir.display())))?;
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let outputs = (|| -> Result<_, String> { Ok((fifo(&out_path)?, fifo(&err_path)?)) })()
        .map_err(Status::internal)?;
    let mut tasks = ctrd::tasks_client::TasksClient::new(ch.clone());
    let created = tasks
        .create(request(
            ctrd::CreateTaskRequest {
                container_id: spec.id.clone(),
                rootfs: mounts,
                stdout: out_path.display().to_string(),
                stderr: err_path.display().to_string(),
                ..Default::default()
            },
            None,
        ))
        .await;
    let pid = match created {
        Ok(r) => r.into_inner().pid,
        Err(s) => {
            remove_container(&ch, &spec.id).await;
            return Err(s);
        }
    };
    // Ask for the exit before starting, so that it cannot be missed.
    let mut waiter = tasks.clone();
    let id = spec.id.clone();
    let exited = tokio::spawn(async move {
        waiter
            .wait(request(
                ctrd::WaitRequest {
                    container_id: id,
                    exec_id: String::new(),
                },
                None,
            ))
            .await
    });
    if let Err(s) = tasks
        .start(request(
            ctrd::StartRequest {
                container_id: spec.id.clone(),
                exec_id: String::new(),
            },
            None,
        ))
        .await
    {
        remove_container(&ch, &spec.id).await;
        return Err(s);
    }
    if let Some(adj) = spec.oom_score_adj {
        adjust_oom_score(&spec.id, pid, adj);
    }
    let (cleanup_ch, id) = (ch.clone(), spec.id.clone());
    Ok(Task {
        pid,
        outputs: vec![Box::new(outputs.0), Box::new(outputs.1)],
        exited: Box::pin(async move {
            let code = match exited.await {
                Ok(Ok(r)) => r.into_inner().exit_status,
                _ => 255,
            };
            std::process::ExitStatus::from_raw(((code & 0xff) << 8) as i32)
        }),
        cleanup: Some(Box::pin(
            async move { remove_container(&cleanup_ch, &id).await },
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_spec_binds_limits_and_drops_capabilities() {
        let spec = ContainerSpec {
            id: "etcd".into(),
            image: "talos.local/etcd:v3.4.23".into(),
            binds: vec![Bind {
                source: "/var/lib/etcd".into(),
                destination: "/var/lib/etcd".into(),
                writable: true,
            }],
            capabilities: Vec::new(),
            pids_limit: 1024,
            cpu_shares: 2048,
            ..Default::default()
        };
        let s = runtime_spec(&spec, &["/usr/local/bin/etcd".into()], &[]);
        assert_eq!(
            s["process"]["capabilities"]["bounding"],
            serde_json::json!([])
        );
        assert_eq!(s["linux"]["resources"]["pids"]["limit"], 1024);
        assert!(s["linux"]["cgroupsPath"]
            .as_str()
            .unwrap()
            .ends_with("/system/etcd"));
        let binds: Vec<_> = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["type"] == "bind")
            .collect();
        assert_eq!(binds[0]["options"][3], "rw");
        // The node's network: no network namespace of its own.
        assert!(!s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network"));
    }
}
