//! `talosctl version`: the client's version and each node's.

use clap::Args;
use machinery::Result;

use crate::client;
use crate::config_cmd::ConnArgs;

#[derive(Args)]
pub struct VersionArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Print the client version only.
    #[arg(long)]
    client: bool,
    /// Print the short version.
    #[arg(long)]
    short: bool,
    #[command(flatten)]
    insecure: client::InsecureArgs,
}

const TAG: &str = concat!("v", env!("CARGO_PKG_VERSION"));

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub async fn run(a: VersionArgs) -> Result<()> {
    println!("Client:");
    if a.short {
        println!("\t{TAG}");
    } else {
        println!("\tTag:         {TAG}");
        println!(
            "\tSHA:         {}",
            option_env!("TALOS_SHA").unwrap_or("unknown")
        );
        println!("\tBuilt:       ");
        println!("\tGo version:  rust");
        println!("\tOS/Arch:     {}/{}", std::env::consts::OS, arch());
    }
    if a.client {
        return Ok(());
    }
    println!("Server:");
    let mut errors = Vec::new();
    let targets = client::connect_as(&a.conn, &a.insecure).await?;
    for t in targets {
        match client::machine(&t).version(()).await {
            Ok(resp) => {
                for m in resp.into_inner().messages {
                    let node = client::node_of(m.metadata.as_ref(), &t);
                    let v = m.version.unwrap_or_default();
                    println!("\tNODE:        {node}");
                    if a.short {
                        println!("\t{}", v.tag);
                        continue;
                    }
                    println!("\tTag:         {}", v.tag);
                    println!("\tSHA:         {}", v.sha);
                    println!("\tBuilt:       {}", v.built);
                    println!("\tGo version:  {}", v.go_version);
                    println!("\tOS/Arch:     {}/{}", v.os, v.arch);
                    if m.features.is_some_and(|f| f.rbac) {
                        println!("\tEnabled:     RBAC");
                    }
                }
            }
            Err(status) => errors.push(client::call_error(&t.node, status).to_string()),
        }
    }
    client::per_node(errors)
}
