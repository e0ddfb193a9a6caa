//! machined itself, listed among the services as upstream lists it.

use std::time::SystemTime;

use super::supervisor::{Health, ServiceEvent, ServiceInfo, ServiceState};

/// machined itself, listed among the services (it runs as long as anything answers).
pub const MACHINED: &str = "machined";

pub fn machined() -> ServiceInfo {
    static STARTED: std::sync::OnceLock<SystemTime> = std::sync::OnceLock::new();
    let ts = *STARTED.get_or_init(SystemTime::now);
    ServiceInfo {
        id: MACHINED.into(),
        state: ServiceState::Running,
        events: vec![ServiceEvent {
            msg: "Service started as goroutine".into(),
            state: ServiceState::Running,
            ts,
        }],
        health: Health {
            unknown: false,
            healthy: true,
            last_message: String::new(),
            last_change: Some(ts),
        },
        pid: Some(std::process::id()),
    }
}
