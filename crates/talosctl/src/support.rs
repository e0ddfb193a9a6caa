//! `talosctl support`: one zip of what is needed to look into a cluster's trouble: per node,
//! every service's log (machined's too), the kernel log, the machine config with its secrets
//! redacted, and every resource that is not sensitive.

use std::io::Write;

use api::cosi::ListRequest;
use api::machine::{DmesgRequest, LogsRequest};
use clap::Args;
use machinery::{Error, Result};

use crate::client::{self, Target};
use crate::config_cmd::ConnArgs;
use crate::get::yaml_value;

#[derive(Args)]
#[command(
    after_help = "Examples:\n  talosctl -n 10.5.0.2,10.5.0.3 support              # support.zip\n  talosctl -n 10.5.0.2 support -O /tmp/cp1.zip -v"
)]
pub struct SupportArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    insecure: client::InsecureArgs,
    /// The archive to write (default support.zip, or support-<context>.zip).
    #[arg(short = 'O', long, default_value = "")]
    output: String,
    /// Resources fetched at once per node.
    #[arg(short = 'w', long = "num-workers", default_value_t = 1)]
    num_workers: usize,
    /// Say what is collected, file by file.
    #[arg(short, long)]
    verbose: bool,
    /// Write the archive unencrypted (what happens anyway: no recipients are built in).
    #[arg(long = "no-encryption")]
    no_encryption: bool,
}

/// What one node gave: file names (under the node's directory) and contents.
type Files = Vec<(String, Vec<u8>)>;

async fn read_stream(
    mut s: tonic::Streaming<api::common::Data>,
) -> std::result::Result<Vec<u8>, tonic::Status> {
    let mut out = Vec::new();
    while let Some(d) = s.message().await? {
        out.extend(d.bytes);
    }
    Ok(out)
}

/// Every resource type that may be read without os:admin: (type, default namespace).
async fn readable_types(t: &Target) -> std::result::Result<Vec<(String, String)>, tonic::Status> {
    let mut stream = client::state(t)
        .list(ListRequest {
            namespace: "meta".into(),
            r#type: "ResourceDefinitions.meta.cosi.dev".into(),
            options: None,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(item) = stream.message().await? {
        let spec = yaml_value(
            &item
                .resource
                .and_then(|r| r.spec)
                .map(|s| s.yaml_spec)
                .unwrap_or_default(),
        );
        if spec["sensitivity"] == "sensitive" {
            continue;
        }
        if let (Some(ty), Some(ns)) = (spec["type"].as_str(), spec["defaultNamespace"].as_str()) {
            out.push((ty.to_string(), ns.to_string()));
        }
    }
    Ok(out)
}

/// One resource type's resources as a YAML stream.
async fn resources_of(
    t: &Target,
    ty: &str,
    ns: &str,
) -> std::result::Result<Vec<u8>, tonic::Status> {
    let mut stream = client::state(t)
        .list(ListRequest {
            namespace: ns.into(),
            r#type: ty.into(),
            options: None,
        })
        .await?
        .into_inner();
    let mut out = String::new();
    while let Some(item) = stream.message().await? {
        let Some(r) = item.resource else { continue };
        let m = r.metadata.unwrap_or_default();
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&format!(
            "metadata:\n    namespace: {}\n    type: {}\n    id: {}\n    version: {}\n    phase: {}\nspec:\n",
            m.namespace, m.r#type, m.id, m.version, m.phase
        ));
        for line in r.spec.map(|s| s.yaml_spec).unwrap_or_default().lines() {
            out.push_str("    ");
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out.into_bytes())
}

/// Everything of one node; what fails is noted in `errors.txt` rather than ending the rest.
async fn collect(t: &Target, workers: usize, verbose: bool) -> Files {
    let mut files: Files = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut note = |what: &str, e: &dyn std::fmt::Display| errors.push(format!("{what}: {e}"));
    match client::machine(t).service_list(()).await {
        Ok(list) => {
            let ids: Vec<String> = list
                .into_inner()
                .messages
                .into_iter()
                .flat_map(|m| m.services)
                .map(|s| s.id)
                .collect();
            for id in ids {
                let logs = client::machine(t)
                    .logs(LogsRequest {
                        namespace: "system".into(),
                        id: id.clone(),
                        driver: 0,
                        follow: false,
                        tail_lines: -1,
                    })
                    .await;
                match logs {
                    Ok(s) => match read_stream(s.into_inner()).await {
                        Ok(bytes) => files.push((format!("service-logs/{id}.log"), bytes)),
                        Err(e) => note(&format!("logs {id}"), &e.message()),
                    },
                    Err(e) => note(&format!("logs {id}"), &e.message()),
                }
            }
        }
        Err(e) => note("services", &e.message()),
    }
    match client::machine(t)
        .dmesg(DmesgRequest {
            follow: false,
            tail: false,
        })
        .await
    {
        Ok(s) => match read_stream(s.into_inner()).await {
            Ok(bytes) => files.push(("dmesg.log".into(), bytes)),
            Err(e) => note("dmesg", &e.message()),
        },
        Err(e) => note("dmesg", &e.message()),
    }
    match crate::apply::current_config(t).await {
        Ok(text) => match machinery::Config::parse(&text) {
            Ok(cfg) => files.push((
                "machineconfig.yaml".into(),
                cfg.redacted().encode().into_bytes(),
            )),
            Err(e) => note("machineconfig", &e),
        },
        Err(e) => note("machineconfig", &e),
    }
    match readable_types(t).await {
        Ok(types) => {
            use futures::StreamExt;
            let fetched: Vec<_> = futures::stream::iter(types)
                .map(|(ty, ns)| async move {
                    let got = resources_of(t, &ty, &ns).await;
                    (ty, ns, got)
                })
                .buffered(workers.max(1))
                .collect()
                .await;
            for (ty, ns, got) in fetched {
                match got {
                    Ok(bytes) if bytes.is_empty() => {}
                    Ok(bytes) => files.push((format!("resources/{ns}/{ty}.yaml"), bytes)),
                    Err(e) => note(&format!("resources {ty}"), &e.message()),
                }
            }
        }
        Err(e) => note("resource definitions", &e.message()),
    }
    if !errors.is_empty() {
        files.push(("errors.txt".into(), (errors.join("\n") + "\n").into_bytes()));
    }
    if verbose {
        for (name, bytes) in &files {
            eprintln!("{}: {name} ({} bytes)", t.node, bytes.len());
        }
    }
    files
}

pub async fn run(a: SupportArgs) -> Result<()> {
    let targets = client::connect_as(&a.conn, &a.insecure).await?;
    let output = match a.output.as_str() {
        "" => match machinery::clientconfig::ClientConfig::load(&a.conn.path())
            .ok()
            .and_then(|c| {
                c.current(
                    Some(&a.conn.context)
                        .filter(|c| !c.is_empty())
                        .map(String::as_str),
                )
                .ok()
                .map(|(n, _)| n.to_string())
            }) {
            Some(ctx) => format!("support-{ctx}.zip"),
            None => "support.zip".into(),
        },
        o => o.to_string(),
    };
    write(&targets, &output, a.num_workers, a.verbose).await?;
    eprintln!("Support bundle is written to {output}");
    Ok(())
}

/// A zip being written: a new file (never one that exists), in place only once finished.
pub struct Archive {
    output: String,
    tmp: String,
    zip: zip::ZipWriter<std::fs::File>,
}

impl Archive {
    pub fn create(output: &str) -> Result<Archive> {
        if std::path::Path::new(output).exists() {
            return Err(Error::msg(format!(
                "{output} exists: remove it or name another archive"
            )));
        }
        let tmp = format!("{output}.partial");
        let file = std::fs::File::create(&tmp).map_err(|e| Error::msg(format!("{tmp}: {e}")))?;
        Ok(Archive {
            output: output.to_string(),
            tmp,
            zip: zip::ZipWriter::new(file),
        })
    }

    fn failed(&self, e: &dyn std::fmt::Display) -> Error {
        Error::msg(format!("writing {}: {e}", self.output))
    }

    pub fn add(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        self.zip
            .start_file(name, options)
            .map_err(|e| self.failed(&e))?;
        self.zip.write_all(bytes).map_err(|e| self.failed(&e))
    }

    /// Written out, synced, and given its name.
    pub fn finish(self) -> Result<()> {
        let file = self
            .zip
            .finish()
            .map_err(|e| Error::msg(format!("writing {}: {e}", self.output)))?;
        file.sync_all()
            .and_then(|_| std::fs::rename(&self.tmp, &self.output))
            .map_err(|e| Error::msg(format!("writing {}: {e}", self.output)))
    }
}

/// Collect from every target into a new zip at `output` (written whole or not at all).
pub async fn write(targets: &[Target], output: &str, workers: usize, verbose: bool) -> Result<()> {
    let mut archive = Archive::create(output)?;
    for t in targets {
        eprintln!("{}: collecting", t.node);
        let files = collect(t, workers, verbose).await;
        for (name, bytes) in &files {
            archive.add(&format!("{}/{name}", t.node), bytes)?;
        }
        let failed = files.iter().any(|(n, _)| n == "errors.txt");
        eprintln!(
            "{}: {} files{}",
            t.node,
            files.len(),
            if failed {
                " (some could not be collected: see errors.txt)"
            } else {
                ""
            }
        );
    }
    archive.finish()
}
