//! `talosctl apply-config`: send a machine config to nodes.

use api::machine::apply_configuration_request::Mode;
use api::machine::ApplyConfigurationRequest;
use clap::Args;
use machinery::{Error, Result};

use crate::client;
use crate::config_cmd::ConnArgs;
use crate::util::{parse_duration, read_file};

/// How a config is applied (shared by apply-config, patch and edit).
#[derive(Args)]
pub struct ModeArgs {
    /// How to apply it.
    #[arg(short, long, default_value = "auto", value_parser = ["auto", "no-reboot", "reboot", "staged", "try"])]
    mode: String,
    /// Show what would change without applying.
    #[arg(long)]
    dry_run: bool,
    /// How long a `try` lasts before it is reverted.
    #[arg(long, default_value = "1m0s")]
    timeout: String,
}

#[derive(Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The machine config file to apply.
    #[arg(short, long, default_value = "")]
    file: String,
    #[command(flatten)]
    how: ModeArgs,
    /// Patches applied to the file before it is sent (inline, or @file).
    #[arg(short = 'p', long = "config-patch")]
    patches: Vec<String>,
    #[command(flatten)]
    insecure: client::InsecureArgs,
}

pub async fn run(a: ApplyArgs) -> Result<()> {
    if a.file.is_empty() {
        return Err(Error::msg("--file is required"));
    }
    let mut cfg = machinery::Config::parse(&read_file(&a.file)?).map_err(|e| e.in_file(&a.file))?;
    if !a.patches.is_empty() {
        cfg = machinery::apply_patches(cfg, &machinery::load_patches(&a.patches)?)?;
    }
    let targets = client::connect_as(&a.conn, &a.insecure).await?;
    let mut errors = Vec::new();
    for t in targets {
        if let Err(e) = send(&t, &cfg, &a.how).await {
            errors.push(e.to_string());
        }
    }
    client::per_node(errors)
}

/// The active machine config of a node, as text (`get machineconfig`; needs os:admin).
pub async fn current_config(t: &client::Target) -> Result<String> {
    let resp = client::state(t)
        .get(api::cosi::GetRequest {
            namespace: "config".into(),
            r#type: "MachineConfigs.config.talos.dev".into(),
            id: "v1alpha1".into(),
            options: None,
        })
        .await
        .map_err(|s| client::call_error(&t.node, s))?
        .into_inner();
    let yaml = resp
        .resource
        .and_then(|r| r.spec)
        .map(|s| s.yaml_spec)
        .unwrap_or_default();
    let docs = machinery::yaml::parse_stream(&yaml).map_err(|e| {
        Error::msg(format!(
            "{}: unreadable machine config: {}",
            t.node, e.message
        ))
    })?;
    docs.into_iter()
        .next()
        .and_then(|d| d.value.as_str().map(String::from))
        .ok_or_else(|| {
            Error::msg(format!(
                "{}: the machine config resource holds no config",
                t.node
            ))
        })
}

#[derive(Args)]
pub struct PatchArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// What to patch: machineconfig (mc).
    #[arg(value_parser = ["machineconfig", "mc", "machineconfigs"])]
    resource: String,
    /// Accepted as upstream's; the active config (v1alpha1) is always the one patched.
    id: Option<String>,
    /// Patch to apply: inline YAML/JSON, or @file; repeatable.
    #[arg(short = 'p', long = "patch")]
    patches: Vec<String>,
    /// A file holding a patch (as -p @file).
    #[arg(long = "patch-file", default_value = "")]
    patch_file: String,
    /// Accepted as upstream's; the machine config has one namespace.
    #[arg(long, default_value = "")]
    namespace: String,
    #[command(flatten)]
    how: ModeArgs,
}

async fn send(t: &client::Target, cfg: &machinery::Config, how: &ModeArgs) -> Result<()> {
    let mode = match how.mode.as_str() {
        "no-reboot" => Mode::NoReboot,
        "reboot" => Mode::Reboot,
        "staged" => Mode::Staged,
        "try" => Mode::Try,
        _ => Mode::Auto,
    };
    let timeout = parse_duration(&how.timeout)?;
    let req = ApplyConfigurationRequest {
        data: cfg.encode().into_bytes(),
        mode: mode as i32,
        dry_run: how.dry_run,
        try_mode_timeout: Some(prost_types::Duration {
            seconds: timeout.as_secs() as i64,
            nanos: timeout.subsec_nanos() as i32,
        }),
    };
    let resp = client::machine(t)
        .apply_configuration(req)
        .await
        .map_err(|s| client::call_error(&t.node, s))?;
    for m in resp.into_inner().messages {
        for w in &m.warnings {
            eprintln!("warning: {w}");
        }
        println!("{}", m.mode_details);
    }
    Ok(())
}

/// Apply `cfg` to the node without a reboot (what `upgrade-k8s` does to each node).
pub async fn apply_no_reboot(t: &client::Target, cfg: &machinery::Config) -> Result<()> {
    let req = ApplyConfigurationRequest {
        data: cfg.encode().into_bytes(),
        mode: Mode::NoReboot as i32,
        dry_run: false,
        try_mode_timeout: None,
    };
    client::machine(t)
        .apply_configuration(req)
        .await
        .map(drop)
        .map_err(|s| client::call_error(&t.node, s))
}

/// The paths of the JSON patches among `patches`.
fn json_paths(patches: &[machinery::patch::Patch]) -> Vec<String> {
    patches
        .iter()
        .filter_map(|p| match p {
            machinery::patch::Patch::Json(j) => Some(&j.ops.0),
            _ => None,
        })
        .flatten()
        .filter_map(|op| serde_json::to_value(op).ok())
        .filter_map(|v| v["path"].as_str().map(String::from))
        .collect()
}

/// `talosctl patch machineconfig`: patch each node's active config and apply it.
pub async fn patch(a: PatchArgs) -> Result<()> {
    let mut specs = a.patches.clone();
    if !a.patch_file.is_empty() {
        specs.push(format!("@{}", a.patch_file));
    }
    if specs.is_empty() {
        return Err(Error::msg(
            "no patch given: pass -p <patch> or --patch-file <file>",
        ));
    }
    let patches = machinery::load_patches(&specs)?;
    let mut errors = Vec::new();
    for t in client::connect(&a.conn).await? {
        let result = async {
            let cfg = machinery::Config::parse(&current_config(&t).await?)?;
            if cfg.documents().len() > 1 {
                for path in json_paths(&patches) {
                    if let Ok(dest) = machinery::patch::json_destination(&cfg, &path) {
                        eprintln!("{}: JSON patch path {path} applies to {dest}", t.node);
                    }
                }
            }
            let patched = machinery::apply_patches(cfg, &patches)?;
            send(&t, &patched, &a.how).await
        }
        .await;
        if let Err(e) = result {
            errors.push(e.to_string());
        }
    }
    client::per_node(errors)
}

#[derive(Args)]
pub struct EditArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// What to edit: machineconfig (mc).
    #[arg(value_parser = ["machineconfig", "mc", "machineconfigs"])]
    resource: String,
    /// Accepted as upstream's; the active config (v1alpha1) is always the one edited.
    id: Option<String>,
    /// Accepted as upstream's; the machine config has one namespace.
    #[arg(long, default_value = "")]
    namespace: String,
    #[command(flatten)]
    how: ModeArgs,
}

/// `$TALOS_EDITOR`, `$EDITOR`, then vi.
fn editor() -> String {
    ["TALOS_EDITOR", "EDITOR"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|e| !e.is_empty()))
        .unwrap_or_else(|| "vi".into())
}

/// `talosctl edit machineconfig`: edit each node's config in an editor and apply it. A config
/// that does not load sends the editor back with the errors on top.
pub async fn edit(a: EditArgs) -> Result<()> {
    for t in client::connect(&a.conn).await? {
        let original = current_config(&t).await?;
        let path = std::env::temp_dir().join(format!("talos-edit-{}.yaml", std::process::id()));
        let mut text = format!(
            "# Editing the machine config of {}. Save and quit to apply; an unchanged file applies nothing.\n{original}",
            t.node
        );
        loop {
            machinery::fsutil::write_atomic(&path, text.as_bytes(), 0o600)?;
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{} \"$1\"", editor()))
                .arg("sh")
                .arg(&path)
                .status()
                .map_err(|e| Error::msg(format!("cannot run the editor: {e}")))?;
            if !status.success() {
                let _ = std::fs::remove_file(&path);
                return Err(Error::msg("the editor failed: nothing applied"));
            }
            let edited = read_file(&path.display().to_string())?;
            let body: String = edited
                .lines()
                .skip_while(|l| l.starts_with('#'))
                .map(|l| format!("{l}\n"))
                .collect();
            if body.trim() == original.trim() {
                let _ = std::fs::remove_file(&path);
                println!("Apply was skipped: no changes detected.");
                break;
            }
            match machinery::Config::parse(&body) {
                Ok(cfg) => {
                    let _ = std::fs::remove_file(&path);
                    send(&t, &cfg, &a.how).await?;
                    break;
                }
                Err(e) => {
                    let notes: String = e.to_string().lines().map(|l| format!("# {l}\n")).collect();
                    text = format!("# The config does not load:\n{notes}{body}");
                }
            }
        }
    }
    Ok(())
}
