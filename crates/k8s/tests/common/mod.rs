//! Shared by the schema test and the rendering benchmark: the control plane components'
//! settings of a default config (endpoint 10.5.0.2, the default images and subnets).

use types::k8s::{ApiServerConfigSpec, ControllerManagerConfigSpec, SchedulerConfigSpec};

/// The three components' settings of a default config.
pub fn defaults() -> (
    ApiServerConfigSpec,
    ControllerManagerConfigSpec,
    SchedulerConfigSpec,
) {
    let image =
        |n: &str| machinery::kubernetes::image_or_default(None, &format!("registry.k8s.io/{n}"));
    (
        ApiServerConfigSpec {
            image: image("kube-apiserver"),
            control_plane_endpoint: "https://10.5.0.2:6443".into(),
            etcd_servers: vec!["https://localhost:2379".into()],
            local_port: 6443,
            service_cidrs: vec!["10.96.0.0/12".into()],
            startup_probes_enabled: true,
            ..Default::default()
        },
        ControllerManagerConfigSpec {
            enabled: true,
            image: image("kube-controller-manager"),
            pod_cidrs: vec!["10.244.0.0/16".into()],
            service_cidrs: vec!["10.96.0.0/12".into()],
            ..Default::default()
        },
        SchedulerConfigSpec {
            enabled: true,
            image: image("kube-scheduler"),
            ..Default::default()
        },
    )
}
