//! talosctl: the Talos command-line client.

mod apply;
mod argv;
mod client;
mod cluster;
mod config_cmd;
mod containers;
mod dashboard;
mod etcd;
mod events;
mod gen;
mod get;
mod health;
mod inspect;
mod kubeconfig;
mod machineconfig;
mod services;
mod system;
mod upgrade;
mod util;
mod version;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A CLI for out-of-band management of Kubernetes nodes created by Talos.
#[derive(Parser)]
#[command(name = "talosctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate PKI material, secrets bundles and machine configs.
    Gen(gen::GenArgs),
    /// Work with local machine config files.
    #[command(visible_alias = "mc")]
    Machineconfig(machineconfig::MachineconfigArgs),
    /// Validate a machine config file for a runtime mode.
    Validate(machineconfig::ValidateArgs),
    /// Manage the client configuration file (talosconfig).
    Config(config_cmd::ConfigArgs),
    /// Print the client's and the nodes' versions.
    Version(version::VersionArgs),
    /// Get resources from nodes.
    #[command(visible_alias = "g")]
    Get(get::GetArgs),
    /// Inspect the node's internals.
    Inspect(inspect::InspectArgs),
    /// Apply a new machine config to nodes.
    #[command(name = "apply-config", visible_alias = "apply")]
    ApplyConfig(apply::ApplyArgs),
    /// Patch the nodes' machine config and apply it.
    Patch(apply::PatchArgs),
    /// Edit the nodes' machine config in an editor and apply it.
    Edit(apply::EditArgs),
    /// List services, or show, start, stop or restart one.
    #[command(visible_alias = "services")]
    Service(services::ServiceArgs),
    /// Print a service's logs.
    Logs(services::LogsArgs),
    /// Show the nodes' memory use (MiB).
    #[command(visible_aliases = ["m", "free"])]
    Memory(system::NodeArgs),
    /// List the nodes' mounts.
    #[command(visible_alias = "mount")]
    Mounts(system::NodeArgs),
    /// List files on nodes.
    #[command(visible_alias = "ls")]
    List(system::ListArgs),
    /// Print a file from a node.
    #[command(visible_alias = "cat")]
    Read(system::ReadArgs),
    /// Copy a file or directory from a node.
    #[command(visible_alias = "cp")]
    Copy(system::CopyArgs),
    /// Disk usage on nodes.
    #[command(name = "usage", visible_alias = "du")]
    Usage(system::DuArgs),
    /// List the nodes' processes.
    #[command(visible_aliases = ["p", "ps"])]
    Processes(system::NodeArgs),
    /// Print the kernel log.
    Dmesg(system::DmesgArgs),
    /// Stream the nodes' events.
    Events(events::EventsArgs),
    /// Reboot nodes.
    Reboot(system::NodeArgs),
    /// Shut nodes down.
    Shutdown(system::NodeArgs),
    /// Upgrade nodes installed on their disk to an installer image: it goes into the other
    /// boot slot, which becomes the default once the node is healthy there.
    Upgrade(upgrade::UpgradeArgs),
    /// Switch nodes back to their previous system (the other boot slot) and reboot.
    Rollback(upgrade::RollbackArgs),
    /// Wipe nodes (STATE, EPHEMERAL) and stop them, or reboot them into maintenance mode.
    Reset(system::ResetArgs),
    /// Resource use of the nodes' system services (or, with -k, of Kubernetes' containers).
    Stats(system::StatsArgs),
    /// List the nodes' containers.
    #[command(visible_alias = "c")]
    Containers(containers::ContainersArgs),
    /// Images on the nodes: list, pull, remove.
    #[command(visible_alias = "images")]
    Image(containers::ImageArgs),
    /// A terminal UI per node: summary, network, logs.
    Dashboard(dashboard::DashboardArgs),
    /// Bootstrap the etcd cluster on one control plane node.
    Bootstrap(etcd::BootstrapArgs),
    /// Manage the etcd cluster.
    Etcd(etcd::EtcdArgs),
    /// Download the admin kubeconfig from a control plane node.
    Kubeconfig(kubeconfig::KubeconfigArgs),
    /// Check the cluster's health.
    Health(health::HealthArgs),
    /// Create, show, scale and destroy local clusters.
    Cluster(cluster::ClusterArgs),
    /// Internal: runs one virtual machine of a QEMU cluster (started by `cluster create`).
    #[command(name = "qemu-launch", hide = true)]
    QemuLaunch(cluster::QemuLaunchArgs),
    /// Internal: a QEMU cluster's config and installer server and API publisher.
    #[command(name = "cluster-launch", hide = true)]
    ClusterLaunch(cluster::ClusterLaunchArgs),
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

fn main() -> ExitCode {
    use clap::CommandFactory;
    let cli = Cli::parse_from(argv::normalize(
        std::env::args_os().collect(),
        &Cli::command(),
    ));
    let result = match cli.command {
        Command::Gen(a) => gen::run(a),
        Command::Machineconfig(a) => machineconfig::run(a),
        Command::Validate(a) => machineconfig::validate(a),
        Command::Config(a) => config_cmd::run(a),
        Command::Version(a) => block_on(version::run(a)),
        Command::Get(a) => block_on(get::run(a)),
        Command::Inspect(a) => block_on(inspect::run(a)),
        Command::ApplyConfig(a) => block_on(apply::run(a)),
        Command::Patch(a) => block_on(apply::patch(a)),
        Command::Edit(a) => block_on(apply::edit(a)),
        Command::Service(a) => block_on(services::service(a)),
        Command::Logs(a) => block_on(services::logs(a)),
        Command::Memory(a) => block_on(system::memory(a)),
        Command::Mounts(a) => block_on(system::mounts(a)),
        Command::List(a) => block_on(system::list(a)),
        Command::Read(a) => block_on(system::read(a)),
        Command::Copy(a) => block_on(system::copy(a)),
        Command::Usage(a) => block_on(system::du(a)),
        Command::Processes(a) => block_on(system::processes(a)),
        Command::Dmesg(a) => block_on(system::dmesg(a)),
        Command::Events(a) => block_on(events::run(a)),
        Command::Reboot(a) => block_on(system::reboot(a)),
        Command::Shutdown(a) => block_on(system::shutdown(a)),
        Command::Upgrade(a) => block_on(upgrade::upgrade(a)),
        Command::Rollback(a) => block_on(upgrade::rollback(a)),
        Command::Reset(a) => block_on(system::reset(a)),
        Command::Stats(a) => block_on(system::stats(a)),
        Command::Containers(a) => block_on(containers::containers(a)),
        Command::Image(a) => block_on(containers::image(a)),
        Command::Dashboard(a) => dashboard::dashboard(a),
        Command::Bootstrap(a) => block_on(etcd::bootstrap(a)),
        Command::Etcd(a) => block_on(etcd::run(a)),
        Command::Kubeconfig(a) => block_on(kubeconfig::run(a)),
        Command::Health(a) => block_on(health::run(a)),
        Command::Cluster(a) => cluster::run(a),
        Command::QemuLaunch(a) => {
            provision::qemu::launch(&a.node_dir).map_err(machinery::Error::msg)
        }
        Command::ClusterLaunch(a) => {
            provision::qemu::serve(&a.cluster_dir).map_err(machinery::Error::msg)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("error: {line}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every command path, with its aliases.
    fn paths(cmd: &clap::Command, prefix: Vec<String>, out: &mut Vec<(Vec<String>, bool)>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let takes_nodes = sub.get_arguments().any(|a| a.get_long() == Some("nodes"));
            for name in std::iter::once(sub.get_name()).chain(sub.get_all_aliases()) {
                let mut path = prefix.clone();
                path.push(name.to_string());
                out.push((path.clone(), takes_nodes));
                paths(sub, path, out);
            }
        }
    }

    #[test]
    fn connection_flags_go_before_or_after_every_command_that_takes_them() {
        let tree = Cli::command();
        let mut all = Vec::new();
        paths(&tree, Vec::new(), &mut all);
        assert!(all.len() > 60, "{}", all.len());
        for (path, _) in all.iter().filter(|(_, takes_nodes)| *takes_nodes) {
            for (before, after) in [
                (vec!["-n", "10.5.0.2", "-e", "127.0.0.1"], vec![]),
                (vec![], vec!["-n", "10.5.0.2", "-e", "127.0.0.1"]),
                (
                    vec!["--nodes=10.5.0.2,10.5.0.3", "--talosconfig", "tc"],
                    vec!["-n", "10.5.0.4"],
                ),
            ] {
                let mut args = vec!["talosctl".to_string()];
                args.extend(before.iter().map(|s| s.to_string()));
                args.extend(path.iter().cloned());
                args.extend(after.iter().map(|s| s.to_string()));
                let argv = argv::normalize(args.iter().map(Into::into).collect(), &tree);
                // A missing positional is this test's doing; an unknown flag is not.
                if let Err(e) = Cli::command().try_get_matches_from(argv) {
                    use clap::error::ErrorKind::*;
                    assert!(
                        !matches!(e.kind(), UnknownArgument | ArgumentConflict | InvalidValue),
                        "{args:?}: {e}"
                    );
                }
            }
        }
    }
}
