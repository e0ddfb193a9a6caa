//! `talosctl reboot`, `shutdown` and `reset`: the request, then (with `--wait`, the default as
//! upstream's) the node followed until it has done it: back from a new boot, gone, or out of
//! its configured state. `--debug` shows the node's kernel log meanwhile.

use std::time::{Duration, Instant, SystemTime};

use api::machine::{DmesgRequest, RebootRequest, ShutdownRequest};
use clap::{ArgAction, Args};
use machinery::{Error, Result};

use crate::client::{self, Target};
use crate::config_cmd::ConnArgs;
use crate::util::parse_duration;

/// How the operation is followed.
#[derive(Args, Clone)]
pub struct Follow {
    /// Follow the operation until it is done.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub wait: bool,
    /// How long to follow it.
    #[arg(long, default_value = "30m0s")]
    pub timeout: String,
    /// Show the node's kernel log while following (implies --wait).
    #[arg(long)]
    pub debug: bool,
    /// How progress is shown: line by line in both (auto, plain).
    #[arg(long, default_value = "auto", value_parser = ["auto", "plain"])]
    progress: String,
}

impl Follow {
    /// Whether the operation is followed.
    pub fn follows(&self) -> bool {
        self.wait || self.debug
    }
}

#[derive(Args)]
#[command(
    after_help = "Examples:\n  talosctl -n 10.5.0.2 reboot\n  talosctl -n 10.5.0.2 reboot --mode powercycle --wait=false"
)]
pub struct RebootArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    follow: Follow,
    /// default, force (skip the graceful stop of services) or powercycle.
    #[arg(short, long, default_value = "default", value_parser = ["default", "force", "powercycle"])]
    mode: String,
    /// Cordon the node and evict its pods first.
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    drain: bool,
    /// How long the drain may take.
    #[arg(long, default_value = "5m0s")]
    drain_timeout: String,
}

#[derive(Args)]
#[command(after_help = "Examples:\n  talosctl -n 10.5.0.3 shutdown")]
pub struct ShutdownArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    follow: Follow,
    /// Stop without cordoning or draining (nothing is drained here in any case).
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
#[command(
    after_help = "Examples:\n  talosctl -n 10.5.0.3 reset\n  talosctl -n 10.5.0.3 reset --system-labels-to-wipe STATE --reboot=true"
)]
pub struct ResetArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    follow: Follow,
    /// Leave the cluster cleanly first.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    graceful: bool,
    /// Boot again afterwards (into maintenance mode) instead of stopping.
    #[arg(long)]
    reboot: bool,
    /// Partitions to wipe (STATE, EPHEMERAL); both when none is given.
    #[arg(long)]
    system_labels_to_wipe: Vec<String>,
}

/// When the node's machined started: it changes with every boot (and every restart of
/// machined), which a reboot is.
async fn started(t: &Target) -> std::result::Result<SystemTime, tonic::Status> {
    let list = client::machine(t).service_list(()).await?.into_inner();
    list.messages
        .into_iter()
        .flat_map(|m| m.services)
        .find(|s| s.id == "machined")
        .and_then(|s| s.events)
        .and_then(|e| e.events.into_iter().next())
        .and_then(|e| e.ts)
        .map(|ts| SystemTime::UNIX_EPOCH + Duration::new(ts.seconds.max(0) as u64, 0))
        .ok_or_else(|| tonic::Status::unknown("the node does not list machined"))
}

/// What ends the wait.
#[derive(Clone, Copy)]
enum Done {
    /// Back from a boot after the given one.
    BackAfter(SystemTime),
    /// No longer answering as a configured node.
    Gone,
}

/// Print the node's new kernel messages as they come, until aborted (`--debug`).
pub fn kernel_log(t: &Target) -> tokio::task::JoinHandle<()> {
    let t = t.clone();
    tokio::spawn(async move {
        if let Ok(s) = client::machine(&t)
            .dmesg(DmesgRequest {
                follow: true,
                tail: true,
            })
            .await
        {
            let _ = client::print_data(&t, s.into_inner(), &format!("{}: ", t.node)).await;
        }
    })
}

/// Follow `t` until `done`, or fail at the deadline.
async fn follow(t: &Target, how: &Follow, done: Done, what: &str) -> Result<()> {
    if !how.follows() {
        return Ok(());
    }
    let timeout = parse_duration(&how.timeout)?;
    let start = Instant::now();
    let kernel_log = how.debug.then(|| kernel_log(t));
    let result = loop {
        let now = started(t).await;
        let finished = match (done, &now) {
            (Done::BackAfter(before), Ok(at)) => *at > before,
            (Done::Gone, Err(_)) => true,
            _ => false,
        };
        if finished {
            eprintln!("{}: {what} after {} s", t.node, start.elapsed().as_secs());
            break Ok(());
        }
        if start.elapsed() > timeout {
            break Err(Error::msg(format!(
                "{}: not done within {}: {}",
                t.node,
                how.timeout,
                match now {
                    Ok(_) => "the node still runs as before".to_string(),
                    Err(s) => s.message().to_string(),
                }
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    if let Some(k) = kernel_log {
        k.abort();
    }
    result
}

/// The boot `t` runs now, for a later comparison (the epoch when it cannot be told).
async fn this_boot(t: &Target) -> SystemTime {
    started(t).await.unwrap_or(SystemTime::UNIX_EPOCH)
}

pub async fn reboot(a: RebootArgs) -> Result<()> {
    let targets = client::connect(&a.conn).await?;
    let mode = match a.mode.as_str() {
        "powercycle" => api::machine::reboot_request::Mode::Powercycle,
        "force" => api::machine::reboot_request::Mode::Force,
        _ => api::machine::reboot_request::Mode::Default,
    } as i32;
    let drain_timeout = parse_duration(&a.drain_timeout)?;
    let a = &a;
    client::each(&targets, |t| async move {
        let before = this_boot(&t).await;
        let drained = match a.drain {
            true => Some(crate::drain::drain(&t, drain_timeout).await?),
            false => None,
        };
        let asked = client::machine(&t).reboot(RebootRequest { mode }).await;
        if let (Err(_), Some(d)) = (&asked, drained) {
            d.undo().await;
        }
        asked.map_err(|s| client::call_error(&t.node, s))?;
        println!("{}: rebooting", t.node);
        follow(
            &t,
            &a.follow,
            Done::BackAfter(before),
            "back from the reboot",
        )
        .await
    })
    .await
}

pub async fn shutdown(a: ShutdownArgs) -> Result<()> {
    let targets = client::connect(&a.conn).await?;
    let a = &a;
    client::each(&targets, |t| async move {
        client::machine(&t)
            .shutdown(ShutdownRequest { force: a.force })
            .await
            .map_err(|s| client::call_error(&t.node, s))?;
        println!("{}: shutting down", t.node);
        follow(&t, &a.follow, Done::Gone, "stopped").await
    })
    .await
}

pub async fn reset(a: ResetArgs) -> Result<()> {
    let targets = client::connect(&a.conn).await?;
    let labels = crate::util::split_commas(&a.system_labels_to_wipe);
    let a = &a;
    let labels = &labels;
    client::each(&targets, |t| async move {
        let req = api::machine::ResetRequest {
            graceful: a.graceful,
            reboot: a.reboot,
            system_partitions_to_wipe: labels
                .iter()
                .map(|l| api::machine::ResetPartitionSpec {
                    label: l.clone(),
                    wipe: true,
                })
                .collect(),
            user_disks_to_wipe: Vec::new(),
            mode: 0,
        };
        // A node that keeps its config (STATE not wiped) comes back from a reboot as itself;
        // otherwise the talosconfig's certificate no longer reaches it: it has stopped, or
        // booted again without its config (maintenance mode).
        let keeps_config = !labels.is_empty() && !labels.iter().any(|l| l == "STATE");
        let (done, what) = match (a.reboot, keeps_config) {
            (true, true) => (
                Done::BackAfter(this_boot(&t).await),
                "reset: back from the reboot",
            ),
            (true, false) => (
                Done::Gone,
                "reset: the node left its config (it boots into maintenance mode)",
            ),
            (false, _) => (Done::Gone, "reset: the node stopped"),
        };
        client::machine(&t)
            .reset(req)
            .await
            .map_err(|s| client::call_error(&t.node, s))?;
        println!("{}: reset", t.node);
        follow(&t, &a.follow, done, what).await
    })
    .await
}
