//! The system disk's volumes: `ephemeral` (EPHEMERAL mounted on /var, MountStatus) and
//! `volume_status` (VolumeStatus of META, STATE and EPHEMERAL). Key slots are changed on the
//! partitions by apply-config (sys::luks), which refuses a config whose keys cannot be synced.

pub mod ephemeral;
pub mod volume_status;
