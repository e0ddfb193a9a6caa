//! k8s.KubeletServiceController: writes what the kubelet reads (its KubeletConfiguration,
//! the bootstrap kubeconfig with the cluster's bootstrap token, the CAs it trusts) and runs
//! the kubelet service as KubeletSpec says; a changed spec or new secrets rewrite the files
//! and restart it. The supervisor publishes the service's status.

use std::path::Path;

use resources::{Controller, ControllerError, Input, Output, ReconcileContext, State};
use types::k8s::{
    KubeletSpecSpec, KUBELET_BOOTSTRAP_KUBECONFIG, KUBELET_CA, KUBELET_CONFIG, KUBELET_ID,
};
use types::runtime::{MountStatusSpec, ServiceStatusSpec};
use types::secrets::KubeletSecretsSpec;

use crate::services::kubelet;
use crate::services::supervisor::Supervisor;

pub struct KubeletServiceController {
    pub services: Supervisor,
    pub state: State,
    /// What the kubelet runs with now.
    running: Option<(KubeletSpecSpec, KubeletSecretsSpec)>,
}

impl KubeletServiceController {
    pub fn new(services: Supervisor, state: State) -> Self {
        KubeletServiceController {
            services,
            state,
            running: None,
        }
    }
}

/// The kubelet's files: (path, contents), each readable by root only.
pub fn files(spec: &KubeletSpecSpec, secrets: &KubeletSecretsSpec) -> Vec<(&'static str, String)> {
    let mut ca = secrets.ca.clone();
    for extra in &secrets.accepted_cas {
        ca.push_str(extra);
    }
    let token = format!(
        "{}.{}",
        secrets.bootstrap_token_id, secrets.bootstrap_token_secret
    );
    let bootstrap = k8s::files::kubeconfig(&k8s::files::Kubeconfig {
        cluster: "local",
        server: &secrets.endpoint,
        ca: &ca,
        user: "kubelet",
        context: "kubelet@local",
        auth: k8s::files::Auth::Token(&token),
        namespace: None,
    });
    vec![
        (KUBELET_CONFIG, k8s::yaml::to_string(&spec.config)),
        (
            KUBELET_BOOTSTRAP_KUBECONFIG,
            k8s::yaml::to_string(&bootstrap),
        ),
        (KUBELET_CA, ca),
    ]
}

#[async_trait::async_trait]
impl Controller for KubeletServiceController {
    fn name(&self) -> &str {
        "k8s.KubeletServiceController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::of::<KubeletSpecSpec>().id(KUBELET_ID),
            Input::of::<KubeletSecretsSpec>().id(KUBELET_ID),
            // The kubelet's data lives on EPHEMERAL: never under the mount.
            Input::of::<MountStatusSpec>().id(disk::EPHEMERAL),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::shared_of::<ServiceStatusSpec>()]
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let (Some(spec), Some(secrets)) = (
            ctx.spec_of::<KubeletSpecSpec>(KUBELET_ID)?,
            ctx.spec_of::<KubeletSecretsSpec>(KUBELET_ID)?,
        ) else {
            return Ok(());
        };
        let wanted = (spec, secrets);
        let mounted = ctx.spec_of::<MountStatusSpec>(disk::EPHEMERAL)?.is_some();
        if !mounted || self.running.as_ref() == Some(&wanted) {
            return Ok(());
        }
        let (spec, secrets) = &wanted;
        for (path, data) in files(spec, secrets) {
            if let Some(dir) = Path::new(path).parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            machinery::fsutil::write_atomic(Path::new(path), data.as_bytes(), 0o600)
                .map_err(|e| format!("{path}: {e}"))?;
        }
        if self.running.is_some() {
            tracing::info!("the kubelet's spec changed: restarting it");
        }
        self.services.replace(kubelet::service(
            spec,
            &self.services.env(),
            crate::services::container::registries_of(&self.state),
        ));
        self.running = Some(wanted);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bootstrap_kubeconfig_carries_the_token_and_every_ca() {
        let secrets = KubeletSecretsSpec {
            endpoint: "https://10.5.0.2:6443".into(),
            ca: "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n".into(),
            accepted_cas: vec![
                "-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n".into(),
            ],
            bootstrap_token_id: "abcdef".into(),
            bootstrap_token_secret: "0123456789abcdef".into(),
        };
        let spec = KubeletSpecSpec {
            config: serde_json::json!({"kind": "KubeletConfiguration", "maxPods": 150}),
            ..Default::default()
        };
        let files = files(&spec, &secrets);
        assert_eq!(
            files[0],
            (
                KUBELET_CONFIG,
                "kind: KubeletConfiguration\nmaxPods: 150\n".into()
            )
        );
        let kubeconfig = &files[1].1;
        assert!(
            kubeconfig.contains("token: abcdef.0123456789abcdef"),
            "{kubeconfig}"
        );
        assert!(
            kubeconfig.contains("server: https://10.5.0.2:6443"),
            "{kubeconfig}"
        );
        assert!(files[2].1.contains("\nA\n") && files[2].1.contains("\nB\n"));
    }
}
