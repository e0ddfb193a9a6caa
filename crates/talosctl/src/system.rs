//! `talosctl memory|mounts|list|read|reboot|shutdown`.

use api::machine::{ListRequest, ReadRequest};
use clap::Args;
use machinery::{Error, Result};

use crate::client::{self, Target};
use crate::config_cmd::{table, ConnArgs};
use crate::util::human;

#[derive(Args)]
pub struct NodeArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Directory to list.
    #[arg(default_value = "/")]
    path: String,
    /// Long format: mode, owner, size, time.
    #[arg(short, long)]
    long: bool,
    /// Descend into directories.
    #[arg(short, long)]
    recurse: bool,
    /// How deep to descend (with -r; 0 = no limit).
    #[arg(short, long, default_value_t = 0)]
    depth: i32,
    /// Sizes in human units (with -l).
    #[arg(short = 'H', long)]
    humanize: bool,
    /// Only these kinds: f (regular files), d (directories), l or L (symbolic links).
    #[arg(short = 't', long = "type", value_delimiter = ',', value_parser = ["f", "d", "l", "L"])]
    types: Vec<String>,
}

#[derive(Args)]
pub struct ReadArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The file to print.
    path: String,
}

pub type Rows = Vec<Vec<String>>;

/// Run `f` on every node and print the rows it returns under `header` as one table.
pub async fn table_of<F, Fut>(targets: &[Target], header: Vec<String>, f: F) -> Result<()>
where
    F: Fn(Target) -> Fut,
    Fut: std::future::Future<Output = Result<Rows>>,
{
    let mut rows = vec![header];
    let result = each(targets, &mut rows, f).await;
    print!("{}", table(&rows));
    result
}

/// Run `f` on every node, gathering the table rows it returns; failures are collected per node
/// instead of stopping the others.
async fn each<F, Fut>(targets: &[Target], rows: &mut Rows, f: F) -> Result<()>
where
    F: Fn(Target) -> Fut,
    Fut: std::future::Future<Output = Result<Rows>>,
{
    let mut errors = Vec::new();
    for t in targets {
        match f(t.clone()).await {
            Ok(r) => rows.extend(r),
            Err(e) => errors.push(e.to_string()),
        }
    }
    client::per_node(errors)
}

#[derive(Args)]
pub struct MemoryArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    insecure: client::InsecureArgs,
    /// Every figure of the node's /proc/meminfo (kB), not only the summary (MiB).
    #[arg(short, long)]
    verbose: bool,
}

/// Every figure of a node's memory, as upstream's `memory --verbose` names them.
fn meminfo_rows(i: &api::machine::MemInfo) -> Vec<(&'static str, u64)> {
    vec![
        ("MemTotal", i.memtotal),
        ("MemFree", i.memfree),
        ("MemAvailable", i.memavailable),
        ("Buffers", i.buffers),
        ("Cached", i.cached),
        ("SwapCached", i.swapcached),
        ("Active", i.active),
        ("Inactive", i.inactive),
        ("ActiveAnon", i.activeanon),
        ("InactiveAnon", i.inactiveanon),
        ("ActiveFile", i.activefile),
        ("InactiveFile", i.inactivefile),
        ("Unevictable", i.unevictable),
        ("Mlocked", i.mlocked),
        ("SwapTotal", i.swaptotal),
        ("SwapFree", i.swapfree),
        ("Dirty", i.dirty),
        ("Writeback", i.writeback),
        ("AnonPages", i.anonpages),
        ("Mapped", i.mapped),
        ("Shmem", i.shmem),
        ("Slab", i.slab),
        ("SReclaimable", i.sreclaimable),
        ("SUnreclaim", i.sunreclaim),
        ("KernelStack", i.kernelstack),
        ("PageTables", i.pagetables),
        ("NFSUnstable", i.nfsunstable),
        ("Bounce", i.bounce),
        ("WritebackTmp", i.writebacktmp),
        ("CommitLimit", i.commitlimit),
        ("CommittedAS", i.committedas),
        ("VmallocTotal", i.vmalloctotal),
        ("VmallocUsed", i.vmallocused),
        ("VmallocChunk", i.vmallocchunk),
        ("HardwareCorrupted", i.hardwarecorrupted),
        ("AnonHugePages", i.anonhugepages),
        ("ShmemHugePages", i.shmemhugepages),
        ("ShmemPmdMapped", i.shmempmdmapped),
        ("CmaTotal", i.cmatotal),
        ("CmaFree", i.cmafree),
        ("HugePagesTotal", i.hugepagestotal),
        ("HugePagesFree", i.hugepagesfree),
        ("HugePagesRsvd", i.hugepagesrsvd),
        ("HugePagesSurp", i.hugepagessurp),
        ("Hugepagesize", i.hugepagesize),
        ("DirectMap4k", i.directmap4k),
        ("DirectMap2M", i.directmap2m),
        ("DirectMap1G", i.directmap1g),
    ]
}

pub async fn memory(a: MemoryArgs) -> Result<()> {
    let targets = client::connect_as(&a.conn, &a.insecure).await?;
    if a.verbose {
        let mut errors = Vec::new();
        for t in &targets {
            match client::machine(t).memory(()).await {
                Ok(resp) => {
                    for m in resp.into_inner().messages {
                        println!("NODE: {}", client::node_of(m.metadata.as_ref(), t));
                        for (name, v) in meminfo_rows(&m.meminfo.unwrap_or_default()) {
                            match name.starts_with("HugePages") {
                                true => println!("{name}: {v}"),
                                false => println!("{name}: {v} kB"),
                            }
                        }
                    }
                }
                Err(s) => errors.push(client::call_error(&t.node, s).to_string()),
            }
        }
        return client::per_node(errors);
    }
    let header = [
        "NODE",
        "TOTAL",
        "USED",
        "FREE",
        "SHARED",
        "BUFFERS",
        "CACHE",
        "AVAILABLE",
    ]
    .map(String::from)
    .to_vec();
    table_of(&targets, header, |t| {
        let mut rows = Rows::new();
        async move {
            let resp = client::machine(&t)
                .memory(())
                .await
                .map_err(|s| client::call_error(&t.node, s))?;
            for m in resp.into_inner().messages {
                let i = m.meminfo.unwrap_or_default();
                let mib = |kb: u64| (kb / 1024).to_string();
                let used = i.memtotal.saturating_sub(i.memfree + i.buffers + i.cached);
                rows.push(vec![
                    t.node.clone(),
                    mib(i.memtotal),
                    mib(used),
                    mib(i.memfree),
                    mib(i.shmem),
                    mib(i.buffers),
                    mib(i.cached),
                    mib(i.memavailable),
                ]);
            }
            Ok(rows)
        }
    })
    .await
}

pub async fn mounts(a: NodeArgs) -> Result<()> {
    let targets = client::connect(&a.conn).await?;
    table_of(
        &targets,
        [
            "NODE",
            "FILESYSTEM",
            "SIZE(GB)",
            "USED(GB)",
            "AVAILABLE(GB)",
            "PERCENT USED",
            "MOUNTED ON",
        ]
        .map(String::from)
        .to_vec(),
        |t| {
            let mut rows = Rows::new();
            async move {
                let resp = client::machine(&t)
                    .mounts(())
                    .await
                    .map_err(|s| client::call_error(&t.node, s))?;
                for s in resp.into_inner().messages.into_iter().flat_map(|m| m.stats) {
                    let gb = |b: u64| format!("{:.2}", b as f64 / 1e9);
                    let used = s.size.saturating_sub(s.available);
                    let pct = if s.size > 0 {
                        format!("{:.2}%", used as f64 * 100.0 / s.size as f64)
                    } else {
                        "-".into()
                    };
                    rows.push(vec![
                        t.node.clone(),
                        s.filesystem,
                        gb(s.size),
                        gb(used),
                        gb(s.available),
                        pct,
                        s.mounted_on,
                    ]);
                }
                Ok(rows)
            }
        },
    )
    .await
}

fn mode_string(mode: u32, is_dir: bool, link: bool) -> String {
    let kind = if link {
        'L'
    } else if is_dir {
        'd'
    } else {
        '-'
    };
    let mut s = String::from(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

pub async fn list(a: ListArgs) -> Result<()> {
    let targets = client::connect(&a.conn).await?;
    let header: Vec<String> = if a.long {
        ["NODE", "MODE", "UID", "GID", "SIZE(B)", "LASTMOD", "NAME"]
    } else {
        ["NODE", "NAME", "", "", "", "", ""]
    }
    .iter()
    .filter(|h| !h.is_empty())
    .map(|s| s.to_string())
    .collect();
    table_of(&targets, header, |t| {
        let mut rows = Rows::new();
        let req = ListRequest {
            root: a.path.clone(),
            recurse: a.recurse,
            recursion_depth: a.depth,
        };
        let (long, humanize, types) = (a.long, a.humanize, a.types.clone());
        async move {
            let mut stream = client::machine(&t)
                .list(req)
                .await
                .map_err(|s| client::call_error(&t.node, s))?
                .into_inner();
            while let Some(f) = stream
                .message()
                .await
                .map_err(|s| client::call_error(&t.node, s))?
            {
                if !f.error.is_empty() {
                    eprintln!("{}: {}: {}", t.node, f.name, f.error);
                    continue;
                }
                let kind = match (f.is_dir, f.link.is_empty()) {
                    (_, false) => ["l", "L"],
                    (true, true) => ["d", "d"],
                    (false, true) => ["f", "f"],
                };
                if !types.is_empty() && !types.iter().any(|t| kind.contains(&t.as_str())) {
                    continue;
                }
                let name = if f.link.is_empty() {
                    f.relative_name.clone()
                } else {
                    format!("{} -> {}", f.relative_name, f.link)
                };
                if long {
                    let when = time::OffsetDateTime::from_unix_timestamp(f.modified)
                        .map(|d| {
                            format!(
                                "{} {:>2} {:02}:{:02}",
                                d.month(),
                                d.day(),
                                d.hour(),
                                d.minute()
                            )
                        })
                        .unwrap_or_default();
                    rows.push(vec![
                        t.node.clone(),
                        mode_string(f.mode, f.is_dir, !f.link.is_empty()),
                        f.uid.to_string(),
                        f.gid.to_string(),
                        match humanize {
                            true => human(f.size.max(0) as u64),
                            false => f.size.to_string(),
                        },
                        when,
                        name,
                    ]);
                } else {
                    rows.push(vec![t.node.clone(), name]);
                }
            }
            Ok(rows)
        }
    })
    .await
}

pub async fn read(a: ReadArgs) -> Result<()> {
    let targets = client::connect(&a.conn).await?;
    let t = targets.first().ok_or_else(|| Error::msg("no node"))?;
    let stream = client::machine(t)
        .read(ReadRequest {
            path: a.path.clone(),
        })
        .await
        .map_err(|s| client::call_error(&t.node, s))?
        .into_inner();
    client::print_data(t, stream, "").await
}

#[derive(Args)]
pub struct ProcessesArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The column to sort by, largest first.
    #[arg(short, long, default_value = "rss", value_parser = ["rss", "cpu"])]
    sort: String,
}

pub async fn processes(a: ProcessesArgs) -> Result<()> {
    let targets = client::connect(&a.conn).await?;
    let by_cpu = a.sort == "cpu";
    table_of(
        &targets,
        [
            "NODE", "PID", "STATE", "THREADS", "CPU-TIME", "VIRTMEM", "RESMEM", "LABEL", "COMMAND",
        ]
        .map(String::from)
        .to_vec(),
        |t| async move {
            let resp = client::machine(&t)
                .processes(())
                .await
                .map_err(|s| client::call_error(&t.node, s))?;
            let mut all: Vec<_> = resp
                .into_inner()
                .messages
                .into_iter()
                .flat_map(|m| m.processes)
                .collect();
            match by_cpu {
                true => all.sort_by(|a, b| b.cpu_time.total_cmp(&a.cpu_time)),
                false => all.sort_by_key(|p| std::cmp::Reverse(p.resident_memory)),
            }
            Ok(all
                .into_iter()
                .map(|p| {
                    let command = if p.args.is_empty() { p.command } else { p.args };
                    vec![
                        t.node.clone(),
                        p.pid.to_string(),
                        p.state,
                        p.threads.to_string(),
                        format!("{:.2}", p.cpu_time),
                        human(p.virtual_memory),
                        human(p.resident_memory),
                        p.label,
                        command,
                    ]
                })
                .collect())
        },
    )
    .await
}

#[derive(Args)]
pub struct DmesgArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    insecure: client::InsecureArgs,
    /// Keep printing new messages.
    #[arg(short, long)]
    follow: bool,
    /// Only new messages (with --follow).
    #[arg(long)]
    tail: bool,
}

pub async fn dmesg(a: DmesgArgs) -> Result<()> {
    let targets = client::connect_as(&a.conn, &a.insecure).await?;
    let a = &a;
    client::each(&targets, |t| async move {
        let stream = client::machine(&t)
            .dmesg(api::machine::DmesgRequest {
                follow: a.follow,
                tail: a.tail,
            })
            .await
            .map_err(|s| client::call_error(&t.node, s))?
            .into_inner();
        client::print_data(&t, stream, &format!("{}: ", t.node)).await
    })
    .await
}

#[derive(Args)]
pub struct CopyArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// File or directory on the node.
    src: String,
    /// Local directory to extract into, or `-` for the gzipped tar on stdout.
    dest: String,
}

pub async fn copy(a: CopyArgs) -> Result<()> {
    let targets = client::connect(&a.conn).await?;
    let t = targets.first().ok_or_else(|| Error::msg("no node"))?;
    let mut stream = client::machine(t)
        .copy(api::machine::CopyRequest {
            root_path: a.src.clone(),
        })
        .await
        .map_err(|s| client::call_error(&t.node, s))?
        .into_inner();
    let mut archive = Vec::new();
    while let Some(d) = stream
        .message()
        .await
        .map_err(|s| client::call_error(&t.node, s))?
    {
        archive.extend_from_slice(&d.bytes);
    }
    if a.dest == "-" {
        use std::io::Write;
        std::io::stdout().write_all(&archive).ok();
        return Ok(());
    }
    std::fs::create_dir_all(&a.dest).map_err(|e| Error::msg(format!("{}: {e}", a.dest)))?;
    tar::Archive::new(flate2::read::GzDecoder::new(archive.as_slice()))
        .unpack(&a.dest)
        .map_err(|e| Error::msg(format!("{}: cannot extract: {e}", a.dest)))
}

#[derive(Args)]
pub struct DuArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Paths on the node.
    #[arg(default_value = "/")]
    paths: Vec<String>,
    /// Files too, not only directories.
    #[arg(short, long)]
    all: bool,
    /// How deep to report.
    #[arg(short, long, default_value_t = 0)]
    depth: i32,
    /// Human-readable sizes.
    #[arg(short = 'H', long)]
    humanize: bool,
    /// Leave out entries smaller than this many bytes (negative: larger than).
    #[arg(short, long, default_value_t = 0, allow_negative_numbers = true)]
    threshold: i64,
}

pub async fn du(a: DuArgs) -> Result<()> {
    let targets = client::connect(&a.conn).await?;
    let size_header = if a.humanize { "SIZE" } else { "SIZE(B)" };
    let (paths, depth, all, threshold, humanize) =
        (a.paths.clone(), a.depth, a.all, a.threshold, a.humanize);
    table_of(
        &targets,
        vec!["NODE".to_string(), size_header.into(), "NAME".into()],
        |t| {
            let req = api::machine::DiskUsageRequest {
                recursion_depth: depth,
                all,
                threshold,
                paths: paths.clone(),
            };
            async move {
                let mut stream = client::machine(&t)
                    .disk_usage(req)
                    .await
                    .map_err(|s| client::call_error(&t.node, s))?
                    .into_inner();
                let mut rows = Rows::new();
                while let Some(i) = stream
                    .message()
                    .await
                    .map_err(|s| client::call_error(&t.node, s))?
                {
                    if !i.error.is_empty() {
                        return Err(Error::msg(format!("{}: {}", t.node, i.error)));
                    }
                    let size = if humanize {
                        human(i.size as u64)
                    } else {
                        i.size.to_string()
                    };
                    rows.push(vec![t.node.clone(), size, i.name]);
                }
                Ok(rows)
            }
        },
    )
    .await
}

#[derive(Args)]
pub struct StatsArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Kubernetes containers (namespace k8s.io) instead of system services.
    #[arg(short, long)]
    kubernetes: bool,
    /// Ask the CRI rather than containerd.
    #[arg(long = "use-cri", hide = true)]
    use_cri: bool,
}

pub async fn stats(a: StatsArgs) -> Result<()> {
    let targets = client::connect(&a.conn).await?;
    let (namespace, driver) = crate::containers::container_target(a.kubernetes, a.use_cri);
    let header = ["NODE", "NAMESPACE", "ID", "MEMORY(MB)", "CPU"]
        .map(String::from)
        .to_vec();
    table_of(&targets, header, |t| async move {
        let resp = client::machine(&t)
            .stats(api::machine::StatsRequest {
                namespace: namespace.into(),
                driver: driver as i32,
            })
            .await
            .map_err(|s| client::call_error(&t.node, s))?;
        let mut rows = Rows::new();
        for m in resp.into_inner().messages {
            let node = client::node_of(m.metadata.as_ref(), &t);
            for s in m.stats {
                rows.push(vec![
                    node.clone(),
                    s.namespace,
                    s.id,
                    format!("{:.2}", s.memory_usage as f64 / 1024.0 / 1024.0),
                    s.cpu_usage.to_string(),
                ]);
            }
        }
        Ok(rows)
    })
    .await
}
