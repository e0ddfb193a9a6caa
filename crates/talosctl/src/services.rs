//! `talosctl service(s)`, `talosctl logs` and `talosctl restart`.

use std::time::SystemTime;

use api::machine::{
    LogsRequest, ServiceInfo, ServiceRestartRequest, ServiceStartRequest, ServiceStopRequest,
};
use clap::Args;
use machinery::{Error, Result};

use crate::client;
use crate::config_cmd::{table, ConnArgs};

#[derive(Args)]
pub struct ServiceArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    insecure: client::InsecureArgs,
    /// A service id (all services when omitted).
    id: Option<String>,
    /// What to do with it.
    #[arg(value_parser = ["start", "stop", "restart", "status"])]
    action: Option<String>,
}

#[derive(Args)]
pub struct LogsArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    insecure: client::InsecureArgs,
    /// The service.
    id: String,
    /// Keep printing new output.
    #[arg(short, long)]
    follow: bool,
    /// Lines from the end (-1: all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    tail: i32,
    /// A container's logs (in the k8s namespace) instead of a system service's.
    #[arg(short, long)]
    kubernetes: bool,
}

fn ago(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(ts) = ts else { return String::new() };
    let then = std::time::UNIX_EPOCH + std::time::Duration::new(ts.seconds.max(0) as u64, 0);
    let secs = SystemTime::now()
        .duration_since(then)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s ago"),
        (0, m) => format!("{m}m{s}s ago"),
        (h, m) => format!("{h}h{m}m{s}s ago"),
    }
}

fn health(s: &ServiceInfo) -> &'static str {
    match &s.health {
        Some(h) if h.unknown => "?",
        Some(h) if h.healthy => "OK",
        Some(_) => "Fail",
        None => "?",
    }
}

pub async fn service(a: ServiceArgs) -> Result<()> {
    let targets = client::connect_as(&a.conn, &a.insecure).await?;
    let mut errors = Vec::new();
    let mut rows = vec![[
        "NODE",
        "SERVICE",
        "STATE",
        "HEALTH",
        "LAST CHANGE",
        "LAST EVENT",
    ]
    .map(String::from)
    .to_vec()];
    for t in &targets {
        let mut m = client::machine(t);
        let result: Result<()> = async {
            match (a.id.as_deref(), a.action.as_deref().unwrap_or("status")) {
                (None, _) => {
                    let resp = m
                        .service_list(())
                        .await
                        .map_err(|s| client::call_error(&t.node, s))?;
                    for s in resp
                        .into_inner()
                        .messages
                        .into_iter()
                        .flat_map(|l| l.services)
                    {
                        let last = s
                            .events
                            .as_ref()
                            .and_then(|e| e.events.last())
                            .cloned()
                            .unwrap_or_default();
                        rows.push(vec![
                            t.node.clone(),
                            s.id.clone(),
                            s.state.clone(),
                            health(&s).into(),
                            ago(last.ts.as_ref()),
                            last.msg,
                        ]);
                    }
                }
                (Some(id), "status") => {
                    let resp = m
                        .service_list(())
                        .await
                        .map_err(|s| client::call_error(&t.node, s))?;
                    let s = resp
                        .into_inner()
                        .messages
                        .into_iter()
                        .flat_map(|l| l.services)
                        .find(|s| s.id == id)
                        .ok_or_else(|| {
                            Error::msg(format!("{}: service \"{id}\" not found", t.node))
                        })?;
                    println!("NODE     {}", t.node);
                    println!("ID       {}", s.id);
                    println!("STATE    {}", s.state);
                    println!("HEALTH   {}", health(&s));
                    if let Some(h) = s.health.as_ref().filter(|h| !h.last_message.is_empty()) {
                        println!("LAST HEALTH MESSAGE   {}", h.last_message);
                    }
                    let events = s.events.map(|e| e.events).unwrap_or_default();
                    for (i, e) in events.iter().rev().enumerate() {
                        let label = if i == 0 { "EVENTS" } else { "" };
                        println!(
                            "{label:<9}[{}]: {} ({})",
                            e.state,
                            e.msg,
                            ago(e.ts.as_ref())
                        );
                    }
                }
                (Some(id), action) => {
                    let resp = match action {
                        "start" => m
                            .service_start(ServiceStartRequest { id: id.into() })
                            .await
                            .map(|r| {
                                r.into_inner()
                                    .messages
                                    .into_iter()
                                    .map(|x| x.resp)
                                    .collect::<Vec<_>>()
                            }),
                        "stop" => m
                            .service_stop(ServiceStopRequest { id: id.into() })
                            .await
                            .map(|r| {
                                r.into_inner()
                                    .messages
                                    .into_iter()
                                    .map(|x| x.resp)
                                    .collect()
                            }),
                        _ => m
                            .service_restart(ServiceRestartRequest { id: id.into() })
                            .await
                            .map(|r| {
                                r.into_inner()
                                    .messages
                                    .into_iter()
                                    .map(|x| x.resp)
                                    .collect()
                            }),
                    }
                    .map_err(|s| client::call_error(&t.node, s))?;
                    for line in resp {
                        println!("{}: {line}", t.node);
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            errors.push(e.to_string());
        }
    }
    if a.id.is_none() {
        print!("{}", table(&rows));
    }
    client::per_node(errors)
}

pub async fn logs(a: LogsArgs) -> Result<()> {
    let targets = client::connect_as(&a.conn, &a.insecure).await?;
    let (namespace, driver) = crate::containers::container_target(a.kubernetes, false);
    let a = &a;
    client::each(&targets, |t| async move {
        let stream = client::machine(&t)
            .logs(LogsRequest {
                namespace: namespace.into(),
                id: a.id.clone(),
                driver: driver as i32,
                follow: a.follow,
                tail_lines: a.tail,
            })
            .await
            .map_err(|s| client::call_error(&t.node, s))?
            .into_inner();
        client::print_data(&t, stream, &format!("{}: ", t.node)).await
    })
    .await
}

#[derive(Args)]
#[command(
    after_help = "Examples:\n  talosctl -n 10.5.0.2 restart trustd\n  talosctl -n 10.5.0.2 restart -k kube-system/kube-apiserver-cp-1:kube-apiserver"
)]
pub struct RestartArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The service's id, or with -k the container's (as `containers -k` shows it).
    id: String,
    /// A Kubernetes (CRI) container.
    #[arg(short, long)]
    kubernetes: bool,
    /// The same as -k.
    #[arg(long = "use-cri", hide = true)]
    use_cri: bool,
}

pub async fn restart(a: RestartArgs) -> Result<()> {
    let targets = client::connect(&a.conn).await?;
    let cri = a.kubernetes || a.use_cri;
    let (namespace, driver) = match cri {
        true => ("k8s.io", api::common::ContainerDriver::Cri),
        false => ("system", api::common::ContainerDriver::Containerd),
    };
    let a = &a;
    client::each(&targets, |t| async move {
        client::machine(&t)
            .restart(api::machine::RestartRequest {
                namespace: namespace.into(),
                id: a.id.clone(),
                driver: driver as i32,
            })
            .await
            .map_err(|s| client::call_error(&t.node, s))?;
        println!("{}: {} restarted", t.node, a.id);
        Ok(())
    })
    .await
}
