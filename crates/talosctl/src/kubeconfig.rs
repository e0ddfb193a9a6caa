//! `talosctl kubeconfig [local-path]`: fetch a control plane's admin kubeconfig (a fresh
//! certificate each call) and merge it into the local kubeconfig, or write it as a file.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;
use machinery::{Error, Result};
use serde_json::{Map, Value};

use crate::client::{self, call_error};
use crate::config_cmd::ConnArgs;

#[derive(Args)]
pub struct KubeconfigArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Overwrite an existing file, or clashing entries when merging.
    #[arg(short = 'f', long)]
    force: bool,
    /// The name of the merged context.
    #[arg(long, default_value = "")]
    force_context_name: String,
    /// Merge into the kubeconfig ($KUBECONFIG or ~/.kube/config, or the path given); with
    /// --merge=false write a file (`kubeconfig` in the current directory; `-` for stdout).
    #[arg(short = 'm', long, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    merge: bool,
    /// Where to write.
    local_path: Option<String>,
}

pub async fn run(a: KubeconfigArgs) -> Result<()> {
    let targets = client::connect(&a.conn).await?;
    if targets.len() != 1 {
        return Err(Error::msg(
            "kubeconfig is fetched from exactly one control plane node: pass one with -n",
        ));
    }
    let text = fetch(&targets[0]).await?;

    if a.local_path.as_deref() == Some("-") {
        print!("{text}");
        return Ok(());
    }
    let mut path = match &a.local_path {
        Some(p) => PathBuf::from(p),
        None if a.merge => default_path()?,
        None => PathBuf::from("kubeconfig"),
    };
    if path.is_dir() {
        path = path.join("kubeconfig");
    }
    let existing = std::fs::read_to_string(&path).ok();
    let out = match existing {
        Some(old) if a.merge => {
            let old = parse(&old).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
            let new = parse(&text)?;
            let (merged, notes) = merge(old, new, a.force, &a.force_context_name);
            for n in notes {
                eprintln!("{n}");
            }
            k8s::yaml::to_string(&merged)
        }
        Some(_) if !a.force => {
            return Err(Error::msg(format!(
                "{}: the file exists, use --force to overwrite it",
                path.display()
            )))
        }
        _ if !a.force_context_name.is_empty() => {
            let (merged, _) = merge(empty(), parse(&text)?, true, &a.force_context_name);
            k8s::yaml::to_string(&merged)
        }
        _ => text,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::msg(format!("{}: {e}", dir.display())))?;
    }
    machinery::fsutil::write_atomic(&path, out.as_bytes(), 0o600)
        .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    Ok(())
}

/// A control plane's admin kubeconfig (a fresh client certificate each call).
pub async fn fetch(t: &client::Target) -> Result<String> {
    let mut stream = client::machine(t)
        .kubeconfig(())
        .await
        .map_err(|s| call_error(&t.node, s))?
        .into_inner();
    let mut archive = Vec::new();
    while let Some(d) = stream.message().await.map_err(|s| call_error(&t.node, s))? {
        archive.extend_from_slice(&d.bytes);
    }
    extract(&archive).map_err(|e| Error::msg(format!("{}: {e}", t.node)))
}

/// `$KUBECONFIG`'s first file, else `~/.kube/config`.
fn default_path() -> Result<PathBuf> {
    if let Some(first) = std::env::var_os("KUBECONFIG")
        .and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()))
    {
        return Ok(first);
    }
    let home = std::env::var_os("HOME").ok_or_else(|| Error::msg("HOME is not set"))?;
    Ok(Path::new(&home).join(".kube").join("config"))
}

/// The `kubeconfig` file of the node's gzipped tar.
fn extract(archive: &[u8]) -> std::result::Result<String, String> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    for entry in tar.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        if entry.path().map_err(|e| e.to_string())?.as_os_str() == "kubeconfig" {
            let mut text = String::new();
            entry.read_to_string(&mut text).map_err(|e| e.to_string())?;
            return Ok(text);
        }
    }
    Err("the node's answer holds no kubeconfig".into())
}

fn parse(text: &str) -> Result<Value> {
    let mut docs = machinery::yaml::parse_stream(text)
        .map_err(|e| Error::msg(format!("line {}: {}", e.pos.line, e.message)))?;
    Ok(match docs.is_empty() {
        true => empty(),
        false => docs.remove(0).value,
    })
}

fn empty() -> Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []})
}

fn named<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|e| e["name"] == name)
}

/// Add `entry` to `list` (kubeconfig's named lists): an equal entry is kept once; a clash is
/// overwritten with `force`, else the new entry is renamed `<name>-1`, `-2`, …. The name it
/// got, and a note when renamed.
fn add(
    list: &mut Vec<Value>,
    mut entry: Value,
    force: bool,
    what: &str,
) -> (String, Option<String>) {
    let name = entry["name"].as_str().unwrap_or_default().to_string();
    match named(list, &name) {
        None => {}
        Some(old) if *old == entry => return (name, None),
        Some(_) if force => {
            list.retain(|e| e["name"] != name.as_str());
        }
        Some(_) => {
            let renamed = (1..)
                .map(|i| format!("{name}-{i}"))
                .find(|n| {
                    named(list, n).is_none_or(|old| {
                        let mut e = entry.clone();
                        e["name"] = n.as_str().into();
                        *old == e
                    })
                })
                .unwrap_or_default();
            entry["name"] = renamed.as_str().into();
            if named(list, &renamed).is_none() {
                list.push(entry);
            }
            return (
                renamed.clone(),
                Some(format!("renamed {what} \"{name}\" -> \"{renamed}\"")),
            );
        }
    }
    list.push(entry);
    (name, None)
}

fn list_of(v: &mut Value, key: &str) -> Vec<Value> {
    v.get_mut(key)
        .and_then(|l| l.as_array_mut())
        .map(std::mem::take)
        .unwrap_or_default()
}

/// Merge the node's kubeconfig `new` into `old`; the new context becomes current.
fn merge(mut old: Value, mut new: Value, force: bool, context_name: &str) -> (Value, Vec<String>) {
    let mut notes = Vec::new();
    let mut renames = Map::new();
    for (key, what) in [("clusters", "cluster"), ("users", "user")] {
        let mut list = list_of(&mut old, key);
        for entry in list_of(&mut new, key) {
            let original = entry["name"].clone();
            let (name, note) = add(&mut list, entry, force, what);
            notes.extend(note);
            renames.insert(
                format!("{what}/{}", original.as_str().unwrap_or("")),
                name.into(),
            );
        }
        old[key] = Value::Array(list);
    }
    let mut contexts = list_of(&mut old, "contexts");
    let mut current = String::new();
    for mut ctx in list_of(&mut new, "contexts") {
        for what in ["cluster", "user"] {
            let key = format!("{what}/{}", ctx["context"][what].as_str().unwrap_or(""));
            if let Some(n) = renames.get(&key) {
                ctx["context"][what] = n.clone();
            }
        }
        if !context_name.is_empty() {
            ctx["name"] = context_name.into();
        }
        let (name, note) = add(
            &mut contexts,
            ctx,
            force || !context_name.is_empty(),
            "context",
        );
        notes.extend(note);
        current = name;
    }
    old["contexts"] = Value::Array(contexts);
    old["current-context"] = current.into();
    for (k, v) in [("apiVersion", "v1"), ("kind", "Config")] {
        if old.get(k).is_none() {
            old[k] = v.into();
        }
    }
    (old, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(cluster_server: &str, key: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": cluster_server}}],
            "users": [{"name": "admin@c", "user": {"client-key-data": key}}],
            "contexts": [{"name": "admin@c", "context": {"cluster": "c", "user": "admin@c"}}],
            "current-context": "admin@c",
        })
    }

    #[test]
    fn clashes_are_renamed_unless_forced() {
        let old = config("https://a:6443", "k1");
        let (merged, notes) = merge(old.clone(), config("https://b:6443", "k2"), false, "");
        assert_eq!(merged["clusters"].as_array().unwrap().len(), 2);
        assert_eq!(merged["clusters"][1]["name"], "c-1");
        assert_eq!(merged["users"][1]["name"], "admin@c-1");
        assert_eq!(merged["contexts"][1]["name"], "admin@c-1");
        assert_eq!(
            merged["contexts"][1]["context"],
            json!({"cluster": "c-1", "user": "admin@c-1"})
        );
        assert_eq!(merged["current-context"], "admin@c-1");
        assert_eq!(notes.len(), 3, "{notes:?}");

        let (forced, _) = merge(old.clone(), config("https://b:6443", "k2"), true, "");
        assert_eq!(forced["clusters"].as_array().unwrap().len(), 1);
        assert_eq!(forced["clusters"][0]["cluster"]["server"], "https://b:6443");

        let (same, notes) = merge(old.clone(), old.clone(), false, "");
        assert_eq!(same, old);
        assert!(notes.is_empty());

        let (named, _) = merge(old, config("https://b:6443", "k2"), false, "prod");
        assert_eq!(named["current-context"], "prod");
        assert_eq!(named["contexts"][1]["context"]["cluster"], "c-1");
    }
}
