//! `talosctl rotate-ca`: a new Talos API CA for the whole cluster, with no node unreachable on
//! the way. In three rounds over every node (control planes first, each applied without a
//! reboot): the new CA is accepted; it becomes the machine CA (the old one accepted still, so
//! the old talosconfig keeps working while nodes switch); the old CA is dropped. The new
//! talosconfig (a client certificate from the new CA) is written at the end, and the old one
//! is refused from then on.

use std::time::{Duration, Instant, SystemTime};

use clap::{ArgAction, Args};
use machinery::clientconfig::{ClientConfig, Context};
use machinery::secrets::unb64;
use machinery::{Error, Result};
use serde_json::{json, Value};

use crate::client::{self, Target};
use crate::config_cmd::ConnArgs;

#[derive(Args)]
#[command(
    after_help = "Examples:\n  talosctl -n 10.5.0.2 rotate-ca                    # the plan only (--dry-run is the default)\n  talosctl -n 10.5.0.2 rotate-ca --dry-run=false --kubernetes=false -o new.talosconfig"
)]
pub struct RotateCaArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Only say what would be done.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    dry_run: bool,
    /// Rotate the Talos API CA.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    talos: bool,
    /// Rotate the Kubernetes API CA (not built yet here: pass --kubernetes=false).
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    kubernetes: bool,
    /// The control plane nodes (default: the cluster's members as discovery knows them).
    #[arg(long = "control-plane-nodes", value_delimiter = ',')]
    control_plane_nodes: Vec<String>,
    /// The worker nodes (default: the cluster's members as discovery knows them).
    #[arg(long = "worker-nodes", value_delimiter = ',')]
    worker_nodes: Vec<String>,
    /// Where to write the talosconfig of the new CA.
    #[arg(short, long, default_value = "talosconfig")]
    output: String,
}

/// The cluster's nodes by role, from the flags or from discovery's members.
async fn nodes(a: &RotateCaArgs, t: &Target) -> Result<(Vec<String>, Vec<String>)> {
    if !a.control_plane_nodes.is_empty() {
        return Ok((a.control_plane_nodes.clone(), a.worker_nodes.clone()));
    }
    let (mut cps, mut workers) = (Vec::new(), Vec::new());
    for (ty, addr) in crate::health::members(t).await? {
        match ty.as_str() {
            "controlplane" | "init" => cps.push(addr),
            _ => workers.push(addr),
        }
    }
    if cps.is_empty() {
        return Err(Error::msg(
            "no control plane is known (is cluster discovery off?): name the nodes with --control-plane-nodes and --worker-nodes",
        ));
    }
    Ok((cps, workers))
}

/// A context like `base` with `ca` (one or more PEM certificates) trusted and, when given, a
/// client certificate of `issuer`.
fn context(
    base: &Context,
    ca: &str,
    issuer: Option<&machinery::pki::CertAndKey>,
) -> Result<Context> {
    use base64::Engine;
    let mut ctx = match issuer {
        Some(ca) => machinery::clientconfig::new_client_context(
            ca,
            &["os:admin".to_string()],
            machinery::pki::CLIENT_VALIDITY,
            base.endpoints.clone(),
        )?,
        None => base.clone(),
    };
    ctx.nodes = base.nodes.clone();
    ctx.ca = base64::engine::general_purpose::STANDARD.encode(ca);
    Ok(ctx)
}

/// The node's config with `change` made to its v1alpha1 document, applied without a reboot.
async fn apply(t: &Target, change: &impl Fn(&mut Value)) -> Result<()> {
    let text = crate::apply::current_config(t).await?;
    let mut cfg = machinery::Config::parse(&text)?;
    let v1 = cfg
        .documents_mut()
        .iter_mut()
        .find(|d| d.id == machinery::config::DocId::V1Alpha1)
        .ok_or_else(|| Error::msg(format!("{}: its config has no v1alpha1 document", t.node)))?;
    change(&mut v1.value);
    let cfg = machinery::Config::parse(&cfg.encode())?;
    let req = api::machine::ApplyConfigurationRequest {
        data: cfg.encode().into_bytes(),
        mode: api::machine::apply_configuration_request::Mode::NoReboot as i32,
        dry_run: false,
        try_mode_timeout: None,
    };
    client::machine(t)
        .apply_configuration(req)
        .await
        .map_err(|s| client::call_error(&t.node, s))?;
    Ok(())
}

/// Wait until `node` answers with `ctx` (its certificate signed by a CA `ctx` trusts) from
/// an apid started after `since` (a new CA restarts it a moment after the apply).
async fn answers(
    ctx: &Context,
    endpoint: Option<String>,
    node: &str,
    since: SystemTime,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let t = client::dial("", ctx, vec![node.to_string()], endpoint.clone())?.remove(0);
        let restarted = client::machine(&t).service_list(()).await.map(|r| {
            r.into_inner()
                .messages
                .into_iter()
                .flat_map(|m| m.services)
                .find(|s| s.id == "apid")
                .is_some_and(|s| {
                    let last = s.events.and_then(|e| e.events.last().cloned());
                    let at = last.as_ref().and_then(|e| e.ts.as_ref()).map(|ts| {
                        SystemTime::UNIX_EPOCH + Duration::new(ts.seconds.max(0) as u64, 0)
                    });
                    s.state == "Running"
                        && at.is_some_and(|at| at + Duration::from_secs(1) >= since)
                })
        });
        match restarted {
            Ok(true) => return Ok(()),
            Ok(false) | Err(_) if start.elapsed() < Duration::from_secs(120) => {
                tokio::time::sleep(Duration::from_secs(1)).await
            }
            Ok(false) => {
                return Err(Error::msg(format!(
                    "{node}: apid did not start again with the new CA within 2 minutes"
                )))
            }
            Err(s) => return Err(client::call_error(node, s)),
        }
    }
}

/// `apply` until it goes through: a call may cross an apid that restarts for its own new CA
/// (the endpoint's), which cuts it.
async fn apply_retrying(
    ctx: &Context,
    endpoint: &Option<String>,
    node: &str,
    change: impl Fn(&mut Value),
) -> Result<()> {
    let mut tries = 0;
    loop {
        let t = client::dial("", ctx, vec![node.to_string()], endpoint.clone())?.remove(0);
        match apply(&t, &change).await {
            Err(e)
                if tries < 10
                    && ["transport error", "tcp connect error", "code = Unavailable"]
                        .iter()
                        .any(|m| e.to_string().contains(m)) =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

pub async fn run(a: RotateCaArgs) -> Result<()> {
    if a.kubernetes {
        return Err(Error::msg(
            "rotating the Kubernetes API CA is not built yet: pass --kubernetes=false to rotate the Talos API CA",
        ));
    }
    if !a.talos {
        return Err(Error::msg(
            "nothing to rotate: --talos=false and --kubernetes=false",
        ));
    }
    let path = a.conn.path();
    let config = ClientConfig::load(&path)?;
    let context_name = Some(a.conn.context.as_str()).filter(|c| !c.is_empty());
    let (name, old) = config.current(context_name)?;
    let (name, old) = (name.to_string(), old.clone());
    let targets = client::connect(&a.conn).await?;
    let first = targets.first().ok_or_else(|| Error::msg("no node"))?;
    let (cps, workers) = nodes(&a, first).await?;
    // The endpoint every call goes through: -e's first, else the context's.
    let endpoint = crate::util::split_commas(&a.conn.endpoints)
        .into_iter()
        .next()
        .or_else(|| old.endpoints.first().cloned());
    let all: Vec<(String, bool)> = cps
        .iter()
        .map(|n| (n.clone(), true))
        .chain(workers.iter().map(|n| (n.clone(), false)))
        .collect();
    println!(
        "> the Talos API CA of {} node(s): control planes {cps:?}, workers {workers:?}",
        all.len()
    );
    println!("> 1. a new CA, accepted by every node");
    println!("> 2. the new CA made every node's machine CA (the old one still accepted)");
    println!(
        "> 3. the old CA no longer accepted; the new talosconfig written to {}",
        a.output
    );
    if a.dry_run {
        println!("(dry run: nothing was done; run with --dry-run=false)");
        return Ok(());
    }
    let old_ca = unb64(&old.ca)?;
    let new_ca = machinery::pki::new_ca("talos", machinery::pki::KeyKind::Ed25519)?;
    let both = format!("{old_ca}{}", new_ca.crt);
    let accepted = |v: &Value| -> Vec<Value> {
        v.pointer("/machine/acceptedCAs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    // 1. Accept the new CA (with the old credentials).
    for (node, _) in &all {
        let crt = b64(&new_ca.crt);
        apply_retrying(&old, &endpoint, node, |v| {
            let mut list: Vec<Value> = accepted(v)
                .into_iter()
                .filter(|c| c["crt"] != crt)
                .collect();
            list.push(json!({"crt": crt}));
            v["machine"]["acceptedCAs"] = Value::Array(list);
        })
        .await?;
        println!("{node}: accepts the new CA");
    }
    // 2. The new CA as machine CA; the old one accepted. Nodes' certificates change one by
    // one: both CAs are trusted meanwhile.
    let during = context(&old, &both, None)?;
    let old_crt = b64(&old_ca);
    for (node, control_plane) in &all {
        let (crt, key) = (b64(&new_ca.crt), b64(&new_ca.key));
        let old_crt = old_crt.clone();
        let since = SystemTime::now();
        apply_retrying(&during, &endpoint, node, |v| {
            v["machine"]["ca"] = match control_plane {
                true => json!({"crt": crt, "key": key}),
                false => json!({"crt": crt}),
            };
            let mut list: Vec<Value> = accepted(v)
                .into_iter()
                .filter(|c| c["crt"] != crt)
                .collect();
            list.push(json!({"crt": old_crt}));
            v["machine"]["acceptedCAs"] = Value::Array(list);
        })
        .await?;
        answers(
            &context(&old, &new_ca.crt, None)?,
            endpoint.clone(),
            node,
            since,
        )
        .await?;
        println!("{node}: serves a certificate of the new CA");
    }
    // 3. Drop the old CA, with the new credentials.
    let new = context(&old, &new_ca.crt, Some(&new_ca))?;
    for (node, _) in &all {
        let old_crt = old_crt.clone();
        let since = SystemTime::now();
        apply_retrying(&new, &endpoint, node, |v| {
            let list: Vec<Value> = accepted(v)
                .into_iter()
                .filter(|c| c["crt"] != old_crt)
                .collect();
            match list.is_empty() {
                true => {
                    if let Some(m) = v["machine"].as_object_mut() {
                        m.remove("acceptedCAs");
                    }
                }
                false => v["machine"]["acceptedCAs"] = Value::Array(list),
            }
        })
        .await?;
        answers(&new, endpoint.clone(), node, since).await?;
        println!("{node}: no longer accepts the old CA");
    }
    let out = ClientConfig {
        context: name.clone(),
        contexts: std::collections::BTreeMap::from([(name, new)]),
    };
    out.save(std::path::Path::new(&a.output))?;
    println!("> the new talosconfig is in {}", a.output);
    Ok(())
}
