//! The control plane's files, written for its static pods: k8s.RenderSecretsController
//! writes the certificates, keys, kubeconfigs and encryption config under
//! /system/secrets/kubernetes (SecretStatus), k8s.RenderConfigsController the admission,
//! audit, authorization, authentication and scheduler configs under /system/config/kubernetes
//! (ConfigStatus). Each directory belongs to the user its component runs as; files are
//! readable by it only. The status's version is a digest of what was written, so a pod
//! restarts exactly when its files change.

use std::path::Path;

use k8s::pods::{
    APISERVER_CONFIG_DIR, APISERVER_SECRETS_DIR, APISERVER_USER, CONTROLLER_MANAGER_SECRETS_DIR,
    CONTROLLER_MANAGER_USER, SCHEDULER_CONFIG_DIR, SCHEDULER_SECRETS_DIR, SCHEDULER_USER,
};
use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use serde_json::Value;
use types::k8s::{
    ConfigStatusSpec, SchedulerConfigSpec, SecretsStatusSpec, FINAL_PREFIX, SCHEDULER_ID,
    STATIC_POD_FILES_ID,
};
use types::secrets::{
    KubernetesCertsSpec, KubernetesDynamicCertsSpec, KubernetesRootSpec, K8S_CERTS_ID,
    K8S_DYNAMIC_CERTS_ID,
};

use crate::controllers::inputs;

/// Write `files` (name, contents) into `dir` owned by `uid`, mode 0400, atomically; returns
/// a digest of the contents.
fn write_dir(
    dir: &str,
    uid: u32,
    files: &[(&str, String)],
    digest: &mut ring::digest::Context,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
    let chown = |p: &Path| {
        std::os::unix::fs::chown(p, Some(uid), Some(uid))
            .map_err(|e| format!("chown {}: {e}", p.display()))
    };
    chown(Path::new(dir))?;
    for (name, data) in files {
        let path = Path::new(dir).join(name);
        machinery::fsutil::write_atomic(&path, data.as_bytes(), 0o400)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        chown(&path)?;
        digest.update(name.as_bytes());
        digest.update(data.as_bytes());
    }
    Ok(())
}

fn version(digest: ring::digest::Context) -> String {
    digest.finish().as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub struct RenderSecretsController;

#[async_trait::async_trait]
impl Controller for RenderSecretsController {
    fn name(&self) -> &str {
        "k8s.RenderSecretsController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::of::<KubernetesRootSpec>().id(K8S_CERTS_ID),
            Input::of::<KubernetesCertsSpec>().id(K8S_CERTS_ID),
            Input::of::<KubernetesDynamicCertsSpec>().id(K8S_DYNAMIC_CERTS_ID),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<SecretsStatusSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let (Some(root), Some(certs), Some(dynamic)) = (
            ctx.spec_of::<KubernetesRootSpec>(K8S_CERTS_ID)?,
            ctx.spec_of::<KubernetesCertsSpec>(K8S_CERTS_ID)?,
            ctx.spec_of::<KubernetesDynamicCertsSpec>(K8S_DYNAMIC_CERTS_ID)?,
        ) else {
            return Ok(());
        };
        let mut ca = root.issuing_ca.crt.clone();
        root.accepted_cas.iter().for_each(|c| ca.push_str(c));
        let sa_public = machinery::pki::Key::from_pem(&root.service_account)
            .map_err(|e| format!("cluster.serviceAccount.key: {e}"))?
            .public_key_pem();
        let encryption = k8s::yaml::to_string(&match root.etcd_encryption_config.as_object() {
            Some(config) => k8s::files::with_kind(config, "v1", "EncryptionConfig"),
            None => k8s::files::encryption_config(
                &root.secretbox_encryption_secret,
                &root.aescbc_encryption_secret,
            ),
        });
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        write_dir(
            APISERVER_SECRETS_DIR,
            APISERVER_USER,
            &[
                ("ca.crt", ca.clone()),
                ("apiserver.crt", dynamic.api_server.crt),
                ("apiserver.key", dynamic.api_server.key),
                (
                    "apiserver-kubelet-client.crt",
                    dynamic.api_server_kubelet_client.crt,
                ),
                (
                    "apiserver-kubelet-client.key",
                    dynamic.api_server_kubelet_client.key,
                ),
                ("front-proxy-client.crt", dynamic.front_proxy.crt),
                ("front-proxy-client.key", dynamic.front_proxy.key),
                ("aggregator-ca.crt", root.aggregator_ca.crt.clone()),
                ("service-account.key", root.service_account.clone()),
                ("service-account.pub", sa_public),
                ("etcd-client-ca.crt", certs.etcd_ca.clone()),
                ("etcd-client.crt", certs.etcd_client.crt.clone()),
                ("etcd-client.key", certs.etcd_client.key.clone()),
                ("encryptionconfig.yaml", encryption),
            ],
            &mut digest,
        )?;
        write_dir(
            CONTROLLER_MANAGER_SECRETS_DIR,
            CONTROLLER_MANAGER_USER,
            &[
                ("ca.crt", ca),
                ("ca.key", root.issuing_ca.key.clone()),
                ("kubeconfig", certs.controller_manager_kubeconfig.clone()),
                ("service-account.key", root.service_account.clone()),
            ],
            &mut digest,
        )?;
        write_dir(
            SCHEDULER_SECRETS_DIR,
            SCHEDULER_USER,
            &[("kubeconfig", certs.scheduler_kubeconfig.clone())],
            &mut digest,
        )?;
        ctx.put(
            STATIC_POD_FILES_ID,
            SecretsStatusSpec {
                ready: true,
                version: version(digest),
            },
        )?;
        Ok(())
    }
}

pub struct RenderConfigsController;

#[async_trait::async_trait]
impl Controller for RenderConfigsController {
    fn name(&self) -> &str {
        "k8s.RenderConfigsController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            inputs::config(&[
                "kind:KubeAdmissionControlConfig",
                "kind:KubeAuditPolicyConfig",
                "kind:KubeAuthorizerConfig",
                "kind:KubeAuthenticationConfig",
                "/machine/type",
                "/cluster/apiServer/admissionControl",
                "/cluster/apiServer/auditPolicy",
                "/cluster/apiServer/authorizationConfig",
                "/cluster/apiServer/authenticationConfig",
            ]),
            Input::of::<SchedulerConfigSpec>().id(&format!("{FINAL_PREFIX}{SCHEDULER_ID}")),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<ConfigStatusSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let Some(cfg) = inputs::control_plane_config(ctx)? else {
            return Ok(());
        };
        let list = |ptr: &str| -> Vec<Value> {
            cfg.pointer(ptr)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        // The multi-document form has a document per admission plugin and per authorizer
        // (Node and RBAC among them); v1alpha1 lists the plugins and adds authorizers to
        // Node and RBAC.
        let docs = |kind: &str| -> Vec<Value> { cfg.kind(kind).map(|d| d.value.clone()).collect() };
        let fields = |v: Vec<Value>, keep: &[&str]| -> Vec<Value> {
            v.into_iter()
                .map(|d| {
                    Value::Object(
                        keep.iter()
                            .filter_map(|k| Some((k.to_string(), d.get(*k)?.clone())))
                            .collect(),
                    )
                })
                .collect()
        };
        let admission = match docs("KubeAdmissionControlConfig") {
            d if d.is_empty() => list("/cluster/apiServer/admissionControl"),
            d => fields(d, &["name", "configuration"]),
        };
        let authorizers = match docs("KubeAuthorizerConfig") {
            d if d.is_empty() => {
                let mut all = fields(
                    vec![
                        serde_json::json!({"type": "Node", "name": "node"}),
                        serde_json::json!({"type": "RBAC", "name": "rbac"}),
                    ],
                    &["type", "name"],
                );
                all.extend(list("/cluster/apiServer/authorizationConfig"));
                all
            }
            d => fields(d, &["type", "name", "webhook"]),
        };
        let setting = |ptr: &str, kind: &str| {
            machinery::kubernetes::setting(&cfg, ptr, kind, "/configuration").cloned()
        };
        let yaml = k8s::yaml::to_string::<Value>;
        let mut files = vec![
            (
                "admission-control-config.yaml",
                yaml(&k8s::files::admission_config(&admission)),
            ),
            (
                "auditpolicy.yaml",
                yaml(&k8s::files::audit_policy(
                    setting("/cluster/apiServer/auditPolicy", "KubeAuditPolicyConfig").as_ref(),
                )),
            ),
            (
                "authorization-config.yaml",
                yaml(&k8s::files::authorization_config(&authorizers)),
            ),
        ];
        let authn = setting(
            "/cluster/apiServer/authenticationConfig",
            "KubeAuthenticationConfig",
        );
        if let Some(authn) = authn.as_ref().and_then(Value::as_object) {
            let config = k8s::files::with_kind(
                authn,
                "apiserver.config.k8s.io/v1",
                "AuthenticationConfiguration",
            );
            files.push(("authentication-config.yaml", yaml(&config)));
        }
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        write_dir(APISERVER_CONFIG_DIR, APISERVER_USER, &files, &mut digest)?;
        if let Some(s) =
            ctx.spec_of::<SchedulerConfigSpec>(&format!("{FINAL_PREFIX}{SCHEDULER_ID}"))?
        {
            write_dir(
                SCHEDULER_CONFIG_DIR,
                SCHEDULER_USER,
                &[("scheduler-config.yaml", yaml(&s.config))],
                &mut digest,
            )?;
        }
        ctx.put(
            STATIC_POD_FILES_ID,
            ConfigStatusSpec {
                ready: true,
                version: version(digest),
            },
        )?;
        Ok(())
    }
}
