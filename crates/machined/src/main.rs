//! machined: the Talos node. This build serves the node's API (apid) from a machine config;
//! services, trustd and the rest of the node follow.

mod api;
mod boot;
mod controllers;
mod events;
mod node;
mod services;
mod sys;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use clap::Parser;
use machinery::Config;

#[derive(Parser)]
#[command(name = "machined", version, about = "The Talos node daemon")]
struct Args {
    /// Machine config file (otherwise the USERDATA environment variable, base64).
    #[arg(long)]
    config: Option<String>,
    /// Where apid listens.
    #[arg(long, default_value = "0.0.0.0:50000")]
    listen: SocketAddr,
    /// The STATE directory: the persisted config (`config.yaml`) lives there. A node boots
    /// from it when present.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Where services' logs are written (`<id>.log`); by default /var/log when running as
    /// PID 1, nowhere otherwise (they are still kept in memory).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Which part of the node this process is: machined, or apid or trustd (run by machined);
    /// `logship-bench` measures log shipping (bench/logship.sh).
    #[arg(long, default_value = "machined", value_parser = ["machined", "apid", "trustd", "logship-bench"])]
    role: String,
    /// logship-bench: where to ship, and how many records.
    #[arg(long, hide = true)]
    bench_endpoint: Option<String>,
    #[arg(long, hide = true, default_value_t = 100_000)]
    bench_records: u64,
    /// The EPHEMERAL directory (node data such as etcd's); wiped by a reset.
    #[arg(long)]
    ephemeral_dir: Option<PathBuf>,
    /// Where the trustd service listens (control planes); port 0 picks a free port.
    #[arg(long, default_value = "0.0.0.0:50001")]
    trustd_listen: SocketAddr,
    /// Run as a node in container mode: PID 1 of new mount, PID and UTS namespaces, with its
    /// root built from the host's (read-only) and DIR's `var/` and `state/`.
    #[arg(long, value_name = "DIR")]
    container: Option<PathBuf>,
    /// The network namespace (under /run/netns) a container-mode node lives in.
    #[arg(long, requires = "container")]
    netns: Option<String>,
    /// An inherited, bound listening socket apid serves as well (the provisioner publishes a
    /// node's API on the host's loopback this way). For the apid role: the sockets to serve.
    #[arg(long, value_name = "FD")]
    listen_fd: Vec<i32>,
    /// apid role: machined's unix socket.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// apid role: the node is in maintenance mode.
    #[arg(long)]
    maintenance: bool,
    /// apid role: the node's hostname.
    #[arg(long, default_value = "talos")]
    hostname: String,
}

/// The config to boot: the persisted one (STATE) when valid, else the given one (then written
/// to STATE). `None` sends the node to maintenance mode; why is logged.
fn boot_config(args: &Args, state_file: Option<&PathBuf>) -> Option<Config> {
    let usable = |cfg: Config, from: &str| -> Option<Config> {
        match machinery::validate::validate(&cfg, machinery::validate::Mode::Container)
            .into_result(false)
        {
            Ok(_) => Some(cfg),
            Err(e) => {
                log(&format!(
                    "machined: the config from {from} is invalid:\n{e}"
                ));
                None
            }
        }
    };
    if let Some(dir) = state_file.and_then(|p| p.parent()) {
        // Temporary files of writes a crash interrupted.
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(".config.yaml.tmp.")
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Some(path) = state_file.filter(|p| p.exists()) {
        match Config::load(path) {
            Ok(cfg) => {
                if let Some(cfg) = usable(cfg, "STATE") {
                    return Some(cfg);
                }
            }
            Err(e) => log(&format!("machined: the persisted config is unusable: {e}")),
        }
    }
    let cfg = match load_config(args) {
        Ok(cfg) => usable(cfg, "the given config")?,
        Err(e) => {
            log(&format!("machined: {e}"));
            return None;
        }
    };
    if let Some(path) = state_file {
        if let Err(e) = machinery::fsutil::write_atomic(path, cfg.encode().as_bytes(), 0o600) {
            log(&format!("machined: cannot persist the config: {e}"));
        }
    }
    Some(cfg)
}

fn load_config(args: &Args) -> Result<Config, String> {
    if let Some(path) = &args.config {
        return Config::load(path).map_err(|e| e.to_string());
    }
    let data = std::env::var("USERDATA")
        .map_err(|_| "no machine config: pass --config or set USERDATA".to_string())?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| format!("USERDATA is not base64: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "USERDATA is not UTF-8".to_string())?;
    Config::parse(&text).map_err(|e| e.in_file("USERDATA").to_string())
}

/// A line on stderr; a closed stderr is not a reason to stop.
fn log(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// `talos.config=URL`: a machine in maintenance mode fetches its config (retrying until the
/// network and the server answer); a valid one is persisted and booted, an invalid one is
/// reported on the console and the machine stays in maintenance mode (tried again in case the
/// server's copy is fixed).
async fn fetch_config(node: Arc<node::Node>, url: String) {
    let mut last = String::new();
    loop {
        let u = url.clone();
        let got = crate::sys::blocking(move || -> Result<String, String> {
            let agent = ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(10))
                .build();
            agent
                .get(&u)
                .call()
                .map_err(|e| format!("fetch {u}: {e}"))?
                .into_string()
                .map_err(|e| format!("fetch {u}: {e}"))
        })
        .await;
        let outcome = got.and_then(|text| {
            let cfg = Config::parse(&text).map_err(|e| format!("the config from {url}: {e}"))?;
            machinery::validate::validate(&cfg, machinery::validate::Mode::Metal)
                .into_result(false)
                .map_err(|e| format!("the config from {url} is invalid:\n{e}"))?;
            Ok(cfg)
        });
        match outcome {
            Ok(cfg) => match node.persist(&cfg) {
                Ok(()) => {
                    log(&format!("machined: booting the config from {url}"));
                    node.reboot.notify_one();
                    return;
                }
                Err(e) => log(&format!("machined: cannot keep the config from {url}: {e}")),
            },
            Err(e) if e != last => {
                log(&format!("machined: {e}"));
                last = e;
            }
            Err(_) => {}
        }
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    }
}

/// The address apid got (a reboot keeps it, even when the port was picked by the kernel).
static BOUND: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();

/// What ended the run: a shutdown, or a reboot request (with a config to hand over when
/// maintenance mode had nowhere to persist it).
enum Exit {
    Shutdown,
    Reboot(Option<String>),
}

async fn signals() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

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

/// A service that is this binary again in another role, reading the same config.
fn role_service(
    args: &Args,
    state_file: Option<&PathBuf>,
    role: &str,
    mut role_args: Vec<String>,
) -> Result<services::supervisor::ServiceSpec, String> {
    role_args.splice(0..0, ["--role".to_string(), role.to_string()]);
    if let Some(cfg) = state_file
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .or(args.config.clone())
    {
        role_args.extend(["--config".to_string(), cfg]);
    }
    Ok(services::supervisor::ServiceSpec {
        id: role.into(),
        program: boot::container::self_exe().map_err(|e| e.to_string())?,
        args: role_args,
        depends_on: Vec::new(),
        health: None,
        prepare: None,
        fds: Vec::new(),
        launcher: None,
    })
}

/// The trustd service of a control plane.
fn trustd_service(
    args: &Args,
    state_file: Option<&PathBuf>,
) -> Result<services::supervisor::ServiceSpec, String> {
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
    spec.health = Some(services::supervisor::HealthCheck::Tcp(SocketAddr::new(
        health_ip,
        addr.port(),
    )));
    Ok(spec)
}

/// Where machined's socket for apid lives.
fn socket_dir(args: &Args) -> PathBuf {
    if boot::container::rooted() {
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
        let source = api::gateway::CertSource::Static(api::maintenance_cert()?);
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

/// A listening socket handed down by the provisioner: kept open (close-on-exec set) for the
/// life of the process; a reboot hands it on, and apid gets it as a service descriptor.
fn inherited_listener(fd: i32) -> Result<SocketAddr, String> {
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

fn set_cloexec(fd: i32, on: bool) -> Result<(), String> {
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

async fn run(args: Args) -> Result<Exit, String> {
    match args.role.as_str() {
        "trustd" => return run_trustd(args).await,
        "apid" => return run_apid(args).await,
        "logship-bench" => {
            let endpoint = args.bench_endpoint.ok_or("--bench-endpoint is required")?;
            let took = sys::logship::bench(&endpoint, args.bench_records).await?;
            println!("{}", took.as_millis());
            return Ok(Exit::Shutdown);
        }
        _ => {}
    }
    sys::reaper::start();
    disk::set_runner(sys::reaper::output);
    let mut phases =
        boot::Sequence::new(&["config", "controllers", "volumes", "files", "services"]);
    let state_file = args.state_dir.as_ref().map(|d| d.join("config.yaml"));
    // A config being tried (or the last good one back, when its trial boot ended unconfirmed).
    let trial = state_file.as_deref().and_then(boot::trial::at_boot);
    let booted = boot_config(&args, state_file.as_ref());
    let maintenance = booted.is_none();
    if maintenance {
        log("machined: no usable machine config: maintenance mode (apply one with talosctl apply-config --insecure)");
    }
    let config = booted.unwrap_or_default();
    // A machine booted from the image with a disk to install to installs before it runs
    // anything of the cluster's.
    let install_to = (!maintenance)
        .then(|| boot::install::pending(&config))
        .flatten();
    let runs = !maintenance && install_to.is_none();
    let log_dir = args
        .log_dir
        .clone()
        .or_else(|| (std::process::id() == 1).then(|| PathBuf::from("/var/log")));
    if let Some(d) = &log_dir {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    phases.done();
    let node = Arc::new(node::Node::start(
        &config,
        state_file.clone(),
        log_dir,
        args.ephemeral_dir.clone(),
        runs,
        boot::CONFIG_AT_BOOT.to_vec(),
    )?);
    phases.done();
    if boot::metal::installed() {
        // EPHEMERAL before anything that uses /var (block.EphemeralMountController mounts it).
        let state = node.state.clone();
        sys::wait_for(None, || {
            state
                .spec_of::<types::runtime::MountStatusSpec>(disk::EPHEMERAL)
                .is_some()
        })
        .await;
        if !maintenance {
            if let Err(e) = sys::luks::remember_config(&config) {
                log(&format!("machined: STATE's encryption in META: {e}"));
            }
        }
    }
    phases.done();
    if !maintenance && boot::container::rooted() {
        // files.MachineFilesController writes them once /var is there.
        let wanted = config
            .pointer("/machine/files")
            .and_then(|v| v.as_array())
            .map_or(0, Vec::len);
        let state = node.state.clone();
        sys::wait_for(Some(Duration::from_secs(10)), || {
            state
                .specs_of::<types::runtime::MachineFileStatusSpec>()
                .len()
                >= wanted
        })
        .await;
    }
    phases.done();
    if runs && boot::container::rooted() {
        match services::containerd::services() {
            Ok(specs) => specs
                .into_iter()
                .for_each(|s| node.services.start_service(s)),
            Err(e) => log(&format!("machined: containerd cannot start: {e}")),
        }
    }
    if runs && matches!(config.machine_type(), "controlplane" | "init") {
        node.services
            .start_service(trustd_service(&args, state_file.as_ref())?);
    }
    // The hostname comes from a controller; wait briefly for it to be published.
    let mut hostname = None;
    for _ in 0..100 {
        hostname = node.hostname();
        if hostname.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let hostname = hostname.unwrap_or_else(|| "talos".into());
    // machined binds the API's addresses (a reboot keeps them) and hands them to apid.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("listen on {}: {e}", args.listen))?
        .into_std()
        .map_err(|e| e.to_string())?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let _ = BOUND.set(local);
    log(&format!("apid listening on {local}"));
    let mut fds = vec![std::os::fd::AsRawFd::as_raw_fd(&listener)];
    for fd in &args.listen_fd {
        let addr = inherited_listener(*fd)?;
        log(&format!("apid listening on {addr} (inherited)"));
        fds.push(*fd);
    }
    let dir = socket_dir(&args);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    let socket = dir.join("machine.sock");
    let _ = std::fs::remove_file(&socket);
    let unix = tokio::net::UnixListener::bind(&socket)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut apid_args = vec!["--socket".to_string(), socket.display().to_string()];
    for i in 0..fds.len() {
        apid_args.extend(["--listen-fd".to_string(), (3 + i).to_string()]);
    }
    apid_args.extend(["--hostname".to_string(), hostname.clone()]);
    if maintenance {
        apid_args.push("--maintenance".into());
    }
    let mut apid_spec = role_service(&args, state_file.as_ref(), "apid", apid_args)?;
    apid_spec.fds = fds;
    let health_ip = if local.ip().is_unspecified() {
        "127.0.0.1".parse().expect("ip")
    } else {
        local.ip()
    };
    apid_spec.health = Some(services::supervisor::HealthCheck::Tcp(SocketAddr::new(
        health_ip,
        local.port(),
    )));
    node.services.start_service(apid_spec);
    phases.done();

    if let Some(disk) = install_to {
        tokio::spawn(boot::install::run(node.clone(), config.clone(), disk));
    }
    if boot::metal::installed() {
        tokio::spawn(boot::upgrade::prove(node.clone()));
    }
    if let (Some(timeout), Some(file)) = (trial, state_file.clone()) {
        if runs {
            tokio::spawn(boot::trial::watch(node.clone(), file, timeout));
        } else {
            // The tried config cannot run here: the last good one comes back at once.
            boot::trial::abandon(&file);
            node.reboot.notify_one();
        }
    }
    if maintenance {
        if let Some(url) = sys::cmdline::Cmdline::read().config_url {
            tokio::spawn(fetch_config(node.clone(), url));
        }
    }
    let reboot = node.reboot.clone();
    let stop = node.shutdown.clone();
    let exit = Arc::new(std::sync::Mutex::new(Exit::Shutdown));
    let exit_set = exit.clone();
    let shutdown = async move {
        tokio::select! {
            _ = signals() => {}
            _ = stop.notified() => {}
            _ = reboot.notified() => *exit_set.lock().expect("exit") = Exit::Reboot(None),
        }
    };
    let services = node.services.clone();
    api::serve_local(node.clone(), unix, maintenance, shutdown).await?;
    // A node that stops for good (not a reboot) leaves the cluster's discovery at once.
    if matches!(*exit.lock().expect("exit"), Exit::Shutdown) {
        node.discovery.leave().await;
    }
    drop(listener);
    if args.state_dir.is_none() && !boot::container::rooted() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    services.shutdown().await;
    if let Exit::Reboot(handover) = &mut *exit.lock().expect("exit") {
        *handover = node.handover.lock().expect("handover").take();
    }
    if node.forget.load(std::sync::atomic::Ordering::SeqCst) {
        // After a reset the node boots without the config it was given.
        let mut e = exit.lock().expect("exit");
        if let Exit::Reboot(h) = &mut *e {
            *h = Some(String::new());
        }
    }
    let exit = std::mem::replace(&mut *exit.lock().expect("exit"), Exit::Shutdown);
    Ok(exit)
}

/// Restart the node: machined runs again in the same process (and namespaces), booting from
/// STATE.
fn reboot(handover: Option<String>) -> ExitCode {
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
    if let Some(addr) = BOUND.get() {
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
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .with(sys::logship::Layer)
            .init();
    }
    if boot::metal::is_init() {
        if let Err(e) = boot::metal::boot(boot::container::SELF_EXE) {
            boot::metal::give_up(&format!("machined: {e}"));
        }
        boot::container::mark_rooted();
    }
    if boot::metal::booted() && std::process::id() == 1 {
        boot::metal::load_node_modules();
    }
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
    let result = rt.block_on(run(args));
    drop(rt);
    // The init of a machine never exits: it powers off (its services, which run this binary
    // too, just exit).
    let metal = boot::metal::booted() && std::process::id() == 1;
    match result {
        Ok(Exit::Shutdown) if metal => boot::metal::power_off(),
        // An installed machine (or one that has just installed) restarts for real: its state
        // is on the disk; a config handed over from maintenance mode is a re-execution.
        Ok(Exit::Reboot(handover))
            if metal
                && (boot::install::done()
                    || (boot::metal::installed()
                        && handover.as_deref().is_none_or(str::is_empty))) =>
        {
            log("machined: restarting the machine");
            boot::metal::restart()
        }
        Err(e) if metal => {
            sys::console(&format!("machined: {e}"));
            boot::metal::power_off()
        }
        Ok(Exit::Shutdown) => ExitCode::SUCCESS,
        Ok(Exit::Reboot(handover)) => {
            log("machined: rebooting");
            reboot(handover)
        }
        Err(e) => {
            log(&format!("machined: {e}"));
            ExitCode::FAILURE
        }
    }
}
