//! block.VolumeStatusController: the system disk's volumes (META, STATE, EPHEMERAL) as
//! VolumeStatus: where they are, their size, whether they are mounted, their encryption and
//! the kind of key in each slot (none on a machine that is not installed).

use std::path::Path;

use disk::luks;
use machinery::config::Config;
use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use types::runtime::{KeySlot, MountStatusSpec, VolumeStatusSpec};

use crate::controllers::inputs;
use crate::sys::luks::{configured, mapping};
use crate::sys::mounts;

pub struct VolumeStatusController {
    pub installed: bool,
}

fn pretty(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if v.fract() == 0.0 || u == 0 {
        format!("{v:.0} {}", units[u])
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// The status of the system disk's volumes (none on a machine that is not installed).
pub fn statuses(config: Option<&Config>) -> Vec<(String, VolumeStatusSpec)> {
    let mounts = mounts();
    let mut out = Vec::new();
    for label in [disk::META, disk::STATE, disk::EPHEMERAL] {
        let Some(dev) = disk::find(label) else {
            continue;
        };
        let name = dev
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let size = std::fs::read_to_string(format!("/sys/class/block/{name}/size"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 512;
        let content = disk::content(&dev).unwrap_or(disk::Content::Other);
        let mapped = (content == disk::Content::Luks)
            .then(|| luks::mapped(&mapping(label)))
            .flatten();
        let mount_location = mapped.clone().unwrap_or_else(|| dev.clone());
        let mount_point = mounts
            .iter()
            .find(|(src, _)| Path::new(src) == mount_location)
            .map(|(_, at)| at.clone())
            .unwrap_or_default();
        let mut slots = Vec::new();
        if content == disk::Content::Luks {
            let enc = config.and_then(|c| configured(c, label));
            for slot in luks::dump(&dev).map(|h| h.slots).unwrap_or_default() {
                let kind = enc
                    .as_ref()
                    .and_then(|e| e.keys.iter().find(|k| k.slot == slot))
                    .map(|k| k.kind().to_string())
                    .unwrap_or_else(|| "unknown".into());
                slots.push(KeySlot { slot, kind });
            }
        }
        let phase = if label == disk::META || !mount_point.is_empty() {
            "ready"
        } else {
            "waiting"
        };
        out.push((
            label.to_string(),
            VolumeStatusSpec {
                kind: "partition".into(),
                phase: phase.into(),
                location: dev.display().to_string(),
                mount_location: mount_location.display().to_string(),
                mount_point,
                filesystem: match content {
                    disk::Content::Xfs | disk::Content::Luks if label != disk::META => "xfs",
                    _ => "none",
                }
                .into(),
                size,
                pretty_size: pretty(size),
                encryption_provider: (content == disk::Content::Luks).then(|| "luks2".into()),
                encryption_key_slots: slots,
            },
        ));
    }
    out
}

#[async_trait::async_trait]
impl Controller for VolumeStatusController {
    fn name(&self) -> &str {
        "block.VolumeStatusController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            inputs::config(&["/machine/systemDiskEncryption", "kind:VolumeConfig"]),
            Input::of::<MountStatusSpec>(),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<VolumeStatusSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        if !self.installed {
            return Ok(());
        }
        let config = inputs::machine_config(ctx)?;
        let found = crate::sys::blocking(move || Ok(statuses(config.as_ref()))).await?;
        for (id, spec) in found {
            ctx.put(&id, spec)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(pretty(100 << 20), "100 MiB");
        assert_eq!(pretty(1536 << 20), "1.5 GiB");
        assert_eq!(pretty(512), "512 B");
    }
}
