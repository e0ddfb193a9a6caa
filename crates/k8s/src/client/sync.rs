//! Manifest sync for `talosctl upgrade-k8s`: every object of the control plane's manifests
//! brought to what Talos renders now by server-side apply (field manager `talos`), the objects
//! of the inventory no longer rendered pruned, the inventory updated; with `dry_run` nothing
//! changes and each change is shown as a diff of what the API server would store.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::discovery::Scope;
use kube::Client;
use serde_json::Value;

use super::apply::{
    describe, inventory_key, object_name, ordered, Kinds, FIELD_MANAGER, INVENTORY_ID,
    INVENTORY_NAME, INVENTORY_NAMESPACE, OWNING_INVENTORY,
};
use super::dynamic_api;

/// Whose objects a sync may take over (upstream's `--manifests-inventory-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InventoryPolicy {
    /// Only objects of this inventory.
    MustMatch,
    /// Also objects of no inventory.
    AdoptIfNoInventory,
    /// Any object.
    AdoptAll,
}

impl std::str::FromStr for InventoryPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "MustMatch" => Ok(InventoryPolicy::MustMatch),
            "AdoptIfNoInventory" => Ok(InventoryPolicy::AdoptIfNoInventory),
            "AdoptAll" => Ok(InventoryPolicy::AdoptAll),
            other => Err(format!(
                "unknown inventory policy {other:?}: MustMatch, AdoptIfNoInventory or AdoptAll"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub dry_run: bool,
    /// Take fields other managers own.
    pub force: bool,
    pub no_prune: bool,
    pub policy: InventoryPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        })
    }
}

/// One change a sync made (or would make).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub action: Action,
    pub subject: String,
    pub diff: String,
}

/// What the API server keeps that a manifest does not say: left out of diffs.
fn comparable(o: &Value) -> Value {
    let mut o = o.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "generation",
            "uid",
            "creationTimestamp",
        ] {
            m.remove(k);
        }
    }
    if let Some(m) = o.as_object_mut() {
        m.remove("status");
    }
    o
}

/// A unified diff of two objects as YAML.
pub fn diff(before: &Value, after: &Value) -> String {
    let (a, b) = (
        crate::yaml::to_string(&comparable(before)),
        crate::yaml::to_string(&comparable(after)),
    );
    if a == b {
        return String::new();
    }
    similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(3)
        .to_string()
}

fn owner(o: &Value) -> Option<&str> {
    o.pointer("/metadata/annotations")
        .and_then(|a| a.get(OWNING_INVENTORY))
        .and_then(Value::as_str)
}

/// Sync `manifests` (id, objects) as the module says.
pub async fn sync(
    client: &Client,
    manifests: &[(String, Vec<Value>)],
    opts: &Options,
) -> Result<Vec<Change>, String> {
    let mut changes = Vec::new();
    let mut kinds = Kinds::default();
    let mut keys = BTreeMap::new();
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.force = opts.force;
    params.dry_run = opts.dry_run;
    for mut object in ordered(manifests) {
        let subject = object_name(&object);
        let resource = kinds
            .get(client, &object)
            .await
            .map_err(|e| format!("{subject}: {e}"))?;
        let namespaced = matches!(resource.1.scope, Scope::Namespaced);
        keys.insert(inventory_key(&object, namespaced), String::new());
        let ns = object["metadata"]["namespace"].as_str().map(String::from);
        let api = dynamic_api(client, &resource, ns.as_deref());
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let live = api
            .get_opt(&name)
            .await
            .map_err(|e| format!("{subject}: {}", describe(&e)))?
            .map(|o| serde_json::to_value(o).unwrap_or(Value::Null));
        if let Some(live) = &live {
            let allowed = matches!(
                (opts.policy, owner(live)),
                (_, Some(INVENTORY_ID))
                    | (InventoryPolicy::AdoptAll, _)
                    | (InventoryPolicy::AdoptIfNoInventory, None)
            );
            if !allowed {
                return Err(format!(
                    "{subject}: the cluster's object belongs to {}, not to Talos's inventory (--manifests-inventory-policy decides what may be adopted)",
                    owner(live).map_or("no inventory".to_string(), |o| format!("inventory {o:?}"))
                ));
            }
        }
        object["metadata"]["annotations"][OWNING_INVENTORY] = INVENTORY_ID.into();
        let obj: DynamicObject = serde_json::from_value(object).map_err(|e| e.to_string())?;
        let after = api
            .patch(&name, &params, &Patch::Apply(&obj))
            .await
            .map_err(|e| format!("{subject}: {}", describe(&e)))?;
        let after = serde_json::to_value(after).unwrap_or(Value::Null);
        match &live {
            None => changes.push(Change {
                action: Action::Create,
                subject,
                diff: diff(&Value::Null, &after),
            }),
            Some(live) => {
                let d = diff(live, &after);
                if !d.is_empty() {
                    changes.push(Change {
                        action: Action::Update,
                        subject,
                        diff: d,
                    });
                }
            }
        }
    }
    let previous = inventory(client).await?;
    if !opts.no_prune {
        for key in previous.difference(&keys.keys().cloned().collect()) {
            changes.push(prune(client, key, opts.dry_run).await?);
        }
    } else {
        keys.extend(previous.into_iter().map(|k| (k, String::new())));
    }
    if !opts.dry_run {
        super::apply::record_all(client, keys).await?;
    }
    Ok(changes)
}

/// The keys of the inventory ConfigMap.
async fn inventory(client: &Client) -> Result<BTreeSet<String>, String> {
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), INVENTORY_NAMESPACE);
    let cm = api
        .get_opt(INVENTORY_NAME)
        .await
        .map_err(|e| format!("inventory: {}", describe(&e)))?;
    Ok(cm
        .and_then(|c| c.data)
        .unwrap_or_default()
        .into_keys()
        .collect())
}

/// Delete the object of inventory key `namespace_name_group_Kind`.
async fn prune(client: &Client, key: &str, dry_run: bool) -> Result<Change, String> {
    let parts: Vec<&str> = key.splitn(4, '_').collect();
    let [ns, name, group, kind] = parts[..] else {
        return Err(format!(
            "inventory: {key:?} is not namespace_name_group_Kind"
        ));
    };
    let found = kube::discovery::group(client, group)
        .await
        .map_err(|e| format!("{key}: {}", describe(&e)))?
        .recommended_kind(kind)
        .ok_or_else(|| format!("{key}: the API no longer serves {group}/{kind}"))?;
    let subject = format!("{group}/{}/{kind}/{name}", found.0.version);
    let api = dynamic_api(client, &found, Some(ns).filter(|n| !n.is_empty()));
    if !dry_run {
        match api.delete(name, &DeleteParams::foreground()).await {
            Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404, .. })) => {}
            Err(e) => return Err(format!("{subject}: {}", describe(&e))),
        }
    }
    Ok(Change {
        action: Action::Delete,
        subject,
        diff: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::client::fake::FakeApi;

    fn cm(name: &str, value: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "kube-system"}, "data": {"k": value}})
    }

    fn opts(dry_run: bool, policy: InventoryPolicy) -> Options {
        Options {
            dry_run,
            force: false,
            no_prune: false,
            policy,
        }
    }

    #[tokio::test]
    async fn dry_run_diffs_apply_updates_and_prunes_what_is_no_longer_rendered() {
        let api = FakeApi::new();
        let c = api.client();
        // Bootstrap: two objects, applied as the control plane does.
        let first = vec![("10-a".to_string(), vec![cm("a", "1"), cm("gone", "x")])];
        let report = crate::client::apply::apply(&c, &first).await;
        assert!(report.errors.is_empty(), "{report:?}");

        // The new rendering changes one object, drops one and adds one.
        let next = vec![("10-a".to_string(), vec![cm("a", "2"), cm("new", "n")])];
        let planned = sync(&c, &next, &opts(true, InventoryPolicy::AdoptIfNoInventory))
            .await
            .unwrap();
        let summary: Vec<String> = planned
            .iter()
            .map(|c| format!("{} {}", c.action, c.subject))
            .collect();
        assert_eq!(
            summary,
            [
                "update /v1/ConfigMap/a",
                "create /v1/ConfigMap/new",
                "delete /v1/ConfigMap/gone"
            ]
        );
        assert!(
            planned[0].diff.contains("-  k: \"1\"") && planned[0].diff.contains("+  k: \"2\""),
            "{}",
            planned[0].diff
        );
        // Dry run: nothing changed.
        assert_eq!(
            api.get("", "configmaps", "kube-system", "a").unwrap()["data"]["k"],
            "1"
        );
        assert!(api.get("", "configmaps", "kube-system", "new").is_none());

        let done = sync(&c, &next, &opts(false, InventoryPolicy::AdoptIfNoInventory))
            .await
            .unwrap();
        assert_eq!(done.len(), 3);
        assert_eq!(
            api.get("", "configmaps", "kube-system", "a").unwrap()["data"]["k"],
            "2"
        );
        assert!(api.get("", "configmaps", "kube-system", "gone").is_none());
        let inv = api
            .get("", "configmaps", INVENTORY_NAMESPACE, INVENTORY_NAME)
            .unwrap();
        let keys: Vec<&String> = inv["data"].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["kube-system_a__ConfigMap", "kube-system_new__ConfigMap"]
        );
        // In sync: no change.
        assert!(sync(&c, &next, &opts(false, InventoryPolicy::MustMatch))
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn objects_of_others_are_taken_only_as_the_policy_allows() {
        let api = FakeApi::new();
        let c = api.client();
        let mut theirs = cm("x", "theirs");
        theirs["metadata"]["annotations"] = json!({OWNING_INVENTORY: "helm"});
        api.insert(theirs);
        api.insert(cm("y", "nobody's"));
        let ours = vec![("10".to_string(), vec![cm("x", "ours")])];
        let err = sync(&c, &ours, &opts(false, InventoryPolicy::AdoptIfNoInventory))
            .await
            .unwrap_err();
        assert!(
            err.starts_with("/v1/ConfigMap/x: the cluster's object belongs to inventory \"helm\""),
            "{err}"
        );
        let unowned = vec![("10".to_string(), vec![cm("y", "ours")])];
        let err = sync(&c, &unowned, &opts(false, InventoryPolicy::MustMatch))
            .await
            .unwrap_err();
        assert!(err.contains("belongs to no inventory"), "{err}");
        assert!(sync(
            &c,
            &unowned,
            &opts(false, InventoryPolicy::AdoptIfNoInventory)
        )
        .await
        .is_ok());
        assert!(sync(&c, &ours, &opts(false, InventoryPolicy::AdoptAll))
            .await
            .is_ok());
        assert_eq!(
            api.get("", "configmaps", "kube-system", "x").unwrap()["data"]["k"],
            "ours"
        );
    }
}
