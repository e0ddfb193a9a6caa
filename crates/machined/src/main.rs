//! machined: the Talos node. This build serves the node's API (apid) from a machine config;
//! services, trustd and the rest of the node follow.

mod apid;
mod node;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

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

async fn run(args: Args) -> Result<(), String> {
    let config = load_config(&args)?;
    let node = Arc::new(node::Node::start(&config)?);
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
    let ips: Vec<_> = [args.listen.ip()]
        .into_iter()
        .filter(|ip| !ip.is_unspecified())
        .collect();
    let tls = apid::tls_from_config(&config, &hostname, &ips)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("listen on {}: {e}", args.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!("apid listening on {local}");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    apid::serve(node, tls, listener, shutdown).await
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("machined: {e}");
            ExitCode::FAILURE
        }
    }
}
