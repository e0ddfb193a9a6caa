//! `talosctl config ...`: edit the local talosconfig.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use machinery::clientconfig::{self, ClientConfig, Context};
use machinery::secrets::SecretsBundle;
use machinery::{Config, Error, Result};

use crate::util::{parse_duration, read_file, split_commas};

/// The connection flags every node-facing command takes.
#[derive(Args, Clone, Default)]
pub struct ConnArgs {
    /// The path to the Talos configuration file.
    #[arg(long, global = true, default_value = "")]
    pub talosconfig: String,
    /// Target nodes (override the context's nodes).
    #[arg(short = 'n', long, global = true)]
    pub nodes: Vec<String>,
    /// Override the context's endpoints.
    #[arg(short = 'e', long, global = true)]
    pub endpoints: Vec<String>,
    /// Cluster to route to when the endpoint is a multi-cluster proxy.
    #[arg(short = 'c', long, global = true, default_value = "")]
    pub cluster: String,
    /// Context to use instead of the current one.
    #[arg(long, global = true, default_value = "")]
    pub context: String,
    /// PGP key directory for SideroV1-auth contexts.
    #[arg(long = "siderov1-keys-dir", global = true, default_value = "")]
    pub siderov1_keys_dir: String,
}

impl ConnArgs {
    pub fn path(&self) -> PathBuf {
        clientconfig::default_path(Some(&self.talosconfig))
    }

    fn context(&self) -> Option<&str> {
        Some(self.context.as_str()).filter(|c| !c.is_empty())
    }
}

#[derive(Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Add a new context from CA, certificate and key files.
    Add(AddArgs),
    /// Set the current context.
    #[command(visible_alias = "use-context")]
    Context { name: String },
    /// List the contexts.
    #[command(visible_alias = "get-contexts")]
    Contexts,
    /// Set the endpoints of the current context.
    #[command(visible_alias = "endpoints")]
    Endpoint {
        // An id of its own: `endpoints` is the connection flag -e, which it takes too.
        /// The endpoints (host or host:port).
        #[arg(id = "endpoint_list", value_name = "ENDPOINT", required = true)]
        endpoints: Vec<String>,
    },
    /// Set the default nodes of the current context (none clears them).
    #[command(visible_alias = "nodes")]
    Node {
        /// The nodes.
        #[arg(id = "node_list", value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// Show the current context.
    Info {
        #[arg(short, long, default_value = "text", value_parser = ["text", "json", "yaml"])]
        output: String,
    },
    /// Merge contexts from another talosconfig, renaming clashing names.
    Merge {
        #[arg(required = true)]
        from: Vec<String>,
    },
    /// Write a new talosconfig with a fresh client certificate.
    New(NewArgs),
    /// Remove contexts matching a glob pattern.
    Remove(RemoveArgs),
}

#[derive(Args)]
struct AddArgs {
    name: String,
    /// CA certificate file.
    #[arg(long, default_value = "")]
    ca: String,
    /// Client certificate file.
    #[arg(long, default_value = "")]
    crt: String,
    /// Client key file.
    #[arg(long, default_value = "")]
    key: String,
}

#[derive(Args)]
struct NewArgs {
    /// Output path.
    #[arg(default_value = "talosconfig")]
    path: String,
    /// Lifetime of the client certificate.
    #[arg(long, default_value = "8760h0m0s")]
    crt_ttl: String,
    /// Roles of the client certificate.
    #[arg(long, default_values_t = ["os:admin".to_string()])]
    roles: Vec<String>,
    /// Sign with the OS CA of this secrets bundle (offline).
    #[arg(long, default_value = "")]
    with_secrets: String,
    /// Sign with the OS CA of this control plane config (offline).
    #[arg(long, default_value = "")]
    from_controlplane_config: String,
}

#[derive(Args)]
struct RemoveArgs {
    /// Glob pattern of context names.
    pattern: String,
    #[arg(long)]
    dry_run: bool,
    /// Do not ask before removing.
    #[arg(short = 'y', long)]
    noconfirm: bool,
}

const ROLES: [&str; 4] = ["os:admin", "os:operator", "os:reader", "os:etcd:backup"];

pub fn run(args: ConfigArgs) -> Result<()> {
    let path = args.conn.path();
    let mut cfg = ClientConfig::load(&path)?;
    let ctx_name = args.conn.context().map(String::from);
    match args.command {
        ConfigCommand::Add(a) => {
            let b64 = |f: &str, what: &str| -> Result<String> {
                if f.is_empty() {
                    return Err(Error::msg(format!("--{what} is required")));
                }
                use base64::Engine;
                Ok(base64::engine::general_purpose::STANDARD.encode(read_file(f)?))
            };
            let ctx = Context {
                ca: b64(&a.ca, "ca")?,
                crt: b64(&a.crt, "crt")?,
                key: b64(&a.key, "key")?,
                ..Default::default()
            };
            if cfg.contexts.contains_key(&a.name) {
                return Err(Error::msg(format!("context \"{}\" already exists", a.name)));
            }
            cfg.contexts.insert(a.name, ctx);
            cfg.save(&path)
        }
        ConfigCommand::Context { name } => {
            if !cfg.contexts.contains_key(&name) {
                return Err(Error::msg(format!("context \"{name}\" is not defined")));
            }
            cfg.context = name;
            cfg.save(&path)
        }
        ConfigCommand::Contexts => {
            let mut rows = vec![vec![
                "CURRENT".to_string(),
                "NAME".into(),
                "ENDPOINTS".into(),
                "NODES".into(),
            ]];
            for (name, c) in &cfg.contexts {
                let current = if *name == cfg.context { "*" } else { "" };
                rows.push(vec![
                    current.into(),
                    name.clone(),
                    c.endpoints.join(","),
                    c.nodes.join(","),
                ]);
            }
            print!("{}", table(&rows));
            Ok(())
        }
        ConfigCommand::Endpoint { endpoints } => {
            cfg.current_mut(ctx_name.as_deref())?.endpoints = split_commas(&endpoints);
            cfg.save(&path)
        }
        ConfigCommand::Node { nodes } => {
            cfg.current_mut(ctx_name.as_deref())?.nodes = split_commas(&nodes);
            cfg.save(&path)
        }
        ConfigCommand::Info { output } => info(&cfg, ctx_name.as_deref(), &output),
        ConfigCommand::Merge { from } => {
            let other = ClientConfig::load(&PathBuf::from(&from[0]))?;
            if other.contexts.is_empty() {
                return Err(Error::msg(format!("{}: no contexts to merge", from[0])));
            }
            for (old, new) in cfg.merge(&other) {
                if old != new {
                    println!("renamed talosconfig context \"{old}\" -> \"{new}\"");
                }
            }
            cfg.save(&path)
        }
        ConfigCommand::New(a) => new(&cfg, &args.conn, a),
        ConfigCommand::Remove(a) => remove(&mut cfg, &path, a),
    }
}

/// Columns separated by three spaces, like Go's tabwriter in talosctl.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < r.len() {
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn or_not_defined(v: &[String]) -> String {
    if v.is_empty() {
        "not defined".into()
    } else {
        v.join(", ")
    }
}

fn info(cfg: &ClientConfig, name: Option<&str>, output: &str) -> Result<()> {
    let (name, ctx) = cfg.current(name)?;
    let (roles, expires) = clientconfig::describe_certificate(ctx)?;
    let left = expires - time::OffsetDateTime::now_utc();
    let date = format!(
        "{:04}-{:02}-{:02}",
        expires.year(),
        u8::from(expires.month()),
        expires.day()
    );
    match output {
        "text" => {
            println!("Current context:     {name}");
            println!("Nodes:               {}", or_not_defined(&ctx.nodes));
            println!("Endpoints:           {}", or_not_defined(&ctx.endpoints));
            println!("Roles:               {}", or_not_defined(&roles));
            println!("Certificate expires: {} ({date})", humanize(left));
        }
        _ => {
            let v = serde_json::json!({
                "context": name,
                "nodes": ctx.nodes,
                "endpoints": ctx.endpoints,
                "roles": roles,
                "certTTL": humanize(left),
                "certNotAfter": date,
            });
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            } else {
                print!("{}", machinery::yaml::to_string(&v));
            }
        }
    }
    Ok(())
}

fn humanize(d: time::Duration) -> String {
    let (past, d) = if d.is_negative() {
        (true, -d)
    } else {
        (false, d)
    };
    let days = (d.as_seconds_f64() / 86400.0).round() as i64;
    let text = if days >= 365 {
        let y = (days as f64 / 365.0).round() as i64;
        format!("{y} year{}", if y == 1 { "" } else { "s" })
    } else if days >= 1 {
        format!("{days} day{}", if days == 1 { "" } else { "s" })
    } else {
        let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
        let hours = (d.as_seconds_f64() / 3600.0).round() as i64;
        if hours >= 1 {
            plural(hours, "hour")
        } else {
            plural((d.as_seconds_f64() / 60.0).round() as i64, "minute")
        }
    };
    if past {
        format!("{text} ago")
    } else {
        format!("{text} from now")
    }
}

fn new(cfg: &ClientConfig, conn: &ConnArgs, a: NewArgs) -> Result<()> {
    let ttl = parse_duration(&a.crt_ttl)?;
    let roles = split_commas(&a.roles);
    for r in &roles {
        if !ROLES.contains(&r.as_str()) {
            return Err(Error::msg(format!(
                "unknown role \"{r}\": expected one of {}",
                ROLES.join(", ")
            )));
        }
    }
    let (secrets, cluster_name) = if !a.with_secrets.is_empty() {
        (SecretsBundle::load(&a.with_secrets)?, None)
    } else if !a.from_controlplane_config.is_empty() {
        let c = Config::load(&a.from_controlplane_config)?;
        let name = c
            .pointer("/cluster/clusterName")
            .or_else(|| {
                c.kind("KubeClusterConfig")
                    .find_map(|d| d.value.get("clusterName"))
            })
            .and_then(|v| v.as_str())
            .map(String::from);
        (SecretsBundle::from_config(&c)?, name)
    } else {
        return crate::block_on(new_from_node(cfg, conn, &a.path, &roles, ttl));
    };
    let current = cfg.current(conn.context()).ok();
    let name = current
        .map(|(n, _)| n.to_string())
        .or(cluster_name)
        .unwrap_or_else(|| "talos".into());
    let endpoints = if !conn.endpoints.is_empty() {
        split_commas(&conn.endpoints)
    } else if let Some((_, c)) = current.filter(|(_, c)| !c.endpoints.is_empty()) {
        c.endpoints.clone()
    } else {
        vec!["127.0.0.1".into()]
    };
    let out = clientconfig::from_secrets(&secrets, &name, &roles, ttl, endpoints)?;
    crate::util::write_output(
        &PathBuf::from(&a.path),
        out.encode().as_bytes(),
        0o600,
        true,
    )
}

/// Ask a node (its apid signs with the machine CA) for a new client certificate.
async fn new_from_node(
    cfg: &ClientConfig,
    conn: &ConnArgs,
    path: &str,
    roles: &[String],
    ttl: std::time::Duration,
) -> Result<()> {
    let targets = crate::client::connect(conn).await?;
    let t = &targets[0];
    let resp = crate::client::machine(t)
        .generate_client_configuration(api::machine::GenerateClientConfigurationRequest {
            roles: roles.to_vec(),
            crt_ttl: Some(prost_types::Duration {
                seconds: ttl.as_secs() as i64,
                nanos: 0,
            }),
        })
        .await
        .map_err(|s| crate::client::call_error(&t.node, s))?
        .into_inner();
    let m = resp
        .messages
        .into_iter()
        .next()
        .ok_or_else(|| Error::msg("the node sent no configuration"))?;
    let mut out = ClientConfig::parse(&String::from_utf8_lossy(&m.talosconfig))?;
    let endpoints = if conn.endpoints.is_empty() {
        cfg.current(conn.context())
            .map(|(_, c)| c.endpoints.clone())
            .unwrap_or_default()
    } else {
        split_commas(&conn.endpoints)
    };
    for c in out.contexts.values_mut() {
        c.endpoints = endpoints.clone();
    }
    crate::util::write_output(&PathBuf::from(path), out.encode().as_bytes(), 0o600, true)
}

fn glob_match(pattern: &[char], name: &[char]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some('*'), _) => {
            glob_match(&pattern[1..], name) || (!name.is_empty() && glob_match(pattern, &name[1..]))
        }
        (Some('?'), Some(_)) => glob_match(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob_match(&pattern[1..], &name[1..]),
        _ => false,
    }
}

fn remove(cfg: &mut ClientConfig, path: &std::path::Path, a: RemoveArgs) -> Result<()> {
    let pattern: Vec<char> = a.pattern.chars().collect();
    let matches: Vec<String> = cfg
        .contexts
        .keys()
        .filter(|n| glob_match(&pattern, &n.chars().collect::<Vec<_>>()))
        .cloned()
        .collect();
    if matches.is_empty() {
        return Err(Error::msg(format!("no context matches \"{}\"", a.pattern)));
    }
    let stdin = std::io::stdin();
    let mut removed = 0;
    for name in matches {
        if name == cfg.context {
            eprintln!("skipping \"{name}\": it is the current context");
            continue;
        }
        if a.dry_run {
            println!("would remove context \"{name}\"");
            continue;
        }
        if !a.noconfirm {
            eprint!("remove context \"{name}\"? (y/N) ");
            std::io::stderr().flush().ok();
            let mut answer = String::new();
            stdin.lock().read_line(&mut answer).ok();
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                continue;
            }
        }
        cfg.contexts.remove(&name);
        println!("removed context \"{name}\"");
        removed += 1;
    }
    if removed > 0 {
        cfg.save(path)?;
    }
    Ok(())
}
