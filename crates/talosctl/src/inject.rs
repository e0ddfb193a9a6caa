//! `talosctl inject serviceaccount`: Kubernetes manifests given Talos API access. Each workload
//! (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) gets a Talos
//! ServiceAccount (`talos.dev/v1alpha1`) with the roles asked for, and its containers the
//! Secret the cluster issues for it, mounted at /var/run/secrets/talos.dev. Other objects pass
//! through; a workload injected before is left as it is.

use std::io::Read;

use clap::{Args, Subcommand};
use machinery::{Error, Result};
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum InjectCmd {
    /// Add a Talos ServiceAccount resource (with roles) and the needed mounts to workloads in
    /// Kubernetes manifests.
    #[command(name = "serviceaccount", visible_alias = "tsa")]
    ServiceAccount(ServiceAccountArgs),
}

#[derive(Args)]
pub struct ServiceAccountArgs {
    /// The manifests (`-` for standard input).
    #[arg(short = 'f', long, default_value = "")]
    file: String,
    /// Roles of the ServiceAccounts.
    #[arg(short = 'r', long, value_delimiter = ',', default_value = "os:reader")]
    roles: Vec<String>,
}

const VOLUME: &str = "talos-secrets";
const MOUNT_PATH: &str = "/var/run/secrets/talos.dev";

/// Where a kind keeps its pod spec.
fn pod_spec_path(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some("/spec"),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some("/spec/template/spec")
        }
        "CronJob" => Some("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    }
}

/// The objects of `objects` with the workloads injected, each followed by its ServiceAccount.
pub fn inject(objects: Vec<Value>, roles: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for mut o in objects {
        let kind = o["kind"].as_str().unwrap_or("").to_string();
        let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
        let account = format!("{name}-{VOLUME}");
        let injected = pod_spec_path(&kind)
            .and_then(|p| o.pointer_mut(p))
            .filter(|spec| spec.is_object())
            .map(|spec| add_mounts(spec, &account))
            .unwrap_or(false);
        let namespace = o["metadata"]["namespace"].clone();
        out.push(o);
        if injected {
            let mut metadata = json!({"name": account});
            if !namespace.is_null() {
                metadata["namespace"] = namespace;
            }
            out.push(json!({
                "apiVersion": "talos.dev/v1alpha1",
                "kind": "ServiceAccount",
                "metadata": metadata,
                "spec": {"roles": roles},
            }));
        }
    }
    out
}

/// Add the Secret's volume and its mount to every container; false when it is there already.
fn add_mounts(spec: &mut Value, account: &str) -> bool {
    let volumes = &mut spec["volumes"];
    if volumes
        .as_array()
        .is_some_and(|v| v.iter().any(|v| v["name"] == VOLUME))
    {
        return false;
    }
    if !volumes.is_array() {
        *volumes = json!([]);
    }
    volumes
        .as_array_mut()
        .expect("an array")
        .push(json!({"name": VOLUME, "secret": {"secretName": account}}));
    for list in ["containers", "initContainers"] {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            let mounts = &mut c["volumeMounts"];
            if !mounts.is_array() {
                *mounts = json!([]);
            }
            mounts
                .as_array_mut()
                .expect("an array")
                .push(json!({"name": VOLUME, "mountPath": MOUNT_PATH}));
        }
    }
    true
}

pub fn run(cmd: InjectCmd) -> Result<()> {
    let InjectCmd::ServiceAccount(a) = cmd;
    let text = match a.file.as_str() {
        "" => {
            return Err(Error::msg(
                "no manifests given: pass -f <file> (or -f - for standard input)",
            ))
        }
        "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Error::msg(format!("standard input: {e}")))?;
            s
        }
        path => std::fs::read_to_string(path).map_err(|e| Error::msg(format!("{path}: {e}")))?,
    };
    let objects =
        machinery::manifest::objects(&a.file, &text).map_err(|e| Error::msg(e.to_string()))?;
    let docs: Vec<String> = inject(objects, &a.roles)
        .iter()
        .map(k8s::yaml::to_string)
        .collect();
    print!("{}", docs.join("---\n"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_get_an_account_and_its_secret_mounted_once() {
        let objects = machinery::manifest::objects(
            "m",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\n  namespace: ops\nspec:\n  template:\n    spec:\n      containers:\n      - name: a\n        image: x\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: backup\nspec:\n  schedule: '@daily'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers:\n          - name: b\n            image: y\n",
        )
        .unwrap();
        let roles = vec!["os:reader".to_string(), "os:etcd:backup".to_string()];
        let out = inject(objects, &roles);
        let kinds: Vec<&str> = out.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Deployment",
                "ServiceAccount",
                "ConfigMap",
                "CronJob",
                "ServiceAccount"
            ]
        );
        assert_eq!(
            out[1]["metadata"],
            json!({"name": "app-talos-secrets", "namespace": "ops"})
        );
        assert_eq!(
            out[1]["spec"]["roles"],
            json!(["os:reader", "os:etcd:backup"])
        );
        let spec = &out[0]["spec"]["template"]["spec"];
        assert_eq!(
            spec["volumes"][0]["secret"]["secretName"],
            "app-talos-secrets"
        );
        assert_eq!(
            spec["containers"][0]["volumeMounts"][0]["mountPath"],
            MOUNT_PATH
        );
        let cron = &out[3]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(cron["volumes"][0]["name"], VOLUME);

        // Injected output injected again: unchanged, no second account.
        let again = inject(out.clone(), &roles);
        assert_eq!(again, out);
    }
}
