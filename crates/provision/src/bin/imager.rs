//! `imager`: builds images from the build host's Debian packages.
//!
//! `imager etcd -o etcd.oci.tar` writes an OCI archive of Debian's etcd;
//! `imager etcd --push REGISTRY/REPO:TAG` publishes it (`--plain-http` for a registry without
//! TLS). `imager boot` makes the kernel and initramfs, `imager installer` the image machines
//! install from, `imager disk` a disk image with Talos's partitions.

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
        #[command(flatten)]
        to: Publish,
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
    /// The installer image (the kernel and initramfs `imager boot` made), which
    /// `machine.install.image` names.
    Installer {
        /// The folder `imager boot` wrote.
        #[arg(long, default_value = "_out")]
        from: PathBuf,
        #[command(flatten)]
        to: Publish,
    },
    /// A raw disk image: Talos's partitions, the boot loader and boot slot A (needs root and
    /// loop devices).
    Disk {
        /// The folder `imager boot` wrote.
        #[arg(long, default_value = "_out")]
        from: PathBuf,
        /// The image file.
        #[arg(short, long, default_value = "_out/disk.raw")]
        output: PathBuf,
        /// Its size in MiB (sparse).
        #[arg(long, default_value_t = 2048)]
        size: u64,
        /// The kernel command line of the slot.
        #[arg(long, default_value = DISK_CMDLINE)]
        cmdline: String,
        /// More kernel arguments, after the command line.
        #[arg(long = "extra-kernel-arg")]
        extra_kernel_args: Vec<String>,
    },
}

const DISK_CMDLINE: &str = "console=tty0 console=ttyS0 talos.platform=metal";

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
        Cmd::Etcd { etcd, to } => {
            let (version, image) = provision::imager::etcd(&etcd)?;
            to.publish(&image, "talos.local/etcd", &format!("v{version}"))
        }
        Cmd::Installer { from, to } => {
            let image =
                provision::imager::installer(&from.join("vmlinuz"), &from.join("initramfs.img"))?;
            to.publish(
                &image,
                "talos.local/installer",
                &format!("v{}", env!("CARGO_PKG_VERSION")),
            )
        }
        Cmd::Disk {
            from,
            output,
            size,
            cmdline,
            extra_kernel_args,
        } => {
            let cmdline = std::iter::once(cmdline)
                .chain(extra_kernel_args)
                .collect::<Vec<_>>()
                .join(" ");
            let (kernel, initramfs) = (from.join("vmlinuz"), from.join("initramfs.img"));
            disk::image(
                &output,
                size,
                &disk::Boot {
                    kernel: &kernel,
                    initramfs: &initramfs,
                    cmdline: &cmdline,
                    extensions: None,
                },
            )?;
            println!("disk       {} ({size} MiB, sparse)", output.display());
            Ok(())
        }
    }
}

/// Where an image goes: an OCI archive, a registry, or both.
#[derive(clap::Args)]
struct Publish {
    /// Write the image as an OCI archive here.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Push the image to this reference (its tag defaults to the image's version).
    #[arg(long)]
    push: Option<String>,
    /// Talk plain HTTP to the registry pushed to.
    #[arg(long)]
    plain_http: bool,
}

impl Publish {
    /// Write and/or push `image`, named `push` (tagged `tag` unless it has a tag) or
    /// `default:tag`.
    fn publish(&self, image: &oci::Image, default: &str, tag: &str) -> Result<(), String> {
        if self.output.is_none() && self.push.is_none() {
            return Err("say where the image goes: --output FILE and/or --push REF".into());
        }
        let r = self.push.as_deref().unwrap_or(default);
        let tagged = r.rsplit('/').next().is_some_and(|last| last.contains(':'));
        let mut reference = oci::Reference::parse(r)?;
        if !tagged && reference.digest.is_none() {
            reference.tag = Some(tag.to_string());
        }
        if let Some(path) = &self.output {
            let file =
                std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
            image
                .write_archive(&reference.to_string(), std::io::BufWriter::new(file))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            println!("wrote {} ({reference})", path.display());
        }
        if self.push.is_some() {
            let client = oci::registry::Client::new(Default::default());
            let digest = client.push(&reference, image, self.plain_http)?;
            println!("pushed {reference}@{digest}");
        }
        Ok(())
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
