//! etcd.MemberController: this node's etcd member ID as EtcdMember (`local`), once its etcd
//! answers; gone when the node leaves etcd or stops running it.

use std::time::Duration;

use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use types::etcd::{EtcdMemberSpec, EtcdSpecSpec, ETCD_ID};
use types::runtime::ServiceStatusSpec;

use crate::services::etcd;

pub struct MemberController {
    pub etcd: etcd::Handle,
}

#[async_trait::async_trait]
impl Controller for MemberController {
    fn name(&self) -> &str {
        "etcd.MemberController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::of::<EtcdSpecSpec>().id(ETCD_ID),
            Input::of::<ServiceStatusSpec>().id(etcd::SERVICE),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<EtcdMemberSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let healthy = ctx
            .spec_of::<ServiceStatusSpec>(etcd::SERVICE)?
            .is_some_and(|s| s.healthy);
        let running = self.etcd.read().expect("etcd").clone();
        let (Some(e), true) = (running, healthy) else {
            return Ok(());
        };
        // A member that leaves (or joins anew) changes its ID: looked at again now and then.
        ctx.requeue_after(Duration::from_secs(30));
        match tokio::time::timeout(Duration::from_secs(5), e.member_id()).await {
            Ok(Ok(id)) if id != 0 => {
                let spec = EtcdMemberSpec {
                    member_id: format!("{id:016x}"),
                };
                ctx.put("local", spec)?;
                Ok(())
            }
            Ok(Err(s)) => Err(s.message().to_string().into()),
            _ => Err("etcd did not tell its member ID".into()),
        }
    }
}
