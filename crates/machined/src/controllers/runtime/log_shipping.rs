//! runtime.LogShippingController: the log shippers' destinations kept in step with the config
//! (and the kernel command line's `talos.logging.kernel=`), and their counters published.

use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use types::runtime::LogDestinationStatusSpec;

use crate::controllers::inputs;
use crate::sys::logship::{kernel_shipper, shipper, Shipper};
use std::time::Duration;

/// Keeps the shippers' destinations in step with the config (and the kernel command line's
/// `talos.logging.kernel=`) and publishes their counters.
pub struct LogShippingController {
    pub cmdline_kernel: Vec<String>,
    /// The kernel log's shipper, started when a destination first wants it.
    pub kernel: Option<Shipper>,
}

#[async_trait::async_trait]
impl Controller for LogShippingController {
    fn name(&self) -> &str {
        "runtime.LogShippingController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![crate::controllers::inputs::config(&[
            "/machine/logging",
            "kind:KmsgLogConfig",
        ])]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<
            types::runtime::LogDestinationStatusSpec,
        >()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let cfg = inputs::machine_config(ctx)?;
        let wanted: Vec<(String, serde_json::Map<String, serde_json::Value>)> = cfg
            .as_ref()
            .and_then(|c| c.pointer("/machine/logging/destinations").cloned())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|d| {
                d.get("format")
                    .and_then(|f| f.as_str())
                    .unwrap_or("json_lines")
                    == "json_lines"
            })
            .filter_map(|d| {
                let endpoint = d.get("endpoint")?.as_str()?.to_string();
                let extra = d
                    .get("extraTags")
                    .and_then(|t| t.as_object().cloned())
                    .unwrap_or_default();
                Some((endpoint, extra))
            })
            .collect();
        let mut kernel: Vec<String> = cfg
            .as_ref()
            .map(|c| {
                c.kind("KmsgLogConfig")
                    .filter_map(|d| d.value.get("url")?.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        kernel.extend(self.cmdline_kernel.iter().cloned());
        kernel.sort();
        kernel.dedup();
        let busy = !wanted.is_empty() || !kernel.is_empty();
        shipper().configure(wanted);
        if !kernel.is_empty() || self.kernel.is_some() {
            self.kernel.get_or_insert_with(kernel_shipper).configure(
                kernel
                    .into_iter()
                    .map(|u| (u, Default::default()))
                    .collect(),
            );
        }
        let statuses = shipper().statuses().into_iter().chain(
            self.kernel
                .as_ref()
                .map(Shipper::statuses)
                .unwrap_or_default(),
        );
        for s in statuses {
            let id = s.endpoint.clone();
            ctx.put::<LogDestinationStatusSpec>(&id, s)?;
        }
        if busy {
            ctx.requeue_after(Duration::from_secs(1));
        }
        Ok(())
    }
}
