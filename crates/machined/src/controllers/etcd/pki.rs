//! etcd.PKIController: etcd's certificates from EtcdSecrets written where etcd reads them
//! (etcd reads them on each new connection, so rewriting them renews them), and PKIStatus
//! saying which version is on disk.

use std::path::PathBuf;

use resources::{Controller, ControllerError, Input, Output, ReconcileContext, ResourceType};
use types::etcd::{PkiStatusSpec, ETCD_ID};
use types::secrets::EtcdCertsSpec;

pub struct PkiController {
    pub dir: PathBuf,
}

#[async_trait::async_trait]
impl Controller for PkiController {
    fn name(&self) -> &str {
        "etcd.PKIController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![Input::of::<EtcdCertsSpec>().id(ETCD_ID)]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<PkiStatusSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let Some(r) = ctx.get(&EtcdCertsSpec::pointer(ETCD_ID))? else {
            return Ok(());
        };
        let Some(certs) = r.spec::<EtcdCertsSpec>() else {
            return Ok(());
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        for (file, data) in [
            ("ca.crt", &certs.ca),
            ("server.crt", &certs.server_crt),
            ("server.key", &certs.server_key),
            ("peer.crt", &certs.peer_crt),
            ("peer.key", &certs.peer_key),
        ] {
            let p = self.dir.join(file);
            machinery::fsutil::write_atomic(&p, data.as_bytes(), 0o600)
                .map_err(|e| format!("{}: {e}", p.display()))?;
        }
        let status = PkiStatusSpec {
            ready: true,
            version: r.metadata.version.to_string(),
        };
        ctx.put(ETCD_ID, status)?;
        Ok(())
    }
}
