//! `machineconfig patch|gen|diff` and `validate`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use machinery::configdiff;
use machinery::patch::{apply, load_patches};
use machinery::validate::{validate as validate_config, Mode};
use machinery::{Config, Result};

use crate::gen::{self, GenConfigArgs};
use crate::util::write_output;

#[derive(Args)]
pub struct MachineconfigArgs {
    #[command(subcommand)]
    command: McCommand,
}

#[derive(Subcommand)]
enum McCommand {
    /// Apply patches to a machine config file and print or write the result.
    Patch(PatchArgs),
    /// Generate machine configs (same as `gen config`).
    Gen(Box<GenConfigArgs>),
    /// Print a strategic patch that turns config A into config B.
    Diff(DiffArgs),
}

#[derive(Args)]
pub struct PatchArgs {
    /// The machine config file to patch.
    file: PathBuf,
    /// Patch to apply: inline YAML/JSON, or @file; repeatable, applied in order.
    #[arg(short = 'p', long = "patch")]
    patches: Vec<String>,
    /// Output file (stdout when empty).
    #[arg(short, long, default_value = "")]
    output: String,
}

#[derive(Args)]
pub struct DiffArgs {
    a: PathBuf,
    b: PathBuf,
}

#[derive(Args)]
pub struct ValidateArgs {
    /// The config file to validate.
    #[arg(short, long, default_value = "")]
    config: String,
    /// The runtime mode to validate for.
    #[arg(short, long, default_value = "", value_parser = ["", "metal", "cloud", "container"])]
    mode: String,
    /// Fail on warnings too.
    #[arg(long)]
    strict: bool,
}

pub fn run(args: MachineconfigArgs) -> Result<()> {
    match args.command {
        McCommand::Patch(a) => patch(a),
        McCommand::Gen(a) => gen::gen_config(*a),
        McCommand::Diff(a) => {
            let a_cfg = Config::load(&a.a)?;
            let b_cfg = Config::load(&a.b)?;
            print!("{}", configdiff::diff(&a_cfg, &b_cfg));
            Ok(())
        }
    }
}

fn patch(a: PatchArgs) -> Result<()> {
    // Load everything first: a bad patch or config writes nothing.
    let patches = load_patches(&a.patches)?;
    let cfg = Config::load(&a.file)?;
    let out = apply(cfg, &patches)?.encode();
    if a.output.is_empty() {
        print!("{out}");
        Ok(())
    } else {
        write_output(&PathBuf::from(&a.output), out.as_bytes(), 0o600, true)
    }
}

pub fn validate(a: ValidateArgs) -> Result<()> {
    let mode: Mode = a.mode.parse()?;
    if a.config.is_empty() {
        return Err(machinery::Error::msg("--config is required"));
    }
    let cfg = Config::load(&a.config)?;
    let warnings = validate_config(&cfg, mode)
        .into_result(a.strict)
        .map_err(|e| e.in_file(&a.config))?;
    for w in warnings {
        eprintln!("warning: {}", w);
    }
    println!("{} is valid for {} mode", a.config, a.mode);
    Ok(())
}
