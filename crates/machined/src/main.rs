//! machined: the Talos node, one binary with roles (machined, apid, trustd).
//!
//! Where to start: `run` below is the boot sequence (named phases); `node` is the handle the
//! boot and the API share (resource state, registry, services); `controllers` is every piece of
//! behaviour as a controller over the typed resources of crate `types` (one per file, grouped
//! by domain, wired in `controllers::register`); `services` runs processes and containers;
//! `sys` holds the adapters without state (netlink, LUKS, containerd and CRI clients, the
//! reaper, log transport); `api` is the gRPC surface, which reads resources and writes intents.
//! Dependencies point one way: boot and api → controllers and services → sys → types
//! (`tests/layout.rs` checks it).

mod api;
mod boot;
mod controllers;
mod events;
mod node;
mod services;
mod sys;

use std::net::SocketAddr;
use std::process::ExitCode;

use base64::Engine;
use clap::Parser;

use boot::args::Args;
use boot::config::{load_config, log};
use boot::roles::set_cloexec;
use boot::{signals, Exit};

async fn run_trustd(args: Args) -> Result<Exit, String> {
    let config = load_config(&args)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("listen on {}: {e}", args.listen))?;
    log(&format!(
        "trustd listening on {}",
        listener.local_addr().map_err(|e| e.to_string())?
    ));
    api::trustd::serve(&config, listener, signals()).await?;
    Ok(Exit::Shutdown)
}

/// apid: TLS, roles and proxying in front of machined's socket.
async fn run_apid(args: Args) -> Result<Exit, String> {
    use std::os::fd::FromRawFd;
    let socket = args
        .socket
        .clone()
        .ok_or("--socket is required for the apid role")?;
    let mut listeners = Vec::new();
    for fd in &args.listen_fd {
        // SAFETY: machined handed these descriptors to this process for this use.
        let std = unsafe { std::net::TcpListener::from_raw_fd(*fd) };
        std.set_nonblocking(true).map_err(|e| e.to_string())?;
        listeners.push(tokio::net::TcpListener::from_std(std).map_err(|e| e.to_string())?);
    }
    let local: Vec<SocketAddr> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let hostname = args.hostname.clone();
    if args.maintenance {
        let source = api::gateway::CertSource::Static(api::gateway::maintenance_cert()?);
        api::gateway::serve(source, listeners, true, None, socket, signals()).await?;
        return Ok(Exit::Shutdown);
    }
    let config = load_config(&args)?;
    let mut own = vec![hostname.clone()];
    for a in &local {
        own.push(a.to_string());
        if a.ip().is_unspecified() || a.ip().is_loopback() {
            own.push(format!("127.0.0.1:{}", a.port()));
        }
        if a.ip().is_unspecified() {
            // Addressed by any of its interface addresses.
            for ip in sys::interface_ips() {
                own.push(ip.to_string());
                own.push(format!("{ip}:{}", a.port()));
            }
        }
    }
    let proxy = match api::proxy_from_config(&config, own) {
        Ok(p) => Some(p),
        Err(e) => {
            log(&format!("apid: proxying to other nodes is off: {e}"));
            None
        }
    };
    let source = api::gateway::CertSource::Machined;
    api::gateway::serve(source, listeners, false, proxy, socket, signals()).await?;
    Ok(Exit::Shutdown)
}

/// Restart the node: machined runs again in the same process (and namespaces), booting from
/// STATE.
fn reboot(handover: Option<String>, listen: Option<SocketAddr>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let exe = boot::container::self_exe().expect("own path");
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut cmd = std::process::Command::new(&exe);
    if let Some(cfg) = handover {
        // The next boot takes the config from USERDATA: drop any --config.
        if let Some(i) = args.iter().position(|a| a == "--config") {
            args.drain(i..(i + 2).min(args.len()));
        }
        args.retain(|a| !a.starts_with("--config="));
        cmd.env(
            "USERDATA",
            base64::engine::general_purpose::STANDARD.encode(cfg),
        );
    }
    if let Some(addr) = listen {
        match args.iter().position(|a| a == "--listen") {
            Some(i) if i + 1 < args.len() => args[i + 1] = addr.to_string(),
            _ => {
                args.retain(|a| !a.starts_with("--listen="));
                args.extend(["--listen".to_string(), addr.to_string()]);
            }
        }
    }
    for fd in Args::try_parse_from(std::env::args())
        .map(|a| a.listen_fd)
        .unwrap_or_default()
    {
        let _ = set_cloexec(fd, false);
    }
    let err = cmd.args(args).exec();
    log(&format!("machined: reboot failed: {err}"));
    ExitCode::FAILURE
}

/// The role this process plays: the node (the boot sequence), or one of its services.
async fn run(args: Args, modules: boot::metal::Modules) -> Result<Exit, String> {
    match args.role.as_str() {
        "trustd" => run_trustd(args).await,
        "apid" => run_apid(args).await,
        "logship-bench" => {
            let endpoint = args.bench_endpoint.ok_or("--bench-endpoint is required")?;
            let took = sys::logship::bench(&endpoint, args.bench_records).await?;
            println!("{}", took.as_millis());
            Ok(Exit::Shutdown)
        }
        _ => boot::run(args, modules).await,
    }
}

fn main() -> ExitCode {
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        // To stderr, and to the log destinations of the config (as service "machined").
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("machined=info,resources=warn")
                }),
            )
            .with(tracing_subscriber::fmt::layer().with_writer(|| sys::selflog::Stderr))
            .with(sys::logship::Layer)
            .init();
    }
    if boot::metal::is_init() {
        if let Err(e) = boot::metal::boot(boot::container::SELF_EXE) {
            boot::metal::give_up(&format!("machined: {e}"));
        }
        boot::container::mark_rooted();
    }
    let modules = if boot::metal::booted() && std::process::id() == 1 {
        boot::metal::load_node_modules()
    } else {
        boot::metal::Modules::none()
    };
    let mut args = Args::parse();
    // A machine booted from the image keeps its root in place across reboots (re-executions).
    if boot::metal::booted() || args.container.is_some() {
        if let Some(dir) = args.container.clone() {
            if let Err(e) = boot::container::enter(&dir, args.netns.as_deref()) {
                log(&format!("machined: {e}"));
                return ExitCode::FAILURE;
            }
        }
        args.state_dir
            .get_or_insert_with(|| boot::container::STATE_DIR.into());
        args.log_dir
            .get_or_insert_with(|| boot::container::LOG_DIR.into());
        args.ephemeral_dir
            .get_or_insert_with(|| boot::container::EPHEMERAL_DIR.into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(run(args, modules));
    drop(rt);
    // The init of a machine never exits: it powers off (its services, which run this binary
    // too, just exit).
    let metal = boot::metal::booted() && std::process::id() == 1;
    match result {
        Ok(Exit::Shutdown) if metal => boot::metal::power_off(),
        // An installed machine (or one that has just installed) restarts for real: its state
        // is on the disk; a config handed over from maintenance mode is a re-execution.
        Ok(Exit::Reboot {
            handover,
            installed,
            ..
        }) if metal
            && (installed
                || (boot::metal::installed() && handover.as_deref().is_none_or(str::is_empty))) =>
        {
            log("machined: restarting the machine");
            boot::metal::restart()
        }
        Err(e) if metal => {
            sys::console(&format!("machined: {e}"));
            boot::metal::power_off()
        }
        Ok(Exit::Shutdown) => ExitCode::SUCCESS,
        Ok(Exit::Reboot {
            handover, listen, ..
        }) => {
            log("machined: rebooting");
            reboot(handover, listen)
        }
        Err(e) => {
            log(&format!("machined: {e}"));
            ExitCode::FAILURE
        }
    }
}
