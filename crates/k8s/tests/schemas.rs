//! Every static pod we render passes `kubernetes-validate --strict` (the Kubernetes schemas,
//! unknown fields rejected) for the Kubernetes version of the default config: the default
//! pods, and pods with OIDC extraArgs, audit extraVolumes, resources and env. Validated one
//! file at a time. The tool comes with the setup (PyPI); in CI its absence is a failure.

use std::collections::BTreeMap;
use std::process::Command;

use k8s::pods::{self, Versions};
use types::k8s::{
    ApiServerConfigSpec, ControllerManagerConfigSpec, ExtraVolume, Resources, SchedulerConfigSpec,
};

mod common;
use common::defaults;

fn validator() -> Option<()> {
    let ok = Command::new("kubernetes-validate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var("CI").as_deref() == Ok("true") {
        panic!("kubernetes-validate is missing: scripts/setup installs it");
    }
    ok.then_some(())
}

fn validate(name: &str, yaml: &str) {
    let dir = std::env::temp_dir().join(format!("k8s-schemas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    let version = machinery::generate::DEFAULT_KUBERNETES_VERSION;
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--no-warn", "-k", version])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{name} fails the Kubernetes {version} schema:\n{}{}\n{yaml}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn final_pods(
    api: ApiServerConfigSpec,
    cm: ControllerManagerConfigSpec,
    sc: SchedulerConfigSpec,
) -> Vec<(&'static str, String)> {
    let v = Versions {
        secrets: "1".into(),
        config: "2".into(),
        config_files: "3".into(),
    };
    let api = k8s::flags::api_server(&api).unwrap();
    let cm = k8s::flags::controller_manager(&cm).unwrap();
    let sc = k8s::flags::scheduler(&sc).unwrap();
    vec![
        (
            "kube-apiserver",
            k8s::yaml::to_string(&pods::api_server(&api, &v).unwrap()),
        ),
        (
            "kube-controller-manager",
            k8s::yaml::to_string(&pods::controller_manager(&cm, &v).unwrap()),
        ),
        (
            "kube-scheduler",
            k8s::yaml::to_string(&pods::scheduler(&sc, &v).unwrap()),
        ),
    ]
}

#[test]
fn default_and_customized_static_pods_pass_the_strict_schema() {
    if validator().is_none() {
        return;
    }
    let (api, cm, sc) = defaults();
    for (name, yaml) in final_pods(api.clone(), cm.clone(), sc.clone()) {
        validate(&format!("default-{name}"), &yaml);
    }
    let oidc_audit = ApiServerConfigSpec {
        extra_args: BTreeMap::from([
            (
                "oidc-issuer-url".to_string(),
                vec!["https://oidc.example".to_string()],
            ),
            ("oidc-client-id".to_string(), vec!["kubernetes".to_string()]),
        ]),
        extra_volumes: vec![ExtraVolume {
            name: "var-lib-audit".into(),
            host_path: "/var/lib/audit".into(),
            mount_path: "/var/lib/audit".into(),
            read_only: true,
        }],
        environment_variables: BTreeMap::from([("GOGC".to_string(), "50".to_string())]),
        resources: Resources {
            requests: BTreeMap::from([("cpu".to_string(), "1".to_string())]),
            limits: BTreeMap::from([("memory".to_string(), "4Gi".to_string())]),
        },
        ..api
    };
    for (name, yaml) in final_pods(oidc_audit, cm, sc) {
        validate(&format!("custom-{name}"), &yaml);
    }
    // A pod of machine.pods is the user's own object, served as given.
    validate(
        "machine-pod",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nginx\nspec:\n  containers:\n  - name: nginx\n    image: nginx\n",
    );
}
