//! files.MachineFilesController: `machine.files` written once EPHEMERAL is mounted on /var
//! (on an installed machine a file written before would be hidden under the mount). Files go
//! only under /var, the node's writable storage, and to the CRI customization file; `create`
//! writes a file that does not exist yet, `overwrite` replaces one, `append` adds to one. An
//! entry is written once per boot (and again when it changes); MachineFileStatus says how
//! each went.

use std::collections::BTreeSet;
use std::path::Path;

use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use types::runtime::{MachineFileStatusSpec, MountStatusSpec};

use crate::controllers::inputs;

/// The one file outside /var that `machine.files` may write: merged into the CRI configuration.
const CRI_CUSTOMIZATION: &str = "/etc/cri/conf.d/20-customization.part";

#[derive(Default)]
pub struct MachineFilesController {
    /// Entries written this boot (their JSON text).
    written: BTreeSet<String>,
}

#[async_trait::async_trait]
impl Controller for MachineFilesController {
    fn name(&self) -> &str {
        "files.MachineFilesController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            inputs::config(&["/machine/files"]),
            Input::of::<MountStatusSpec>().id(disk::EPHEMERAL),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<MachineFileStatusSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        // /var first: on an installed machine EPHEMERAL is mounted over it.
        if ctx.spec_of::<MountStatusSpec>(disk::EPHEMERAL)?.is_none() {
            return Ok(());
        }
        let Some(cfg) = inputs::machine_config(ctx)? else {
            return Ok(());
        };
        let files = cfg
            .pointer("/machine/files")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        for (i, f) in files.iter().enumerate() {
            let path = f.get("path").and_then(|v| v.as_str()).unwrap_or("");
            let op = f.get("op").and_then(|v| v.as_str()).unwrap_or("create");
            let key = f.to_string();
            let error = if self.written.contains(&key) {
                String::new()
            } else {
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
                    Ok(()) => {
                        tracing::info!(path, op, "machine.files: written");
                        self.written.insert(key);
                        String::new()
                    }
                    Err(e) => {
                        tracing::error!("machine.files[{i}] ({path}, op {op}): {e}");
                        e
                    }
                }
            };
            let status = MachineFileStatusSpec {
                path: path.into(),
                op: op.into(),
                error,
            };
            ctx.put(&i.to_string(), status)?;
        }
        Ok(())
    }
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
