//! Services run as containers of the system containerd (etcd from the config's image).

use std::sync::Arc;
use std::time::Instant;

use machinery::cri::Registries;
use resources::State;
use types::config::{MachineConfigSpec, MACHINE_CONFIG_ID};

use crate::services::supervisor::Launcher;
use crate::sys::ctrd_container::{start_container, ContainerSpec};

/// A launcher that runs a service as this container; images are pulled through the
/// registry settings `registries` gives at the time.
pub fn launcher(
    spec: ContainerSpec,
    registries: Arc<dyn Fn() -> Registries + Send + Sync>,
) -> Launcher {
    let spec = Arc::new(spec);
    Arc::new(move |argv| {
        let (spec, registries) = (spec.clone(), registries.clone());
        Box::pin(async move {
            let started = Instant::now();
            let task = start_container(&spec, &argv, registries())
                .await
                .map_err(|s| {
                    format!("container {} from {}: {}", spec.id, spec.image, s.message())
                })?;
            tracing::info!(
                container = spec.id,
                image = spec.image,
                ms = started.elapsed().as_millis() as u64,
                "service container started"
            );
            Ok(task)
        })
    })
}

/// The registry settings of the active config, read each time an image is pulled.
pub fn registries_of(state: &State) -> Arc<dyn Fn() -> Registries + Send + Sync> {
    let state = state.clone();
    Arc::new(move || {
        state
            .spec_of::<MachineConfigSpec>(MACHINE_CONFIG_ID)
            .and_then(|c| machinery::Config::parse(&c.0).ok())
            .and_then(|c| Registries::from_config(&c).ok())
            .unwrap_or_default()
    })
}
