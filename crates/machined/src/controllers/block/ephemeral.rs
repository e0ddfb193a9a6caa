//! block.EphemeralMountController: EPHEMERAL mounted on `/var` on an installed machine (after
//! a wipe asked for at reset, formatted or encrypted when empty), published as a MountStatus;
//! on a container-mode node `/var` is the node's own directory from the start. A `kms` key
//! needs the network: a failed attempt is retried by the runtime until the partition opens.

use std::path::PathBuf;

use disk::luks;
use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use types::runtime::MountStatusSpec;

use crate::controllers::inputs;
use crate::sys::console;
use crate::sys::luks::{configured, erase, mapping, prepare};

pub struct EphemeralMountController {
    /// An installed machine (EPHEMERAL is a partition of its disk).
    pub installed: bool,
    /// Where EPHEMERAL is mounted.
    pub at: &'static str,
    /// Whether a failed attempt was reported already.
    reported: Option<String>,
}

impl EphemeralMountController {
    pub fn new(installed: bool, at: &'static str) -> Self {
        EphemeralMountController {
            installed,
            at,
            reported: None,
        }
    }
}

#[async_trait::async_trait]
impl Controller for EphemeralMountController {
    fn name(&self) -> &str {
        "block.EphemeralMountController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![inputs::config(&[
            "/machine/systemDiskEncryption/ephemeral",
            "kind:VolumeConfig",
        ])]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<MountStatusSpec>()]
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let id = disk::EPHEMERAL;
        let dev = match disk::find(disk::EPHEMERAL).filter(|_| self.installed) {
            Some(dev) => dev,
            None => {
                let status = MountStatusSpec {
                    source: self.at.into(),
                    target: self.at.into(),
                    filesystem_type: "none".into(),
                    encrypted: false,
                };
                ctx.put(id, status)?;
                return Ok(());
            }
        };
        let config = inputs::machine_config(ctx)?;
        let enc = config.as_ref().and_then(|c| configured(c, disk::EPHEMERAL));
        let mapped = luks::mapped(&mapping(disk::EPHEMERAL));
        // The partition itself or its open mapping on /var (the tmpfs under it does not count).
        let ours = [Some(dev.clone()), mapped.clone()];
        let mounted = crate::sys::mounts()
            .iter()
            .any(|(src, m)| m == self.at && ours.contains(&Some(PathBuf::from(src))));
        if !mounted {
            if crate::sys::wipe::take_wipe(disk::EPHEMERAL) {
                console(&format!(
                    "boot: wiping {} ({})",
                    disk::EPHEMERAL,
                    dev.display()
                ));
                let d = dev.clone();
                if let Err(e) = crate::sys::blocking(move || erase(&d, disk::EPHEMERAL)).await {
                    console(&format!("boot: {e}"));
                }
            }
            if config.is_none() && disk::content(&dev).is_ok_and(|c| c == disk::Content::Luks) {
                if self.reported.is_none() {
                    console("boot: EPHEMERAL is encrypted and there is no config to open it with: /var stays in memory");
                    self.reported = Some("in memory".into());
                }
                let status = MountStatusSpec {
                    source: "tmpfs".into(),
                    target: self.at.into(),
                    filesystem_type: "tmpfs".into(),
                    encrypted: false,
                };
                ctx.put(id, status)?;
                return Ok(());
            }
            let (d, e, at) = (dev.clone(), enc.clone(), self.at);
            let result = crate::sys::blocking(move || {
                let mapped = prepare(&d, disk::EPHEMERAL, e.as_ref())?;
                crate::sys::mount_xfs(&mapped, at)
            })
            .await;
            if let Err(e) = result {
                let e = if e.contains(disk::EPHEMERAL) {
                    e
                } else {
                    format!("EPHEMERAL: {e}")
                };
                if self.reported.as_ref() != Some(&e) {
                    console(&format!("boot: {e}; trying again"));
                    self.reported = Some(e.clone());
                }
                return Err(e.into());
            }
            let _ = std::fs::create_dir_all(crate::sys::LOG_DIR);
            if self.reported.take().is_some() {
                console("boot: EPHEMERAL mounted");
            }
        }
        let mapped = luks::mapped(&mapping(disk::EPHEMERAL));
        let status = MountStatusSpec {
            source: mapped.clone().unwrap_or(dev).display().to_string(),
            target: self.at.into(),
            filesystem_type: "xfs".into(),
            encrypted: mapped.is_some(),
        };
        ctx.put(id, status)?;
        Ok(())
    }
}
