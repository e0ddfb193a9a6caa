//! `talosctl cluster create|show|scale|destroy`: local clusters in container mode or of QEMU
//! virtual machines (see the `provision` crate), with a real etcd quorum on the control planes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use machinery::clientconfig::{self, ClientConfig};
use machinery::generate::{generate, GenOptions, MachineType};
use machinery::patch::{apply, load_patches};
use machinery::secrets::SecretsBundle;
use machinery::{Config, Error, Patch, Result};
use provision::{Cluster, NodeType};

use crate::util::parse_duration;

#[derive(Args)]
pub struct ClusterArgs {
    /// The cluster's name.
    #[arg(long, global = true, default_value = "talos-default")]
    name: String,
    /// Where clusters keep their state (default $HOME/.talos/clusters).
    #[arg(long, global = true, default_value = "")]
    state: String,
    /// A remote provisioner (not supported: clusters are local).
    #[arg(long, global = true, default_value = "", hide = true)]
    remote_endpoint: String,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Create a local cluster.
    Create(Box<CreateArgs>),
    /// Show a local cluster: its network and nodes.
    Show(ShowArgs),
    /// Add or remove nodes.
    Scale(ScaleArgs),
    /// Destroy a local cluster and everything it made.
    Destroy(DestroyArgs),
    /// Hard-restart nodes (all, or those named), keeping their data.
    Reboot(RebootArgs),
}

#[derive(Args)]
pub struct RebootArgs {
    /// Nodes to restart, by name or IP (default: all).
    #[arg(short = 'n', long = "node", value_delimiter = ',')]
    nodes: Vec<String>,
}

#[derive(Args)]
pub struct QemuLaunchArgs {
    /// The machine's folder in its cluster's state.
    #[arg(long)]
    pub node_dir: PathBuf,
}

#[derive(Args)]
pub struct ClusterLaunchArgs {
    /// The cluster's state folder.
    #[arg(long)]
    pub cluster_dir: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Provisioner {
    /// Nodes as machined processes in namespaces of their own.
    #[value(alias = "docker")]
    Container,
    /// Nodes as virtual machines booting the image.
    Qemu,
}

#[derive(Args)]
pub struct CreateArgs {
    /// How nodes run: containers (machined in namespaces of its own) or QEMU virtual machines.
    #[arg(long, value_enum, default_value = "container")]
    provisioner: Provisioner,
    /// QEMU: each machine's disk size in MB.
    #[arg(long, default_value_t = 6144)]
    disk: u64,
    /// QEMU: the kernel the machines boot first (`imager boot` makes it).
    #[arg(long, default_value = "_out/vmlinuz")]
    vmlinuz_path: PathBuf,
    /// QEMU: the initramfs the machines boot first.
    #[arg(long, default_value = "_out/initramfs.img")]
    initrd_path: PathBuf,
    /// QEMU: the installer image the machines install from; the provisioner builds it from
    /// --vmlinuz-path and --initrd-path and serves it under this name.
    #[arg(long, default_value = concat!("talos.local/installer:v", env!("CARGO_PKG_VERSION")))]
    install_image: String,
    /// QEMU: encrypt the machines' STATE partition (LUKS2).
    #[arg(long)]
    encrypt_state: bool,
    /// QEMU: encrypt the machines' EPHEMERAL partition (LUKS2).
    #[arg(long)]
    encrypt_ephemeral: bool,
    /// QEMU: the keys of encrypted partitions, one slot each: uuid (derived from the machine's
    /// UUID), kms (sealed by the cluster's key service on the gateway).
    #[arg(long, value_delimiter = ',', default_value = "uuid")]
    disk_encryption_key_types: Vec<String>,
    /// QEMU: give each machine a TPM 2.0 (swtpm), for tpm disk encryption keys.
    #[arg(long)]
    with_tpm2: bool,
    /// Number of control plane nodes.
    #[arg(long, default_value_t = 1)]
    controlplanes: usize,
    /// Number of worker nodes.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// The cluster network.
    #[arg(long, visible_alias = "subnet", default_value = "10.5.0.0/24")]
    cidr: String,
    /// MTU of the cluster network.
    #[arg(long, default_value_t = 1500)]
    mtu: u32,
    /// A discovery service for the nodes to use instead of the one started for the cluster
    /// (e.g. https://discovery.talos.dev/).
    #[arg(long)]
    discovery_endpoint: Option<String>,
    /// Cluster discovery: a discovery service started for the cluster (or
    /// --discovery-endpoint) in every node's config; false leaves it off.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    with_cluster_discovery: bool,
    /// More kernel arguments for every node (after the `ip=` each node gets), e.g.
    /// `talos.network.interface.ignore=eth1`.
    #[arg(long, default_value = "")]
    extra_boot_kernel_args: String,
    /// CPUs per control plane (a cgroup CPU limit).
    #[arg(long, visible_alias = "cpus-controlplanes", default_value = "2.0")]
    cpus: String,
    /// CPUs per worker.
    #[arg(long, default_value = "2.0")]
    cpus_workers: String,
    /// Memory per control plane (a cgroup limit), e.g. 2.0GiB or 2048 (MiB).
    #[arg(long, visible_alias = "memory-controlplanes", default_value = "2.0GiB")]
    memory: String,
    /// Memory per worker.
    #[arg(long, default_value = "2.0GiB")]
    memory_workers: String,
    /// A patch for every node's config (inline, @file); repeatable.
    #[arg(long)]
    config_patch: Vec<String>,
    /// A patch for control planes' configs.
    #[arg(long, visible_alias = "config-patch-controlplanes")]
    config_patch_control_plane: Vec<String>,
    /// A patch for workers' configs.
    #[arg(long, visible_alias = "config-patch-workers")]
    config_patch_worker: Vec<String>,
    /// Registry mirrors: registry=endpoint[,endpoint].
    #[arg(long)]
    registry_mirror: Vec<String>,
    /// The Kubernetes version written into the configs.
    #[arg(long, default_value = machinery::generate::DEFAULT_KUBERNETES_VERSION)]
    kubernetes_version: String,
    /// Wait for the cluster to be healthy.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    wait: bool,
    /// Wait for Talos alone: not for Kubernetes (no API server can run without its images).
    #[arg(long)]
    skip_kubernetes: bool,
    /// Do not wait for the Kubernetes nodes to be ready.
    #[arg(long)]
    skip_k8s_node_readiness_check: bool,
    /// How long to wait for it.
    #[arg(long, default_value = "20m0s")]
    wait_timeout: String,
    /// Where to merge the cluster's client config (default $TALOSCONFIG or ~/.talos/config).
    #[arg(long, visible_alias = "talosconfig-destination", default_value = "")]
    talosconfig: String,
    /// Do not bootstrap etcd (for `talosctl bootstrap --recover-from`); implies --wait=false.
    #[arg(long)]
    skip_bootstrap: bool,
    /// The host loopback port for the cluster's API (0: 50000 when free, else any).
    #[arg(long, default_value_t = 0)]
    api_port: u16,
}

#[derive(Args)]
pub struct ShowArgs {
    /// The provisioner (read from the cluster's state).
    #[arg(long, default_value = "container", hide = true)]
    provisioner: String,
}

#[derive(Args)]
pub struct ScaleArgs {
    /// The number of control planes wanted.
    #[arg(long)]
    controlplanes: Option<usize>,
    /// The number of workers wanted.
    #[arg(long)]
    workers: Option<usize>,
    /// The client config with the cluster's context (default $TALOSCONFIG or ~/.talos/config).
    #[arg(long, default_value = "")]
    talosconfig: String,
    /// How long to wait for new nodes.
    #[arg(long, default_value = "5m0s")]
    wait_timeout: String,
}

#[derive(Args)]
pub struct DestroyArgs {
    /// Kill the nodes without letting them shut down.
    #[arg(short, long)]
    force: bool,
    /// First save the nodes' logs (the cluster directory's *.log files) into this zip.
    #[arg(long = "save-cluster-logs-archive-path", default_value = "")]
    save_cluster_logs_archive_path: String,
    /// First save a support archive of every node (as `talosctl support`) into this zip.
    #[arg(long = "save-support-archive-path", default_value = "")]
    save_support_archive_path: String,
}

pub fn default_state_root() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    home.join(".talos").join("clusters")
}

fn machined_path() -> PathBuf {
    sibling("machined", "TALOS_MACHINED")
}

/// A program of this project: named by `env`, else next to talosctl, else on the PATH.
fn sibling(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return p.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| name.into())
}

/// Sizes like `2.0GiB`, `512MB`, or a bare number of MiB.
fn parse_size(s: &str) -> Result<u64> {
    let bad = || {
        Error::msg(format!(
            "invalid size \"{s}\": expected e.g. 2.0GiB, 512MiB or 2048"
        ))
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim() {
        "" => 1024.0 * 1024.0,
        "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    Ok((n * mult) as u64)
}

fn parse_cpus(s: &str) -> Result<f64> {
    s.parse::<f64>()
        .ok()
        .filter(|c| *c > 0.0)
        .ok_or_else(|| Error::msg(format!("invalid CPU count \"{s}\": expected e.g. 2.0")))
}

/// A phase of the work with its elapsed time; on a terminal the time ticks while it runs.
struct Phase {
    name: String,
    start: Instant,
    ticker: Option<(
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<()>,
    )>,
}

impl Phase {
    fn start(name: impl Into<String>) -> Phase {
        use std::io::IsTerminal;
        let name = name.into();
        let start = Instant::now();
        let ticker = if std::io::stderr().is_terminal() {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (s, n) = (stop.clone(), name.clone());
            let h = std::thread::spawn(move || {
                while !s.load(std::sync::atomic::Ordering::SeqCst) {
                    eprint!("\r\x1b[K{n} ({:.1}s)", start.elapsed().as_secs_f64());
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            Some((stop, h))
        } else {
            eprintln!("{name}");
            None
        };
        Phase {
            name,
            start,
            ticker,
        }
    }

    fn done(self) {
        let took = self.start.elapsed().as_secs_f64();
        match self.ticker {
            Some((stop, h)) => {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = h.join();
                eprintln!("\r\x1b[K{}: done ({took:.2}s)", self.name);
            }
            None => eprintln!("{}: done ({took:.2}s)", self.name),
        }
    }
}

fn talosconfig_path(flag: &str) -> PathBuf {
    clientconfig::default_path(Some(flag))
}

pub fn run(a: ClusterArgs) -> Result<()> {
    let root = if a.state.is_empty() {
        default_state_root()
    } else {
        PathBuf::from(&a.state)
    };
    if !a.remote_endpoint.is_empty() {
        return Err(Error::msg(
            "--remote-endpoint is not supported: clusters are local",
        ));
    }
    match a.command {
        ClusterCommand::Create(c) => create(&a.name, &root, *c),
        ClusterCommand::Show(_) => show(&Cluster::load(&root, &a.name).map_err(Error::msg)?),
        ClusterCommand::Scale(s) => scale(&a.name, &root, s),
        ClusterCommand::Reboot(r) => reboot(&a.name, &root, r),
        ClusterCommand::Destroy(d) => {
            let grace = if d.force {
                Duration::ZERO
            } else {
                Duration::from_secs(10)
            };
            crate::cluster_archive::before_destroy(
                &root,
                &a.name,
                &d.save_cluster_logs_archive_path,
                &d.save_support_archive_path,
            )?;
            let p = Phase::start(format!("destroying cluster {}", a.name));
            let found = provision::destroy(&root, &a.name, grace).map_err(Error::msg)?;
            p.done();
            if !found {
                eprintln!("cluster {} not found: nothing to destroy", a.name);
            }
            Ok(())
        }
    }
}

/// What a new node's config is made from (kept in the cluster's directory for scaling).
struct Templates {
    controlplane: Config,
    worker: Config,
    /// What the configs are validated for.
    mode: machinery::validate::Mode,
}

fn validation_mode(vm: bool) -> machinery::validate::Mode {
    if vm {
        machinery::validate::Mode::Metal
    } else {
        machinery::validate::Mode::Container
    }
}

impl Templates {
    fn load(cluster: &Cluster) -> Result<Templates> {
        Ok(Templates {
            controlplane: Config::load(cluster.dir.join("controlplane.yaml"))?,
            worker: Config::load(cluster.dir.join("worker.yaml"))?,
            mode: validation_mode(cluster.qemu.is_some()),
        })
    }

    /// The config of node `name`: its type's template with its hostname.
    fn for_node(&self, kind: NodeType, name: &str) -> Result<String> {
        let base = match kind {
            NodeType::Controlplane => self.controlplane.clone(),
            NodeType::Worker => self.worker.clone(),
        };
        let patch = Patch::parse(&format!("machine:\n  network:\n    hostname: {name}\n"))?;
        let cfg = apply(base, &[patch])?;
        let result = machinery::validate::validate(&cfg, self.mode);
        result
            .into_result(false)
            .map_err(|e| Error::msg(format!("the config of {name} is invalid:\n{e}")))?;
        Ok(cfg.encode())
    }
}

fn create(name: &str, root: &Path, a: CreateArgs) -> Result<()> {
    if a.controlplanes == 0 {
        return Err(Error::msg(
            "a cluster needs at least one control plane (--controlplanes)",
        ));
    }
    let timeout = parse_duration(&a.wait_timeout)?;
    let started = Instant::now();
    let p = Phase::start("validating CIDR and reserving IPs");
    provision::check_name(name).map_err(Error::msg)?;
    let cidr: provision::Cidr = a.cidr.parse().map_err(Error::msg)?;
    let wanted = a.controlplanes + a.workers + 1;
    if cidr.hosts().count() < wanted {
        return Err(Error::msg(format!(
            "{cidr} is too small for {} nodes and a gateway",
            wanted - 1
        )));
    }
    let cp1 = cidr.hosts().nth(1).expect("checked size");
    let gateway = cidr.hosts().next().expect("checked size");
    p.done();
    let qemu = match a.provisioner {
        Provisioner::Container if a.encrypt_state || a.encrypt_ephemeral => {
            return Err(Error::msg(
                "disk encryption needs machines with disks: --provisioner qemu",
            ))
        }
        Provisioner::Container if a.with_tpm2 => {
            return Err(Error::msg(
                "--with-tpm2 gives QEMU machines a TPM: --provisioner qemu",
            ))
        }
        Provisioner::Container => None,
        Provisioner::Qemu => {
            let p = Phase::start("checking the boot assets and whether KVM works");
            let q = qemu_settings(&a)?;
            p.done();
            eprintln!("machines run under {}", q.accel);
            Some(q)
        }
    };

    let p = Phase::start("generating PKI and tokens");
    let mut opts = GenOptions::new(name, &format!("https://{cp1}:6443"));
    opts.kubernetes_version = a.kubernetes_version.clone();
    opts.registry_mirrors = crate::gen::parse_mirrors(&a.registry_mirror)?;
    opts.with_discovery = a.with_cluster_discovery;
    let common = load_patches(&a.config_patch)?;
    let secrets = SecretsBundle::generate()?;
    // The nodes meet at the cluster's own discovery service (on the gateway) unless told
    // otherwise; the user's patches come after, so they may change it (a TTL, say).
    let discovery_endpoint = a
        .discovery_endpoint
        .clone()
        .unwrap_or_else(|| format!("http://{gateway}:{}", provision::DISCOVERY_PORT));
    let render = |ty: MachineType, extra: &[String]| -> Result<Config> {
        let mut cfg = generate(&secrets, &opts, ty)?;
        if a.with_cluster_discovery {
            let discovery = if cfg.kind("DiscoveryServiceConfig").next().is_some() {
                format!("apiVersion: v1alpha1\nkind: DiscoveryServiceConfig\nname: default\nendpoint: {discovery_endpoint}\n")
            } else {
                format!("cluster:\n  discovery:\n    enabled: true\n    registries:\n      service:\n        endpoint: {discovery_endpoint}\n")
            };
            cfg = apply(cfg, &[Patch::parse(&discovery)?])?;
        }
        if let Some(q) = &qemu {
            // A machine installs itself to its disk from the provisioner's installer.
            let install = q.install_patch(gateway).map_err(Error::msg)?;
            cfg = apply(cfg, &[Patch::parse(&install)?])?;
            if let Some(p) = provision::qemu::encryption_patch(
                gateway,
                a.encrypt_state,
                a.encrypt_ephemeral,
                &a.disk_encryption_key_types,
            )
            .map_err(Error::msg)?
            {
                cfg = apply(cfg, &[Patch::parse(&p)?])?;
            }
        }
        apply(apply(cfg, &common)?, &load_patches(extra)?)
    };
    let templates = Templates {
        controlplane: render(MachineType::ControlPlane, &a.config_patch_control_plane)?,
        worker: render(MachineType::Worker, &a.config_patch_worker)?,
        mode: validation_mode(qemu.is_some()),
    };
    // Every node's config is checked before anything is made.
    templates.for_node(NodeType::Controlplane, "check")?;
    templates.for_node(NodeType::Worker, "check")?;
    let req = provision::Request {
        name: name.into(),
        state_root: root.into(),
        cidr,
        mtu: a.mtu,
        controlplanes: a.controlplanes,
        workers: a.workers,
        cpus_controlplanes: parse_cpus(&a.cpus)?,
        cpus_workers: parse_cpus(&a.cpus_workers)?,
        memory_controlplanes: parse_size(&a.memory)?,
        memory_workers: parse_size(&a.memory_workers)?,
        machined: machined_path(),
        api_port: a.api_port,
        extra_boot_kernel_args: a.extra_boot_kernel_args.clone(),
        qemu,
    };
    p.done();

    let p = Phase::start(format!("creating network {name}"));
    let mut cluster = provision::create_network(&req).map_err(Error::msg)?;
    p.done();
    let made = (|| -> Result<ClientConfig> {
        if a.with_cluster_discovery && a.discovery_endpoint.is_none() {
            let p = Phase::start(format!(
                "starting the discovery service on {discovery_endpoint}"
            ));
            provision::start_discovery(
                &mut cluster,
                &sibling("discovery-service", "TALOS_DISCOVERY"),
                "5s",
            )
            .map_err(Error::msg)?;
            p.done();
        }
        if cluster.qemu.is_some() {
            let p = Phase::start(format!(
                "starting the config and installer server on {gateway}:{}",
                provision::qemu::HTTP_PORT
            ));
            let api = provision::published(&cluster).map_err(Error::msg)?;
            provision::qemu::start_helper(&mut cluster, api).map_err(Error::msg)?;
            p.done();
        }
        let dir = cluster.dir.clone();
        let write = |file: &str, text: &str| {
            machinery::fsutil::write_atomic(&dir.join(file), text.as_bytes(), 0o600)
                .map_err(|e| Error::msg(format!("{}: {e}", dir.join(file).display())))
        };
        write("secrets.yaml", &secrets.encode())?;
        write("controlplane.yaml", &templates.controlplane.encode())?;
        write("worker.yaml", &templates.worker.encode())?;
        let mut talosconfig = clientconfig::from_secrets(
            &secrets,
            name,
            &["os:admin".to_string()],
            crate::gen::ADMIN_TTL,
            vec![cluster.api_endpoint.clone()],
        )?;
        talosconfig.current_mut(None)?.nodes = vec![cp1.to_string()];
        write("talosconfig", &talosconfig.encode())?;
        for (kind, count, cpus, mem) in [
            (
                NodeType::Controlplane,
                a.controlplanes,
                req.cpus_controlplanes,
                req.memory_controlplanes,
            ),
            (
                NodeType::Worker,
                a.workers,
                req.cpus_workers,
                req.memory_workers,
            ),
        ] {
            if count == 0 {
                continue;
            }
            let p = Phase::start(format!("creating {} nodes", kind.as_str()));
            for _ in 0..count {
                let node = provision::plan_node(&mut cluster, kind, cpus, mem, a.disk << 20)
                    .map_err(Error::msg)?;
                let config = templates.for_node(kind, &node.name)?;
                provision::start_node(&mut cluster, &node.name, &config, &req.machined)
                    .map_err(Error::msg)?;
            }
            p.done();
        }
        Ok(talosconfig)
    })();
    let talosconfig = match made {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cluster creation failed: removing what was made");
            let _ = provision::destroy(root, name, Duration::ZERO);
            return Err(e);
        }
    };

    let dest = talosconfig_path(&a.talosconfig);
    let p = Phase::start(format!("merging talosconfig into {}", dest.display()));
    merge_talosconfig(&dest, &talosconfig)?;
    p.done();

    let deadline = Instant::now() + timeout;
    let info = crate::health::ClusterInfo {
        control_planes: cluster.controlplanes().map(|n| n.ip.to_string()).collect(),
        workers: cluster.workers().map(|n| n.ip.to_string()).collect(),
        context: talosconfig.current(None)?.1.clone(),
        through: Some(cluster.api_endpoint.clone()),
    };
    if cluster.qemu.is_some() {
        let p = Phase::start("waiting for the machines to install themselves and restart");
        wait_installed(&cluster, deadline)?;
        p.done();
    }
    let p = Phase::start(format!("waiting for the API on {}", cluster.api_endpoint));
    crate::block_on(wait_api(&info, &cp1.to_string(), deadline))?;
    p.done();
    if a.skip_bootstrap {
        eprintln!("not bootstrapping: run `talosctl bootstrap` against {cp1}");
        return show(&cluster);
    }
    let p = Phase::start("bootstrapping cluster");
    crate::block_on(bootstrap(&info, &cp1.to_string(), deadline))?;
    p.done();
    if a.wait {
        let p = Phase::start("waiting for the cluster to be healthy");
        let kubernetes = (!a.skip_kubernetes).then(|| crate::health_k8s::Kubernetes {
            endpoint: String::new(),
            node_readiness: !a.skip_k8s_node_readiness_check,
        });
        crate::block_on(crate::health::check(&info, deadline, kubernetes.as_ref())).map_err(|e| {
            Error::msg(format!(
                "{e}\nthe cluster is left as it is: inspect it, or remove it with `talosctl cluster destroy --name {name}`"
            ))
        })?;
        p.done();
    }
    eprintln!(
        "cluster {name} is ready in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    show(&cluster)
}

/// The QEMU provisioner's settings from the flags, its boot assets checked.
fn qemu_settings(a: &CreateArgs) -> Result<provision::qemu::Settings> {
    let asset = |p: &Path, flag: &str| {
        std::fs::canonicalize(p).map_err(|e| {
            Error::msg(format!(
                "{flag} {}: {e} (build the image with `imager boot --machined <static machined> -o _out`)",
                p.display()
            ))
        })
    };
    let kernel = asset(&a.vmlinuz_path, "--vmlinuz-path")?;
    let initramfs = asset(&a.initrd_path, "--initrd-path")?;
    let qemu_ok = std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !qemu_ok {
        return Err(Error::msg(
            "qemu-system-x86_64 is missing (Debian: qemu-system-x86)",
        ));
    }
    if a.disk < disk::min_disk_mib() {
        return Err(Error::msg(format!(
            "--disk {}: Talos's partitions need at least {} MB",
            a.disk,
            disk::min_disk_mib()
        )));
    }
    let settings = provision::qemu::Settings {
        accel: provision::qemu::probe_accel(&std::env::temp_dir(), &kernel).into(),
        kernel,
        initramfs,
        install_image: a.install_image.clone(),
        launcher: std::env::current_exe().map_err(|e| Error::msg(e.to_string()))?,
        helper_pid: 0,
        tpm2: a.with_tpm2,
    };
    if a.with_tpm2
        && !std::process::Command::new("swtpm")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        return Err(Error::msg("--with-tpm2: swtpm is missing (Debian: swtpm)"));
    }
    // The image reference is checked before anything is made.
    settings
        .install_patch(std::net::Ipv4Addr::UNSPECIFIED)
        .map_err(Error::msg)?;
    Ok(settings)
}

/// Wait until every machine starts from its disk, its install done.
fn wait_installed(cluster: &Cluster, deadline: Instant) -> Result<()> {
    loop {
        let waiting: Vec<&provision::Node> = cluster
            .nodes
            .iter()
            .filter(|n| !provision::qemu::boots_from_disk(&n.dir))
            .collect();
        let Some(n) = waiting.first() else {
            return Ok(());
        };
        let dead = !provision::is_node_process(n.pid, &n.dir);
        if dead || Instant::now() >= deadline {
            let tail = |p: PathBuf| {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(20)..].join("\n")
            };
            return Err(Error::msg(format!(
                "{} {}; its console ends with:\n{}\n{}",
                n.name,
                if dead {
                    "stopped before it installed itself"
                } else {
                    "did not install itself in time"
                },
                tail(n.dir.with_extension("log")),
                tail(n.dir.with_extension("launcher.log")),
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn merge_talosconfig(dest: &Path, new: &ClientConfig) -> Result<()> {
    let mut cfg = if dest.exists() {
        ClientConfig::load(dest)?
    } else {
        ClientConfig::default()
    };
    for (from, to) in cfg.merge(new) {
        if from != to {
            eprintln!("renamed talosconfig context \"{from}\" -> \"{to}\"");
        }
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::msg(format!("{}: {e}", parent.display())))?;
    }
    cfg.save(dest)
}

async fn wait_api(info: &crate::health::ClusterInfo, node: &str, deadline: Instant) -> Result<()> {
    let t = info.target(node).map_err(Error::msg)?;
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(2),
            crate::client::machine(&t).version(()),
        )
        .await;
        match attempt {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(s)) if Instant::now() >= deadline => {
                return Err(crate::client::call_error(node, s))
            }
            Err(_) if Instant::now() >= deadline => {
                return Err(Error::msg(format!(
                    "{node}: the API did not answer in time"
                )))
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn bootstrap(info: &crate::health::ClusterInfo, node: &str, deadline: Instant) -> Result<()> {
    let t = info.target(node).map_err(Error::msg)?;
    loop {
        let r = crate::client::machine(&t)
            .bootstrap(api::machine::BootstrapRequest::default())
            .await;
        match r {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(s) => return Err(crate::client::call_error(node, s)),
        }
    }
}

fn show(c: &Cluster) -> Result<()> {
    let kv = [
        ("PROVISIONER", c.provisioner.clone()),
        ("NAME", c.name.clone()),
        ("NETWORK NAME", c.netns.clone()),
        ("NETWORK CIDR", c.cidr.to_string()),
        ("NETWORK GATEWAY", c.gateway.to_string()),
        ("NETWORK MTU", c.mtu.to_string()),
        ("API ENDPOINT", c.api_endpoint.clone()),
    ];
    let mut rows: Vec<Vec<String>> = kv
        .iter()
        .map(|(k, v)| vec![k.to_string(), v.clone()])
        .collect();
    print!("{}", crate::config_cmd::table(&rows));
    println!("\nNODES:\n");
    rows = vec![["NAME", "TYPE", "IP", "CPU", "RAM", "DISK"]
        .map(String::from)
        .to_vec()];
    for n in &c.nodes {
        rows.push(vec![
            n.name.clone(),
            n.kind.as_str().into(),
            n.ip.to_string(),
            format!("{:.2}", n.cpus),
            format!("{:.1} GB", n.memory as f64 / 1e9),
            if n.disk == 0 {
                "-".into()
            } else {
                format!("{:.1} GB", n.disk as f64 / 1e9)
            },
        ]);
    }
    print!("{}", crate::config_cmd::table(&rows));
    Ok(())
}

fn scale(name: &str, root: &Path, a: ScaleArgs) -> Result<()> {
    let mut cluster = Cluster::load(root, name).map_err(Error::msg)?;
    let templates = Templates::load(&cluster)?;
    let talosconfig = ClientConfig::load(&cluster.dir.join("talosconfig"))?;
    let info = |c: &Cluster| -> Result<crate::health::ClusterInfo> {
        Ok(crate::health::ClusterInfo {
            control_planes: c.controlplanes().map(|n| n.ip.to_string()).collect(),
            workers: c.workers().map(|n| n.ip.to_string()).collect(),
            context: talosconfig.current(None)?.1.clone(),
            through: Some(c.api_endpoint.clone()),
        })
    };
    let deadline = Instant::now() + parse_duration(&a.wait_timeout)?;
    let _ = &a.talosconfig;
    if a.controlplanes == Some(0) {
        return Err(Error::msg("a cluster needs at least one control plane"));
    }
    let machined = machined_path();
    for (kind, want) in [
        (NodeType::Controlplane, a.controlplanes),
        (NodeType::Worker, a.workers),
    ] {
        let Some(want) = want else { continue };
        let have: Vec<provision::Node> = cluster
            .nodes
            .iter()
            .filter(|n| n.kind == kind)
            .cloned()
            .collect();
        let template = have
            .first()
            .or(cluster.nodes.first())
            .map(|n| (n.cpus, n.memory, n.disk))
            .unwrap_or((2.0, 2 << 30, 6144 << 20));
        for _ in have.len()..want {
            let p = Phase::start(format!("adding a {} node", kind.as_str()));
            let node = provision::plan_node(&mut cluster, kind, template.0, template.1, template.2)
                .map_err(Error::msg)?;
            let config = templates.for_node(kind, &node.name)?;
            provision::start_node(&mut cluster, &node.name, &config, &machined)
                .map_err(Error::msg)?;
            if cluster.qemu.is_some() {
                wait_installed(&cluster, deadline)?;
            }
            crate::block_on(wait_api(&info(&cluster)?, &node.ip.to_string(), deadline))?;
            p.done();
            eprintln!("added {} ({})", node.name, node.ip);
        }
        // Removed newest first; a control plane leaves etcd before it goes.
        for node in have.iter().skip(want).rev() {
            let p = Phase::start(format!("removing {}", node.name));
            if kind == NodeType::Controlplane {
                let i = info(&cluster)?;
                crate::block_on(async {
                    let t = i.target(&node.ip.to_string()).map_err(Error::msg)?;
                    crate::client::machine(&t)
                        .etcd_leave_cluster(api::machine::EtcdLeaveClusterRequest {})
                        .await
                        .map(|_| ())
                        .or_else(|s| {
                            // A dead node cannot leave: its member is removed through another.
                            if s.code() == tonic::Code::Unavailable {
                                Ok(())
                            } else {
                                Err(crate::client::call_error(&node.ip.to_string(), s))
                            }
                        })
                })?;
                crate::block_on(remove_dead_member(&i, &node.name))?;
            }
            provision::remove_node(&mut cluster, &node.name, Duration::from_secs(10))
                .map_err(Error::msg)?;
            p.done();
            eprintln!("removed {}", node.name);
        }
    }
    show(&cluster)
}

fn reboot(name: &str, root: &Path, a: RebootArgs) -> Result<()> {
    let mut cluster = Cluster::load(root, name).map_err(Error::msg)?;
    let templates = Templates::load(&cluster)?;
    let matches = |n: &str, x: &provision::Node| n == x.name || n == x.ip.to_string();
    if let Some(n) = a
        .nodes
        .iter()
        .find(|n| !cluster.nodes.iter().any(|x| matches(n, x)))
    {
        return Err(Error::msg(format!("no node \"{n}\" in cluster \"{name}\"")));
    }
    let chosen: Vec<provision::Node> = cluster
        .nodes
        .iter()
        .filter(|x| a.nodes.is_empty() || a.nodes.iter().any(|n| matches(n, x)))
        .cloned()
        .collect();
    let machined = machined_path();
    for node in chosen {
        let p = Phase::start(format!("restarting {}", node.name));
        let config = templates.for_node(node.kind, &node.name)?;
        provision::restart_node(&mut cluster, &node.name, &config, &machined)
            .map_err(Error::msg)?;
        p.done();
    }
    Ok(())
}

/// If `hostname` is still an etcd member (its node was dead and could not leave), remove it
/// through the first control plane.
async fn remove_dead_member(info: &crate::health::ClusterInfo, hostname: &str) -> Result<()> {
    let Some(first) = info.control_planes.first() else {
        return Ok(());
    };
    let t = info.target(first).map_err(Error::msg)?;
    let list = crate::client::machine(&t)
        .etcd_member_list(api::machine::EtcdMemberListRequest { query_local: false })
        .await
        .map_err(|s| crate::client::call_error(first, s))?;
    for m in list
        .into_inner()
        .messages
        .into_iter()
        .flat_map(|m| m.members)
    {
        if m.hostname == hostname {
            crate::client::machine(&t)
                .etcd_remove_member_by_id(api::machine::EtcdRemoveMemberByIdRequest {
                    member_id: m.id,
                })
                .await
                .map_err(|s| crate::client::call_error(first, s))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2.0GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("2048").unwrap(), 2048 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert!(parse_size("lots").is_err());
    }
}
