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

impl Vm {
    fn boot(dir: &Path, initramfs: &Path, args: &str) -> Vm {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let console = dir.join(format!("console-{port}.log"));
        let child = Command::new("qemu-system-x86_64")
            .args(["-machine", "q35,accel=tcg", "-m", "1024", "-smp", "2"])
            .args(["-display", "none", "-monitor", "none", "-no-reboot"])
            .args(["-device", "virtio-rng-pci"])
            .arg("-kernel")
            .arg(dir.join("vmlinuz"))
            .arg("-initrd")
            .arg(initramfs)
            .arg("-append")
            .arg(format!(
                "console=ttyS0 talos.platform=metal panic=-1 {args}"
            ))
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

/// A one-file HTTP server on loopback (the guest reaches it as 10.0.2.2); what it serves can
/// change. Stops with the test process.
fn serve(body: std::sync::Arc<std::sync::Mutex<String>>) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let text = body.lock().unwrap().clone();
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    port
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
    let dir = std::env::temp_dir().join(format!("talos-qemu-{}", std::process::id()));
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

    // The config comes from `talos.config=`: first an invalid one (the machine stays in
    // maintenance mode and says why), then a valid one (it boots it).
    ok(
        &dir,
        &[
            "gen",
            "config",
            "vm",
            "https://10.0.2.15:6443",
            "--output",
            dir.to_str().unwrap(),
            "--additional-sans",
            "127.0.0.1",
        ],
    );
    let served = std::sync::Arc::new(std::sync::Mutex::new(
        "version: v1alpha1\nmachine:\n  type: toaster\n".to_string(),
    ));
    let http = serve(served.clone());
    let vm = Vm::boot(
        &dir,
        &dir.join("initramfs.img"),
        &format!("talos.config=http://10.0.2.2:{http}/controlplane.yaml"),
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
    *served.lock().unwrap() = std::fs::read_to_string(dir.join("controlplane.yaml")).unwrap();
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
    let started = Instant::now();
    loop {
        if let Some(status) = bad.child.try_wait().unwrap() {
            eprintln!("the tampered image powered off ({status})");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the tampered image kept running:\n{}",
            bad.console()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let console = bad.console();
    assert!(
        console.contains("does not match the image") && console.contains("refusing to boot"),
        "{console}"
    );
    drop(bad);
    let _ = std::fs::remove_dir_all(&dir);
}
