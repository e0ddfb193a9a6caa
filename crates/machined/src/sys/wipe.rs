//! Wiping partitions at the next boot: a reset leaves the labels to wipe on STATE, and the
//! boot takes each request once, before anything uses the partition.

use std::path::Path;

/// On STATE: the partitions a reset asked to wipe, wiped at the next boot (before anything
/// uses them).
pub const WIPE: &str = "/system/state/.wipe";

/// Wipe these partitions (by label) at the next boot.
pub fn wipe_at_boot(labels: &[&str]) -> Result<(), String> {
    machinery::fsutil::write_atomic(Path::new(WIPE), labels.join("\n").as_bytes(), 0o600)
        .map_err(|e| format!("{WIPE}: {e}"))
}

/// Whether a reset asked for partition `label` to be wiped at this boot; the request is
/// taken (so it is done once).
pub fn take_wipe(label: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(WIPE) else {
        return false;
    };
    let rest: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != label)
        .collect();
    if rest.len() == text.lines().filter(|l| !l.trim().is_empty()).count() {
        return false;
    }
    if rest.is_empty() {
        let _ = std::fs::remove_file(WIPE);
    } else {
        let _ = machinery::fsutil::write_atomic(Path::new(WIPE), rest.join("\n").as_bytes(), 0o600);
    }
    true
}
