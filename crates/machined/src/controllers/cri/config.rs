//! cri.ConfigController: the CRI configuration (registry hosts, auth, the merged `cri.toml`)
//! kept in step with the machine config and the parts `machine.files` writes; `cri` restarts
//! when the merged configuration changes.

use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use types::runtime::MachineFileStatusSpec;

use crate::controllers::inputs;
use crate::services::supervisor::Supervisor;
use crate::sys::cri::write_cri_config;

/// Keeps the CRI configuration in step with the machine config; restarts `cri` when the
/// merged configuration changes.
pub struct CriConfigController {
    pub services: Supervisor,
}

#[async_trait::async_trait]
impl Controller for CriConfigController {
    fn name(&self) -> &str {
        "cri.ConfigController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            inputs::config(&[
                "/machine/registries",
                "kind:RegistryMirrorConfig",
                "kind:RegistryAuthConfig",
                "kind:RegistryTLSConfig",
                "kind:CRICustomizationConfig",
            ]),
            // A customization part from machine.files joins the merged configuration.
            Input::of::<MachineFileStatusSpec>(),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        Vec::new()
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let Some(cfg) = inputs::machine_config(ctx)? else {
            return Ok(());
        };
        let running = self
            .services
            .list()
            .iter()
            .any(|s| s.id == "cri" && s.pid.is_some());
        if write_cri_config(&cfg)? && running {
            tracing::info!("the CRI configuration changed: restarting cri");
            self.services
                .restart("cri")
                .map_err(|e| ControllerError::from(e.to_string()))?;
        }
        Ok(())
    }
}
