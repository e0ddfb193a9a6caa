//! The bootable image under QEMU (software emulation): the imager builds the kernel and
//! initramfs around a static machined; the machine fetches its config from `talos.config=`
//! (an invalid one keeps it in maintenance mode), boots it, and answers as a node: its modules, its read-only root
//! without a shell, bootstrap and etcd from the root filesystem. A tampered root filesystem
//! refuses to boot. The VM's only network is QEMU's user mode, its API forwarded to loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// How a VM starts: the kernel and an initramfs directly, or its disk's boot loader.
enum Start<'a> {
    Kernel { initramfs: &'a Path, args: &'a str },
    Disk,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Vm {
    fn boot(dir: &Path, initramfs: &Path, args: &str) -> Vm {
        Vm::start(dir, Start::Kernel { initramfs, args }, None, free_port())
    }

    /// Start a VM (QEMU exits when the guest restarts: `-no-reboot`), with `disk` as its
    /// virtio disk, its API forwarded to loopback `port`.
    fn start(dir: &Path, how: Start, disk: Option<&Path>, port: u16) -> Vm {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let console = dir.join(format!("console-{port}-{n}.log"));
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-machine", "q35,accel=tcg", "-m", "1024", "-smp", "2"])
            .args(["-display", "none", "-monitor", "none", "-no-reboot"])
            .args(["-device", "virtio-rng-pci"]);
        if let Start::Kernel { initramfs, args } = how {
            cmd.arg("-kernel")
                .arg(dir.join("vmlinuz"))
                .arg("-initrd")
                .arg(initramfs)
                .arg("-append")
                .arg(format!(
                    "console=ttyS0 talos.platform=metal panic=-1 {args}"
                ));
        }
        if let Some(d) = disk {
            cmd.arg("-drive")
                .arg(format!("file={},format=raw,if=virtio", d.display()));
        }
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
    let mut image = std::fs::read(dir.join("initramfs.img")).unwrap();
    let at = image.len() - 4096;
    image[at] ^= 0xff;
    let tampered = dir.join("tampered.img");
    std::fs::write(&tampered, &image).unwrap();
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

#[test]
fn the_machine_installs_to_its_disk_restarts_into_it_and_a_reset_wipes_its_partitions() {
    if !can_boot() {
        return;
    }
    let dir = build_image("talos-qemu-install");
    // The installer image and the config come from a server on loopback (10.0.2.2 to the
    // guest), a read-only registry the config names as the installer's mirror.
    let server = provision::http::Server::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let installer =
        provision::imager::installer(&dir.join("vmlinuz"), &dir.join("initramfs.img")).unwrap();
    server.image("talos/installer", "v1", installer);
    let registry = format!("10.0.2.2:{}", server.addr.port());
    let patch = dir.join("mirror.yaml");
    std::fs::write(
        &patch,
        format!(
            "machine:\n  registries:\n    mirrors:\n      \"{registry}\":\n        endpoints: [\"http://{registry}\"]\n"
        ),
    )
    .unwrap();
    gen_config(
        &dir,
        &[
            "--install-disk",
            "/dev/vda",
            "--install-image",
            &format!("{registry}/talos/installer:v1"),
            "--config-patch",
            &format!("@{}", patch.display()),
        ],
    );
    server.file(
        "/config/controlplane.yaml",
        Some(std::fs::read(dir.join("controlplane.yaml")).unwrap()),
    );
    let disk = dir.join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    let port = free_port();
    let ep = format!("127.0.0.1:{port}");
    let conn = ["-n", ep.as_str(), "-e", ep.as_str()];
    let with = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&conn);
        ok(&dir, &all)
    };
    let answers = |secure: bool| {
        let mut args = vec!["version"];
        if !secure {
            args.push("--insecure");
        }
        args.extend_from_slice(&conn);
        talosctl(&dir, &args).status.success()
    };

    // First boot: the kernel directly, the config from the server; the machine installs
    // and restarts (QEMU exits, as the provisioner's launcher sees it).
    let args = format!("talos.config=http://{registry}/config/controlplane.yaml");
    let started = Instant::now();
    let mut vm = Vm::start(
        &dir,
        Start::Kernel {
            initramfs: &dir.join("initramfs.img"),
            args: &args,
        },
        Some(&disk),
        port,
    );
    vm.wait_exit("the install and restart", Duration::from_secs(300));
    let console = vm.console();
    assert!(console.contains("install: /dev/vda installed"), "{console}");
    eprintln!("boot + install: {:?}", started.elapsed());
    drop(vm);

    // From the disk: its boot loader, slot A, STATE and EPHEMERAL mounted, the config kept.
    let started = Instant::now();
    let vm = Vm::start(&dir, Start::Disk, Some(&disk), port);
    vm.wait("the installed node", Duration::from_secs(300), || {
        answers(true)
    });
    eprintln!("boot from disk to apid: {:?}", started.elapsed());
    let cmdline = with(&["read", "/proc/cmdline"]);
    assert!(
        cmdline.contains("BOOT_IMAGE=/A/vmlinuz") && !cmdline.contains("talos.config="),
        "{cmdline}"
    );
    let mounts = with(&["read", "/proc/mounts"]);
    assert!(mounts.contains("/dev/vda5 /system/state xfs"), "{mounts}");
    assert!(mounts.contains("/dev/vda6 /var xfs"), "{mounts}");
    with(&["bootstrap"]);
    let etcd_running = || {
        let mut args = vec!["service", "etcd"];
        args.extend_from_slice(&conn);
        String::from_utf8_lossy(&talosctl(&dir, &args).stdout).contains("Running")
    };
    vm.wait("etcd running", Duration::from_secs(120), etcd_running);
    let mut vm = vm;

    // A reboot restarts the machine for real; it comes back from the disk with its config
    // and etcd's data.
    with(&["reboot"]);
    vm.wait_exit("the reboot", Duration::from_secs(120));
    drop(vm);
    let mut vm = Vm::start(&dir, Start::Disk, Some(&disk), port);
    vm.wait(
        "the node after its reboot",
        Duration::from_secs(300),
        || answers(true),
    );
    vm.wait("etcd running again", Duration::from_secs(120), etcd_running);

    // A reset wipes STATE and EPHEMERAL (made anew at the next boot): maintenance mode.
    with(&[
        "reset",
        "--graceful=false",
        "--reboot",
        "--system-labels-to-wipe",
        "STATE",
        "--system-labels-to-wipe",
        "EPHEMERAL",
    ]);
    vm.wait_exit("the reset", Duration::from_secs(120));
    drop(vm);
    let vm = Vm::start(&dir, Start::Disk, Some(&disk), port);
    vm.wait(
        "maintenance mode after the reset",
        Duration::from_secs(300),
        || answers(false),
    );
    let console = vm.console();
    assert!(
        console.contains("wiping STATE") && console.contains("wiping EPHEMERAL"),
        "{console}"
    );
    assert!(!answers(true), "the node kept its config after the reset");
    drop(vm);
    let _ = std::fs::remove_dir_all(&dir);
}
