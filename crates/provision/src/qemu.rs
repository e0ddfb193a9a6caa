//! The QEMU provisioner: every node a virtual machine booting the image (KVM when it works,
//! software emulation otherwise) with a tap device on the cluster's bridge.
//!
//! Per machine, a launcher process (`talosctl qemu-launch --node-dir DIR`) in the cluster's
//! network namespace runs QEMU with `-no-reboot` and starts it again when the guest restarts
//! (QMP tells a restart from a power-off): from the kernel and initramfs with `talos.config=`
//! pointing at its config until the machine has installed itself, from its disk after.
//! Per cluster, a helper (`talosctl cluster-launch --cluster-dir DIR`) serves the configs and
//! the installer image (a read-only registry the configs name as the installer's mirror) on
//! the gateway, and publishes the first control plane's API on the host's loopback.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{in_netns, net, reap, Cluster, Result, BRIDGE};

/// Where the helper serves configs and the installer, on the gateway.
pub const HTTP_PORT: u16 = 8080;

/// The machines' disk.
pub const INSTALL_DISK: &str = "/dev/vda";

/// A QEMU cluster's settings (in `cluster.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// The installer image the configs name (served by the helper under that name).
    pub install_image: String,
    /// The program with the `qemu-launch` and `cluster-launch` commands (talosctl).
    pub launcher: PathBuf,
    /// The helper's process (0 until started).
    #[serde(default)]
    pub helper_pid: u32,
    /// Each machine has a TPM 2.0 (a `swtpm` beside its QEMU, its state in the node's folder).
    #[serde(default)]
    pub tpm2: bool,
}

impl Settings {
    /// The config patch that makes a machine install itself from the helper's installer.
    pub fn install_patch(&self, gateway: Ipv4Addr) -> Result<String> {
        let r = oci::Reference::parse(&self.install_image)
            .map_err(|e| format!("--install-image {}: {e}", self.install_image))?;
        if r.digest.is_some() {
            return Err(format!(
                "--install-image {}: name the installer by tag: the provisioner serves the one it builds from --vmlinuz-path and --initrd-path",
                self.install_image
            ));
        }
        let registry = r.registry;
        Ok(format!(
            "machine:\n  install:\n    disk: {INSTALL_DISK}\n    image: {}\n  registries:\n    mirrors:\n      \"{registry}\":\n        endpoints: [\"http://{gateway}:{HTTP_PORT}\"]\n",
            self.install_image
        ))
    }
}

/// The config patch that encrypts the machines' STATE and/or EPHEMERAL (LUKS2) with a key of
/// each of `types`, in slots 0, 1, ...: `uuid` (derived from the machine's UUID) or `kms`
/// (sealed by the cluster's key service on the gateway).
pub fn encryption_patch(
    gateway: Ipv4Addr,
    state: bool,
    ephemeral: bool,
    types: &[String],
) -> Result<Option<String>> {
    if !state && !ephemeral {
        return Ok(None);
    }
    let mut keys = String::new();
    for (slot, t) in types.iter().enumerate() {
        match t.as_str() {
            "uuid" => keys.push_str(&format!("        - slot: {slot}\n          nodeID: {{}}\n")),
            "kms" => keys.push_str(&format!(
                "        - slot: {slot}\n          kms:\n            endpoint: http://{gateway}:{HTTP_PORT}/kms\n"
            )),
            other => {
                return Err(format!(
                    "--disk-encryption-key-types: unknown key type {other:?} (uuid or kms)"
                ))
            }
        }
    }
    if keys.is_empty() {
        return Err("--disk-encryption-key-types: at least one key type is needed".into());
    }
    let mut patch = "machine:\n  systemDiskEncryption:\n".to_string();
    for (on, part) in [(state, "state"), (ephemeral, "ephemeral")] {
        if on {
            patch.push_str(&format!(
                "    {part}:\n      provider: luks2\n      keys:\n{keys}"
            ));
        }
    }
    Ok(Some(patch))
}

/// The acceleration QEMU gets: KVM when the machines' kernel really runs under it (it prints
/// its banner on the serial console within 5 s), software emulation (TCG) otherwise. (A host
/// may open /dev/kvm, even run a boot sector, and still hang a real guest.)
pub fn probe_accel(dir: &Path, kernel: &Path) -> &'static str {
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !usable {
        return "tcg";
    }
    let console = dir.join(format!("kvm-probe-{}.log", std::process::id()));
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-machine", "q35", "-m", "256"])
        .args(["-display", "none", "-nodefaults", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let ran = child.is_ok_and(|mut c| {
        let booted = ready_while_running(&mut c, Duration::from_secs(5), || {
            std::fs::read_to_string(&console).is_ok_and(|t| t.contains("Linux version"))
        });
        let _ = c.kill();
        let _ = c.wait();
        booted
    });
    let _ = std::fs::remove_file(&console);
    if ran {
        "kvm"
    } else {
        "tcg"
    }
}

fn settings(cluster: &Cluster) -> Result<&Settings> {
    cluster
        .qemu
        .as_ref()
        .ok_or_else(|| format!("cluster \"{}\" is not a QEMU cluster", cluster.name))
}

/// The config served to `node` (`talos.config=`), in the cluster's `configs/`.
fn config_path(cluster: &Cluster, node: &str) -> PathBuf {
    cluster.dir.join("configs").join(format!("{node}.yaml"))
}

fn disk_path(node_dir: &Path) -> PathBuf {
    node_dir.join("disk.raw")
}

/// The control socket of the machine's TPM (`swtpm`).
fn swtpm_socket(node_dir: &Path) -> PathBuf {
    node_dir.join("swtpm.sock")
}

/// The process `cmd` starts is killed when its launcher ends.
fn ends_with_launcher(cmd: &mut Command) {
    // SAFETY: prctl only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}

/// Start the machine's TPM for one start of QEMU (which connects to its socket; swtpm ends
/// when QEMU does). Its state (keys, NVRAM) stays in the node's folder across starts.
fn start_swtpm(node_dir: &Path) -> Result<std::process::Child> {
    let state = node_dir.join("tpm2");
    std::fs::create_dir_all(&state).map_err(|e| format!("{}: {e}", state.display()))?;
    let sock = swtpm_socket(node_dir);
    let _ = std::fs::remove_file(&sock);
    let mut cmd = Command::new("swtpm");
    cmd.args(["socket", "--tpm2", "--terminate"])
        .arg("--tpmstate")
        .arg(format!("dir={}", state.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", sock.display()))
        .stdin(Stdio::null());
    ends_with_launcher(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("swtpm: {e} (Debian: swtpm)"))?;
    if !ready_while_running(&mut child, Duration::from_secs(10), || sock.exists()) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("swtpm did not open {}", sock.display()));
    }
    Ok(child)
}

/// Wait, for at most `limit` and while `child` runs, until `ready`: whether it was.
fn ready_while_running(
    child: &mut std::process::Child,
    limit: Duration,
    ready: impl Fn() -> bool,
) -> bool {
    let until = Instant::now() + limit;
    while !ready() {
        if Instant::now() > until || !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Where the launcher says how the machine last started: `kernel` or `disk`.
fn boot_status(node_dir: &Path) -> PathBuf {
    node_dir.join("boot")
}

/// Whether the node's machine now starts from its disk (it has installed itself).
pub fn boots_from_disk(node_dir: &Path) -> bool {
    std::fs::read_to_string(boot_status(node_dir)).is_ok_and(|s| s.trim() == "disk")
}

/// Start the cluster's helper: configs and installer on the gateway, the API published on
/// `api` (a listener on the host's loopback the helper inherits).
pub fn start_helper(cluster: &mut Cluster, api: std::net::TcpListener) -> Result<()> {
    use std::os::fd::AsRawFd;
    let launcher = settings(cluster)?.launcher.clone();
    std::fs::create_dir_all(cluster.dir.join("configs"))
        .map_err(|e| format!("{}/configs: {e}", cluster.dir.display()))?;
    let log = std::fs::File::create(cluster.dir.join("helper.log"))
        .map_err(|e| format!("helper.log: {e}"))?;
    let mut cmd = Command::new(&launcher);
    cmd.arg("cluster-launch")
        .arg("--cluster-dir")
        .arg(&cluster.dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    let fd = api.as_raw_fd();
    in_netns(&mut cmd, &cluster.netns, Some(fd))?;
    let child = cmd
        .spawn()
        .map_err(|e| format!("start {} cluster-launch: {e}", launcher.display()))?;
    if let Some(q) = cluster.qemu.as_mut() {
        q.helper_pid = child.id();
    }
    reap(child);
    cluster.save()
}

/// Start a planned node's machine: its disk (kept if it exists), its tap device on the
/// bridge, its config where the helper serves it, and its launcher.
pub fn start_node(cluster: &mut Cluster, name: &str, config: &str) -> Result<()> {
    let i = cluster.node_index(name)?;
    let node = cluster.nodes[i].clone();
    let launcher = settings(cluster)?.launcher.clone();
    std::fs::create_dir_all(&node.dir).map_err(|e| format!("{}: {e}", node.dir.display()))?;
    let disk = disk_path(&node.dir);
    if !disk.exists() {
        std::fs::File::create(&disk)
            .and_then(|f| f.set_len(node.disk))
            .map_err(|e| format!("{}: {e}", disk.display()))?;
    }
    let config_file = config_path(cluster, name);
    if let Some(d) = config_file.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    machinery::fsutil::write_atomic(&config_file, config.as_bytes(), 0o600)
        .map_err(|e| format!("{}: {e}", config_file.display()))?;
    if !net::link_exists(&cluster.netns, &node.veth) {
        net::tap(&cluster.netns, BRIDGE, &node.veth, cluster.mtu)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node.dir.with_extension("launcher.log"))
        .map_err(|e| format!("{}.launcher.log: {e}", node.dir.display()))?;
    let mut cmd = Command::new(&launcher);
    cmd.arg("qemu-launch")
        .arg("--node-dir")
        .arg(&node.dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    in_netns(&mut cmd, &cluster.netns, None)?;
    let child = cmd
        .spawn()
        .map_err(|e| format!("start {}: {} qemu-launch: {e}", name, launcher.display()))?;
    cluster.nodes[i].pid = child.id();
    reap(child);
    cluster.save()
}

/// The kernel command line of a machine's first boot; the install keeps it for the boot
/// slot, less `talos.config=`.
fn cmdline(cluster: &Cluster, node: &crate::Node) -> String {
    format!(
        "console=ttyS0 panic=-1 {} talos.config=http://{}:{HTTP_PORT}/configs/{}.yaml",
        cluster.kernel_args(node, "metal"),
        cluster.gateway,
        node.name
    )
}

/// QEMU's arguments for one start of the machine.
fn qemu_args(cluster: &Cluster, node: &crate::Node, from_disk: bool) -> Result<Vec<String>> {
    let q = settings(cluster)?;
    let o = node.ip.octets();
    let mut args: Vec<String> = [
        "-name",
        &node.name,
        "-machine",
        &format!("q35,accel={}", q.accel),
        "-smp",
        &(node.cpus.ceil().max(1.0) as u32).to_string(),
        "-m",
        &format!("{}M", (node.memory >> 20).max(256)),
        "-display",
        "none",
        "-nodefaults",
        "-no-reboot",
        "-chardev",
        &format!(
            "file,id=console,path={},append=on",
            node.dir.with_extension("log").display()
        ),
        "-serial",
        "chardev:console",
        "-qmp",
        &format!(
            "unix:{},server=on,wait=off",
            node.dir.join("qmp.sock").display()
        ),
        "-drive",
        &format!(
            "file={},format=raw,if=virtio",
            disk_path(&node.dir).display()
        ),
        "-netdev",
        &format!("tap,id=net0,ifname={},script=no,downscript=no", node.veth),
        "-device",
        &format!(
            "virtio-net-pci,netdev=net0,mac=52:54:00:{:02x}:{:02x}:{:02x}",
            o[1], o[2], o[3]
        ),
        "-device",
        "virtio-rng-pci",
        // The machine's SMBIOS UUID: its own, and the same at every start (nodeID disk
        // encryption keys are derived from it).
        "-uuid",
        &machine_uuid(&cluster.name, &node.name),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if q.tpm2 {
        args.extend(
            [
                "-chardev",
                &format!("socket,id=tpm,path={}", swtpm_socket(&node.dir).display()),
                "-tpmdev",
                "emulator,id=tpm0,chardev=tpm",
                "-device",
                "tpm-tis,tpmdev=tpm0",
            ]
            .map(String::from),
        );
    }
    if !from_disk {
        args.extend([
            "-kernel".to_string(),
            q.kernel.display().to_string(),
            "-initrd".to_string(),
            q.initramfs.display().to_string(),
            "-append".to_string(),
            cmdline(cluster, node),
        ]);
    }
    Ok(args)
}

/// A machine's UUID, made from the cluster's and the node's names (random-looking: version 4
/// form).
pub fn machine_uuid(cluster: &str, node: &str) -> String {
    let hex = oci::sha256(format!("{cluster}/{node}").as_bytes());
    let h = hex.trim_start_matches("sha256:");
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// The launcher of the machine in `node_dir` (run in the cluster's namespace): start QEMU,
/// and again each time the guest restarts; return when it powers off or QEMU ends otherwise.
pub fn launch(node_dir: &Path) -> Result<()> {
    let cluster_dir = node_dir
        .parent()
        .ok_or_else(|| format!("{}: not a node folder", node_dir.display()))?;
    let name = node_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    loop {
        // Read each time: settings may change between starts (a new kernel, say).
        let cluster = Cluster::load_dir(cluster_dir)?;
        let node = &cluster.nodes[cluster.node_index(&name)?];
        let from_disk = disk::labels(&disk_path(node_dir))
            .iter()
            .any(|l| l == disk::BOOT);
        machinery::fsutil::write_atomic(
            &boot_status(node_dir),
            if from_disk { b"disk\n" } else { b"kernel\n" },
            0o644,
        )
        .map_err(|e| format!("{}: {e}", boot_status(node_dir).display()))?;
        eprintln!(
            "qemu-launch: starting {name} from {}",
            if from_disk {
                "its disk"
            } else {
                "the kernel and initramfs"
            }
        );
        let tpm = match cluster.qemu.as_ref().is_some_and(|q| q.tpm2) {
            true => Some(start_swtpm(node_dir)?),
            false => None,
        };
        let sock = node_dir.join("qmp.sock");
        let _ = std::fs::remove_file(&sock);
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(qemu_args(&cluster, node, from_disk)?)
            .stdin(Stdio::null());
        ends_with_launcher(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("qemu-system-x86_64: {e} (Debian: qemu-system-x86)"))?;
        let reason = shutdown_reason(&sock, &mut child);
        let status = child.wait().map_err(|e| e.to_string())?;
        if let Some(mut tpm) = tpm {
            let _ = tpm.kill();
            let _ = tpm.wait();
        }
        match reason.as_deref() {
            Some("guest-reset") => continue,
            Some(r) => {
                eprintln!("qemu-launch: {name} stopped ({r})");
                return Ok(());
            }
            None => return Err(format!("qemu-system-x86_64 ended: {status}")),
        }
    }
}

/// Follow QMP's events until QEMU ends; the reason of its last SHUTDOWN event.
fn shutdown_reason(sock: &Path, child: &mut std::process::Child) -> Option<String> {
    let stream = loop {
        if let Ok(s) = std::os::unix::net::UnixStream::connect(sock) {
            break s;
        }
        if !matches!(child.try_wait(), Ok(None)) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut writer = stream.try_clone().ok()?;
    writer
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .ok()?;
    let mut reason = None;
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["event"] == "SHUTDOWN" {
            reason = msg["data"]["reason"].as_str().map(str::to_string);
        }
    }
    reason
}

/// The cluster's helper (run in the cluster's namespace): serve configs and the installer on
/// the gateway and forward connections on fd 3 (the host's loopback) to the first control
/// plane's API. Runs until killed.
pub fn serve(cluster_dir: &Path) -> Result<()> {
    use std::os::fd::FromRawFd;
    let cluster = Cluster::load_dir(cluster_dir)?;
    let q = settings(&cluster)?;
    let server = crate::http::Server::start(SocketAddr::new(cluster.gateway.into(), HTTP_PORT))
        .map_err(|e| format!("serve on {}:{HTTP_PORT}: {e}", cluster.gateway))?;
    server.dir("/configs/", &cluster.dir.join("configs"));
    let kms = std::sync::Arc::new(crate::kms::Kms::open(&cluster.dir.join("kms.key"))?);
    server.post(
        "/kms/",
        std::sync::Arc::new(move |op, body| kms.answer(op, body)),
    );
    eprintln!("cluster-launch: serving on http://{}", server.addr);
    // SAFETY: fd 3 is the listener the provisioner handed over; nothing else owns it.
    let api = unsafe { std::net::TcpListener::from_raw_fd(3) };
    let dir = cluster_dir.to_path_buf();
    std::thread::spawn(move || {
        for conn in api.incoming().flatten() {
            // The first control plane as the cluster has it now (nodes come after the helper).
            let target = Cluster::load_dir(&dir).ok().and_then(|c| {
                let ip = c.controlplanes().next()?.ip;
                Some(SocketAddr::new(ip.into(), 50000))
            });
            if let Some(target) = target {
                std::thread::spawn(move || forward(conn, target));
            }
        }
    });
    let reference = oci::Reference::parse(&q.install_image).map_err(|e| e.to_string())?;
    let image = crate::imager::installer(&q.kernel, &q.initramfs)?;
    server.image(&reference.repository, reference.version(), image);
    eprintln!(
        "cluster-launch: serving the installer as {}",
        q.install_image
    );
    loop {
        std::thread::park();
    }
}

/// Copy both ways between a client and `target` until either side ends.
fn forward(client: TcpStream, target: SocketAddr) {
    let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
        return;
    };
    let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut s2);
        let _ = s2.shutdown(std::net::Shutdown::Write);
    });
    let (mut client, mut server) = (client, server);
    let _ = std::io::copy(&mut server, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        let dir = PathBuf::from("/state/c1");
        let node = crate::Node {
            name: "c1-worker-1".into(),
            kind: crate::NodeType::Worker,
            ip: "10.5.0.3".parse().unwrap(),
            cpus: 1.5,
            memory: 2 << 30,
            dir: dir.join("c1-worker-1"),
            netns: String::new(),
            veth: "tap3".into(),
            disk: 6 << 30,
            pid: 0,
            cgroups: Vec::new(),
        };
        Cluster {
            name: "c1".into(),
            provisioner: "qemu".into(),
            cidr: "10.5.0.0/24".parse().unwrap(),
            gateway: "10.5.0.1".parse().unwrap(),
            mtu: 1500,
            netns: "c1".into(),
            api_endpoint: "127.0.0.1:50000".into(),
            nodes: vec![node],
            dir,
            extra_boot_kernel_args: "talos.dashboard.disabled=1".into(),
            discovery_pid: 0,
            discovery_endpoint: String::new(),
            qemu: Some(Settings {
                kernel: "/out/vmlinuz".into(),
                initramfs: "/out/initramfs.img".into(),
                accel: "tcg".into(),
                install_image: "talos.local/installer:v1".into(),
                launcher: "/bin/talosctl".into(),
                helper_pid: 0,
                tpm2: false,
            }),
        }
    }

    #[test]
    fn machines_boot_the_kernel_until_installed_then_their_disk() {
        let c = cluster();
        let node = &c.nodes[0];
        let first = qemu_args(&c, node, false).unwrap().join(" ");
        assert!(
            first.contains("-machine q35,accel=tcg -smp 2 -m 2048M"),
            "{first}"
        );
        assert!(first.contains("-no-reboot"), "{first}");
        assert!(
            first.contains("-netdev tap,id=net0,ifname=tap3,script=no,downscript=no"),
            "{first}"
        );
        assert!(first.contains("mac=52:54:00:05:00:03"), "{first}");
        assert!(
            first.contains("file=/state/c1/c1-worker-1/disk.raw,format=raw,if=virtio"),
            "{first}"
        );
        assert!(
            first.contains("-kernel /out/vmlinuz -initrd /out/initramfs.img -append console=ttyS0"),
            "{first}"
        );
        assert!(
            first.contains("ip=10.5.0.3::10.5.0.1:255.255.255.0:c1-worker-1:eth0:off talos.dashboard.disabled=1 talos.config=http://10.5.0.1:8080/configs/c1-worker-1.yaml"),
            "{first}"
        );
        let installed = qemu_args(&c, node, true).unwrap().join(" ");
        assert!(!installed.contains("-kernel") && !installed.contains("talos.config"));
        assert!(!installed.contains("tpm"), "{installed}");
        // With a TPM: QEMU reaches the node's swtpm through its socket.
        let mut c = cluster();
        c.qemu.as_mut().unwrap().tpm2 = true;
        let with_tpm = qemu_args(&c, &c.nodes[0], true).unwrap().join(" ");
        assert!(
            with_tpm.contains("-chardev socket,id=tpm,path=/state/c1/c1-worker-1/swtpm.sock -tpmdev emulator,id=tpm0,chardev=tpm -device tpm-tis,tpmdev=tpm0"),
            "{with_tpm}"
        );
    }

    #[test]
    fn the_encryption_patch_gives_each_partition_the_key_types_asked_for() {
        let gw = Ipv4Addr::new(10, 5, 0, 1);
        assert!(encryption_patch(gw, false, false, &["uuid".into()])
            .unwrap()
            .is_none());
        let p = encryption_patch(gw, false, true, &["uuid".into(), "kms".into()])
            .unwrap()
            .unwrap();
        let cfg = machinery::config::Config::parse(&format!("version: v1alpha1\n{p}")).unwrap();
        assert!(cfg.pointer("/machine/systemDiskEncryption/state").is_none());
        let keys = cfg
            .pointer("/machine/systemDiskEncryption/ephemeral/keys")
            .unwrap();
        assert_eq!(keys[0]["slot"], 0);
        assert!(keys[0]["nodeID"].is_object());
        assert_eq!(keys[1]["kms"]["endpoint"], "http://10.5.0.1:8080/kms");
        let err = encryption_patch(gw, true, false, &["tpm".into()]).unwrap_err();
        assert!(err.contains("unknown key type \"tpm\""), "{err}");
    }

    #[test]
    fn machines_get_distinct_uuids_with_entropy() {
        let a = machine_uuid("c", "c-controlplane-1");
        assert_eq!(a, machine_uuid("c", "c-controlplane-1"));
        assert_ne!(a, machine_uuid("c", "c-worker-1"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn the_install_patch_names_the_helper_as_the_installers_mirror() {
        let c = cluster();
        let q = c.qemu.as_ref().unwrap();
        let patch = q.install_patch(c.gateway).unwrap();
        assert_eq!(
            patch,
            "machine:\n  install:\n    disk: /dev/vda\n    image: talos.local/installer:v1\n  registries:\n    mirrors:\n      \"talos.local\":\n        endpoints: [\"http://10.5.0.1:8080\"]\n"
        );
        let digest = Settings {
            install_image: format!("talos.local/installer@sha256:{}", "a".repeat(64)),
            ..q.clone()
        };
        let err = digest.install_patch(c.gateway).unwrap_err();
        assert!(err.contains("name the installer by tag"), "{err}");
    }
}
