//! Adapters without state of their own: the kernel (netlink, command line, mounts), LUKS and
//! keys, containerd and CRI clients, the reaper, log transport, extension images.

pub mod cmdline;
pub mod cri;
pub mod ctrd;
pub mod extensions;
pub mod logship;
pub mod luks;
pub mod netlink;
pub mod reaper;

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
