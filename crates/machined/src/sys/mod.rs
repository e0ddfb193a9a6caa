//! Adapters without state of their own: the kernel (netlink, command line, mounts), LUKS and
//! keys, containerd and CRI clients, the reaper, log transport, extension images.

pub mod cmdline;
pub mod cri;
pub mod ctrd;
pub mod ctrd_container;
pub mod discovery;
pub mod extensions;
pub mod kubelet_api;
pub mod lb;
pub mod logship;
pub mod luks;
pub mod netlink;
pub mod pki;
pub mod process;
pub mod reaper;
pub mod selflog;
pub mod wipe;

/// Where a booted node (container mode or a machine) keeps things, inside its root.
pub const STATE_DIR: &str = "/system/state";
pub const LOG_DIR: &str = "/var/log";
pub const EPHEMERAL_DIR: &str = "/var";

/// Run `f` (external tools, disk I/O) off the async runtime; a panic in it becomes its error.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
}

/// The node's non-loopback IPv4 addresses.
pub fn interface_ips() -> Vec<std::net::IpAddr> {
    nix::ifaddrs::getifaddrs()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            a.address?
                .as_sockaddr_in()
                .map(|s| std::net::IpAddr::V4(s.ip()))
        })
        .filter(|ip| !ip.is_loopback())
        .collect()
}

/// Where each mounted device is mounted: (source, mount point).
pub fn mounts() -> Vec<(String, String)> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let at = l.split(' ').nth(4)?;
            let src = l.split(" - ").nth(1)?.split(' ').nth(1)?;
            Some((src.to_string(), at.to_string()))
        })
        .collect()
}

/// Wait until `ready` holds (checked every 20 ms), at most `limit` (`None`: for as long as
/// it takes); whether it held.
pub async fn wait_for(limit: Option<std::time::Duration>, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = limit.map(|l| std::time::Instant::now() + l);
    while !ready() {
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    true
}

/// A stream fed by a task through a small channel.
pub fn async_stream<T, F, Fut>(f: F) -> impl futures::Stream<Item = T> + Send
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

/// Print to the console (the kernel's, when nothing else is there).
pub fn console(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// Mount an XFS file system (STATE, EPHEMERAL) at `at`.
pub fn mount_xfs(dev: &std::path::Path, at: &str) -> Result<(), String> {
    nix::mount::mount(
        Some(dev),
        at,
        Some("xfs"),
        nix::mount::MsFlags::MS_NOATIME,
        None::<&str>,
    )
    .map_err(|e| format!("boot: mount {} on {at}: {e}", dev.display()))
}

/// A boxed future.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// A started task: its pid, its output, how it ends and what to undo after.
pub struct Task {
    pub pid: u32,
    pub outputs: Vec<Box<dyn tokio::io::AsyncRead + Unpin + Send>>,
    pub exited: BoxFuture<std::process::ExitStatus>,
    /// Runs once the task has ended.
    pub cleanup: Option<BoxFuture<()>>,
}

/// Set the hostname of the node's UTS namespace.
pub fn set_hostname(name: &str) {
    if let Err(e) = nix::unistd::sethostname(name) {
        tracing::warn!(error = %e, "cannot set the hostname");
    }
}
