//! Trying a config that needs a reboot (`apply-config --mode=try`, where upstream refuses
//! such changes): the node keeps its last good config beside STATE's, records the trial and
//! reboots into the new config. The trial boot keeps the config once the node is healthy
//! (every service running, none unhealthy, for 5 s in a row) before the timeout; otherwise, or
//! when the trial boot ends before that (a crash, a restart), the last good config comes back
//! and the node reboots into it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use machinery::fsutil::write_atomic;
use machinery::Config;
use serde::{Deserialize, Serialize};

use crate::services::supervisor::ServiceState;

/// The record of a trial, beside STATE's config.
const MARK: &str = "try.json";
/// The config to return to.
const LAST_GOOD: &str = "config.last-good.yaml";
/// How long the node must stay healthy to keep the config.
const STEADY: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
struct Mark {
    timeout_secs: u64,
    /// The trial boot has begun: a second boot with the mark means it ended unconfirmed.
    booted: bool,
}

fn beside(state_file: &Path, name: &str) -> PathBuf {
    state_file.with_file_name(name)
}

fn write_mark(state_file: &Path, mark: &Mark) -> Result<(), String> {
    let text = serde_json::to_string(mark).map_err(|e| e.to_string())?;
    write_atomic(&beside(state_file, MARK), text.as_bytes(), 0o600).map_err(|e| e.to_string())
}

/// Begin a trial of `new` (the node reboots next): the last good config first, then the mark,
/// then the config, so that a crash in between leaves a state the next boot understands.
pub fn start(
    state_file: &Path,
    old: &Config,
    new: &Config,
    timeout: Duration,
) -> Result<(), String> {
    write_atomic(
        &beside(state_file, LAST_GOOD),
        old.encode().as_bytes(),
        0o600,
    )
    .map_err(|e| e.to_string())?;
    write_mark(
        state_file,
        &Mark {
            timeout_secs: timeout.as_secs().max(1),
            booted: false,
        },
    )?;
    write_atomic(state_file, new.encode().as_bytes(), 0o600).map_err(|e| e.to_string())
}

/// At boot, before the config is read: the timeout of a trial this boot is (its mark updated),
/// or the last good config put back when a trial boot ended unconfirmed.
pub fn at_boot(state_file: &Path) -> Option<Duration> {
    let text = std::fs::read_to_string(beside(state_file, MARK)).ok()?;
    let mark: Option<Mark> = serde_json::from_str(&text).ok();
    match mark {
        Some(m) if !m.booted => {
            let begun = write_mark(state_file, &Mark { booted: true, ..m });
            match begun {
                Ok(()) => Some(Duration::from_secs(m.timeout_secs)),
                Err(e) => {
                    crate::log(&format!("try: cannot record the trial boot: {e}"));
                    restore(state_file);
                    None
                }
            }
        }
        _ => {
            crate::log("try: the tried config ended before it was confirmed healthy: back to the last good config");
            restore(state_file);
            None
        }
    }
}

/// Put the last good config back and end the trial.
pub fn abandon(state_file: &Path) {
    crate::log("try: the tried config cannot run: back to the last good config");
    restore(state_file);
}

fn restore(state_file: &Path) {
    match std::fs::read(beside(state_file, LAST_GOOD)) {
        Ok(good) => {
            if let Err(e) = write_atomic(state_file, &good, 0o600) {
                crate::log(&format!("try: cannot put the last good config back: {e}"));
                return;
            }
        }
        Err(e) => crate::log(&format!("try: no last good config to return to: {e}")),
    }
    forget(state_file);
}

/// End a trial and keep the config STATE has (confirmed, or replaced by another apply).
pub fn forget(state_file: &Path) {
    let _ = std::fs::remove_file(beside(state_file, MARK));
    let _ = std::fs::remove_file(beside(state_file, LAST_GOOD));
}

fn pending(state_file: &Path) -> bool {
    beside(state_file, MARK).exists()
}

/// Wait until every service of the node runs, none unhealthy, for [`STEADY`] in a row: true
/// then; false at `deadline`, or as soon as `go_on` says no.
pub async fn steadily_healthy(
    node: &crate::node::Node,
    deadline: Instant,
    go_on: impl Fn() -> bool,
) -> bool {
    let mut healthy_since: Option<Instant> = None;
    while go_on() && Instant::now() < deadline {
        let services = node.services.list();
        let own = crate::services::own::MACHINED;
        let healthy = services.iter().any(|s| s.id != own)
            && services.iter().all(|s| {
                s.state == ServiceState::Running && (s.health.unknown || s.health.healthy)
            });
        if !healthy {
            healthy_since = None;
        } else if healthy_since.get_or_insert_with(Instant::now).elapsed() >= STEADY {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// Watch a trial boot: keep the config once the node is steadily healthy, else return to the
/// last good config and reboot at the timeout.
pub async fn watch(node: Arc<crate::node::Node>, state_file: PathBuf, timeout: Duration) {
    let healthy = steadily_healthy(&node, Instant::now() + timeout, || pending(&state_file)).await;
    if !pending(&state_file) {
        return;
    }
    if healthy {
        forget(&state_file);
        crate::log("try: the node is healthy with the tried config: it is kept");
    } else {
        crate::log(&format!(
            "try: the node was not healthy within {}: back to the last good config",
            go_duration(timeout)
        ));
        restore(&state_file);
        node.reboot.notify_one();
    }
}

/// Go's duration format for whole seconds (`1m0s`, `30s`, `1h2m3s`).
pub fn go_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec}s"),
        (h, m, sec) => format!("{h}h{m}m{sec}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trial_boot_that_ends_unconfirmed_returns_to_the_last_good_config() {
        let dir = std::env::temp_dir().join(format!("trial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let state = dir.join("config.yaml");
        let old = Config::parse("version: v1alpha1\nmachine:\n    type: worker\n").unwrap();
        let new = Config::parse(
            "version: v1alpha1\nmachine:\n    type: worker\n    env:\n        A: b\n",
        )
        .unwrap();
        write_atomic(&state, old.encode().as_bytes(), 0o600).unwrap();
        assert_eq!(at_boot(&state), None, "no trial");

        start(&state, &old, &new, Duration::from_secs(30)).unwrap();
        assert_eq!(std::fs::read_to_string(&state).unwrap(), new.encode());
        // The trial boot: the tried config, its timeout.
        assert_eq!(at_boot(&state), Some(Duration::from_secs(30)));
        assert!(pending(&state));
        // The next boot comes before a confirmation (a crash): the last good config is back.
        assert_eq!(at_boot(&state), None);
        assert_eq!(std::fs::read_to_string(&state).unwrap(), old.encode());
        assert!(!pending(&state) && !beside(&state, LAST_GOOD).exists());

        // Confirmed (or replaced by another apply): the config stays.
        start(&state, &old, &new, Duration::from_secs(30)).unwrap();
        forget(&state);
        assert_eq!(at_boot(&state), None);
        assert_eq!(std::fs::read_to_string(&state).unwrap(), new.encode());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
