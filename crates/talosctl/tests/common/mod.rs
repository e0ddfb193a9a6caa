//! What the cluster tests share: threads and a registry inside a cluster's network namespace.
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
