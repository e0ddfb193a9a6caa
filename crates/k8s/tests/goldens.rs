//! Our renderings of upstream's inputs against upstream's golden files
//! (`shared/conformance/k8s/templates`, from Talos's k8stemplates tests): byte for byte.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s::pods::{self, Versions};
use types::k8s::{
    ApiServerConfigSpec, ControllerManagerConfigSpec, ExtraVolume, Resources, SchedulerConfigSpec,
};

fn golden(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/conformance/k8s/templates")
        .join(format!("{name}.yaml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn check(name: &str, rendered: String) {
    let want = golden(name);
    assert!(
        rendered == want,
        "{name}: rendering differs from the golden file\n--- golden\n{want}\n--- ours\n{rendered}"
    );
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The versions upstream's tests give (their config resources have no version yet).
fn versions(secrets: &str) -> Versions {
    Versions {
        secrets: secrets.into(),
        config: "undefined".into(),
        config_files: "222".into(),
    }
}

fn api_server() -> ApiServerConfigSpec {
    ApiServerConfigSpec {
        image: "registry.k8s.io/kube-apiserver:v1.36.0".into(),
        local_port: 6443,
        args: strings(&[
            "/usr/local/bin/kube-apiserver",
            "--etcd-servers=https://127.0.0.1:2379",
            "--secure-port=6443",
        ]),
        ..Default::default()
    }
}

fn render_api_server(cfg: &ApiServerConfigSpec) -> String {
    k8s::yaml::to_string(&pods::api_server(cfg, &versions("111")).unwrap())
}

#[test]
fn apiserver_minimal() {
    check("apiserver-minimal", render_api_server(&api_server()));
}

#[test]
fn apiserver_with_startup_probes() {
    let cfg = ApiServerConfigSpec {
        startup_probes_enabled: true,
        ..api_server()
    };
    check("apiserver-with-startup-probes", render_api_server(&cfg));
}

#[test]
fn apiserver_with_resources_and_env() {
    let cfg = ApiServerConfigSpec {
        environment_variables: map(&[
            ("GOGC", "50"),
            ("HTTPS_PROXY", "http://127.0.0.1:443"),
            ("HTTP_PROXY", "http://127.0.0.1:443"),
            ("NO_PROXY", "10.0.0.0/8"),
        ]),
        resources: Resources {
            requests: map(&[("cpu", "100m"), ("memory", "1Gi")]),
            limits: map(&[("cpu", "2"), ("memory", "4Gi")]),
        },
        ..api_server()
    };
    check("apiserver-with-resources-and-env", render_api_server(&cfg));
}

#[test]
fn apiserver_with_extra_volumes() {
    let cfg = ApiServerConfigSpec {
        extra_volumes: vec![
            ExtraVolume {
                name: "audit".into(),
                host_path: "/var/lib/audit".into(),
                mount_path: "/etc/kubernetes/audit".into(),
                read_only: true,
            },
            ExtraVolume {
                name: "encryption".into(),
                host_path: "/var/lib/encryption".into(),
                mount_path: "/etc/kubernetes/encryption".into(),
                read_only: false,
            },
        ],
        ..api_server()
    };
    check("apiserver-with-extra-volumes", render_api_server(&cfg));
}

#[test]
fn controller_manager() {
    let cfg = ControllerManagerConfigSpec {
        enabled: true,
        image: "registry.k8s.io/controller-manager:v1.36.0".into(),
        args: strings(&[
            "/usr/local/bin/kube-controller-manager",
            "--use-service-account-credentials",
            "--allocate-node-cidrs=true",
        ]),
        environment_variables: map(&[("HTTP_PROXY", "http://127.0.0.1:443")]),
        resources: Resources {
            requests: map(&[("cpu", "50m"), ("memory", "500Mi")]),
            limits: map(&[("cpu", "1"), ("memory", "1000Mi")]),
        },
        ..Default::default()
    };
    let pod = pods::controller_manager(&cfg, &versions("111")).unwrap();
    check("controller-manager", k8s::yaml::to_string(&pod));
}

#[test]
fn scheduler() {
    let cfg = SchedulerConfigSpec {
        enabled: true,
        image: "registry.k8s.io/scheduler:v1.36.0".into(),
        args: strings(&[
            "/usr/local/bin/kube-scheduler",
            "--authentication-kubeconfig=",
            "--authentication-tolerate-lookup-failure=false",
            "--authorization-kubeconfig=",
            "--bind-address=127.0.0.1",
            "--config=",
            "--leader-elect=true",
            "--profiling=false",
            "--tls-min-version=VersionTLS13",
        ]),
        environment_variables: map(&[("HTTP_PROXY", "http://127.0.0.1:443")]),
        resources: Resources {
            requests: map(&[("cpu", "50m"), ("memory", "500Mi")]),
            limits: BTreeMap::new(),
        },
        ..Default::default()
    };
    let pod = pods::scheduler(&cfg, &versions("222")).unwrap();
    check("scheduler", k8s::yaml::to_string(&pod));
}

#[test]
fn a_bad_quantity_is_named() {
    let cfg = ApiServerConfigSpec {
        resources: Resources {
            requests: BTreeMap::new(),
            limits: map(&[("memory", "4GB")]),
        },
        ..api_server()
    };
    let err = pods::api_server(&cfg, &versions("1")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "kube-apiserver: resources.limits.memory: invalid quantity \"4GB\": want a number with an optional suffix (m, k, M, G, Ki, Mi, Gi, ...)"
    );
}
