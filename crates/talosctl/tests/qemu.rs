//! The bootable image under QEMU (software emulation): the imager builds the kernel and
//! initramfs around a static machined; the machine fetches its config from `talos.config=`
//! (an invalid one keeps it in maintenance mode), boots it, and answers as a node: its modules,
//! its read-only root without a shell, bootstrap and etcd from the root filesystem. A tampered
//! root filesystem refuses to boot. Then a whole QEMU cluster (`cluster create --provisioner
//! qemu`): its machines install themselves to their disks and restart from them, the cluster
//! is healthy, a worker reboots with its config and a reset returns it to maintenance mode.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

fn musl_machined() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/x86_64-unknown-linux-musl/image/machined")
}

fn imager() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_talosctl")).with_file_name("imager")
}

/// Whether this machine can build and boot the image (CI must).
fn can_boot() -> bool {
    let ok = Path::new("/usr/bin/qemu-system-x86_64").exists()
        && Path::new("/usr/bin/mksquashfs").exists()
        && musl_machined().exists()
        && std::fs::read_dir("/boot")
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
            })
            .unwrap_or(false);
    assert!(
        ok || std::env::var("CI").as_deref() != Ok("true"),
        "needs qemu-system-x86, squashfs-tools, linux-image-amd64 and the musl machined"
    );
    ok
}

struct Vm {
    child: Child,
    console: PathBuf,
    port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Vm {
    /// Start a VM from the image's kernel and `initramfs` (QEMU exits when the guest
    /// restarts: `-no-reboot`), its API forwarded to a loopback port.
    fn boot(dir: &Path, initramfs: &Path, args: &str) -> Vm {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let port = free_port();
        let console = dir.join(format!("console-{port}-{n}.log"));
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-machine", "q35,accel=tcg", "-m", "1024", "-smp", "2"])
            .args(["-display", "none", "-monitor", "none", "-no-reboot"])
            .args(["-device", "virtio-rng-pci"])
            .arg("-kernel")
            .arg(dir.join("vmlinuz"))
            .arg("-initrd")
            .arg(initramfs)
            .arg("-append")
            .arg(format!(
                "console=ttyS0 talos.platform=metal panic=-1 {args}"
            ));
        let child = cmd
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .args([
                "-netdev",
                &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:50000"),
                "-device",
                "virtio-net-pci,netdev=n0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Vm {
            child,
            console,
            port,
        }
    }

    /// Wait for the guest to power off or restart (QEMU exits).
    fn wait_exit(&mut self, what: &str, limit: Duration) {
        let started = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < limit,
                "timed out waiting for {what}; console:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Wait until `done`, failing with the console's end.
    fn wait(&self, what: &str, limit: Duration, done: impl Fn() -> bool) -> Duration {
        let started = Instant::now();
        while !done() {
            if started.elapsed() > limit {
                let c = self.console();
                let tail: Vec<&str> = c.lines().rev().take(40).collect();
                panic!(
                    "timed out waiting for {what}; console:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        started.elapsed()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn talosctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_talosctl"))
        .args(args)
        .env("TALOSCONFIG", dir.join("talosconfig"))
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = talosctl(dir, args);
    assert!(
        out.status.success(),
        "talosctl {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_image_boots_under_qemu_into_a_node_and_a_tampered_root_does_not() {
    if !can_boot() {
        return;
    }
    let dir = build_image("talos-qemu");

    // The config comes from `talos.config=`: first an invalid one (the machine stays in
    // maintenance mode and says why), then a valid one (it boots it).
    gen_config(&dir, &[]);
    // Served on loopback: the guest reaches it as 10.0.2.2.
    let http = provision::http::Server::start("127.0.0.1:0".parse().unwrap()).unwrap();
    http.file(
        "/controlplane.yaml",
        Some(b"version: v1alpha1\nmachine:\n  type: toaster\n".to_vec()),
    );
    let vm = Vm::boot(
        &dir,
        &dir.join("initramfs.img"),
        &format!(
            "talos.config=http://10.0.2.2:{}/controlplane.yaml",
            http.addr.port()
        ),
    );
    let ep = vm.endpoint();
    let up = vm.wait("apid in maintenance mode", Duration::from_secs(120), || {
        talosctl(&dir, &["version", "--insecure", "-n", &ep, "-e", &ep])
            .status
            .success()
    });
    eprintln!("QEMU start to apid answering (maintenance): {up:?}");
    vm.wait(
        "the invalid config reported",
        Duration::from_secs(60),
        || vm.console().contains("is invalid"),
    );
    let console = vm.console();
    assert!(
        console.contains("maintenance mode") && console.contains("type"),
        "{console}"
    );
    http.file(
        "/controlplane.yaml",
        Some(std::fs::read(dir.join("controlplane.yaml")).unwrap()),
    );
    let conn = ["-n", ep.as_str(), "-e", ep.as_str()];
    vm.wait("the configured node", Duration::from_secs(120), || {
        let mut args = vec!["version"];
        args.extend_from_slice(&conn);
        talosctl(&dir, &args).status.success()
    });
    let with = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&conn);
        ok(&dir, &all)
    };
    let modules = with(&["read", "/proc/modules"]);
    assert!(
        modules.contains("virtio_net") && modules.contains("squashfs"),
        "{modules}"
    );
    let root = with(&["list", "/"]);
    for d in ["system", "var", "etc", "usr"] {
        assert!(root.contains(d), "{root}");
    }
    // No shell, no package manager: only the services' programs.
    for path in [
        "/bin/sh",
        "/usr/bin/sh",
        "/bin/busybox",
        "/usr/bin/apt",
        "/usr/bin/dpkg",
    ] {
        let mut args = vec!["list", path];
        args.extend_from_slice(&conn);
        assert!(
            !talosctl(&dir, &args).status.success(),
            "{path} exists in the image"
        );
    }
    let bin = with(&["list", "/usr/bin"]);
    assert!(bin.contains("etcd") && bin.contains("containerd"), "{bin}");
    with(&["bootstrap"]);
    vm.wait("etcd running", Duration::from_secs(120), || {
        let mut args = vec!["service", "etcd"];
        args.extend_from_slice(&conn);
        String::from_utf8_lossy(&talosctl(&dir, &args).stdout).contains("Running")
    });
    drop(vm);

    // The same image with one byte of its root filesystem changed refuses to boot.
    let tampered = tampered(&dir);
    let mut bad = Vm::boot(&dir, &tampered, "");
    bad.wait_exit("the tampered image to power off", Duration::from_secs(120));
    let console = bad.console();
    assert!(
        console.contains("does not match the image") && console.contains("refusing to boot"),
        "{console}"
    );
    drop(bad);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The image's initramfs with one byte of its root filesystem changed (`tampered.img`).
fn tampered(dir: &Path) -> PathBuf {
    let mut image = std::fs::read(dir.join("initramfs.img")).unwrap();
    let at = image.len() - 4096;
    image[at] ^= 0xff;
    let tampered = dir.join("tampered.img");
    std::fs::write(&tampered, &image).unwrap();
    tampered
}

/// The configs of a one-node cluster `vm` (the guest is 10.0.2.15; its API is reached on
/// loopback) into `dir`, with more `gen config` arguments.
fn gen_config(dir: &Path, more: &[&str]) {
    let mut args = vec![
        "gen",
        "config",
        "vm",
        "https://10.0.2.15:6443",
        "--output",
        dir.to_str().unwrap(),
        "--additional-sans",
        "127.0.0.1",
    ];
    args.extend_from_slice(more);
    ok(dir, &args);
}

/// A fresh folder `<name>-<pid>` in the temporary folder with what `imager boot` makes
/// (its report, the sizes, is printed).
fn build_image(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let built = Command::new(imager())
        .arg("boot")
        .arg("--machined")
        .arg(musl_machined())
        .arg("-o")
        .arg(&dir)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&built.stdout).into_owned();
    assert!(
        built.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&built.stderr)
    );
    eprintln!("{report}");
    dir
}

/// A QEMU cluster made by `talosctl cluster create --provisioner qemu`, destroyed however the
/// test ends.
struct QemuCluster {
    name: String,
    dir: PathBuf,
}

impl QemuCluster {
    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn cluster(&self, args: &[&str]) -> Output {
        let state = self.state().display().to_string();
        let mut all = vec!["cluster"];
        all.extend_from_slice(args);
        all.extend(["--name", &self.name, "--state", &state]);
        talosctl(&self.dir, &all)
    }

    fn console(&self, node: &str) -> String {
        let log = self.state().join(&self.name).join(format!("{node}.log"));
        std::fs::read_to_string(log).unwrap_or_default()
    }

    /// Wait until `done`, failing with the end of `node`'s console.
    fn wait(&self, node: &str, what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
        let started = Instant::now();
        while !done() {
            if started.elapsed() > limit {
                let c = self.console(node);
                let tail: Vec<&str> = c.lines().rev().take(40).collect();
                panic!(
                    "timed out waiting for {what}; console of {node}:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `talosctl ARGS --insecure` against `node` in maintenance mode, from inside the
    /// cluster's network (where the insecure API answers).
    fn maintenance_call(&self, args: &[&str], node: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(env!("CARGO_BIN_EXE_talosctl"))
            .args(args)
            .args(["--insecure", "-n", node, "-e", node])
            .output()
            .unwrap()
    }

    /// The processes whose command line names the cluster's state (launchers, QEMU, helper).
    fn processes(&self) -> Vec<u32> {
        let state = self.state().display().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&state))
            })
            .collect()
    }
}

impl Drop for QemuCluster {
    fn drop(&mut self) {
        let _ = self.cluster(&["destroy", "--force"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_qemu_cluster_installs_its_machines_is_healthy_and_a_worker_reboots_and_resets() {
    if !can_boot() {
        return;
    }
    let dir = build_image("talos-qemu-cluster");
    let c = QemuCluster {
        name: format!("q{}", std::process::id() % 100_000),
        dir: dir.clone(),
    };
    let (cp, worker) = (
        format!("{}-controlplane-1", c.name),
        format!("{}-worker-1", c.name),
    );
    let (kernel, initrd, talosconfig) = (
        dir.join("vmlinuz").display().to_string(),
        dir.join("initramfs.img").display().to_string(),
        dir.join("talosconfig").display().to_string(),
    );
    // Upgrades come from registry.test, which the machines reach through a mirror on the
    // gateway. A file under /var must land on EPHEMERAL, not under it.
    let mirror = dir.join("mirror.yaml");
    std::fs::write(
        &mirror,
        format!("machine:\n  registries:\n    mirrors:\n      registry.test:\n        endpoints: [\"http://10.5.0.1:{REGISTRY_PORT}\"]\n  files:\n    - path: /var/etc/qemu-hello.conf\n      op: create\n      permissions: 420\n      content: \"hello from machine.files\\n\"\n"),
    )
    .unwrap();
    // Every machine boots the kernel with its config from the provisioner, installs itself
    // from the provisioner's installer and restarts from its disk; then bootstrap and health.
    // The registry comes up with the cluster's network, while create waits for health (the
    // kubelet's image among what it serves).
    let (netns, images_dir) = (c.name.clone(), dir.clone());
    let serving = std::thread::spawn(move || {
        common::wait_for_gateway(&netns, Duration::from_secs(600));
        serve_images(&netns, &images_dir)
    });
    let kubelet = common::kubelet_image_patch("registry.test/talos/stand-in:1");
    let started = Instant::now();
    let out = c.cluster(&[
        "create",
        "--provisioner",
        "qemu",
        "--vmlinuz-path",
        &kernel,
        "--initrd-path",
        &initrd,
        "--talosconfig",
        &talosconfig,
        "--wait-timeout",
        "15m",
        "--skip-kubernetes",
        "--config-patch",
        &format!("@{}", mirror.display()),
        "--config-patch",
        &kubelet,
        // STATE and EPHEMERAL encrypted, each with a key sealed by the cluster's key service
        // (tried first: EPHEMERAL waits for the network to unseal it) and one derived from
        // the machine's UUID (what opens STATE before the network is up).
        "--encrypt-state",
        "--encrypt-ephemeral",
        "--disk-encryption-key-types",
        "kms,uuid",
        // Each machine gets a TPM (swtpm): the key rotation below enrolls a tpm key.
        "--with-tpm2",
        // One vCPU a machine: under software emulation a guest with two vCPUs on this 2-core
        // host was seen stuck in kernel spinlocks ("soft lockup … [runc]") when one vCPU thread
        // was descheduled while holding a lock the other spun on.
        "--cpus",
        "1",
        "--cpus-workers",
        "1",
    ]);
    let (shown, phases) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{shown}{phases}");
    eprintln!("{phases}cluster create: {:?}", started.elapsed());
    let registry = serving.join().unwrap();
    assert!(
        phases.contains("waiting for the machines to install themselves and restart: done"),
        "{phases}"
    );
    for want in ["qemu", cp.as_str(), worker.as_str(), "10.5.0.3", "6.4 GB"] {
        assert!(shown.contains(want), "{want} missing in:\n{shown}");
    }

    let health = talosctl(
        &dir,
        &[
            "health",
            "--skip-kubernetes",
            "--control-plane-nodes",
            "10.5.0.2",
            "--worker-nodes",
            "10.5.0.3",
            "--wait-timeout",
            "2m",
        ],
    );
    let report = String::from_utf8_lossy(&health.stderr);
    assert!(health.status.success(), "{report}");
    assert!(
        report.contains("waiting for etcd to be healthy: OK"),
        "{report}"
    );
    c.wait(&cp, "both members", Duration::from_secs(120), || {
        let m = String::from_utf8_lossy(&talosctl(&dir, &["get", "members"]).stdout).into_owned();
        m.contains(&cp) && m.contains(&worker)
    });

    // The worker runs from its disk: slot A, STATE and EPHEMERAL on its partitions.
    let on_worker = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-n", "10.5.0.3"]);
        ok(&dir, &all)
    };
    let cmdline = on_worker(&["read", "/proc/cmdline"]);
    assert!(
        cmdline.contains("BOOT_IMAGE=/A/vmlinuz")
            && cmdline.contains("ip=10.5.0.3::10.5.0.1")
            && !cmdline.contains("talos.config="),
        "{cmdline}"
    );
    let mounts = on_worker(&["read", "/proc/mounts"]);
    assert!(
        mounts.contains("/dev/mapper/luks2-STATE /system/state xfs"),
        "{mounts}"
    );
    assert!(
        mounts.contains("/dev/mapper/luks2-EPHEMERAL /var xfs"),
        "{mounts}"
    );
    // machine.files written once EPHEMERAL is mounted on /var (before, it would be hidden).
    assert_eq!(
        on_worker(&["read", "/var/etc/qemu-hello.conf"]),
        "hello from machine.files\n"
    );
    let boots = |node: &str| c.console(node).matches("Linux version").count();
    assert_eq!(boots(&worker), 2, "a first boot and one from the disk");
    let console = c.console(&worker);
    assert!(
        console.contains("boot: EPHEMERAL is empty: encrypting it (LUKS2)"),
        "{console}"
    );

    disk_encryption(&dir);

    // A reboot restarts the machine (its launcher starts QEMU again); it comes back from its
    // disk with its config.
    on_worker(&["reboot"]);
    c.wait(
        &worker,
        "the worker's reboot",
        Duration::from_secs(300),
        || {
            boots(&worker) == 3
                && talosctl(&dir, &["get", "hostname", "-n", "10.5.0.3"])
                    .stdout
                    .windows(worker.len())
                    .any(|w| w == worker.as_bytes())
        },
    );

    // Each partition opens with the first key its config names: STATE (through META) with
    // the TPM's, EPHEMERAL (through its VolumeConfig) with the passphrase locked to STATE.
    let console = c.console(&worker);
    for (label, opened) in [("STATE", "slot 2 (tpm)"), ("EPHEMERAL", "slot 3 (static)")] {
        assert_eq!(
            key_slots(&dir, label),
            vec![(2, "tpm".to_string()), (3, "static".to_string())]
        );
        assert!(
            console.contains(&format!("boot: {label} opened with {opened}")),
            "{console}"
        );
    }

    upgrades_and_rollbacks(&c, &dir, &worker, &registry);

    // A reset wipes STATE and EPHEMERAL (made anew at the next boot): maintenance mode, the
    // insecure API answering inside the cluster's network only.
    on_worker(&["reset", "--reboot"]);
    let insecure = || {
        c.maintenance_call(&["version"], "10.5.0.3")
            .status
            .success()
    };
    c.wait(
        &worker,
        "maintenance mode after the reset",
        Duration::from_secs(300),
        insecure,
    );
    let console = c.console(&worker);
    assert!(
        console.contains("wiping STATE") && console.matches("wiping EPHEMERAL").count() == 2,
        "{console}"
    );
    assert!(
        !talosctl(&dir, &["version", "-n", "10.5.0.3"])
            .status
            .success(),
        "the worker kept its config after the reset"
    );
    assert!(talosctl(&dir, &["version", "-n", "10.5.0.2"])
        .status
        .success());

    migrations(&c, &dir, &worker);

    // Scaling the workers down removes the machine and everything it had.
    let out = c.cluster(&["scale", "--workers", "0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cluster_dir = c.state().join(&c.name);
    assert!(!cluster_dir.join(&worker).exists());
    assert!(!cluster_dir.join(format!("configs/{worker}.yaml")).exists());
    let links = Command::new("ip")
        .args(["-n", &c.name, "-o", "link", "show", "type", "tun"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&links.stdout).lines().count(), 1);

    control_plane_upgrade(&c, &dir);

    // Destroy leaves nothing: processes, namespace, state.
    assert!(!c.processes().is_empty());
    let out = c.cluster(&["destroy"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        c.processes().is_empty(),
        "processes left: {:?}",
        c.processes()
    );
    assert!(!Path::new("/run/netns").join(&c.name).exists());
    assert!(!c.state().join(&c.name).exists());
}

/// `talosctl patch mc` of the worker (10.5.0.3) with `patches` in order, without a reboot.
fn patch_worker(dir: &Path, patches: &[&str]) -> Output {
    let mut args = vec!["patch", "mc", "-n", "10.5.0.3", "--mode", "no-reboot"];
    for p in patches {
        args.extend(["-p", p]);
    }
    talosctl(dir, &args)
}

/// The key slots of the worker's partition `label` (VolumeStatus), each with its kind; the
/// partition must be encrypted and mounted.
fn key_slots(dir: &Path, label: &str) -> Vec<(u64, String)> {
    let spec = volume_status(dir, label);
    assert_eq!(spec["encryptionProvider"], "luks2", "{spec}");
    assert_eq!(spec["phase"], "ready", "{spec}");
    spec["encryptionKeySlots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["slot"].as_u64().unwrap(),
                k["type"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// The worker's disk encryption: both partitions with a kms and a nodeID key; keys rotated
/// to a tpm and a static key in two applies (a one-step rotation that keeps no key is
/// refused), EPHEMERAL's keys ending up in its VolumeConfig document.
fn disk_encryption(dir: &Path) {
    for label in ["STATE", "EPHEMERAL"] {
        assert_eq!(
            key_slots(dir, label),
            vec![(0, "kms".to_string()), (1, "nodeID".to_string())]
        );
    }
    let table = ok(dir, &["get", "vs", "-n", "10.5.0.3"]);
    assert!(
        table.contains("TYPE") && table.contains("PHASE") && table.contains("/dev/vda6"),
        "{table}"
    );
    // The whole section is replaced: the old one deleted, the new one merged in (JSON 6902
    // patches do not apply to multi-document configs).
    let patch = |keys: &str| {
        let section = format!(
            r#"{{"machine":{{"systemDiskEncryption":{{"state":{{"provider":"luks2","keys":{keys}}},"ephemeral":{{"provider":"luks2","keys":{keys}}}}}}}}}"#
        );
        patch_worker(
            dir,
            &[
                r#"{"machine":{"systemDiskEncryption":{"$patch":"delete"}}}"#,
                &section,
            ],
        )
    };
    // A one-step rotation would leave nothing to open the partitions with: refused.
    let out = patch(r#"[{"slot":2,"static":{"passphrase":"rotated"}}]"#);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("leaves no key as it was"), "{err}");
    // Two steps: the new keys (sealed by the machine's TPM, and a passphrase) beside the old
    // ones, then the old ones removed.
    let out = patch(
        r#"[{"slot":0,"kms":{"endpoint":"http://10.5.0.1:8080/kms"}},{"slot":1,"nodeID":{}},{"slot":2,"tpm":{}},{"slot":3,"static":{"passphrase":"rotated"}}]"#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for label in ["STATE", "EPHEMERAL"] {
        let slots: Vec<u64> = key_slots(dir, label).into_iter().map(|(s, _)| s).collect();
        assert_eq!(slots, vec![0, 1, 2, 3]);
    }
    // The second step also moves EPHEMERAL's encryption to its VolumeConfig document
    // (upstream's newer form), its passphrase now locked to STATE's salt (so enrolled anew,
    // authorised by the tpm key, which stays as it was) and tried first.
    let out = patch_worker(
        dir,
        &[
            r#"{"machine":{"systemDiskEncryption":{"$patch":"delete"}}}"#,
            r#"{"machine":{"systemDiskEncryption":{"state":{"provider":"luks2","keys":[{"slot":2,"tpm":{}},{"slot":3,"static":{"passphrase":"rotated"}}]}}}}"#,
            "apiVersion: v1alpha1\nkind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  provider: luks2\n  keys:\n    - slot: 3\n      static:\n        passphrase: rotated\n      lockToState: true\n    - slot: 2\n      tpm: {}\n",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for label in ["STATE", "EPHEMERAL"] {
        assert_eq!(
            key_slots(dir, label),
            vec![(2, "tpm".to_string()), (3, "static".to_string())]
        );
    }
}

/// The spec of the worker's partition `label` as its VolumeStatus has it (null while the
/// worker does not answer).
fn volume_status(dir: &Path, label: &str) -> serde_json::Value {
    let out = talosctl(
        dir,
        &["get", "volumestatus", label, "-n", "10.5.0.3", "-o", "json"],
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .map_or(serde_json::Value::Null, |v| v["spec"].clone())
}

/// The documented ways to encryption, on the worker in maintenance mode after its reset:
/// STATE (wiped) is encrypted by the config applied in maintenance mode; EPHEMERAL, plain
/// under that config, by staging a config that encrypts it and wiping it.
fn migrations(c: &QemuCluster, dir: &Path, worker: &str) {
    let full = c
        .state()
        .join(&c.name)
        .join(format!("configs/{worker}.yaml"));
    let plain = dir.join("plain-ephemeral.yaml");
    ok(
        dir,
        &[
            "machineconfig",
            "patch",
            &full.display().to_string(),
            "-p",
            r#"{"machine":{"systemDiskEncryption":{"ephemeral":{"$patch":"delete"}}}}"#,
            "-o",
            &plain.display().to_string(),
        ],
    );
    let out = c.maintenance_call(
        &["apply-config", "-f", &plain.display().to_string()],
        "10.5.0.3",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait(
        worker,
        "the worker up with its config",
        Duration::from_secs(300),
        || volume_status(dir, "EPHEMERAL")["phase"] == "ready",
    );
    assert_eq!(
        key_slots(dir, "STATE"),
        vec![(0, "kms".to_string()), (1, "nodeID".to_string())]
    );
    let status = volume_status(dir, "EPHEMERAL");
    assert!(status.get("encryptionProvider").is_none(), "{status}");

    ok(
        dir,
        &[
            "apply-config",
            "-n",
            "10.5.0.3",
            "--mode",
            "staged",
            "-f",
            &full.display().to_string(),
        ],
    );
    ok(
        dir,
        &[
            "reset",
            "-n",
            "10.5.0.3",
            "--system-labels-to-wipe",
            "EPHEMERAL",
            "--reboot",
        ],
    );
    c.wait(
        worker,
        "EPHEMERAL encrypted after its wipe",
        Duration::from_secs(300),
        || {
            let s = volume_status(dir, "EPHEMERAL");
            s["phase"] == "ready" && s["encryptionProvider"] == "luks2"
        },
    );
    assert_eq!(
        key_slots(dir, "EPHEMERAL"),
        vec![(0, "kms".to_string()), (1, "nodeID".to_string())]
    );
}

/// The port of the test's registry on the QEMU cluster's gateway.
const REGISTRY_PORT: u16 = 5001;

/// The test's registry on the gateway, serving two installers (`good`, and `broken`, whose
/// root filesystem does not pass its check), two system extensions (`hello` for this
/// system, `future` for a later one) and the machines' stand-in kubelet.
fn serve_images(netns: &str, dir: &Path) -> common::Registry {
    let registry = common::Registry::start(netns, dir, REGISTRY_PORT, None);
    let kernel = dir.join("vmlinuz");
    // Into the registry on the gateway (reached from the cluster's namespace).
    let push = |name: &str, image: oci::Image| {
        let reference =
            oci::Reference::parse(&format!("10.5.0.1:{REGISTRY_PORT}/talos/{name}")).unwrap();
        common::in_netns(netns, move || {
            oci::registry::Client::new(Default::default())
                .push(&reference, &image, true)
                .unwrap();
        })
        .join()
        .unwrap();
    };
    let images = [
        ("good", dir.join("initramfs.img")),
        ("broken", tampered(dir)),
    ];
    for (tag, initramfs) in images {
        let image = provision::imager::installer(&kernel, &initramfs).unwrap();
        push(&format!("installer:{tag}"), image);
    }
    for (name, talos) in [("hello", ">= v0.1.0"), ("future", ">= v99.0.0")] {
        let manifest = format!(
            "version: v1alpha1\nmetadata:\n  name: {name}\n  version: 1.0.0\n  author: The tests\n  description: A file in /usr/local.\n  compatibility:\n    talos:\n      version: \"{talos}\"\n"
        );
        let layer = oci::layer(&[
            oci::Entry::File {
                path: "manifest.yaml".into(),
                data: manifest.into_bytes(),
                mode: 0o644,
            },
            oci::Entry::Dir("rootfs/usr/local/share/hello".into()),
            oci::Entry::File {
                path: "rootfs/usr/local/share/hello/hello.txt".into(),
                data: format!("hello from the {name} extension\n").into_bytes(),
                mode: 0o644,
            },
        ]);
        let image = oci::Image::build(&[layer], Default::default());
        push(&format!("{name}:1"), image);
    }
    push("stand-in:1", common::stand_in_kubelet());
    registry
}

/// `talosctl upgrade` of `node` to the test registry's installer `tag`.
fn upgrade(dir: &Path, node: &str, tag: &str, more: &[&str]) -> Output {
    let image = format!("registry.test/talos/installer:{tag}");
    let mut args = vec!["upgrade", "-n", node, "--image", &image, "--timeout", "10m"];
    args.extend_from_slice(more);
    talosctl(dir, &args)
}

/// The worker (10.5.0.3, on slot A) is upgraded to a good installer (slot B, EPHEMERAL wiped),
/// which becomes the default once healthy; a rollback returns it to slot A; an upgrade with
/// --preserve to an installer whose root filesystem does not pass its check returns to slot A
/// by itself, with the node's config and identity. The control plane, etcd's only member,
/// refuses an upgrade that would make it leave etcd. The good upgrade brings a system
/// extension (listed, its file in the root); one made for a later system is refused.
fn upgrades_and_rollbacks(c: &QemuCluster, dir: &Path, worker: &str, registry: &common::Registry) {
    // Strategic merge: the list of extensions grows.
    let add_extension = |name: &str| {
        let patch = format!(
            "machine:\n  install:\n    extensions:\n      - image: registry.test/talos/{name}:1\n"
        );
        let out = patch_worker(dir, &[&patch]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let upgrade = |node: &str, tag: &str, more: &[&str]| upgrade(dir, node, tag, more);
    let slot = || {
        let cmdline = ok(dir, &["read", "/proc/cmdline", "-n", "10.5.0.3"]);
        disk::booted_slot(&cmdline).unwrap_or("none")
    };
    let hostname_kept = || {
        String::from_utf8_lossy(&talosctl(dir, &["get", "hostname", "-n", "10.5.0.3"]).stdout)
            .contains(worker)
    };

    // etcd's only member cannot leave it: nothing is done.
    let out = upgrade("10.5.0.2", "good", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("last member of the etcd cluster") && err.contains("--preserve"),
        "{err}"
    );

    // A good installer with an extension: slot B, the default once the node is healthy
    // there; the extension's file in the read-only root, the extension listed.
    add_extension("hello");
    let out = upgrade("10.5.0.3", "good", &[]);
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}{}", registry.log());
    assert!(report.contains("from boot slot B"), "{report}");
    assert_eq!(slot(), "B");
    c.wait(
        worker,
        "slot B made the default",
        Duration::from_secs(300),
        || {
            c.console(worker)
                .contains("the node is healthy: boot slot B is the default")
        },
    );
    assert!(hostname_kept());
    let listed = ok(dir, &["get", "extensions", "-n", "10.5.0.3"]);
    assert!(
        listed.contains("hello") && listed.contains("1.0.0"),
        "{listed}"
    );
    let file = ok(
        dir,
        &["read", "-n", "10.5.0.3", "/usr/local/share/hello/hello.txt"],
    );
    assert_eq!(file, "hello from the hello extension\n");
    let mounts = ok(dir, &["read", "-n", "10.5.0.3", "/proc/mounts"]);
    assert!(mounts.contains("overlay / overlay ro"), "{mounts}");

    // A rollback: slot A again, without the extension.
    let out = ok(dir, &["rollback", "-n", "10.5.0.3"]);
    assert!(out.contains("rolling back"), "{out}");
    c.wait(
        worker,
        "the rollback to slot A",
        Duration::from_secs(300),
        || {
            talosctl(dir, &["read", "/proc/cmdline", "-n", "10.5.0.3"])
                .stdout
                .windows(16)
                .any(|w| w == b"BOOT_IMAGE=/A/vm")
        },
    );
    let listed = ok(dir, &["get", "extensions", "-n", "10.5.0.3"]);
    assert!(!listed.contains("hello"), "{listed}");

    // A broken installer: its boot refuses the root filesystem and restarts, and the boot
    // loader starts slot A, the default, again.
    let out = upgrade("10.5.0.3", "broken", &["--preserve"]);
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{report}");
    assert!(
        report.contains("the new system did not come up")
            && report.contains("started boot slot A again"),
        "{report}"
    );
    assert_eq!(slot(), "A");
    assert!(hostname_kept());
    let console = c.console(worker);
    assert!(console.contains("refusing to boot"), "{console}");
    assert_eq!(
        console.matches("wiping EPHEMERAL").count(),
        1,
        "only the upgrade without --preserve wipes EPHEMERAL"
    );

    // An extension for a later system is refused before anything is done.
    add_extension("future");
    let out = upgrade("10.5.0.3", "good", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("future 1.0.0 is not compatible with this system: it needs Talos >= v99.0.0"),
        "{err}"
    );
    assert_eq!(slot(), "A");
}

/// A second control plane joins etcd; its upgrade (without --preserve) leaves etcd, the first
/// control plane keeping quorum alone, wipes EPHEMERAL and joins again from slot B as a new
/// member; both control planes are healthy after.
fn control_plane_upgrade(c: &QemuCluster, dir: &Path) {
    let out = c.cluster(&["scale", "--controlplanes", "2", "--wait-timeout", "10m"]);
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    // "added NAME (IP)"
    let (name, ip) = report
        .lines()
        .find_map(|l| {
            let (name, ip) = l.strip_prefix("added ")?.split_once(" (")?;
            Some((name.to_string(), ip.trim_end_matches(')').to_string()))
        })
        .unwrap_or_else(|| panic!("no node added:\n{report}"));
    // Its member id in etcd, as the first control plane lists the members (a voter).
    let member = || {
        let table =
            String::from_utf8_lossy(&talosctl(dir, &["etcd", "members", "-n", "10.5.0.2"]).stdout)
                .into_owned();
        let ids: Vec<String> = table
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some(name.as_str()))
            .filter(|l| l.split_whitespace().last() == Some("false"))
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .collect();
        (
            table.lines().count().saturating_sub(1),
            ids.first().cloned(),
        )
    };
    let mut joined = None;
    c.wait(
        &name,
        "the second control plane in etcd",
        Duration::from_secs(600),
        || {
            joined = member().1;
            joined.is_some()
        },
    );
    let before = joined.unwrap();

    let out = upgrade(dir, &ip, "good", &[]);
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("from boot slot B"), "{report}");
    let console = c.console(&name);
    assert!(console.contains("wiping EPHEMERAL"), "{console}");
    // Back in etcd with a new member id: two voting members again.
    let mut after = (0, None);
    c.wait(
        &name,
        "the control plane back in etcd",
        Duration::from_secs(600),
        || {
            after = member();
            after.1.as_ref().is_some_and(|id| *id != before)
        },
    );
    assert_eq!(after.0, 2, "members after the upgrade: {after:?}");
    let health = talosctl(
        dir,
        &[
            "health",
            "--skip-kubernetes",
            "--control-plane-nodes",
            &format!("10.5.0.2,{ip}"),
            "--wait-timeout",
            "3m",
        ],
    );
    let report = String::from_utf8_lossy(&health.stderr);
    let console = c.console(&name);
    let tail: Vec<&str> = console.lines().rev().take(60).collect();
    assert!(
        health.status.success(),
        "{report}\nconsole of {name}:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}
