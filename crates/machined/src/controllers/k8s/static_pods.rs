//! Static pods. k8s.ControlPlaneStaticPodController renders kube-apiserver,
//! kube-controller-manager and kube-scheduler once etcd is healthy on this node and their
//! files are on disk, annotated with the versions of those files so that a change restarts
//! them. k8s.StaticPodConfigController adds `machine.pods`. k8s.StaticPodServerController
//! serves them all as a PodList on localhost for the kubelet (StaticPodServerStatus has the
//! URL).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use k8s::pods::Versions;
use resources::{Controller, ControllerError, Input, Output, ReconcileContext, ResourceType};
use serde_json::{json, Value};
use types::k8s::{
    ApiServerConfigSpec, ConfigStatusSpec, ControllerManagerConfigSpec, SchedulerConfigSpec,
    SecretsStatusSpec, StaticPodServerStatusSpec, StaticPodSpec, APISERVER_ID,
    CONTROLLER_MANAGER_ID, FINAL_PREFIX, SCHEDULER_ID, STATIC_POD_FILES_ID, STATIC_POD_SERVER_ID,
};
use types::runtime::ServiceStatusSpec;

use crate::controllers::inputs;

fn final_id(id: &str) -> String {
    format!("{FINAL_PREFIX}{id}")
}

pub struct ControlPlaneStaticPodController;

#[async_trait::async_trait]
impl Controller for ControlPlaneStaticPodController {
    fn name(&self) -> &str {
        "k8s.ControlPlaneStaticPodController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            Input::of::<ApiServerConfigSpec>().id(&final_id(APISERVER_ID)),
            Input::of::<ControllerManagerConfigSpec>().id(&final_id(CONTROLLER_MANAGER_ID)),
            Input::of::<SchedulerConfigSpec>().id(&final_id(SCHEDULER_ID)),
            Input::of::<SecretsStatusSpec>().id(STATIC_POD_FILES_ID),
            Input::of::<ConfigStatusSpec>().id(STATIC_POD_FILES_ID),
            Input::of::<ServiceStatusSpec>().id("etcd"),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::shared_of::<StaticPodSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let etcd_healthy = ctx
            .spec_of::<ServiceStatusSpec>("etcd")?
            .is_some_and(|s| s.healthy);
        let (true, Some(secrets), Some(files)) = (
            etcd_healthy,
            ctx.spec_of::<SecretsStatusSpec>(STATIC_POD_FILES_ID)?,
            ctx.spec_of::<ConfigStatusSpec>(STATIC_POD_FILES_ID)?,
        ) else {
            // Without etcd (or the files) the control plane's pods go away.
            return Ok(());
        };
        let versions = |config_version: u64| Versions {
            secrets: secrets.version.clone(),
            config: config_version.to_string(),
            config_files: files.version.clone(),
        };
        let pod_error = |e: k8s::pods::Error| e.to_string();
        let version_of = |ctx: &ReconcileContext, ptr| -> Result<u64, ControllerError> {
            Ok(ctx.get(&ptr)?.map(|r| r.metadata.version).unwrap_or(0))
        };
        let mut pods = Vec::new();
        let id = final_id(APISERVER_ID);
        if let Some(a) = ctx.spec_of::<ApiServerConfigSpec>(&id)? {
            let v = version_of(ctx, ApiServerConfigSpec::pointer(&id))?;
            pods.push((
                APISERVER_ID,
                k8s::pods::api_server(&a, &versions(v)).map_err(pod_error)?,
            ));
        }
        let id = final_id(CONTROLLER_MANAGER_ID);
        if let Some(c) = ctx
            .spec_of::<ControllerManagerConfigSpec>(&id)?
            .filter(|c| c.enabled)
        {
            let v = version_of(ctx, ControllerManagerConfigSpec::pointer(&id))?;
            let pod = k8s::pods::controller_manager(&c, &versions(v)).map_err(pod_error)?;
            pods.push((CONTROLLER_MANAGER_ID, pod));
        }
        let id = final_id(SCHEDULER_ID);
        if let Some(s) = ctx
            .spec_of::<SchedulerConfigSpec>(&id)?
            .filter(|s| s.enabled)
        {
            let v = version_of(ctx, SchedulerConfigSpec::pointer(&id))?;
            pods.push((
                SCHEDULER_ID,
                k8s::pods::scheduler(&s, &versions(v)).map_err(pod_error)?,
            ));
        }
        for (id, pod) in pods {
            let pod = serde_json::to_value(&pod).map_err(|e| e.to_string())?;
            ctx.put(id, StaticPodSpec { pod })?;
        }
        Ok(())
    }
}

/// `machine.pods` as static pods, id `<namespace>-<name>`.
pub struct StaticPodConfigController;

#[async_trait::async_trait]
impl Controller for StaticPodConfigController {
    fn name(&self) -> &str {
        "k8s.StaticPodConfigController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![inputs::config(&[
            "/machine/pods",
            "kind:KubeStaticPodConfig",
        ])]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::shared_of::<StaticPodSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let Some(cfg) = inputs::machine_config(ctx)? else {
            return Ok(());
        };
        let mut pods = cfg
            .pointer("/machine/pods")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        pods.extend(
            cfg.kind("KubeStaticPodConfig")
                .filter_map(|d| d.value.get("pod").cloned()),
        );
        for (i, pod) in pods.into_iter().enumerate() {
            let meta = |k: &str| {
                pod.pointer(&format!("/metadata/{k}"))
                    .and_then(Value::as_str)
            };
            let Some(name) = meta("name") else {
                return Err(format!("machine.pods[{i}]: metadata.name is required").into());
            };
            let id = format!("{}-{name}", meta("namespace").unwrap_or("default"));
            ctx.put(&id, StaticPodSpec { pod })?;
        }
        Ok(())
    }
}

type Pods = Arc<Mutex<Vec<u8>>>;

/// Serves the node's static pods on 127.0.0.1 (a port of its own) for the kubelet.
#[derive(Default)]
pub struct StaticPodServerController {
    served: Option<(Pods, String)>,
}

async fn serve(listener: tokio::net::TcpListener, pods: Pods) {
    use hyper::service::service_fn;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let pods = pods.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
                let body = pods.lock().map(|p| p.clone()).unwrap_or_default();
                async move {
                    let mut res = hyper::Response::new(Full::new(bytes::Bytes::from(body)));
                    res.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(res)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

/// The PodList of `pods` (id, pod), in id order.
pub fn pod_list(pods: &[(String, StaticPodSpec)]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PodList",
        "items": pods.iter().map(|(_, p)| p.pod.clone()).collect::<Vec<_>>(),
    })
}

#[async_trait::async_trait]
impl Controller for StaticPodServerController {
    fn name(&self) -> &str {
        "k8s.StaticPodServerController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![Input::of::<StaticPodSpec>()]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<StaticPodServerStatusSpec>()]
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        if self.served.is_none() {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| format!("static pod server: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let pods = Pods::default();
            tokio::spawn(serve(listener, pods.clone()));
            self.served = Some((pods, format!("http://{addr}")));
        }
        let Some((pods, url)) = &self.served else {
            return Ok(());
        };
        let mut list = ctx.specs_of::<StaticPodSpec>()?;
        list.sort_by(|a, b| a.0.cmp(&b.0));
        let body = serde_json::to_vec(&pod_list(&list)).map_err(|e| e.to_string())?;
        let mut served = pods.lock().map_err(|_| "static pod server: poisoned")?;
        if *served != body {
            *served = body;
            tracing::info!(pods = list.len(), "static pods served");
        }
        drop(served);
        ctx.put(
            STATIC_POD_SERVER_ID,
            StaticPodServerStatusSpec { url: url.clone() },
        )?;
        Ok(())
    }
}
