//! k8s.ControlPlaneController: a control plane's `cluster.apiServer`,
//! `cluster.controllerManager` and `cluster.scheduler` (with the cluster's networks and
//! endpoint) as APIServerConfig, ControllerManagerConfig and SchedulerConfig.
//! k8s.ControlPlaneFinalController adds each component's full command line (`final-` ids).

use machinery::Config;
use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use serde_json::Value;
use types::k8s::{
    ApiServerConfigSpec, ControllerManagerConfigSpec, ExtraVolume, Resources, SchedulerConfigSpec,
    APISERVER_ID, CONTROLLER_MANAGER_ID, FINAL_PREFIX, SCHEDULER_ID,
};

use crate::controllers::inputs;

const PATHS: &[&str] = &[
    "kind:KubeAPIServerConfig",
    "kind:KubeControllerManagerConfig",
    "kind:KubeSchedulerConfig",
    "kind:KubeNetworkConfig",
    "kind:KubeClusterConfig",
    "/machine/type",
    "/machine/controlPlane",
    "/cluster/controlPlane",
    "/cluster/network/podSubnets",
    "/cluster/network/serviceSubnets",
    "/cluster/apiServer",
    "/cluster/controllerManager",
    "/cluster/scheduler",
    "/cluster/externalCloudProvider",
];

/// A component's section: its v1alpha1 path and its multi-document kind.
#[derive(Clone, Copy)]
struct Section {
    v1alpha1: &'static str,
    kind: &'static str,
}

impl Section {
    fn get<'a>(&self, cfg: &'a Config, field: &str) -> Option<&'a Value> {
        machinery::kubernetes::setting(
            cfg,
            &format!("{}/{field}", self.v1alpha1),
            self.kind,
            &format!("/{field}"),
        )
    }
}

const API_SERVER: Section = Section {
    v1alpha1: "/cluster/apiServer",
    kind: "KubeAPIServerConfig",
};
const CONTROLLER_MANAGER: Section = Section {
    v1alpha1: "/cluster/controllerManager",
    kind: "KubeControllerManagerConfig",
};
const SCHEDULER: Section = Section {
    v1alpha1: "/cluster/scheduler",
    kind: "KubeSchedulerConfig",
};
const NETWORK: Section = Section {
    v1alpha1: "/cluster/network",
    kind: "KubeNetworkConfig",
};

fn strings(v: Option<&Value>, default: &str) -> Vec<String> {
    let v = machinery::kubernetes::strings(v);
    if v.is_empty() && !default.is_empty() {
        vec![default.to_string()]
    } else {
        v
    }
}

/// `extraVolumes`, named after their mount paths as upstream does.
fn extra_volumes(cfg: &Config, section: &str) -> Vec<ExtraVolume> {
    cfg.pointer(&format!("{section}/extraVolumes"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|v| {
            let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let mount_path = s("mountPath");
            ExtraVolume {
                name: mount_path.trim_matches('/').replace('/', "-"),
                host_path: s("hostPath"),
                mount_path,
                read_only: v.get("readonly").and_then(Value::as_bool).unwrap_or(false),
            }
        })
        .collect()
}

fn resources(cfg: &Config, section: Section) -> Resources {
    let r = section.get(cfg, "resources");
    Resources {
        requests: machinery::kubernetes::string_map(r.and_then(|r| r.get("requests"))),
        limits: machinery::kubernetes::string_map(r.and_then(|r| r.get("limits"))),
    }
}

fn image(cfg: &Config, section: Section, name: &str) -> String {
    machinery::kubernetes::image_or_default(
        section.get(cfg, "image").and_then(Value::as_str),
        &format!("registry.k8s.io/{name}"),
    )
}

fn flag(cfg: &Config, ptr: &str) -> bool {
    cfg.pointer(ptr).and_then(Value::as_bool).unwrap_or(false)
}

/// The three components' configs of a control plane's machine config.
pub fn configs_of(
    cfg: &Config,
) -> (
    ApiServerConfigSpec,
    ControllerManagerConfigSpec,
    SchedulerConfigSpec,
) {
    let pods = strings(NETWORK.get(cfg, "podSubnets"), "10.244.0.0/16");
    let services = strings(NETWORK.get(cfg, "serviceSubnets"), "10.96.0.0/12");
    let cloud = if flag(cfg, "/cluster/externalCloudProvider/enabled") {
        "external"
    } else {
        ""
    };
    let port = machinery::kubernetes::setting(
        cfg,
        "/cluster/controlPlane/localAPIServerPort",
        API_SERVER.kind,
        "/apiPort",
    )
    .and_then(Value::as_u64)
    .unwrap_or(6443) as u16;
    let api = API_SERVER;
    let api_server = ApiServerConfigSpec {
        image: image(cfg, api, "kube-apiserver"),
        cloud_provider: cloud.into(),
        control_plane_endpoint: cfg.control_plane_endpoint().unwrap_or_default().into(),
        etcd_servers: vec!["https://localhost:2379".into()],
        local_port: port,
        service_cidrs: services.clone(),
        extra_args: machinery::kubernetes::extra_args(api.get(cfg, "extraArgs")),
        extra_volumes: extra_volumes(cfg, api.v1alpha1),
        environment_variables: machinery::kubernetes::string_map(api.get(cfg, "env")),
        advertised_address: String::new(),
        resources: resources(cfg, api),
        startup_probes_enabled: api
            .get(cfg, "startupProbes")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        use_authentication_config: cfg.kind("KubeAuthenticationConfig").next().is_some()
            || cfg
                .pointer("/cluster/apiServer/authenticationConfig")
                .is_some_and(|v| !v.is_null()),
        args: Vec::new(),
    };
    let cm = CONTROLLER_MANAGER;
    let enabled = |section: Section, v1alpha1_disabled: &str| match cfg.kind(section.kind).next() {
        Some(d) => d
            .value
            .get("enabled")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        None => !flag(cfg, v1alpha1_disabled),
    };
    let controller_manager = ControllerManagerConfigSpec {
        enabled: enabled(cm, "/machine/controlPlane/controllerManager/disabled"),
        image: image(cfg, cm, "kube-controller-manager"),
        cloud_provider: cloud.into(),
        pod_cidrs: pods,
        service_cidrs: services,
        extra_args: machinery::kubernetes::extra_args(cm.get(cfg, "extraArgs")),
        extra_volumes: extra_volumes(cfg, cm.v1alpha1),
        environment_variables: machinery::kubernetes::string_map(cm.get(cfg, "env")),
        resources: resources(cfg, cm),
        args: Vec::new(),
    };
    let sc = SCHEDULER;
    let scheduler = SchedulerConfigSpec {
        enabled: enabled(sc, "/machine/controlPlane/scheduler/disabled"),
        image: image(cfg, sc, "kube-scheduler"),
        extra_args: machinery::kubernetes::extra_args(sc.get(cfg, "extraArgs")),
        extra_volumes: extra_volumes(cfg, sc.v1alpha1),
        environment_variables: machinery::kubernetes::string_map(sc.get(cfg, "env")),
        resources: resources(cfg, sc),
        config: sc.get(cfg, "config").cloned().unwrap_or(Value::Null),
        args: Vec::new(),
    };
    (api_server, controller_manager, scheduler)
}

pub struct ControlPlaneController;

#[async_trait::async_trait]
impl Controller for ControlPlaneController {
    fn name(&self) -> &str {
        "k8s.ControlPlaneController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![inputs::config(PATHS)]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::shared_of::<ApiServerConfigSpec>(),
            Output::shared_of::<ControllerManagerConfigSpec>(),
            Output::shared_of::<SchedulerConfigSpec>(),
        ]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let Some(cfg) = inputs::control_plane_config(ctx)? else {
            return Ok(());
        };
        let (a, c, s) = configs_of(&cfg);
        ctx.put(APISERVER_ID, a)?;
        ctx.put(CONTROLLER_MANAGER_ID, c)?;
        ctx.put(SCHEDULER_ID, s)?;
        Ok(())
    }
}

pub struct ControlPlaneFinalController;

#[async_trait::async_trait]
impl Controller for ControlPlaneFinalController {
    fn name(&self) -> &str {
        "k8s.ControlPlaneFinalController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::of::<ApiServerConfigSpec>().id(APISERVER_ID),
            Input::of::<ControllerManagerConfigSpec>().id(CONTROLLER_MANAGER_ID),
            Input::of::<SchedulerConfigSpec>().id(SCHEDULER_ID),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::shared_of::<ApiServerConfigSpec>(),
            Output::shared_of::<ControllerManagerConfigSpec>(),
            Output::shared_of::<SchedulerConfigSpec>(),
        ]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let fin = |id: &str| format!("{FINAL_PREFIX}{id}");
        if let Some(a) = ctx.spec_of::<ApiServerConfigSpec>(APISERVER_ID)? {
            let out = k8s::flags::api_server(&a).map_err(|e| format!("kube-apiserver: {e}"))?;
            ctx.put(&fin(APISERVER_ID), out)?;
        }
        if let Some(c) = ctx.spec_of::<ControllerManagerConfigSpec>(CONTROLLER_MANAGER_ID)? {
            let out = k8s::flags::controller_manager(&c)
                .map_err(|e| format!("kube-controller-manager: {e}"))?;
            ctx.put(&fin(CONTROLLER_MANAGER_ID), out)?;
        }
        if let Some(s) = ctx.spec_of::<SchedulerConfigSpec>(SCHEDULER_ID)? {
            let out = k8s::flags::scheduler(&s).map_err(|e| format!("kube-scheduler: {e}"))?;
            ctx.put(&fin(SCHEDULER_ID), out)?;
        }
        Ok(())
    }
}
