//! The node's own services that are this binary in another role (apid, trustd), and the
//! listening sockets machined binds and hands to apid.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::boot::args::Args;
use crate::boot::container;
use crate::services::supervisor::{HealthCheck, ServiceSpec};

/// A service that is this binary again in another role, reading the same config.
pub fn role_service(
    args: &Args,
    state_file: Option<&PathBuf>,
    role: &str,
    mut role_args: Vec<String>,
) -> Result<ServiceSpec, String> {
    role_args.splice(0..0, ["--role".to_string(), role.to_string()]);
    if let Some(cfg) = state_file
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .or(args.config.clone())
    {
        role_args.extend(["--config".to_string(), cfg]);
    }
    Ok(ServiceSpec {
        id: role.into(),
        program: container::self_exe().map_err(|e| e.to_string())?,
        args: role_args,
        depends_on: Vec::new(),
        health: None,
        prepare: None,
        fds: Vec::new(),
        launcher: None,
    })
}

/// The trustd service of a control plane.
pub fn trustd_service(args: &Args, state_file: Option<&PathBuf>) -> Result<ServiceSpec, String> {
    let mut addr = args.trustd_listen;
    if addr.port() == 0 {
        let probe = std::net::TcpListener::bind(addr).map_err(|e| e.to_string())?;
        addr = probe.local_addr().map_err(|e| e.to_string())?;
    }
    let mut spec = role_service(
        args,
        state_file,
        "trustd",
        vec!["--listen".into(), addr.to_string()],
    )?;
    let health_ip = if addr.ip().is_unspecified() {
        "127.0.0.1".parse().expect("ip")
    } else {
        addr.ip()
    };
    spec.health = Some(HealthCheck::Tcp(SocketAddr::new(health_ip, addr.port())));
    Ok(spec)
}

/// Where machined's socket for apid lives.
pub fn socket_dir(args: &Args, mode: crate::boot::mode::RunMode) -> PathBuf {
    if mode.rooted() {
        return PathBuf::from("/system/run/machined");
    }
    match &args.state_dir {
        Some(d) => d.with_file_name(format!(
            "{}.run",
            d.file_name().and_then(|n| n.to_str()).unwrap_or("state")
        )),
        None => std::env::temp_dir().join(format!("machined-{}", std::process::id())),
    }
}

/// A listening socket handed down by the provisioner: kept open (close-on-exec set) for the
/// life of the process; a reboot hands it on, and apid gets it as a service descriptor.
pub fn inherited_listener(fd: i32) -> Result<SocketAddr, String> {
    set_cloexec(fd, true)?;
    // SAFETY: the descriptor was handed to us and is never closed.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let sock = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(
        std::os::fd::AsRawFd::as_raw_fd(&borrowed),
    )
    .map_err(|e| format!("--listen-fd {fd}: {e}"))?;
    sock.as_sockaddr_in()
        .map(|a| SocketAddr::new(std::net::IpAddr::V4(a.ip()), a.port()))
        .ok_or_else(|| format!("--listen-fd {fd}: not an IPv4 socket"))
}

pub fn set_cloexec(fd: i32, on: bool) -> Result<(), String> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    // SAFETY: the descriptor stays open for the call.
    let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(bfd, FcntlArg::F_SETFD(flags))
        .map(|_| ())
        .map_err(|e| format!("--listen-fd {fd}: {e}"))
}
