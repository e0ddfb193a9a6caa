//! `talosctl apply-config`: send a machine config to nodes.

use api::machine::apply_configuration_request::Mode;
use api::machine::ApplyConfigurationRequest;
use clap::Args;
use machinery::{Error, Result};

use crate::client;
use crate::config_cmd::ConnArgs;
use crate::util::{parse_duration, read_file};

#[derive(Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The machine config file to apply.
    #[arg(short, long, default_value = "")]
    file: String,
    /// How to apply it.
    #[arg(short, long, default_value = "auto", value_parser = ["auto", "no-reboot", "reboot", "staged", "try"])]
    mode: String,
    /// Show what would change without applying.
    #[arg(long)]
    dry_run: bool,
    /// How long a `try` lasts before it is reverted.
    #[arg(long, default_value = "1m0s")]
    timeout: String,
    /// Patches applied to the file before it is sent (inline, or @file).
    #[arg(short = 'p', long = "config-patch")]
    patches: Vec<String>,
}

pub async fn run(a: ApplyArgs) -> Result<()> {
    if a.file.is_empty() {
        return Err(Error::msg("--file is required"));
    }
    let mut cfg = machinery::Config::parse(&read_file(&a.file)?).map_err(|e| e.in_file(&a.file))?;
    if !a.patches.is_empty() {
        cfg = machinery::apply_patches(cfg, &machinery::load_patches(&a.patches)?)?;
    }
    let mode = match a.mode.as_str() {
        "no-reboot" => Mode::NoReboot,
        "reboot" => Mode::Reboot,
        "staged" => Mode::Staged,
        "try" => Mode::Try,
        _ => Mode::Auto,
    };
    let timeout = parse_duration(&a.timeout)?;
    let mut errors = Vec::new();
    for t in client::connect(&a.conn).await? {
        let req = ApplyConfigurationRequest {
            data: cfg.encode().into_bytes(),
            mode: mode as i32,
            dry_run: a.dry_run,
            try_mode_timeout: Some(prost_types::Duration {
                seconds: timeout.as_secs() as i64,
                nanos: timeout.subsec_nanos() as i32,
            }),
        };
        match client::machine(&t).apply_configuration(req).await {
            Ok(resp) => {
                for m in resp.into_inner().messages {
                    for w in &m.warnings {
                        eprintln!("warning: {w}");
                    }
                    println!("{}", m.mode_details);
                }
            }
            Err(status) => errors.push(client::call_error(&t.node, status).to_string()),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::msg(errors.join("\n")))
    }
}
