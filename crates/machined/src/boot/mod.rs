//! The boot: the sequence of named phases, and what runs only at boot (run modes, install,
//! upgrade, trial configs).

pub mod args;
pub mod config;
pub mod container;
pub mod install;
pub mod metal;
pub mod mode;
pub mod roles;
pub mod trial;
pub mod upgrade;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::args::Args;
use self::config::{boot_config, fetch_config, log};
use self::roles::{inherited_listener, role_service, socket_dir, trustd_service};

/// Config paths read once at boot (or by a service at its start), so a change of one needs
/// a reboot: which services and controllers run (`machine.type`), the services' environment,
/// and the machine token the trustd service reads when it starts. Paths the controllers
/// declare as inputs change live (see `api::apply`); the machine CA does (a new one restarts
/// apid and trustd: `controllers::secrets::api::RestartOnNewCa`).
pub const CONFIG_AT_BOOT: &[&str] = &["/machine/type", "/machine/env", "/machine/token"];

/// The boot sequence's phases, logged as they finish like upstream's
/// `phase config (1/5): done, 12ms`.
pub struct Sequence {
    names: &'static [&'static str],
    at: usize,
    started: Instant,
}

impl Sequence {
    pub fn new(names: &'static [&'static str]) -> Sequence {
        Sequence {
            names,
            at: 0,
            started: Instant::now(),
        }
    }

    /// The current phase is done: log it and start the next.
    pub fn done(&mut self) {
        let took = self.started.elapsed();
        if let Some(name) = self.names.get(self.at) {
            tracing::info!(
                "phase {name} ({}/{}): done, {}",
                self.at + 1,
                self.names.len(),
                pretty(took)
            );
        }
        self.at += 1;
        self.started = Instant::now();
    }
}

fn pretty(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

/// What ended the run: a shutdown, or a reboot request (with a config to hand over when
/// maintenance mode had nowhere to persist it).
pub enum Exit {
    Shutdown,
    /// Restart: a config to hand over, and the address apid got (kept across the restart,
    /// even when the kernel picked the port).
    Reboot {
        handover: Option<String>,
        listen: Option<SocketAddr>,
        /// The machine has just installed itself: it restarts from its disk.
        installed: bool,
    },
}

pub async fn signals() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The boot sequence of a node (machined's own role): config, controllers, volumes, files,
/// services; then serve until a shutdown or a reboot.
pub async fn run(args: Args, modules: metal::Modules) -> Result<Exit, String> {
    let mode = mode::RunMode::detect();
    crate::sys::reaper::start();
    disk::set_runner(crate::sys::reaper::output);
    let mut phases = Sequence::new(&["config", "controllers", "volumes", "files", "services"]);
    let state_file = args.state_dir.as_ref().map(|d| d.join("config.yaml"));
    // A config being tried (or the last good one back, when its trial boot ended unconfirmed).
    let trial = state_file.as_deref().and_then(trial::at_boot);
    let booted = boot_config(&args, state_file.as_ref());
    let maintenance = booted.is_none();
    if maintenance {
        log("machined: no usable machine config: maintenance mode (apply one with talosctl apply-config --insecure)");
    }
    let config = booted.unwrap_or_default();
    // A machine booted from the image with a disk to install to installs before it runs
    // anything of the cluster's.
    let install_to = (!maintenance)
        .then(|| install::pending(&config, mode))
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
    let node = Arc::new(crate::node::Node::start(
        &config,
        crate::node::Setup {
            mode,
            state_file: state_file.clone(),
            log_dir,
            ephemeral: args.ephemeral_dir.clone(),
            runs,
            boot_inputs: CONFIG_AT_BOOT.to_vec(),
            modules,
        },
    )?);
    phases.done();
    if mode.installed() {
        // EPHEMERAL before anything that uses /var (block.EphemeralMountController mounts it).
        let state = node.state.clone();
        crate::sys::wait_for(None, || {
            state
                .spec_of::<types::runtime::MountStatusSpec>(disk::EPHEMERAL)
                .is_some()
        })
        .await;
        if !maintenance {
            if let Err(e) = crate::sys::luks::remember_config(&config) {
                log(&format!("machined: STATE's encryption in META: {e}"));
            }
        }
    }
    phases.done();
    if !maintenance && mode.rooted() {
        // files.MachineFilesController writes them once /var is there.
        let wanted = config
            .pointer("/machine/files")
            .and_then(|v| v.as_array())
            .map_or(0, Vec::len);
        let state = node.state.clone();
        crate::sys::wait_for(Some(Duration::from_secs(10)), || {
            state
                .specs_of::<types::runtime::MachineFileStatusSpec>()
                .len()
                >= wanted
        })
        .await;
    }
    phases.done();
    if runs && mode.rooted() {
        match crate::services::containerd::services() {
            Ok(specs) => specs
                .into_iter()
                .for_each(|s| node.services.start_service(s)),
            Err(e) => log(&format!("machined: containerd cannot start: {e}")),
        }
    }
    if runs && config.is_control_plane() {
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
    log(&format!("apid listening on {local}"));
    let mut fds = vec![std::os::fd::AsRawFd::as_raw_fd(&listener)];
    for fd in &args.listen_fd {
        let addr = inherited_listener(*fd)?;
        log(&format!("apid listening on {addr} (inherited)"));
        fds.push(*fd);
    }
    let dir = socket_dir(&args, mode);
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
    apid_spec.health = Some(crate::services::supervisor::HealthCheck::Tcp(
        SocketAddr::new(health_ip, local.port()),
    ));
    node.services.start_service(apid_spec);
    phases.done();

    if let Some(disk) = install_to {
        tokio::spawn(install::run(node.clone(), config.clone(), disk));
    }
    if mode.installed() {
        tokio::spawn(upgrade::prove(node.clone()));
    }
    if let (Some(timeout), Some(file)) = (trial, state_file.clone()) {
        if runs {
            tokio::spawn(trial::watch(node.clone(), file, timeout));
        } else {
            // The tried config cannot run here: the last good one comes back at once.
            trial::abandon(&file);
            node.reboot.notify_one();
        }
    }
    if maintenance {
        if let Some(url) = crate::sys::cmdline::Cmdline::read().config_url {
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
            _ = reboot.notified() => *exit_set.lock().expect("exit") = Exit::Reboot {
                handover: None,
                listen: Some(local),
                installed: false,
            },
        }
    };
    let services = node.services.clone();
    crate::api::serve_local(node.clone(), unix, maintenance, shutdown).await?;
    // A node that stops for good (not a reboot) leaves the cluster's discovery at once.
    if matches!(*exit.lock().expect("exit"), Exit::Shutdown) {
        node.discovery.leave().await;
    }
    drop(listener);
    if args.state_dir.is_none() && !mode.rooted() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    services.shutdown().await;
    if let Exit::Reboot {
        handover,
        installed,
        ..
    } = &mut *exit.lock().expect("exit")
    {
        *handover = node.handover.lock().expect("handover").take();
        *installed = node.install_done.load(std::sync::atomic::Ordering::SeqCst);
    }
    if node.forget.load(std::sync::atomic::Ordering::SeqCst) {
        // After a reset the node boots without the config it was given.
        let mut e = exit.lock().expect("exit");
        if let Exit::Reboot { handover, .. } = &mut *e {
            *handover = Some(String::new());
        }
    }
    let exit = std::mem::replace(&mut *exit.lock().expect("exit"), Exit::Shutdown);
    Ok(exit)
}
