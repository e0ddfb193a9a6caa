//! The control plane components' full command lines: Talos's flags, then `extraArgs` merged
//! by the policies of [`machinery::kubernetes`].

use machinery::kubernetes::{api_server_flag, controller_manager_flag, scheduler_flag};
use serde_json::{json, Value};
use types::k8s::{ApiServerConfigSpec, ControllerManagerConfigSpec, SchedulerConfigSpec};

use crate::args::{Args, Denied};
use crate::pods::{
    APISERVER_CONFIG_DIR, APISERVER_SECRETS_DIR, AUDIT_LOG_DIR, CONTROLLER_MANAGER_SECRETS_DIR,
    SCHEDULER_CONFIG_DIR, SCHEDULER_SECRETS_DIR,
};

fn path(dir: &str, file: &str) -> String {
    format!("{dir}/{file}")
}

/// kube-apiserver's final config: `cfg` with its command line.
pub fn api_server(cfg: &ApiServerConfigSpec) -> Result<ApiServerConfigSpec, Denied> {
    let secret = |f: &str| path(APISERVER_SECRETS_DIR, f);
    let config = |f: &str| path(APISERVER_CONFIG_DIR, f);
    let mut a = Args::new([
        (
            "admission-control-config-file",
            config("admission-control-config.yaml"),
        ),
        ("allow-privileged", "true".into()),
        ("api-audiences", cfg.control_plane_endpoint.clone()),
        ("bind-address", "0.0.0.0".into()),
        ("client-ca-file", secret("ca.crt")),
        ("enable-admission-plugins", "NodeRestriction".into()),
        ("requestheader-client-ca-file", secret("aggregator-ca.crt")),
        ("requestheader-allowed-names", "front-proxy-client".into()),
        (
            "requestheader-extra-headers-prefix",
            "X-Remote-Extra-".into(),
        ),
        ("requestheader-group-headers", "X-Remote-Group".into()),
        ("requestheader-username-headers", "X-Remote-User".into()),
        ("proxy-client-cert-file", secret("front-proxy-client.crt")),
        ("proxy-client-key-file", secret("front-proxy-client.key")),
        ("enable-bootstrap-token-auth", "true".into()),
        ("tls-min-version", "VersionTLS13".into()),
        (
            "encryption-provider-config",
            secret("encryptionconfig.yaml"),
        ),
        ("audit-policy-file", config("auditpolicy.yaml")),
        ("audit-log-path", path(AUDIT_LOG_DIR, "kube-apiserver.log")),
        ("audit-log-maxage", "30".into()),
        ("audit-log-maxbackup", "10".into()),
        ("audit-log-maxsize", "100".into()),
        ("profiling", "false".into()),
        ("etcd-cafile", secret("etcd-client-ca.crt")),
        ("etcd-certfile", secret("etcd-client.crt")),
        ("etcd-keyfile", secret("etcd-client.key")),
        ("etcd-servers", cfg.etcd_servers.join(",")),
        (
            "kubelet-client-certificate",
            secret("apiserver-kubelet-client.crt"),
        ),
        ("kubelet-client-key", secret("apiserver-kubelet-client.key")),
        ("secure-port", cfg.local_port.to_string()),
        ("service-account-issuer", cfg.control_plane_endpoint.clone()),
        ("service-account-key-file", secret("service-account.pub")),
        (
            "service-account-signing-key-file",
            secret("service-account.key"),
        ),
        ("service-cluster-ip-range", cfg.service_cidrs.join(",")),
        ("tls-cert-file", secret("apiserver.crt")),
        ("tls-private-key-file", secret("apiserver.key")),
        (
            "kubelet-preferred-address-types",
            "InternalIP,ExternalIP,Hostname".into(),
        ),
    ]);
    if !cfg.advertised_address.is_empty() {
        a.set("advertise-address", &cfg.advertised_address);
    }
    if !cfg.cloud_provider.is_empty() {
        a.set("cloud-provider", &cfg.cloud_provider);
    }
    if cfg.use_authentication_config {
        a.set(
            "authentication-config",
            config("authentication-config.yaml"),
        );
    } else {
        a.set("anonymous-auth", "false");
    }
    // With the user's own authorization mode or webhook, Talos's modes merge into theirs;
    // otherwise the authorization config file carries them.
    let user_authz = cfg
        .extra_args
        .keys()
        .any(|k| k == "authorization-mode" || k.starts_with("authorization-webhook-"));
    if user_authz {
        a.set("authorization-mode", "Node,RBAC");
    } else {
        a.set("authorization-config", config("authorization-config.yaml"));
    }
    a.merge(&cfg.extra_args, api_server_flag)?;
    Ok(ApiServerConfigSpec {
        args: command("/usr/local/bin/kube-apiserver", &[], &a),
        ..cfg.clone()
    })
}

fn command(binary: &str, leading: &[&str], a: &Args) -> Vec<String> {
    let mut out = vec![binary.to_string()];
    out.extend(leading.iter().map(|s| s.to_string()));
    out.extend(a.to_vec());
    out
}

/// kube-controller-manager's final config.
pub fn controller_manager(
    cfg: &ControllerManagerConfigSpec,
) -> Result<ControllerManagerConfigSpec, Denied> {
    if !cfg.enabled {
        return Ok(ControllerManagerConfigSpec {
            enabled: false,
            ..Default::default()
        });
    }
    let secret = |f: &str| path(CONTROLLER_MANAGER_SECRETS_DIR, f);
    let mut a = Args::new([
        ("allocate-node-cidrs", "true".into()),
        ("bind-address", "127.0.0.1".into()),
        ("cluster-cidr", cfg.pod_cidrs.join(",")),
        ("service-cluster-ip-range", cfg.service_cidrs.join(",")),
        ("cluster-signing-cert-file", secret("ca.crt")),
        ("cluster-signing-key-file", secret("ca.key")),
        ("controllers", "*".into()),
        ("configure-cloud-routes", "false".into()),
        ("kubeconfig", secret("kubeconfig")),
        ("authentication-kubeconfig", secret("kubeconfig")),
        ("authorization-kubeconfig", secret("kubeconfig")),
        ("leader-elect", "true".into()),
        ("root-ca-file", secret("ca.crt")),
        (
            "service-account-private-key-file",
            secret("service-account.key"),
        ),
        ("profiling", "false".into()),
        ("terminated-pod-gc-threshold", "100".into()),
        ("tls-min-version", "VersionTLS13".into()),
        ("use-service-account-credentials", "true".into()),
    ]);
    if !cfg.cloud_provider.is_empty() {
        a.set("cloud-provider", &cfg.cloud_provider);
    }
    a.merge(&cfg.extra_args, controller_manager_flag)?;
    Ok(ControllerManagerConfigSpec {
        args: command(
            "/usr/local/bin/kube-controller-manager",
            &["--use-service-account-credentials"],
            &a,
        ),
        ..cfg.clone()
    })
}

/// kube-scheduler's final config: its command line and its whole KubeSchedulerConfiguration
/// (the user's `cluster.scheduler.config` with the kubeconfig Talos writes).
pub fn scheduler(cfg: &SchedulerConfigSpec) -> Result<SchedulerConfigSpec, Denied> {
    if !cfg.enabled {
        return Ok(SchedulerConfigSpec {
            enabled: false,
            ..Default::default()
        });
    }
    let kubeconfig = path(SCHEDULER_SECRETS_DIR, "kubeconfig");
    let mut a = Args::new([
        (
            "config",
            path(SCHEDULER_CONFIG_DIR, "scheduler-config.yaml"),
        ),
        ("authentication-tolerate-lookup-failure", "false".into()),
        ("authentication-kubeconfig", kubeconfig.clone()),
        ("authorization-kubeconfig", kubeconfig.clone()),
        ("bind-address", "127.0.0.1".into()),
        ("leader-elect", "true".into()),
        ("profiling", "false".into()),
        ("tls-min-version", "VersionTLS13".into()),
    ]);
    a.merge(&cfg.extra_args, scheduler_flag)?;
    let mut config = match &cfg.config {
        Value::Object(m) => Value::Object(m.clone()),
        _ => json!({}),
    };
    config["apiVersion"] = "kubescheduler.config.k8s.io/v1".into();
    config["kind"] = "KubeSchedulerConfiguration".into();
    if !config["clientConnection"].is_object() {
        config["clientConnection"] = json!({});
    }
    config["clientConnection"]["kubeconfig"] = kubeconfig.into();
    Ok(SchedulerConfigSpec {
        args: command("/usr/local/bin/kube-scheduler", &[], &a),
        config,
        ..cfg.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extra(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
            .collect()
    }

    #[test]
    fn api_server_flags_merge_and_deny() {
        let base = ApiServerConfigSpec {
            control_plane_endpoint: "https://10.5.0.2:6443".into(),
            etcd_servers: vec!["https://localhost:2379".into()],
            local_port: 6443,
            service_cidrs: vec!["10.96.0.0/12".into()],
            extra_args: extra(&[
                ("enable-admission-plugins", "PodSecurity"),
                ("oidc-issuer-url", "https://oidc.example"),
            ]),
            ..Default::default()
        };
        let out = api_server(&base).unwrap();
        let args = &out.args;
        assert_eq!(args[0], "/usr/local/bin/kube-apiserver");
        for want in [
            "--enable-admission-plugins=NodeRestriction,PodSecurity",
            "--oidc-issuer-url=https://oidc.example",
            "--etcd-servers=https://localhost:2379",
            "--anonymous-auth=false",
            "--authorization-config=/system/config/kubernetes/kube-apiserver/authorization-config.yaml",
            "--service-account-issuer=https://10.5.0.2:6443",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
        }
        let mut sorted = args[1..].to_vec();
        sorted.sort();
        assert_eq!(sorted, args[1..], "flags in name order");

        let with_mode = ApiServerConfigSpec {
            extra_args: extra(&[("authorization-mode", "Webhook")]),
            ..base.clone()
        };
        let args = api_server(&with_mode).unwrap().args;
        assert!(args
            .iter()
            .any(|a| a == "--authorization-mode=Node,RBAC,Webhook"));
        assert!(!args.iter().any(|a| a.starts_with("--authorization-config")));

        let denied = ApiServerConfigSpec {
            extra_args: extra(&[("tls-cert-file", "/x")]),
            ..base
        };
        assert_eq!(api_server(&denied).unwrap_err().flag, "tls-cert-file");
    }

    #[test]
    fn scheduler_config_keeps_the_users_fields() {
        let cfg = SchedulerConfigSpec {
            enabled: true,
            config: json!({"profiles": [{"schedulerName": "default-scheduler"}]}),
            ..Default::default()
        };
        let out = scheduler(&cfg).unwrap();
        assert_eq!(
            out.config,
            json!({
                "profiles": [{"schedulerName": "default-scheduler"}],
                "apiVersion": "kubescheduler.config.k8s.io/v1",
                "kind": "KubeSchedulerConfiguration",
                "clientConnection": {"kubeconfig": "/system/secrets/kubernetes/kube-scheduler/kubeconfig"},
            })
        );
        assert!(out.args.contains(
            &"--config=/system/config/kubernetes/kube-scheduler/scheduler-config.yaml".to_string()
        ));
    }
}
