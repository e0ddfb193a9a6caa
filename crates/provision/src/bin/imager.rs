//! `imager`: builds images from the build host's Debian packages.
//!
//! `imager etcd -o etcd.oci.tar` writes an OCI archive of Debian's etcd;
//! `imager etcd --push REGISTRY/REPO:TAG` publishes it (`--plain-http` for a registry without
//! TLS).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "imager", about = "Build Talos images from Debian packages")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// An OCI image of etcd (the binary and its shared libraries).
    Etcd {
        /// The etcd binary to package.
        #[arg(long, default_value = "/usr/bin/etcd")]
        etcd: PathBuf,
        /// Write the image as an OCI archive here.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Push the image to this reference (its tag defaults to etcd's version).
        #[arg(long)]
        push: Option<String>,
        /// Talk plain HTTP to the registry pushed to.
        #[arg(long)]
        plain_http: bool,
    },
    /// The kernel and the initramfs (machined as /init, the root filesystem inside).
    Boot {
        /// The static machined to boot (cargo build --profile image --target
        /// x86_64-unknown-linux-musl -p machined).
        #[arg(long)]
        machined: PathBuf,
        /// The kernel release (default: the newest in /boot with its modules).
        #[arg(long)]
        kernel: Option<String>,
        /// Where the kernel, initramfs and root filesystem go.
        #[arg(short, long, default_value = "_out")]
        output: PathBuf,
    },
}

fn size(p: &std::path::Path) -> String {
    let b = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Cmd::Boot {
            machined,
            kernel,
            output,
        } => {
            let release = match kernel {
                Some(k) => k,
                None => provision::imager::installed_kernel()?,
            };
            let a = provision::imager::boot_assets(&machined, &release, &output)?;
            println!("kernel     {} ({})", a.kernel.display(), size(&a.kernel));
            println!(
                "initramfs  {} ({})",
                a.initramfs.display(),
                size(&a.initramfs)
            );
            println!(
                "rootfs     {} ({}, {})",
                a.rootfs.display(),
                size(&a.rootfs),
                a.rootfs_digest
            );
            Ok(())
        }
        Cmd::Etcd {
            etcd,
            output,
            push,
            plain_http,
        } => {
            if output.is_none() && push.is_none() {
                return Err("say where the image goes: --output FILE and/or --push REF".into());
            }
            let (version, image) = provision::imager::etcd(&etcd)?;
            let name = |r: &str| -> Result<oci::Reference, String> {
                let tagged = r.rsplit('/').next().is_some_and(|last| last.contains(':'));
                let mut r = oci::Reference::parse(r)?;
                if !tagged && r.digest.is_none() {
                    r.tag = Some(format!("v{version}"));
                }
                Ok(r)
            };
            let reference = name(push.as_deref().unwrap_or("talos.local/etcd"))?;
            if let Some(path) = output {
                let file =
                    std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                image
                    .write_archive(&reference.to_string(), std::io::BufWriter::new(file))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                println!("wrote {} ({reference})", path.display());
            }
            if push.is_some() {
                let client = oci::registry::Client::new(Default::default());
                let digest = client.push(&reference, &image, plain_http)?;
                println!("pushed {reference}@{digest}");
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
