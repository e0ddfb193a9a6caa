//! The boot: the sequence of named phases, and what runs only at boot (run modes, install,
//! upgrade, trial configs).

pub mod container;
pub mod install;
pub mod metal;
pub mod trial;
pub mod upgrade;

use std::time::{Duration, Instant};

/// Config paths read once at boot (or by a service at its start), so a change of one needs
/// a reboot: which services and controllers run (`machine.type`), the services' environment,
/// and what the apid and trustd services read when they start (the machine CA and token).
/// Paths the controllers declare as inputs change live (see `api::apply`).
pub const CONFIG_AT_BOOT: &[&str] = &[
    "/machine/type",
    "/machine/env",
    "/machine/token",
    "/machine/ca",
];

/// The boot sequence's phases, logged as they finish like upstream's
/// `phase config (1/5): done, 12ms`.
pub struct Sequence {
    names: &'static [&'static str],
    at: usize,
    started: Instant,
}

impl Sequence {
    pub fn new(names: &'static [&'static str]) -> Sequence {
        Sequence {
            names,
            at: 0,
            started: Instant::now(),
        }
    }

    /// The current phase is done: log it and start the next.
    pub fn done(&mut self) {
        let took = self.started.elapsed();
        if let Some(name) = self.names.get(self.at) {
            tracing::info!(
                "phase {name} ({}/{}): done, {}",
                self.at + 1,
                self.names.len(),
                pretty(took)
            );
        }
        self.at += 1;
        self.started = Instant::now();
    }
}

fn pretty(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}
