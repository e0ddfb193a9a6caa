//! machined's command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(name = "machined", version, about = "The Talos node daemon")]
pub struct Args {
    /// Machine config file (otherwise the USERDATA environment variable, base64).
    #[arg(long)]
    pub config: Option<String>,
    /// Where apid listens.
    #[arg(long, default_value = "0.0.0.0:50000")]
    pub listen: SocketAddr,
    /// The STATE directory: the persisted config (`config.yaml`) lives there. A node boots
    /// from it when present.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Where services' logs are written (`<id>.log`); by default /var/log when running as
    /// PID 1, nowhere otherwise (they are still kept in memory).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// Which part of the node this process is: machined, or apid or trustd (run by machined);
    /// `logship-bench` measures log shipping (bench/logship.sh).
    #[arg(long, default_value = "machined", value_parser = ["machined", "apid", "trustd", "logship-bench"])]
    pub role: String,
    /// logship-bench: where to ship, and how many records.
    #[arg(long, hide = true)]
    pub bench_endpoint: Option<String>,
    #[arg(long, hide = true, default_value_t = 100_000)]
    pub bench_records: u64,
    /// The EPHEMERAL directory (node data such as etcd's); wiped by a reset.
    #[arg(long)]
    pub ephemeral_dir: Option<PathBuf>,
    /// Where the trustd service listens (control planes); port 0 picks a free port.
    #[arg(long, default_value = "0.0.0.0:50001")]
    pub trustd_listen: SocketAddr,
    /// Run as a node in container mode: PID 1 of new mount, PID and UTS namespaces, with its
    /// root built from the host's (read-only) and DIR's `var/` and `state/`.
    #[arg(long, value_name = "DIR")]
    pub container: Option<PathBuf>,
    /// The network namespace (under /run/netns) a container-mode node lives in.
    #[arg(long, requires = "container")]
    pub netns: Option<String>,
    /// An inherited, bound listening socket apid serves as well (the provisioner publishes a
    /// node's API on the host's loopback this way). For the apid role: the sockets to serve.
    #[arg(long, value_name = "FD")]
    pub listen_fd: Vec<i32>,
    /// apid role: machined's unix socket.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// apid role: the node is in maintenance mode.
    #[arg(long)]
    pub maintenance: bool,
    /// apid role: the node's hostname.
    #[arg(long, default_value = "talos")]
    pub hostname: String,
}
