//! `machine.sysctls` and `machine.files`, applied inside the node.
//!
//! A container-mode node shares the host's kernel: only the sysctls its own namespaces isolate
//! (`net.*`, in the node's network namespace) are written; the others would change the host,
//! so they are reported as unsupported instead. A node run as a plain process writes none.

use std::collections::BTreeMap;
use std::path::Path;

use machinery::Config;
use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use serde::Serialize;

use crate::node::{machine_config, CONFIG_NS, MACHINE_CONFIG, MACHINE_CONFIG_ID, RUNTIME_NS};

pub const KERNEL_PARAM_STATUS: &str = "KernelParamStatuses.runtime.talos.dev";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KernelParamStatusSpec {
    pub current: String,
    pub default: String,
    pub unsupported: bool,
}

fn proc_path(key: &str) -> std::path::PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

fn read(key: &str) -> Option<String> {
    std::fs::read_to_string(proc_path(key))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Sysctls a container-mode node may set: those its network namespace isolates.
fn namespaced(key: &str) -> bool {
    key.starts_with("net.")
}

pub struct KernelParamController {
    /// Whether to write at all (a node in its own namespaces).
    pub apply: bool,
    /// Values before this node first changed them, restored when a key leaves the config.
    defaults: BTreeMap<String, String>,
}

impl KernelParamController {
    pub fn new(apply: bool) -> KernelParamController {
        KernelParamController {
            apply,
            defaults: BTreeMap::new(),
        }
    }
}

#[async_trait::async_trait]
impl Controller for KernelParamController {
    fn name(&self) -> &str {
        "runtime.KernelParamController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![Input::weak(CONFIG_NS, MACHINE_CONFIG).id(MACHINE_CONFIG_ID)]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive(RUNTIME_NS, KERNEL_PARAM_STATUS)]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let wanted = machine_config(ctx)?
            .map(|c| c.string_map("/machine/sysctls"))
            .unwrap_or_default();
        // Keys no longer configured get their old value back.
        let gone: Vec<String> = self
            .defaults
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(old) = self.defaults.remove(&key) {
                if let Err(e) = std::fs::write(proc_path(&key), &old) {
                    tracing::warn!(key, error = %e, "cannot restore a sysctl");
                }
            }
        }
        for (key, value) in wanted {
            let supported = self.apply && namespaced(&key) && proc_path(&key).exists();
            let before = read(&key).unwrap_or_default();
            if supported {
                self.defaults.entry(key.clone()).or_insert(before.clone());
                if before != value {
                    if let Err(e) = std::fs::write(proc_path(&key), &value) {
                        tracing::warn!(key, value, error = %e, "cannot set a sysctl");
                    }
                }
            } else {
                tracing::warn!(
                    key,
                    "sysctl not applied: not isolated by this node's namespaces"
                );
            }
            let spec = KernelParamStatusSpec {
                current: read(&key).unwrap_or_default(),
                default: self.defaults.get(&key).cloned().unwrap_or(before),
                unsupported: !supported,
            };
            ctx.modify(RUNTIME_NS, KERNEL_PARAM_STATUS, &key, |_| spec)?;
        }
        Ok(())
    }
}

/// The one file outside /var that `machine.files` may write: merged into the CRI configuration.
const CRI_CUSTOMIZATION: &str = "/etc/cri/conf.d/20-customization.part";

/// Write `machine.files` (at boot). Files go only under /var, the node's writable storage, and
/// to [`CRI_CUSTOMIZATION`].
/// `create` writes a file that does not exist yet, `overwrite` replaces one, `append` adds
/// to one. Returns what could not be done.
pub fn write_files(cfg: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    let files = cfg
        .pointer("/machine/files")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    for (i, f) in files.iter().enumerate() {
        let path = f.get("path").and_then(|v| v.as_str()).unwrap_or("");
        let op = f.get("op").and_then(|v| v.as_str()).unwrap_or("create");
        let content = f.get("content").and_then(|v| v.as_str()).unwrap_or("");
        let mode = f
            .get("permissions")
            .and_then(|v| v.as_u64())
            .map(|m| m as u32)
            .unwrap_or(0o644);
        let p = Path::new(path);
        let allowed = p.starts_with("/var/") || path == CRI_CUSTOMIZATION;
        let result = if !p.is_absolute() || !allowed || path.contains("/../") {
            Err(format!(
                "the path must be absolute and under /var (or be {CRI_CUSTOMIZATION})"
            ))
        } else {
            write_file(p, op, content.as_bytes(), mode)
        };
        match result {
            Ok(()) => tracing::info!(path, op, "machine.files: written"),
            Err(e) => problems.push(format!("machine.files[{i}] ({path}, op {op}): {e}")),
        }
    }
    problems
}

fn write_file(p: &Path, op: &str, content: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    match op {
        "create" => {
            if let Ok(existing) = std::fs::read(p) {
                // Written by an earlier boot: fine when unchanged.
                return if existing == content {
                    Ok(())
                } else {
                    Err("the file exists already (use op overwrite to replace it)".into())
                };
            }
            machinery::fsutil::write_atomic(p, content, mode).map_err(|e| e.to_string())
        }
        "overwrite" => machinery::fsutil::write_atomic(p, content, mode).map_err(|e| e.to_string()),
        "append" => {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(p)
                .map_err(|e| format!("cannot append: {e}"))?;
            f.write_all(content).map_err(|e| e.to_string())?;
            f.sync_all().map_err(|e| e.to_string())
        }
        other => Err(format!(
            "unknown op \"{other}\": expected create, overwrite or append"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_ops() {
        let dir = std::env::temp_dir().join(format!("kernel-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let p = dir.join("a/b.txt");
        write_file(&p, "create", b"one\n", 0o600).unwrap();
        write_file(&p, "create", b"one\n", 0o600).unwrap();
        assert!(write_file(&p, "create", b"two\n", 0o600)
            .unwrap_err()
            .contains("exists"));
        write_file(&p, "append", b"two\n", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\ntwo\n");
        write_file(&p, "overwrite", b"three\n", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "three\n");
        assert!(write_file(&dir.join("none"), "append", b"x", 0o600).is_err());
        assert!(write_file(&p, "move", b"x", 0o600)
            .unwrap_err()
            .contains("unknown op"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
