//! `talosctl dashboard`: a terminal UI per node (ratatui): a summary (hostname, version, uptime,
//! CPU, memory, machine type, etcd, services), the node's addresses, and a service's recent log,
//! refreshed every `--update-interval`. ←/→ (or h/l) switch nodes, Tab switches the log's
//! service, q quits. Everything comes over the API with read-only calls (os:reader is enough).

use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use machinery::{Error, Result};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};

use crate::client::{self, Target};
use crate::config_cmd::ConnArgs;
use crate::util::parse_duration;

#[derive(Args)]
pub struct DashboardArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// How often the figures are refreshed.
    #[arg(short = 'd', long, default_value = "3s")]
    update_interval: String,
}

/// What one refresh learned about a node.
#[derive(Default)]
struct Snapshot {
    hostname: String,
    version: String,
    uptime: String,
    machine_type: String,
    cpus: usize,
    load: String,
    memory: String,
    services: Vec<(String, String, bool)>,
    addresses: Vec<String>,
    log: Vec<String>,
    error: Option<String>,
}

async fn fetch(t: &Target, log_service: &str) -> Snapshot {
    let mut s = Snapshot::default();
    let mut m = client::machine(t);
    let err = |e: tonic::Status| e.message().to_string();
    let result: std::result::Result<(), String> = async {
        if let Some(h) = m
            .hostname(())
            .await
            .map_err(err)?
            .into_inner()
            .messages
            .pop()
        {
            s.hostname = h.hostname;
        }
        if let Some(v) = m
            .version(())
            .await
            .map_err(err)?
            .into_inner()
            .messages
            .pop()
        {
            s.version = v.version.map(|v| v.tag).unwrap_or_default();
        }
        if let Some(l) = m
            .load_avg(())
            .await
            .map_err(err)?
            .into_inner()
            .messages
            .pop()
        {
            s.load = format!("{:.2} {:.2} {:.2}", l.load1, l.load5, l.load15);
        }
        if let Some(c) = m
            .cpu_info(())
            .await
            .map_err(err)?
            .into_inner()
            .messages
            .pop()
        {
            s.cpus = c.cpu_info.len();
        }
        if let Some(mem) = m.memory(()).await.map_err(err)?.into_inner().messages.pop() {
            let i = mem.meminfo.unwrap_or_default();
            let used = i.memtotal.saturating_sub(i.memavailable);
            s.memory = format!("{} MiB used of {} MiB", used / 1024, i.memtotal / 1024);
        }
        let services = m.service_list(()).await.map_err(err)?.into_inner();
        let mut started = None;
        for list in services.messages {
            for svc in list.services {
                let healthy = svc.health.as_ref().is_some_and(|h| h.healthy);
                // The node is up since its first service event.
                let first = svc
                    .events
                    .as_ref()
                    .and_then(|e| e.events.first())
                    .and_then(|e| e.ts)
                    .map(|ts| ts.seconds);
                started = match (started, first) {
                    (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
                    (a, b) => a.or(b),
                };
                s.services.push((svc.id, svc.state, healthy));
            }
        }
        if let Some(since) = started {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(since);
            let up = (now - since).max(0);
            s.uptime = format!("{}h{:02}m{:02}s", up / 3600, up % 3600 / 60, up % 60);
        }
        let mut state = client::state(t);
        if let Ok(r) = state
            .get(api::cosi::GetRequest {
                namespace: "config".into(),
                r#type: "MachineTypes.config.talos.dev".into(),
                id: "machine-type".into(),
                options: None,
            })
            .await
        {
            if let Some(spec) = r.into_inner().resource.and_then(|r| r.spec) {
                s.machine_type = spec.yaml_spec.trim().to_string();
            }
        }
        let mut list = state
            .list(api::cosi::ListRequest {
                namespace: "network".into(),
                r#type: "AddressStatuses.net.talos.dev".into(),
                options: None,
            })
            .await
            .map_err(err)?
            .into_inner();
        while let Some(item) = list.next().await {
            if let Some(spec) = item.map_err(err)?.resource.and_then(|r| r.spec) {
                let v = crate::get::yaml_value(&spec.yaml_spec);
                let (link, addr) = (
                    v["linkName"].as_str().unwrap_or_default(),
                    v["address"].as_str().unwrap_or_default(),
                );
                if link != "lo" {
                    s.addresses.push(format!("{link}: {addr}"));
                }
            }
        }
        let mut logs = m
            .logs(api::machine::LogsRequest {
                namespace: "system".into(),
                id: log_service.into(),
                driver: 0,
                follow: false,
                tail_lines: 40,
            })
            .await
            .map_err(err)?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = logs.next().await {
            bytes.extend(chunk.map_err(err)?.bytes);
        }
        s.log = String::from_utf8_lossy(&bytes)
            .lines()
            .map(String::from)
            .collect();
        Ok(())
    }
    .await;
    s.error = result.err();
    s
}

fn draw(f: &mut ratatui::Frame, nodes: &[Target], at: usize, log_service: &str, s: &Snapshot) {
    let [title, summary, network, logs] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Min(3),
    ])
    .areas(f.area());
    let bold = Style::default().add_modifier(Modifier::BOLD);
    f.render_widget(
        Paragraph::new(Line::styled(
            format!(
                " talosctl dashboard: node {} [{}/{}]   ←/→ node · Tab log · q quit",
                nodes[at].node,
                at + 1,
                nodes.len()
            ),
            bold,
        )),
        title,
    );
    let etcd = s
        .services
        .iter()
        .find(|(id, _, _)| id == "etcd")
        .map(|(_, st, h)| format!("{st}{}", if *h { ", healthy" } else { "" }))
        .unwrap_or_else(|| "not on this node".into());
    let services: Vec<String> = s
        .services
        .iter()
        .map(|(id, st, h)| format!("{id} {st}{}", if *h { " ✓" } else { "" }))
        .collect();
    let mut lines = vec![
        Line::from(format!(
            "Host: {}   Version: {}   Uptime: {}   Type: {}",
            s.hostname, s.version, s.uptime, s.machine_type
        )),
        Line::from(format!(
            "CPU: {} cores, load {}   Memory: {}",
            s.cpus, s.load, s.memory
        )),
        Line::from(format!("etcd: {etcd}")),
        Line::from(format!("Services: {}", services.join(", "))),
    ];
    if let Some(e) = &s.error {
        lines.push(Line::styled(format!("error: {e}"), bold));
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::default().borders(Borders::ALL).title(" Summary ")),
        summary,
    );
    f.render_widget(
        Paragraph::new(s.addresses.join("\n"))
            .block(Block::default().borders(Borders::ALL).title(" Network ")),
        network,
    );
    let shown = logs.height.saturating_sub(2) as usize;
    let tail = s.log[s.log.len().saturating_sub(shown)..].join("\n");
    f.render_widget(
        Paragraph::new(tail).block(
            Block::default()
                .borders(Borders::ALL)
                .title(format!(" Logs: {log_service} ")),
        ),
        logs,
    );
}

pub fn dashboard(a: DashboardArgs) -> Result<()> {
    let every = parse_duration(&a.update_interval)?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| Error::msg(e.to_string()))?;
    let nodes = rt.block_on(client::connect(&a.conn))?;
    if nodes.is_empty() {
        return Err(Error::msg("no nodes to show"));
    }
    let mut terminal = ratatui::init();
    let (mut at, mut service) = (0usize, 0usize);
    let mut snap = Snapshot::default();
    let mut due = Instant::now();
    let outcome = loop {
        let services: Vec<String> = snap.services.iter().map(|s| s.0.clone()).collect();
        let log_service = services
            .get(service % services.len().max(1))
            .cloned()
            .unwrap_or_else(|| "apid".into());
        if Instant::now() >= due {
            snap = rt.block_on(fetch(&nodes[at], &log_service));
            due = Instant::now() + every;
        }
        if let Err(e) = terminal.draw(|f| draw(f, &nodes, at, &log_service, &snap)) {
            break Err(Error::msg(e.to_string()));
        }
        match event::poll(Duration::from_millis(200)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => break Err(Error::msg(e.to_string())),
        }
        let Ok(Event::Key(key)) = event::read() else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => break Ok(()),
            KeyCode::Right | KeyCode::Char('l') => at = (at + 1) % nodes.len(),
            KeyCode::Left | KeyCode::Char('h') => at = (at + nodes.len() - 1) % nodes.len(),
            KeyCode::Tab => service += 1,
            _ => continue,
        }
        due = Instant::now();
    };
    ratatui::restore();
    outcome
}
