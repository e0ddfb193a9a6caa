//! The local provisioners: a cluster whose nodes are machined processes, each PID 1 of its
//! own namespaces (container mode, see `machined --container`), or virtual machines booting the
//! image (QEMU, see [`qemu`]), on a bridge that lives in a network namespace of the cluster's
//! own, so the host's network is left as it was. The first control plane's API is published on
//! the host's loopback through a socket it (or the QEMU cluster's helper) inherits.
//!
//! Everything made is recorded in `<state>/<cluster>/cluster.json` as soon as it exists, so that
//! `destroy` removes exactly that (processes by pid, namespaces and cgroups by name, the
//! directory), even for a cluster whose creation failed half-way.

pub mod http;
pub mod imager;
pub mod kms;
mod net;
pub mod qemu;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

pub use net::Cidr;

pub type Result<T> = std::result::Result<T, String>;

/// What `cluster create` asks for.
#[derive(Debug, Clone)]
pub struct Request {
    pub name: String,
    /// Where clusters' state directories live (`~/.talos/clusters`).
    pub state_root: PathBuf,
    pub cidr: Cidr,
    pub mtu: u32,
    pub controlplanes: usize,
    pub workers: usize,
    pub cpus_controlplanes: f64,
    pub cpus_workers: f64,
    /// Bytes.
    pub memory_controlplanes: u64,
    pub memory_workers: u64,
    /// The node program (machined).
    pub machined: PathBuf,
    /// The host loopback port the first control plane's API is published on; 0 picks 50000
    /// when free, any free port otherwise.
    pub api_port: u16,
    /// More kernel arguments for every node, after the `ip=` the provisioner gives each.
    pub extra_boot_kernel_args: String,
    /// Virtual machines instead of containers.
    pub qemu: Option<qemu::Settings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    Controlplane,
    Worker,
}

impl NodeType {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Controlplane => "controlplane",
            NodeType::Worker => "worker",
        }
    }
}

/// A node as made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: NodeType,
    pub ip: Ipv4Addr,
    pub cpus: f64,
    pub memory: u64,
    /// The node's directory (its `var/`, `state/`, log).
    pub dir: PathBuf,
    /// Its network namespace (under /run/netns); none for a virtual machine.
    #[serde(default)]
    pub netns: String,
    /// The bridge-side end of its link (a veth, or a virtual machine's tap), in the cluster's
    /// namespace.
    pub veth: String,
    /// A virtual machine's disk size in bytes (0: a container).
    #[serde(default)]
    pub disk: u64,
    /// The shim or launcher process (killing it ends the node); 0 until started.
    pub pid: u32,
    /// A cgroup made for its limits, if the host offers them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroups: Vec<PathBuf>,
}

/// A cluster as made (`cluster.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cluster {
    pub name: String,
    pub provisioner: String,
    pub cidr: Cidr,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    /// The namespace holding the bridge.
    pub netns: String,
    /// `127.0.0.1:<port>`: the first control plane's API on the host.
    pub api_endpoint: String,
    pub nodes: Vec<Node>,
    pub dir: PathBuf,
    #[serde(default)]
    pub extra_boot_kernel_args: String,
    /// The discovery service the provisioner runs for the cluster (0: none).
    #[serde(default)]
    pub discovery_pid: u32,
    /// Where the nodes reach the cluster's discovery service.
    #[serde(default)]
    pub discovery_endpoint: String,
    /// A QEMU cluster's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu: Option<qemu::Settings>,
}

pub const BRIDGE: &str = "talosbr0";

impl Cluster {
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("cluster.json")
    }

    pub fn save(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        machinery::fsutil::write_atomic(&self.state_file(), text.as_bytes(), 0o600)
            .map_err(|e| format!("{}: {e}", self.state_file().display()))
    }

    /// The cluster `name` under `state_root`.
    pub fn load(state_root: &Path, name: &str) -> Result<Cluster> {
        Cluster::load_dir(&state_root.join(name))
    }

    /// The cluster whose state is in `dir`.
    pub fn load_dir(dir: &Path) -> Result<Cluster> {
        let path = dir.join("cluster.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                let name = dir.file_name().unwrap_or_default().to_string_lossy();
                format!("cluster \"{name}\" not found (no {})", path.display())
            } else {
                format!("{}: {e}", path.display())
            }
        })?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn controlplanes(&self) -> impl Iterator<Item = &Node> {
        self.nodes
            .iter()
            .filter(|n| n.kind == NodeType::Controlplane)
    }

    pub fn workers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.kind == NodeType::Worker)
    }

    /// A node's kernel command line: the platform, its address, gateway, hostname and link
    /// (`ip=`, as a machine booted with it has them), then the cluster's extra arguments.
    fn kernel_args(&self, node: &Node, platform: &str) -> String {
        let mask = Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - self.cidr.prefix as u32)
                .unwrap_or(0),
        );
        let mut line = format!(
            "talos.platform={platform} ip={}::{}:{mask}:{}:eth0:off",
            node.ip, self.gateway, node.name
        );
        if !self.extra_boot_kernel_args.is_empty() {
            line = format!("{line} {}", self.extra_boot_kernel_args);
        }
        line
    }

    /// Where node `name` is in the cluster's list.
    pub fn node_index(&self, name: &str) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| format!("no node \"{name}\" in cluster \"{}\"", self.name))
    }

    /// The next free address for a node.
    fn free_ip(&self) -> Result<Ipv4Addr> {
        self.cidr
            .hosts()
            .find(|ip| *ip != self.gateway && !self.nodes.iter().any(|n| n.ip == *ip))
            .ok_or_else(|| format!("no free address left in {}", self.cidr))
    }

    /// The next name for a node of this type (`<cluster>-controlplane-N`).
    fn next_name(&self, kind: NodeType) -> String {
        let prefix = format!("{}-{}-", self.name, kind.as_str());
        let n = self
            .nodes
            .iter()
            .filter_map(|x| x.name.strip_prefix(&prefix)?.parse::<usize>().ok())
            .max()
            .unwrap_or(0);
        format!("{prefix}{}", n + 1)
    }
}

/// Check a cluster name: it names namespaces and directories.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid cluster name \"{name}\": use up to 32 lowercase letters, digits and dashes"
        ))
    }
}

/// The network of a new cluster (recorded before anything is made), then the bridge.
pub fn create_network(req: &Request) -> Result<Cluster> {
    check_name(&req.name)?;
    let dir = req.state_root.join(&req.name);
    if dir.join("cluster.json").exists() {
        return Err(format!(
            "cluster \"{}\" already exists (state in {}); destroy it first",
            req.name,
            dir.display()
        ));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let gateway = req
        .cidr
        .hosts()
        .next()
        .ok_or_else(|| format!("{} has no room for a gateway", req.cidr))?;
    let listener = publish_listener(req.api_port)?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    // The listener is handed to the first control plane; until then nobody answers on it.
    *PUBLISHED.lock().expect("published") = Some(listener);
    let cluster = Cluster {
        name: req.name.clone(),
        provisioner: if req.qemu.is_some() {
            "qemu"
        } else {
            "container"
        }
        .into(),
        cidr: req.cidr,
        gateway,
        mtu: req.mtu,
        netns: req.name.clone(),
        api_endpoint: format!("127.0.0.1:{port}"),
        extra_boot_kernel_args: req.extra_boot_kernel_args.clone(),
        discovery_pid: 0,
        discovery_endpoint: String::new(),
        nodes: Vec::new(),
        dir,
        qemu: req.qemu.clone(),
    };
    if net::netns_exists(&cluster.netns) {
        return Err(format!(
            "network namespace \"{}\" exists already: another cluster uses this name",
            cluster.netns
        ));
    }
    cluster.save()?;
    net::add_netns(&cluster.netns)?;
    net::bridge(
        &cluster.netns,
        BRIDGE,
        gateway,
        cluster.cidr.prefix,
        cluster.mtu,
    )?;
    Ok(cluster)
}

static PUBLISHED: std::sync::Mutex<Option<std::net::TcpListener>> = std::sync::Mutex::new(None);

fn publish_listener(port: u16) -> Result<std::net::TcpListener> {
    let bind = |p: u16| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, p));
    if port != 0 {
        return bind(port).map_err(|e| format!("publish the API on 127.0.0.1:{port}: {e}"));
    }
    bind(50000)
        .or_else(|_| bind(0))
        .map_err(|e| format!("publish the API on 127.0.0.1: {e}"))
}

/// The listener of the cluster's published API: the one made with the network, or a new one
/// on the same port.
pub fn published(cluster: &Cluster) -> Result<std::net::TcpListener> {
    if let Some(l) = PUBLISHED.lock().expect("published").take() {
        return Ok(l);
    }
    let port = cluster
        .api_endpoint
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(0);
    publish_listener(port)
}

/// Plan a node of `kind` (with a disk of `disk` bytes if it is a virtual machine): its name,
/// address and directories (recorded; nothing runs yet).
pub fn plan_node(
    cluster: &mut Cluster,
    kind: NodeType,
    cpus: f64,
    memory: u64,
    disk: u64,
) -> Result<Node> {
    let name = cluster.next_name(kind);
    let ip = cluster.free_ip()?;
    let vm = cluster.qemu.is_some();
    let n = u32::from(ip) & 0xffff;
    let node = Node {
        dir: cluster.dir.join(&name),
        netns: if vm { String::new() } else { name.clone() },
        veth: if vm {
            format!("tap{n}")
        } else {
            format!("veth{n}")
        },
        disk: if vm { disk } else { 0 },
        name,
        kind,
        ip,
        cpus,
        memory,
        pid: 0,
        cgroups: Vec::new(),
    };
    cluster.nodes.push(node.clone());
    cluster.save()?;
    Ok(node)
}

/// Start a planned node with its machine config: its namespace and link, then machined (or
/// its virtual machine).
pub fn start_node(cluster: &mut Cluster, name: &str, config: &str, machined: &Path) -> Result<()> {
    if cluster.qemu.is_some() {
        return qemu::start_node(cluster, name, config);
    }
    let i = cluster.node_index(name)?;
    let node = cluster.nodes[i].clone();
    std::fs::create_dir_all(&node.dir).map_err(|e| format!("{}: {e}", node.dir.display()))?;
    if !net::netns_exists(&node.netns) {
        net::add_netns(&node.netns)?;
        net::link_node(&cluster.netns, BRIDGE, &node.veth, &node.netns, cluster.mtu)?;
    }
    let cmdline = cluster.kernel_args(&node, "container");
    machinery::fsutil::write_atomic(
        &node.dir.join("cmdline"),
        format!("{cmdline}\n").as_bytes(),
        0o644,
    )
    .map_err(|e| format!("{}/cmdline: {e}", node.dir.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node.dir.with_extension("log"))
        .map_err(|e| format!("{}.log: {e}", node.dir.display()))?;
    // The first control plane serves the cluster's API on the host's loopback.
    let first_cp = node.kind == NodeType::Controlplane
        && cluster.nodes[..i]
            .iter()
            .all(|n| n.kind != NodeType::Controlplane);
    let published = if first_cp {
        Some(published(cluster)?)
    } else {
        None
    };
    let cgroups = net::cgroups(&cluster.name, &node.name, node.cpus, node.memory);
    cluster.nodes[i].cgroups = cgroups.clone();
    cluster.save()?;
    // The node joins its cgroups before it starts anything (opened here, written after fork).
    let procs: Vec<std::fs::File> = cgroups
        .iter()
        .filter_map(|d| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(d.join("cgroup.procs"))
                .ok()
        })
        .collect();
    let procs_fds: Vec<i32> = procs.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
    let listen_fd = published.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    let mut cmd = std::process::Command::new(machined);
    cmd.arg("--container")
        .arg(&node.dir)
        .args(["--netns", &node.netns])
        .env(
            "USERDATA",
            base64::engine::general_purpose::STANDARD.encode(config),
        )
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    if listen_fd.is_some() {
        cmd.args(["--listen-fd", "3"]);
    }
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid, write and dup2 only, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                for fd in &procs_fds {
                    nix::libc::write(*fd, b"0".as_ptr().cast(), 1);
                }
                listen_fd.map_or(Ok(()), fd_as_3)
            });
        }
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("start {}: {}: {e}", node.name, machined.display()))?;
    cluster.nodes[i].pid = child.id();
    reap(child);
    drop(procs);
    cluster.save()
}

/// The port of a cluster's discovery service, on the gateway address.
pub const DISCOVERY_PORT: u16 = 3000;

/// Start the cluster's discovery service (`binary`) in the cluster's namespace, on the gateway
/// address, collecting expired affiliates every `gc_interval`.
pub fn start_discovery(cluster: &mut Cluster, binary: &Path, gc_interval: &str) -> Result<()> {
    let addr = format!("{}:{DISCOVERY_PORT}", cluster.gateway);
    let log = std::fs::File::create(cluster.dir.join("discovery.log"))
        .map_err(|e| format!("discovery.log: {e}"))?;
    let mut cmd = std::process::Command::new(binary);
    cmd.args(["--addr", &addr, "--gc-interval", gc_interval])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    in_netns(&mut cmd, &cluster.netns, None)?;
    let child = cmd
        .spawn()
        .map_err(|e| {
            format!(
                "start the discovery service {}: {e} (build it with `cargo build -p discovery`, or give --discovery-endpoint)",
                binary.display()
            )
        })?;
    cluster.discovery_pid = child.id();
    cluster.discovery_endpoint = format!("http://{addr}");
    reap(child);
    cluster.save()
}

/// Make `fd` the child's fd 3 (between fork and exec: async-signal-safe calls only).
fn fd_as_3(fd: i32) -> std::io::Result<()> {
    // dup2 onto itself would keep close-on-exec set.
    // SAFETY: fcntl and dup2 on descriptors this process owns.
    let rc = unsafe {
        if fd == 3 {
            nix::libc::fcntl(3, nix::libc::F_SETFD, 0)
        } else {
            nix::libc::dup2(fd, 3)
        }
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Run `cmd` in its own session, in the network namespace `netns`, with `fd` as its fd 3.
fn in_netns(cmd: &mut std::process::Command, netns: &str, fd: Option<i32>) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let ns = std::fs::File::open(Path::new("/run/netns").join(netns))
        .map_err(|e| format!("network namespace {netns}: {e}"))?;
    // SAFETY: setsid, setns, fcntl and dup2 only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            fd.map_or(Ok(()), fd_as_3)
        });
    }
    Ok(())
}

/// Wait for a started process in the background: it outlives this one, but is reaped if it
/// ends first.
fn reap(child: std::process::Child) {
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
}

/// Whether `pid` still runs in the cluster's network namespace (pids get reused).
fn in_cluster_netns(pid: u32, cluster: &Cluster) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ns = |p: std::path::PathBuf| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    pid != 0
        && ns(format!("/proc/{pid}/ns/net").into())
            .is_some_and(|a| Some(a) == ns(Path::new("/run/netns").join(&cluster.netns)))
}

/// Stop a helper process of the cluster's (SIGTERM, SIGKILL after 2 s).
fn stop_helper(pid: u32, cluster: &Cluster) {
    use nix::sys::signal::{kill, Signal};
    if !in_cluster_netns(pid, cluster) {
        return;
    }
    let p = nix::unistd::Pid::from_raw(pid as i32);
    let _ = kill(p, Signal::SIGTERM);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while in_cluster_netns(pid, cluster) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if in_cluster_netns(pid, cluster) {
        let _ = kill(p, Signal::SIGKILL);
    }
}

/// Whether `pid` is still the shim (or launcher) of the node in `dir` (pids get reused).
pub fn is_node_process(pid: u32, dir: &Path) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.windows(2).any(|w| {
        (w[0] == b"--container" || w[0] == b"--node-dir")
            && w[1] == dir.as_os_str().as_encoded_bytes()
    })
}

/// Hard-restart a node: kill its processes and start it again with its data (`var/`,
/// `state/`) kept.
pub fn restart_node(
    cluster: &mut Cluster,
    name: &str,
    config: &str,
    machined: &Path,
) -> Result<()> {
    let node = cluster.nodes[cluster.node_index(name)?].clone();
    stop_process(node.pid, &node.dir, Duration::ZERO);
    for cg in net::node_cgroups(&cluster.name, &node.name) {
        let _ = remove_cgroup(&cg);
    }
    start_node(cluster, name, config, machined)
}

/// Remove a cgroup and the ones its container runtimes made below it, deepest first.
fn remove_cgroup(cg: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(cg)?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&e.path())?;
        }
    }
    std::fs::remove_dir(cg)
}

/// Stop a node and remove everything it had: process (SIGTERM, SIGKILL after `grace`),
/// namespace, link, cgroups and directory.
pub fn remove_node(cluster: &mut Cluster, name: &str, grace: Duration) -> Result<()> {
    let i = cluster.node_index(name)?;
    let node = cluster.nodes[i].clone();
    stop_process(node.pid, &node.dir, grace);
    let mut problems = Vec::new();
    if !node.netns.is_empty() && net::netns_exists(&node.netns) {
        if let Err(e) = net::del_netns(&node.netns) {
            problems.push(e);
        }
    }
    if net::netns_exists(&cluster.netns) {
        // Normally gone with the node's namespace; a half-made link may remain.
        let _ = net::del_link(&cluster.netns, &node.veth);
    }
    for cg in &net::node_cgroups(&cluster.name, &node.name) {
        // The node's last processes may still be leaving it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while cg.exists() && remove_cgroup(cg).is_err() {
            if std::time::Instant::now() > deadline {
                problems.push(format!("cgroup {} is still in use", cg.display()));
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for p in [
        node.dir.clone(),
        node.dir.with_extension("log"),
        node.dir.with_extension("launcher.log"),
        cluster.dir.join("configs").join(format!("{name}.yaml")),
    ] {
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        if let Err(e) = r.or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        }) {
            problems.push(format!("{}: {e}", p.display()));
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    cluster.nodes.remove(i);
    cluster.save()
}

/// Stop the node process `pid` (if it is still the one for `dir`).
pub fn stop_process(pid: u32, dir: &Path, grace: Duration) {
    use nix::sys::signal::{kill, Signal};
    if !is_node_process(pid, dir) {
        return;
    }
    let vm = std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"qemu-launch"));
    let p = nix::unistd::Pid::from_raw(pid as i32);
    let _ = kill(
        p,
        if grace.is_zero() {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        },
    );
    let deadline = std::time::Instant::now() + grace;
    while is_node_process(pid, dir) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if is_node_process(pid, dir) {
        let _ = kill(p, Signal::SIGKILL);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while is_node_process(pid, dir) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // A machine's launcher leads a process group with its QEMU, which is killed when the
    // launcher ends: wait for it too (it holds the tap device and the disk).
    let group = nix::unistd::Pid::from_raw(-(pid as i32));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while vm && kill(group, None).is_ok() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Remove the cluster `name` and all it made. Nothing recorded: nothing to do (`Ok(false)`).
pub fn destroy(state_root: &Path, name: &str, grace: Duration) -> Result<bool> {
    check_name(name)?;
    let mut cluster = match Cluster::load(state_root, name) {
        Ok(c) => c,
        Err(_) if !state_root.join(name).join("cluster.json").exists() => return Ok(false),
        Err(e) => return Err(e),
    };
    // Stop every node first (in parallel: each may take its grace period), then clean up.
    std::thread::scope(|s| {
        for n in &cluster.nodes {
            s.spawn(|| stop_process(n.pid, &n.dir, grace));
        }
    });
    let names: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
    let mut problems = Vec::new();
    for n in names {
        if let Err(e) = remove_node(&mut cluster, &n, Duration::ZERO) {
            problems.push(e);
        }
    }
    stop_helper(cluster.discovery_pid, &cluster);
    if let Some(q) = &cluster.qemu {
        stop_helper(q.helper_pid, &cluster);
    }
    if net::netns_exists(&cluster.netns) {
        if let Err(e) = net::del_netns(&cluster.netns) {
            problems.push(e);
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    std::fs::remove_dir_all(&cluster.dir).map_err(|e| format!("{}: {e}", cluster.dir.display()))?;
    Ok(true)
}
