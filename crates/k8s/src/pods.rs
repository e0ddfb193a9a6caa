//! The control plane's static pods: kube-apiserver, kube-controller-manager and
//! kube-scheduler, from their final configs (command lines already merged).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    HostPathVolumeSource, ObjectFieldSelector, Pod, PodSecurityContext, PodSpec, PodStatus, Probe,
    ResourceRequirements, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use types::k8s::{
    ApiServerConfigSpec, ControllerManagerConfigSpec, ExtraVolume, Resources, SchedulerConfigSpec,
    APISERVER_ID, CONTROLLER_MANAGER_ID, SCHEDULER_ID,
};

use crate::quantity;

pub const APISERVER_SECRETS_DIR: &str = "/system/secrets/kubernetes/kube-apiserver";
pub const APISERVER_CONFIG_DIR: &str = "/system/config/kubernetes/kube-apiserver";
pub const CONTROLLER_MANAGER_SECRETS_DIR: &str =
    "/system/secrets/kubernetes/kube-controller-manager";
pub const SCHEDULER_SECRETS_DIR: &str = "/system/secrets/kubernetes/kube-scheduler";
pub const SCHEDULER_CONFIG_DIR: &str = "/system/config/kubernetes/kube-scheduler";
pub const AUDIT_LOG_DIR: &str = "/var/log/audit/kube";

/// The users the components run as (and own their files).
pub const APISERVER_USER: u32 = 65534;
pub const CONTROLLER_MANAGER_USER: u32 = 65535;
pub const SCHEDULER_USER: u32 = 65536;

/// Kubernetes's system-cluster-critical priority.
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;
/// The share of a memory limit given to Go's garbage collector as its target.
const GO_MEM_LIMIT_PERCENT: i128 = 95;

pub const SECRETS_VERSION_ANNOTATION: &str = "talos.dev/secrets-version";
pub const CONFIG_VERSION_ANNOTATION: &str = "talos.dev/config-version";
pub const CONFIG_FILE_VERSION_ANNOTATION: &str = "talos.dev/config-file-version";

/// What a rendered pod records of its inputs, so that a change of any restarts it.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    /// The version of the secrets on disk.
    pub secrets: String,
    /// The version of the component's config resource.
    pub config: String,
    /// The version of the configuration files on disk (kube-apiserver).
    pub config_files: String,
}

/// A configuration value a pod cannot be built from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{component}: resources.{kind}.{name}: {source}")]
    Quantity {
        component: String,
        kind: &'static str,
        name: String,
        source: quantity::Invalid,
    },
}

/// The Kubernetes version of an image reference (`registry.k8s.io/kube-apiserver:v1.36.0`
/// is `1.36.0`), empty when its tag is not a version.
pub fn version_of_image(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    let tag = match name.rsplit_once(':') {
        Some((_, tag)) if !tag.contains('/') => tag,
        _ => return String::new(),
    };
    let v = tag.trim_start_matches('v');
    let core: String = v.split(['-', '+']).next().unwrap_or_default().to_string();
    if core.split('.').count() >= 2 && core.split('.').all(|p| p.parse::<u32>().is_ok()) {
        core
    } else {
        String::new()
    }
}

/// What differs between the three components' pods.
struct Component<'a> {
    name: &'a str,
    image: &'a str,
    args: &'a [String],
    env: &'a BTreeMap<String, String>,
    resources: &'a Resources,
    default_requests: (&'a str, &'a str),
    extra_volumes: &'a [ExtraVolume],
    /// Host paths mounted read-only: (volume name, path).
    host_dirs: Vec<(&'a str, &'a str)>,
    /// Host paths mounted writable.
    writable_dirs: Vec<(&'a str, &'a str)>,
    add_capabilities: Vec<String>,
    user: u32,
    probes: Probes,
    annotations: BTreeMap<String, String>,
}

#[derive(Default)]
struct Probes {
    startup: Option<Probe>,
    liveness: Option<Probe>,
    readiness: Option<Probe>,
}

fn https_probe(path: &str, port: u16) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            host: Some("localhost".into()),
            path: Some(path.into()),
            port: IntOrString::Int(port.into()),
            scheme: Some("HTTPS".into()),
            ..Default::default()
        }),
        timeout_seconds: Some(15),
        ..Default::default()
    }
}

/// A startup probe giving the component a minute to start.
fn startup_probe(path: &str, port: u16) -> Probe {
    Probe {
        period_seconds: Some(5),
        failure_threshold: Some(12),
        ..https_probe(path, port)
    }
}

/// kube-apiserver's pod.
pub fn api_server(cfg: &ApiServerConfigSpec, v: &Versions) -> Result<Pod, Error> {
    let probes = if cfg.startup_probes_enabled {
        let port = cfg.local_port;
        Probes {
            startup: Some(Probe {
                initial_delay_seconds: Some(10),
                period_seconds: Some(10),
                failure_threshold: Some(24),
                ..https_probe("/livez", port)
            }),
            liveness: Some(Probe {
                initial_delay_seconds: Some(10),
                period_seconds: Some(10),
                failure_threshold: Some(8),
                ..https_probe("/livez", port)
            }),
            readiness: Some(Probe {
                period_seconds: Some(1),
                failure_threshold: Some(3),
                ..https_probe("/readyz", port)
            }),
        }
    } else {
        Probes::default()
    };
    render(Component {
        name: APISERVER_ID,
        image: &cfg.image,
        args: &cfg.args,
        env: &cfg.environment_variables,
        resources: &cfg.resources,
        default_requests: ("200m", "512Mi"),
        extra_volumes: &cfg.extra_volumes,
        host_dirs: vec![
            ("secrets", APISERVER_SECRETS_DIR),
            ("config", APISERVER_CONFIG_DIR),
        ],
        writable_dirs: vec![("audit", AUDIT_LOG_DIR)],
        add_capabilities: vec!["NET_BIND_SERVICE".into()],
        user: APISERVER_USER,
        probes,
        annotations: annotations(v, true),
    })
}

/// kube-controller-manager's pod.
pub fn controller_manager(cfg: &ControllerManagerConfigSpec, v: &Versions) -> Result<Pod, Error> {
    render(Component {
        name: CONTROLLER_MANAGER_ID,
        image: &cfg.image,
        args: &cfg.args,
        env: &cfg.environment_variables,
        resources: &cfg.resources,
        default_requests: ("50m", "256Mi"),
        extra_volumes: &cfg.extra_volumes,
        host_dirs: vec![("secrets", CONTROLLER_MANAGER_SECRETS_DIR)],
        writable_dirs: vec![],
        add_capabilities: vec![],
        user: CONTROLLER_MANAGER_USER,
        probes: Probes {
            startup: Some(startup_probe("/healthz", 10257)),
            liveness: Some(https_probe("/healthz", 10257)),
            readiness: None,
        },
        annotations: annotations(v, false),
    })
}

/// kube-scheduler's pod.
pub fn scheduler(cfg: &SchedulerConfigSpec, v: &Versions) -> Result<Pod, Error> {
    render(Component {
        name: SCHEDULER_ID,
        image: &cfg.image,
        args: &cfg.args,
        env: &cfg.environment_variables,
        resources: &cfg.resources,
        default_requests: ("10m", "64Mi"),
        extra_volumes: &cfg.extra_volumes,
        host_dirs: vec![
            ("secrets", SCHEDULER_SECRETS_DIR),
            ("config", SCHEDULER_CONFIG_DIR),
        ],
        writable_dirs: vec![],
        add_capabilities: vec![],
        user: SCHEDULER_USER,
        probes: Probes {
            startup: Some(startup_probe("/livez", 10259)),
            liveness: Some(https_probe("/livez", 10259)),
            readiness: Some(https_probe("/readyz", 10259)),
        },
        annotations: annotations(v, false),
    })
}

fn annotations(v: &Versions, config_files: bool) -> BTreeMap<String, String> {
    let mut a = BTreeMap::from([
        (SECRETS_VERSION_ANNOTATION.to_string(), v.secrets.clone()),
        (CONFIG_VERSION_ANNOTATION.to_string(), v.config.clone()),
    ]);
    if config_files {
        a.insert(
            CONFIG_FILE_VERSION_ANNOTATION.to_string(),
            v.config_files.clone(),
        );
    }
    a
}

/// Requests with the component's defaults, limits as configured; each checked.
pub(crate) fn requirements(
    component: &str,
    default_requests: (&str, &str),
    resources: &Resources,
) -> Result<ResourceRequirements, Error> {
    let check = |kind: &'static str, map: &BTreeMap<String, String>| {
        map.iter()
            .map(|(name, q)| {
                quantity::value(q).map_err(|source| Error::Quantity {
                    component: component.to_string(),
                    kind,
                    name: name.clone(),
                    source,
                })?;
                Ok((name.clone(), Quantity(q.clone())))
            })
            .collect::<Result<BTreeMap<_, _>, Error>>()
    };
    let mut requests = BTreeMap::from([
        ("cpu".to_string(), Quantity(default_requests.0.into())),
        ("memory".to_string(), Quantity(default_requests.1.into())),
    ]);
    requests.extend(check("requests", &resources.requests)?);
    let limits = check("limits", &resources.limits)?;
    Ok(ResourceRequirements {
        requests: Some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..Default::default()
    })
}

/// `GOMEMLIMIT` at a share of the memory limit, when there is one.
pub(crate) fn go_mem_limit(resources: &Resources) -> Option<EnvVar> {
    let limit = quantity::value(resources.limits.get("memory")?).ok()?;
    (limit > 0).then(|| {
        env_var(
            "GOMEMLIMIT",
            (limit * GO_MEM_LIMIT_PERCENT / 100).to_string(),
        )
    })
}

pub(crate) fn env_var(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    }
}

fn render(c: Component) -> Result<Pod, Error> {
    let resources = requirements(c.name, c.default_requests, c.resources)?;
    let mut env = vec![EnvVar {
        name: "POD_IP".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "status.podIP".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }];
    // `$` would start a Kubernetes variable reference.
    env.extend(c.env.iter().map(|(k, v)| env_var(k, v.replace('$', "$$"))));
    env.extend(go_mem_limit(c.resources));

    let host = |name: &str, path: &str| Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let memory = |name: &str| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    };

    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for (name, path) in &c.host_dirs {
        volumes.push(host(name, path));
        mounts.push(mount(name, path, true));
    }
    for (name, path) in &c.writable_dirs {
        volumes.push(host(name, path));
        mounts.push(mount(name, path, false));
    }
    // Scratch space the components write to with a read-only root: /tmp, and
    // /var/run/kubernetes for self-signed serving certificates.
    volumes.extend([memory("tmp"), memory("run")]);
    mounts.extend([
        mount("tmp", "/tmp", false),
        mount("run", "/var/run/kubernetes", false),
    ]);
    for v in c.extra_volumes {
        volumes.push(host(&v.name, &v.host_path));
        mounts.push(mount(&v.name, &v.mount_path, v.read_only));
    }

    let labels = BTreeMap::from([
        ("tier", "control-plane".to_string()),
        ("k8s-app", c.name.to_string()),
        ("component", c.name.to_string()),
        ("app.kubernetes.io/name", c.name.to_string()),
        ("app.kubernetes.io/version", version_of_image(c.image)),
        ("app.kubernetes.io/component", "control-plane".to_string()),
        ("app.kubernetes.io/managed-by", "Talos".to_string()),
    ])
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(c.name.into()),
            namespace: Some("kube-system".into()),
            annotations: Some(c.annotations),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(PodSpec {
            priority: Some(SYSTEM_CRITICAL_PRIORITY),
            priority_class_name: Some("system-cluster-critical".into()),
            host_network: Some(true),
            containers: vec![Container {
                name: c.name.into(),
                image: Some(c.image.into()),
                command: Some(c.args.to_vec()),
                env: Some(env),
                volume_mounts: Some(mounts),
                startup_probe: c.probes.startup,
                liveness_probe: c.probes.liveness,
                readiness_probe: c.probes.readiness,
                resources: Some(resources),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    read_only_root_filesystem: Some(true),
                    capabilities: Some(Capabilities {
                        add: (!c.add_capabilities.is_empty()).then_some(c.add_capabilities),
                        drop: Some(vec!["ALL".into()]),
                    }),
                    seccomp_profile: Some(SeccompProfile {
                        type_: "RuntimeDefault".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(c.user.into()),
                run_as_group: Some(c.user.into()),
                ..Default::default()
            }),
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: Some(PodStatus::default()),
    })
}
