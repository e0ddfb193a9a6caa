//! `talosctl diskfree` (`df`): size and use of the volumes the node has mounted.

use api::machine::storage_service_client::StorageServiceClient;
use api::machine::StorageServiceStatfsRequest;
use clap::Args;
use machinery::{Error, Result};

use crate::client;
use crate::config_cmd::{table, ConnArgs};

#[derive(Args)]
#[command(
    after_help = "Examples:\n  talosctl -n 10.5.0.2 diskfree\n  talosctl -n 10.5.0.2 df EPHEMERAL -i"
)]
pub struct DiskfreeArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Only this volume (as `get mounts` lists them).
    volume: Option<String>,
    /// Sizes in bytes.
    #[arg(short, long)]
    bytes: bool,
    /// Inodes instead of bytes.
    #[arg(short, long)]
    inodes: bool,
}

/// A size as df prints it: powers of 1024 (960MiB), or bytes.
fn size(v: u64, bytes: bool) -> String {
    if bytes {
        return v.to_string();
    }
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let (mut x, mut u) = (v as f64, 0);
    while x >= 1024.0 && u + 1 < units.len() {
        x /= 1024.0;
        u += 1;
    }
    match u {
        0 => format!("{v}B"),
        _ if x < 10.0 => format!("{x:.1}{}", units[u]),
        _ => format!("{x:.0}{}", units[u]),
    }
}

/// A count with metric suffixes (1.2M), or as is.
fn count(v: u64, raw: bool) -> String {
    if raw || v < 1000 {
        return v.to_string();
    }
    let (mut x, mut u) = (v as f64, 0);
    let suffixes = ["", "K", "M", "G", "T"];
    while x >= 1000.0 && u + 1 < suffixes.len() {
        x /= 1000.0;
        u += 1;
    }
    format!("{x:.1}{}", suffixes[u])
}

/// Used of total, rounded up, as df does.
fn percent(used: u64, total: u64) -> String {
    match total {
        0 => "-".into(),
        t => format!("{}%", (used * 100).div_ceil(t)),
    }
}

pub async fn diskfree(a: DiskfreeArgs) -> Result<()> {
    let targets = client::connect(&a.conn).await?;
    let mut rows = vec![match a.inodes {
        true => [
            "NODE",
            "VOLUME",
            "FILESYSTEM",
            "INODES",
            "IUSED",
            "IFREE",
            "%IUSED",
            "MOUNT POINT",
        ],
        false => [
            "NODE",
            "VOLUME",
            "FILESYSTEM",
            "SIZE",
            "USED",
            "AVAILABLE",
            "USAGE",
            "MOUNT POINT",
        ],
    }
    .map(String::from)
    .to_vec()];
    let mut errors = Vec::new();
    for t in &targets {
        let result: Result<()> = async {
            let mut mounts = Vec::new();
            for (id, spec) in
                client::resource_specs(t, "runtime", "MountStatuses.runtime.talos.dev").await?
            {
                let (source, target) = (
                    spec["source"].as_str().unwrap_or_default().to_string(),
                    spec["target"].as_str().unwrap_or_default().to_string(),
                );
                if source.is_empty() || a.volume.as_ref().is_some_and(|v| *v != id) {
                    continue;
                }
                mounts.push((id, source, target));
            }
            if let (Some(v), true) = (&a.volume, mounts.is_empty()) {
                return Err(Error::msg(format!(
                    "{}: volume \"{v}\" is not mounted",
                    t.node
                )));
            }
            let mut storage = StorageServiceClient::with_interceptor(t.channel.clone(), t.route());
            for (id, source, target) in mounts {
                let st = storage
                    .statfs(StorageServiceStatfsRequest {
                        path: target.clone(),
                    })
                    .await
                    .map_err(|s| client::call_error(&t.node, s))?
                    .into_inner();
                let figures = match a.inodes {
                    true => [
                        count(st.inodes, a.bytes),
                        count(st.inodes_used, a.bytes),
                        count(st.inodes_free, a.bytes),
                        percent(st.inodes_used, st.inodes),
                    ],
                    false => [
                        size(st.size, a.bytes),
                        size(st.used, a.bytes),
                        size(st.available, a.bytes),
                        percent(st.used, st.used + st.available),
                    ],
                };
                let mut row = vec![t.node.clone(), id, source];
                row.extend(figures);
                row.push(target);
                rows.push(row);
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            errors.push(e.to_string());
        }
    }
    print!("{}", table(&rows));
    client::per_node(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_as_df_prints_them() {
        assert_eq!(size(1023, false), "1023B");
        assert_eq!(size(1024 * 1024 * 960, false), "960MiB");
        assert_eq!(size(1536, false), "1.5KiB");
        assert_eq!(size(1536, true), "1536");
        assert_eq!(count(1_234_567, false), "1.2M");
        assert_eq!(percent(1, 3), "34%");
        assert_eq!(percent(0, 0), "-");
    }
}
