//! What the cluster tests share: threads and a registry inside a cluster's network namespace,
//! test images, and the stand-in kubelet their clusters run (no kubelet can be had here).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `f` on a thread of its own inside the network namespace `netns`.
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = std::fs::File::open(Path::new("/run/netns").join(netns)).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// A Debian `docker-registry` in a cluster's network namespace, on its gateway (10.5.0.1); its log is
/// kept to see what the node asked for. Stopped by pid when dropped.
pub struct Registry {
    child: std::process::Child,
    log: PathBuf,
    pub url: String,
}

impl Registry {
    pub fn start(netns: &str, dir: &Path, port: u16, htpasswd: Option<&str>) -> Registry {
        let dir = dir.join(format!("registry-{port}"));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 10.5.0.1:{port}\n",
            dir.join("data").display()
        );
        if let Some(line) = htpasswd {
            std::fs::write(dir.join("htpasswd"), line).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let log = dir.join("log");
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "docker-registry", "serve"])
            .arg(dir.join("config.yml"))
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let url = format!("http://10.5.0.1:{port}");
        wait_until("the registry", Duration::from_secs(20), || {
            in_netns(netns, move || {
                std::net::TcpStream::connect(("10.5.0.1", port)).is_ok()
            })
            .join()
            .unwrap()
        });
        Registry { child, log, url }
    }

    /// What the registry logged (requests and errors).
    pub fn log(&self) -> String {
        let mut all = std::fs::read_to_string(&self.log).unwrap_or_default();
        all.push_str(
            &std::fs::read_to_string(self.log.with_file_name("stderr")).unwrap_or_default(),
        );
        all
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `done` every 50 ms until it holds, failing the test after `limit`; how long it took.
pub fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// An OCI image of Debian's static busybox (with these applets) running `script`.
pub fn busybox_image(applets: &[&str], script: &str) -> oci::Image {
    let mut entries = vec![
        oci::Entry::Dir("bin".into()),
        oci::Entry::File {
            path: "bin/busybox".into(),
            data: std::fs::read("/bin/busybox").unwrap(),
            mode: 0o755,
        },
    ];
    for applet in applets {
        entries.push(oci::Entry::Symlink {
            path: format!("bin/{applet}"),
            target: "busybox".into(),
        });
    }
    oci::Image::build(
        &[oci::layer(&entries)],
        oci::RunConfig {
            cmd: vec!["/bin/sh".into(), "-c".into(), script.into(), "sh".into()],
            ..Default::default()
        },
    )
}

/// The kubelet's stand-in: says the arguments it was given and answers the kubelet's health
/// check on 127.0.0.1:10248 (its shell stays, with the kubelet's arguments, as its process).
pub fn stand_in_kubelet() -> oci::Image {
    busybox_image(
        &["sh", "echo", "mkdir", "httpd"],
        "echo \"kubelet stand-in: $*\"; mkdir -p /tmp/www && echo ok > /tmp/www/healthz && httpd -f -p 127.0.0.1:10248 -h /tmp/www & wait",
    )
}

/// A patch setting the kubelet's image (in the KubeletConfig document `gen config` writes).
pub fn kubelet_image_patch(image: &str) -> String {
    format!(r#"{{"apiVersion":"v1alpha1","kind":"KubeletConfig","image":"{image}"}}"#)
}

/// Wait until the cluster's namespace `netns` exists with its gateway (10.5.0.1) up, as
/// `cluster create` makes it.
pub fn wait_for_gateway(netns: &str, limit: Duration) {
    wait_until("the cluster's gateway", limit, || {
        let name = netns.to_string();
        Path::new("/run/netns").join(netns).exists()
            && in_netns(&name, || std::net::TcpListener::bind("10.5.0.1:0").is_ok())
                .join()
                .unwrap()
    });
}
