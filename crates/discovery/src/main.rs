//! `discovery-service`: where a cluster's nodes find each other (see the `discovery` crate).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(name = "discovery-service", about = "The cluster discovery service")]
struct Args {
    /// Address to serve gRPC on.
    #[arg(long, default_value = "0.0.0.0:3000")]
    addr: SocketAddr,
    /// How often expired affiliates are collected (a Go duration: 1m, 5s, 500ms).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    gc_interval: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    machinery::duration::parse(s).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let service = discovery::service::Service::new(Default::default());
    let gc = service.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(args.gc_interval);
        loop {
            tick.tick().await;
            gc.gc();
        }
    });
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<discovery::pb::server::cluster_server::ClusterServer<discovery::service::Service>>()
        .await;
    let listener = match tokio::net::TcpListener::bind(args.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: listen on {}: {e}", args.addr);
            std::process::exit(1);
        }
    };
    tracing::info!(addr = %args.addr, "discovery service listening");
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let served = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .add_service(health)
        .add_service(service.server())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            stop,
        )
        .await;
    if let Err(e) = served {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
