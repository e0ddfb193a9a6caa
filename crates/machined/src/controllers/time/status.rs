//! time.StatusController: whether the node's time is synchronized. A node in container mode
//! (and a process node) keeps the host's clock, which is the host's to synchronize;
//! `machine.time.disabled` turns reporting off.

use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use types::runtime::TimeStatusSpec;

use crate::controllers::inputs;

pub struct TimeStatusController;

#[async_trait::async_trait]
impl Controller for TimeStatusController {
    fn name(&self) -> &str {
        "time.StatusController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![inputs::config(&["/machine/time"])]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<TimeStatusSpec>()]
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let disabled = inputs::machine_config(ctx)?
            .and_then(|c| c.pointer("/machine/time/disabled")?.as_bool())
            .unwrap_or(false);
        let spec = TimeStatusSpec {
            synced: !disabled,
            epoch: 1,
            sync_disabled: disabled,
        };
        ctx.put("node", spec)?;
        Ok(())
    }
}
