//! What `cluster destroy` can keep of a cluster before it goes: its nodes' logs as the
//! provisioner kept them, and a support archive collected from the running nodes.

use std::path::Path;

use machinery::{Error, Result};

use crate::config_cmd::ConnArgs;

/// Every `*.log` under `dir`, by its path below it.
fn logs(dir: &Path, below: &Path, out: &mut Vec<(String, std::path::PathBuf)>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            logs(&p, below, out);
        } else if p.extension().is_some_and(|x| x == "log") {
            let name = p.strip_prefix(below).unwrap_or(&p).display().to_string();
            out.push((name, p));
        }
    }
}

/// Save what was asked for; nothing is destroyed when saving fails.
pub fn before_destroy(root: &Path, name: &str, logs_to: &str, support_to: &str) -> Result<()> {
    if logs_to.is_empty() && support_to.is_empty() {
        return Ok(());
    }
    let cluster = provision::Cluster::load(root, name).map_err(Error::msg)?;
    if !logs_to.is_empty() {
        let mut found = Vec::new();
        logs(&cluster.dir, &cluster.dir, &mut found);
        found.sort();
        let mut archive = crate::support::Archive::create(logs_to)?;
        for (name, path) in &found {
            let bytes =
                std::fs::read(path).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
            archive.add(name, &bytes)?;
        }
        archive.finish()?;
        eprintln!(
            "the cluster's logs ({} files) are in {logs_to}",
            found.len()
        );
    }
    if !support_to.is_empty() {
        let conn = ConnArgs {
            context: name.to_string(),
            nodes: cluster.nodes.iter().map(|n| n.ip.to_string()).collect(),
            ..Default::default()
        };
        crate::block_on(async {
            let targets = crate::client::connect(&conn).await?;
            crate::support::write(&targets, support_to, 1, false).await
        })?;
        eprintln!("the support archive is in {support_to}");
    }
    Ok(())
}
