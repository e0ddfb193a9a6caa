//! `talosctl time`: the nodes' clocks, and with `--check` an NTP server's time as each node
//! reads it.

use api::time::time_service_client::TimeServiceClient;
use api::time::TimeRequest;
use clap::Args;
use machinery::Result;

use crate::client;
use crate::config_cmd::{table, ConnArgs};

#[derive(Args)]
#[command(
    after_help = "Examples:\n  talosctl -n 10.5.0.2 time                       # the node's clock and its time server\n  talosctl -n 10.5.0.2 time --check pool.ntp.org  # against this server, queried by the node"
)]
pub struct TimeArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// An NTP server for each node to query and compare its clock with.
    #[arg(long, default_value = "")]
    check: String,
}

fn show(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| {
        time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos),
        )
        .ok()
    })
    .map(|d| {
        d.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    })
    .unwrap_or_default()
}

pub async fn run(a: TimeArgs) -> Result<()> {
    let targets = client::connect(&a.conn).await?;
    let mut rows = vec![["NODE", "NTP-SERVER", "MACHINE-TIME", "NTP-SERVER-TIME"]
        .map(String::from)
        .to_vec()];
    let mut errors = Vec::new();
    for t in &targets {
        let mut c = TimeServiceClient::with_interceptor(t.channel.clone(), t.route());
        let resp = match a.check.is_empty() {
            true => c.time(()).await,
            false => {
                c.time_check(TimeRequest {
                    server: a.check.clone(),
                })
                .await
            }
        };
        match resp {
            Ok(r) => {
                for m in r.into_inner().messages {
                    rows.push(vec![
                        client::node_of(m.metadata.as_ref(), t),
                        m.server,
                        show(m.localtime.as_ref()),
                        show(m.remotetime.as_ref()),
                    ]);
                }
            }
            Err(s) => errors.push(client::call_error(&t.node, s).to_string()),
        }
    }
    print!("{}", table(&rows));
    client::per_node(errors)
}
