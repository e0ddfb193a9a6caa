//! `machine.sysctls` and `machine.files`, applied inside the node.
//!
//! A container-mode node shares the host's kernel: only the sysctls its own namespaces isolate
//! (`net.*`, in the node's network namespace) are written; the others would change the host,
//! so they are reported as unsupported instead. A node run as a plain process writes none.

use types::runtime::KernelParamStatusSpec;

use std::collections::BTreeMap;
use std::path::Path;

use resources::{Controller, ControllerError, Input, Output, ReconcileContext};

use crate::controllers::inputs::{self, machine_config};

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
        vec![inputs::config(&["/machine/sysctls"])]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<types::runtime::KernelParamStatusSpec>()]
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
            ctx.put::<KernelParamStatusSpec>(&key, spec)?;
        }
        Ok(())
    }
}
