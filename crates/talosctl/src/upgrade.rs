//! `talosctl upgrade` and `talosctl rollback`: a machine installed on its disk gets the
//! installer image's system in its other boot slot and reboots into it (which becomes the
//! default once the node is healthy there); rollback returns to the other slot.

use std::time::{Duration, Instant};

use api::machine::{ReadRequest, RollbackRequest, UpgradeRequest};
use clap::Args;
use machinery::{Error, Result};

use crate::client::{self, each, Target};
use crate::config_cmd::ConnArgs;
use crate::util::parse_duration;

#[derive(Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The installer image (pulled by the node through its machine.registries).
    #[arg(short = 'i', long, default_value = concat!("talos.local/installer:v", env!("CARGO_PKG_VERSION")))]
    image: String,
    /// Install, but do not reboot: the new system starts at the next reboot.
    #[arg(long)]
    no_reboot: bool,
    /// Reboot mode after the upgrade (default, force, powercycle).
    #[arg(short = 'm', long, default_value = "default", value_parser = ["default", "force", "powercycle"])]
    reboot_mode: String,
    #[command(flatten)]
    follow: crate::lifecycle::Follow,
    /// Use the unary MachineService/Upgrade API (the only one this node offers).
    #[arg(long)]
    legacy: bool,
    /// Cordon the node and evict its pods before the reboot.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    drain: bool,
    /// How long the drain may take.
    #[arg(long, default_value = "5m0s")]
    drain_timeout: String,
    /// Keep EPHEMERAL (and a control plane's etcd membership and data).
    #[arg(short = 'p', long, hide = true)]
    preserve: bool,
    /// Stage the upgrade: the new system starts at the next reboot.
    #[arg(short = 's', long, hide = true)]
    stage: bool,
    /// Accepted for compatibility; it changes nothing.
    #[arg(short = 'f', long, hide = true)]
    force: bool,
}

#[derive(Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    conn: ConnArgs,
}

/// The whole of a file on the node.
async fn read_text(t: &Target, path: &str) -> std::result::Result<String, tonic::Status> {
    let mut stream = client::machine(t)
        .read(ReadRequest {
            path: path.to_string(),
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(d) = stream.message().await? {
        out.extend(d.bytes);
    }
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// This boot of the node: its boot id and the boot slot it started from.
async fn this_boot(t: &Target) -> std::result::Result<(String, String), tonic::Status> {
    let id = read_text(t, "/proc/sys/kernel/random/boot_id").await?;
    let cmdline = read_text(t, "/proc/cmdline").await?;
    Ok((id, disk::booted_slot(&cmdline).unwrap_or("?").to_string()))
}

/// Wait until the node has booted again (another boot id) and answers: the boot slot it
/// started from. After a call whose reply was lost (`cut`), a node that keeps answering from
/// the same boot for two minutes did not take the request.
async fn back(t: &Target, boot_id: &str, deadline: Instant, cut: bool) -> Result<String> {
    let started = Instant::now();
    loop {
        if let Ok((id, slot)) = this_boot(t).await {
            if id != boot_id {
                return Ok(slot);
            }
            if cut && started.elapsed() > Duration::from_secs(120) {
                return Err(Error::msg(format!(
                    "{}: the upgrade call lost its connection and the node has not rebooted since: run the upgrade again",
                    t.node
                )));
            }
        }
        if Instant::now() > deadline {
            return Err(Error::msg(format!(
                "{}: did not come back from the reboot in time",
                t.node
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

pub async fn upgrade(a: UpgradeArgs) -> Result<()> {
    let timeout = parse_duration(&a.follow.timeout)?;
    let drain_timeout = parse_duration(&a.drain_timeout)?;
    let targets = client::connect(&a.conn).await?;
    let a = &a;
    each(&targets, |t| async move {
        let stage = a.stage || a.no_reboot;
        // A node just back from a reboot may be reached first over a connection that died
        // with its previous boot: tried again for a few seconds.
        let mut tries = 0;
        let (boot_id, before) = loop {
            match this_boot(&t).await {
                Err(s) if s.code() == tonic::Code::Unavailable && tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                other => break other.map_err(|s| client::call_error(&t.node, s))?,
            }
        };
        // A staged upgrade (or one without reboot) leaves the node running: nothing to drain.
        let drained = match a.drain && !stage {
            true => Some(crate::drain::drain(&t, drain_timeout).await?),
            false => None,
        };
        let reply = client::machine(&t)
            .upgrade(UpgradeRequest {
                image: a.image.clone(),
                preserve: a.preserve,
                stage,
                force: a.force,
                reboot_mode: i32::from(a.reboot_mode == "powercycle"),
            })
            .await;
        // The node reboots right after it replies; a reply lost with the connection leaves
        // the outcome to the node's next boot.
        let cut = match reply {
            Ok(resp) => {
                for m in &resp.into_inner().messages {
                    eprintln!("{}: {}", t.node, m.ack);
                }
                false
            }
            Err(s) if s.code() == tonic::Code::Unavailable && !stage && a.follow.follows() => {
                eprintln!(
                    "{}: the connection closed before the reply ({}); waiting to see whether the node reboots",
                    t.node,
                    s.message()
                );
                true
            }
            Err(s) => {
                if let Some(d) = drained {
                    d.undo().await;
                }
                return Err(client::call_error(&t.node, s));
            }
        };
        if stage || !a.follow.follows() {
            return Ok(());
        }
        eprintln!("{}: waiting for the node to reboot", t.node);
        let started = Instant::now();
        let kernel_log = a.follow.debug.then(|| crate::lifecycle::kernel_log(&t));
        let now = back(&t, &boot_id, started + timeout, cut).await;
        if let Some(k) = kernel_log {
            k.abort();
        }
        let now = now?;
        match now == before {
            true => Err(Error::msg(format!(
                "{}: the new system did not come up: the node started boot slot {now} again (the previous system) after {} s",
                t.node,
                started.elapsed().as_secs()
            ))),
            false => {
                eprintln!(
                    "{}: back after {} s, running {} from boot slot {now}",
                    t.node,
                    started.elapsed().as_secs(),
                    a.image
                );
                Ok(())
            }
        }
    })
    .await
}

pub async fn rollback(a: RollbackArgs) -> Result<()> {
    let targets = client::connect(&a.conn).await?;
    each(&targets, |t| async move {
        client::machine(&t)
            .rollback(RollbackRequest {})
            .await
            .map_err(|s| client::call_error(&t.node, s))?;
        println!(
            "{}: rolling back: rebooting into the previous system",
            t.node
        );
        Ok(())
    })
    .await
}
