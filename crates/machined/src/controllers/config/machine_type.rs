//! config.MachineTypeController: the machine's type from its config.

use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use types::config::MachineTypeSpec;

use crate::controllers::inputs;

pub struct MachineTypeController;

#[async_trait::async_trait]
impl Controller for MachineTypeController {
    fn name(&self) -> &str {
        "config.MachineTypeController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![inputs::config(&["/machine/type"])]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<MachineTypeSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        if let Some(cfg) = inputs::machine_config(ctx)? {
            let ty = MachineTypeSpec(cfg.machine_type().to_string());
            ctx.put("machine-type", ty)?;
        }
        Ok(())
    }
}
