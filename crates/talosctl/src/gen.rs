//! `talosctl gen ...`: secrets bundles, machine configs and PKI material, all offline.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Args, Subcommand};
use machinery::clientconfig;
use machinery::generate::{
    endpoint_host, generate, Contract, GenOptions, MachineType, DEFAULT_KUBERNETES_VERSION,
};
use machinery::patch::{apply, load_patches};
use machinery::pki::{self, CertAndKey, Key, KeyKind};
use machinery::secrets::SecretsBundle;
use machinery::{Config, Error, Result};

use crate::util::{check_outputs_free, read_file, split_commas, write_output};

pub const DEFAULT_INSTALL_IMAGE: &str = "factory.talos.dev/metal-installer/376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba:latest";
pub const ADMIN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Args)]
pub struct GenArgs {
    /// Overwrite existing output files.
    #[arg(short, long, global = true)]
    force: bool,
    #[command(subcommand)]
    command: GenCommand,
}

#[derive(Subcommand)]
enum GenCommand {
    /// Generate controlplane.yaml, worker.yaml and talosconfig for a cluster.
    Config(Box<GenConfigArgs>),
    /// Generate a secrets bundle for `gen config --with-secrets`.
    Secrets(SecretsArgs),
    /// Generate a self-signed CA certificate and key.
    Ca(CaArgs),
    /// Generate an Ed25519 private key.
    Key(KeyArgs),
    /// Generate a certificate signing request.
    Csr(CsrArgs),
    /// Sign a certificate signing request with a CA.
    Crt(CrtArgs),
    /// Generate a self-signed certificate and key pair.
    Keypair(KeypairArgs),
}

#[derive(Args)]
pub struct GenConfigArgs {
    /// Cluster name.
    cluster_name: String,
    /// Kubernetes API endpoint, e.g. https://10.5.0.2:6443.
    cluster_endpoint: String,
    /// Additional certificate SANs for the API server and the Talos API.
    #[arg(long)]
    additional_sans: Vec<String>,
    /// Patch for all generated configs (inline, or @file); repeatable.
    #[arg(long)]
    config_patch: Vec<String>,
    /// Patch for control plane configs; repeatable.
    #[arg(long)]
    config_patch_control_plane: Vec<String>,
    /// Patch for worker configs; repeatable.
    #[arg(long)]
    config_patch_worker: Vec<String>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    dns_domain: String,
    /// The disk to install Talos to.
    #[arg(long, default_value = "/dev/sda")]
    install_disk: String,
    /// The installer image.
    #[arg(long, default_value = DEFAULT_INSTALL_IMAGE)]
    install_image: String,
    /// Kubernetes version to use.
    #[arg(long, default_value = DEFAULT_KUBERNETES_VERSION)]
    kubernetes_version: String,
    /// Output directory, or a file ('-' for stdout) when one output type is asked for.
    #[arg(short, long, default_value = "")]
    output: String,
    /// Which files to generate: controlplane, worker, talosconfig.
    #[arg(short = 't', long, default_values_t = ["controlplane".to_string(), "worker".to_string(), "talosconfig".to_string()])]
    output_types: Vec<String>,
    /// Registry mirrors, as registry=endpoint[,endpoint...]; repeatable.
    #[arg(long)]
    registry_mirror: Vec<String>,
    /// The Talos version whose defaults the configs follow (version contract), e.g. v1.8.
    #[arg(long, default_value = "")]
    talos_version: String,
    /// Config document version.
    #[arg(long, default_value = "v1alpha1")]
    version: String,
    /// Enable cluster discovery.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    with_cluster_discovery: bool,
    /// Write documentation comments into the configs.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    with_docs: bool,
    /// Write commented examples into the configs.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    with_examples: bool,
    /// Enable KubeSpan.
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    with_kubespan: bool,
    /// Use a secrets bundle from `gen secrets` instead of generating new secrets.
    #[arg(long, default_value = "")]
    with_secrets: String,
    /// Overwrite existing output files.
    #[arg(short, long)]
    force: bool,
}

#[derive(Args)]
struct SecretsArgs {
    /// Take the secrets from an existing control plane config.
    #[arg(long, default_value = "")]
    from_controlplane_config: String,
    /// Take the Kubernetes and etcd CAs from a Kubernetes PKI directory.
    #[arg(short = 'p', long, default_value = "")]
    from_kubernetes_pki: String,
    /// Use this Kubernetes bootstrap token.
    #[arg(short = 't', long, default_value = "")]
    kubernetes_bootstrap_token: String,
    /// Output path; '-' writes to stdout.
    #[arg(short, long, default_value = "secrets.yaml")]
    output_file: String,
    /// The Talos version whose defaults the bundle follows.
    #[arg(long, default_value = "")]
    talos_version: String,
}

#[derive(Args)]
struct CaArgs {
    /// Validity in hours.
    #[arg(long, default_value_t = 87600)]
    hours: u64,
    /// The CA's organization (also the output file name).
    #[arg(long, default_value = "")]
    organization: String,
    /// Use RSA instead of Ed25519.
    #[arg(long)]
    rsa: bool,
}

#[derive(Args)]
struct KeyArgs {
    /// The key's name (output `<name>.key`).
    #[arg(long, default_value = "")]
    name: String,
}

#[derive(Args)]
struct CsrArgs {
    /// IP address the certificate is for.
    #[arg(long, default_value = "")]
    ip: String,
    /// Private key file.
    #[arg(long, default_value = "")]
    key: String,
    /// Roles (certificate Organization).
    #[arg(long, default_values_t = ["os:admin".to_string()])]
    roles: Vec<String>,
}

#[derive(Args)]
struct CrtArgs {
    /// CA to sign with: path without extension (reads .crt and .key).
    #[arg(long, default_value = "")]
    ca: String,
    /// The certificate signing request.
    #[arg(long, default_value = "")]
    csr: String,
    /// Validity in hours.
    #[arg(long, default_value_t = 24)]
    hours: u64,
    /// Output name (`<name>.crt`).
    #[arg(long, default_value = "")]
    name: String,
}

#[derive(Args)]
struct KeypairArgs {
    /// IP address the certificate is for.
    #[arg(long, default_value = "")]
    ip: String,
    /// Organization (also the output file name).
    #[arg(long, default_value = "")]
    organization: String,
}

pub fn run(args: GenArgs) -> Result<()> {
    let force = args.force;
    match args.command {
        GenCommand::Config(mut a) => {
            a.force |= force;
            gen_config(*a)
        }
        GenCommand::Secrets(a) => gen_secrets(a, force),
        GenCommand::Ca(a) => gen_ca(a, force),
        GenCommand::Key(a) => gen_key(a, force),
        GenCommand::Csr(a) => gen_csr(a, force),
        GenCommand::Crt(a) => gen_crt(a, force),
        GenCommand::Keypair(a) => gen_keypair(a, force),
    }
}

fn contract(talos_version: &str) -> Result<Contract> {
    if talos_version.is_empty() {
        Ok(Contract::CURRENT)
    } else {
        talos_version.parse()
    }
}

fn check_endpoint(endpoint: &str) -> Result<()> {
    let host = endpoint_host(endpoint).map_err(|_| {
        Error::msg(format!(
            "invalid cluster endpoint \"{endpoint}\": expected a URL such as https://{}:6443",
            endpoint
                .trim_start_matches("https://")
                .split(':')
                .next()
                .unwrap_or("1.2.3.4")
        ))
    })?;
    if !endpoint.starts_with("https://") {
        return Err(Error::msg(format!(
            "invalid cluster endpoint \"{endpoint}\": the scheme must be https (try https://{host}:6443)"
        )));
    }
    Ok(())
}

pub fn parse_mirrors(specs: &[String]) -> Result<Vec<(String, Vec<String>)>> {
    specs
        .iter()
        .map(|s| {
            let (host, eps) = s.split_once('=').ok_or_else(|| {
                Error::msg(format!(
                    "invalid registry mirror \"{s}\": expected registry=endpoint[,endpoint]"
                ))
            })?;
            Ok((host.to_string(), eps.split(',').map(String::from).collect()))
        })
        .collect()
}

pub fn gen_config(a: GenConfigArgs) -> Result<()> {
    if a.version != "v1alpha1" {
        return Err(Error::msg(format!(
            "unsupported config version \"{}\": only v1alpha1",
            a.version
        )));
    }
    check_endpoint(&a.cluster_endpoint)?;
    let types = split_commas(&a.output_types);
    for t in &types {
        if !["controlplane", "worker", "talosconfig"].contains(&t.as_str()) {
            return Err(Error::msg(format!(
                "unknown output type \"{t}\": expected controlplane, worker or talosconfig"
            )));
        }
    }
    let mut opts = GenOptions::new(&a.cluster_name, &a.cluster_endpoint);
    opts.contract = contract(&a.talos_version)?;
    opts.kubernetes_version = a.kubernetes_version.clone();
    opts.additional_sans = split_commas(&a.additional_sans);
    opts.dns_domain = a.dns_domain.clone();
    opts.install_disk = Some(a.install_disk.clone()).filter(|d| !d.is_empty());
    opts.install_image = Some(a.install_image.clone()).filter(|d| !d.is_empty());
    opts.registry_mirrors = parse_mirrors(&a.registry_mirror)?;
    opts.with_discovery = a.with_cluster_discovery;
    opts.with_kubespan = a.with_kubespan;

    // Everything that can fail is checked before anything is generated or written.
    let dir = PathBuf::from(if a.output.is_empty() { "." } else { &a.output });
    if types.len() > 1 || a.output.is_empty() {
        let paths: Vec<PathBuf> = types.iter().map(|t| dir.join(file_name(t))).collect();
        check_outputs_free(
            &paths.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
            a.force,
        )?;
    }
    let common = load_patches(&a.config_patch)?;
    let cp_patches = load_patches(&a.config_patch_control_plane)?;
    let worker_patches = load_patches(&a.config_patch_worker)?;
    let secrets = if a.with_secrets.is_empty() {
        eprintln!("generating PKI and tokens");
        SecretsBundle::generate()?
    } else {
        SecretsBundle::load(&a.with_secrets)?
    };
    let render = |ty: MachineType, extra: &[machinery::Patch]| -> Result<String> {
        let cfg = generate(&secrets, &opts, ty)?;
        let cfg = apply(apply(cfg, &common)?, extra)?;
        Ok(if a.with_docs {
            machinery::docs::encode_with_docs(&cfg, a.with_examples)
        } else {
            cfg.encode()
        })
    };
    let mut outputs: Vec<(&str, String)> = Vec::new();
    for t in &types {
        let text = match t.as_str() {
            "controlplane" => render(MachineType::ControlPlane, &cp_patches)?,
            "worker" => render(MachineType::Worker, &worker_patches)?,
            _ => clientconfig::from_secrets(
                &secrets,
                &a.cluster_name,
                &["os:admin".to_string()],
                ADMIN_TTL,
                vec!["127.0.0.1".to_string()],
            )?
            .encode(),
        };
        outputs.push((file_name(t), text));
    }
    if outputs.len() == 1 && !a.output.is_empty() {
        let (_, text) = &outputs[0];
        if a.output == "-" {
            print!("{text}");
            return Ok(());
        }
        let path = PathBuf::from(&a.output);
        write_output(&path, text.as_bytes(), 0o600, a.force)?;
        eprintln!("Created {}", path.display());
        return Ok(());
    }
    for (file, text) in &outputs {
        let path = dir.join(file);
        write_output(&path, text.as_bytes(), 0o600, true)?;
        eprintln!("Created {}", path.display());
    }
    Ok(())
}

fn file_name(output_type: &str) -> &'static str {
    match output_type {
        "controlplane" => "controlplane.yaml",
        "worker" => "worker.yaml",
        _ => "talosconfig",
    }
}

fn gen_secrets(a: SecretsArgs, force: bool) -> Result<()> {
    contract(&a.talos_version)?;
    let mut bundle = if !a.from_controlplane_config.is_empty() {
        SecretsBundle::from_config(&Config::load(&a.from_controlplane_config)?)?
    } else if !a.from_kubernetes_pki.is_empty() {
        SecretsBundle::from_kubernetes_pki(
            Path::new(&a.from_kubernetes_pki),
            Some(&a.kubernetes_bootstrap_token),
        )?
    } else {
        SecretsBundle::generate()?
    };
    if !a.kubernetes_bootstrap_token.is_empty() {
        bundle.secrets.bootstraptoken = a.kubernetes_bootstrap_token.clone();
        bundle.validate()?;
    }
    let text = bundle.encode();
    if a.output_file == "-" {
        print!("{text}");
        return Ok(());
    }
    write_output(Path::new(&a.output_file), text.as_bytes(), 0o600, force)
}

fn write_pair(base: &str, pair: &CertAndKey, force: bool) -> Result<()> {
    let crt = PathBuf::from(format!("{base}.crt"));
    let key = PathBuf::from(format!("{base}.key"));
    check_outputs_free(&[&crt, &key], force)?;
    write_output(&crt, pair.crt.as_bytes(), 0o644, true)?;
    write_output(&key, pair.key.as_bytes(), 0o600, true)
}

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

fn parse_ip(ip: &str) -> Result<Option<IpAddr>> {
    if ip.is_empty() {
        return Ok(None);
    }
    ip.parse()
        .map(Some)
        .map_err(|_| Error::msg(format!("invalid IP address \"{ip}\"")))
}

fn gen_ca(a: CaArgs, force: bool) -> Result<()> {
    if a.organization.is_empty() {
        return Err(Error::msg("--organization is required"));
    }
    if a.rsa {
        return Err(Error::msg(
            "RSA keys are not supported: Talos CAs are Ed25519 (omit --rsa)",
        ));
    }
    let pair = pki::self_signed(&a.organization, None, hours(a.hours))?;
    write_pair(&a.organization, &pair, force)?;
    let fingerprint = pki::fingerprint_sha256(&pair.crt)?;
    write_output(
        Path::new(&format!("{}.sha256", a.organization)),
        format!("{fingerprint}\n").as_bytes(),
        0o644,
        force,
    )
}

fn gen_key(a: KeyArgs, force: bool) -> Result<()> {
    if a.name.is_empty() {
        return Err(Error::msg("--name is required"));
    }
    let key = Key::generate(KeyKind::Ed25519)?;
    write_output(
        Path::new(&format!("{}.key", a.name)),
        key.to_pem().as_bytes(),
        0o600,
        force,
    )
}

fn gen_csr(a: CsrArgs, force: bool) -> Result<()> {
    if a.key.is_empty() {
        return Err(Error::msg("--key is required"));
    }
    let key =
        Key::from_pem(&read_file(&a.key)?).map_err(|e| Error::msg(format!("{}: {e}", a.key)))?;
    let ip = parse_ip(&a.ip)?.ok_or_else(|| Error::msg("--ip is required"))?;
    let csr = pki::new_csr(&key, Some(ip), &split_commas(&a.roles))?;
    let out = format!("{}.csr", a.key.trim_end_matches(".key"));
    write_output(Path::new(&out), csr.as_bytes(), 0o644, force)
}

fn gen_crt(a: CrtArgs, force: bool) -> Result<()> {
    for (flag, v) in [("--ca", &a.ca), ("--csr", &a.csr), ("--name", &a.name)] {
        if v.is_empty() {
            return Err(Error::msg(format!("{flag} is required")));
        }
    }
    let ca = CertAndKey {
        crt: read_file(&format!("{}.crt", a.ca))?,
        key: read_file(&format!("{}.key", a.ca))?,
    };
    let crt = pki::sign_csr(&ca, &read_file(&a.csr)?, hours(a.hours))?;
    write_output(
        Path::new(&format!("{}.crt", a.name)),
        crt.as_bytes(),
        0o644,
        force,
    )
}

fn gen_keypair(a: KeypairArgs, force: bool) -> Result<()> {
    if a.organization.is_empty() {
        return Err(Error::msg("--organization is required"));
    }
    let pair = pki::self_signed(&a.organization, parse_ip(&a.ip)?, pki::CA_VALIDITY)?;
    write_pair(&a.organization, &pair, force)
}
