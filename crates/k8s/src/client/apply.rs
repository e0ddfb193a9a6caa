//! Applying manifests: every object of every manifest, Namespaces first, then
//! CustomResourceDefinitions, then the rest in manifest order; an object the cluster already
//! has is left as it is (create-only: the cluster owns it after bootstrap, `upgrade-k8s`
//! updates it); a missing one is created by server-side apply with field manager `talos`.
//! What was applied is recorded in an inventory ConfigMap in cli-utils' form, so that later
//! syncs know which objects are Talos's. An object that fails is reported and the rest go on.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiCapabilities;
use kube::Client;
use serde_json::{json, Value};

use super::{dynamic_api, gvk};

/// The field manager of everything Talos applies.
pub const FIELD_MANAGER: &str = "talos";
/// The inventory ConfigMap (namespace, name) and the id it gives its objects.
pub const INVENTORY_NAMESPACE: &str = "kube-system";
pub const INVENTORY_NAME: &str = "talos-manifests-inventory";
pub const INVENTORY_ID: &str = "talos-manifests";
pub const INVENTORY_LABEL: &str = "cli-utils.sigs.k8s.io/inventory-id";
pub const OWNING_INVENTORY: &str = "config.k8s.io/owning-inventory";

/// What one apply did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    /// Objects created, as `group/version/Kind/name`.
    pub created: Vec<String>,
    /// Objects the cluster already had.
    pub skipped: Vec<String>,
    /// Objects that failed, with why.
    pub errors: Vec<String>,
}

fn text<'a>(o: &'a Value, pointer: &str) -> &'a str {
    o.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// `group/version/Kind/name` as Talos names objects in its logs.
pub fn object_name(o: &Value) -> String {
    let g = gvk(text(o, "/apiVersion"), text(o, "/kind"));
    format!(
        "{}/{}/{}/{}",
        g.group,
        g.version,
        g.kind,
        text(o, "/metadata/name")
    )
}

fn rank(o: &Value) -> u8 {
    match (text(o, "/apiVersion"), text(o, "/kind")) {
        ("v1", "Namespace") => 0,
        (v, "CustomResourceDefinition") if v.starts_with("apiextensions.k8s.io/") => 1,
        _ => 2,
    }
}

/// The objects of `manifests` (in id order) in the order they are applied.
pub fn ordered(manifests: &[(String, Vec<Value>)]) -> Vec<Value> {
    let mut sorted: Vec<&(String, Vec<Value>)> = manifests.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut objects: Vec<Value> = sorted.into_iter().flat_map(|m| m.1.clone()).collect();
    objects.sort_by(|a, b| {
        let (ra, rb) = (rank(a), rank(b));
        ra.cmp(&rb).then_with(|| {
            if ra < 2 {
                text(a, "/metadata/name").cmp(text(b, "/metadata/name"))
            } else {
                std::cmp::Ordering::Equal
            }
        })
    });
    objects
}

/// The inventory's key of an object: `namespace_name_group_Kind` (cli-utils' form).
pub fn inventory_key(o: &Value, namespaced: bool) -> String {
    let g = gvk(text(o, "/apiVersion"), text(o, "/kind"));
    let ns = if namespaced {
        match text(o, "/metadata/namespace") {
            "" => "default",
            ns => ns,
        }
    } else {
        ""
    };
    format!("{ns}_{}_{}_{}", text(o, "/metadata/name"), g.group, g.kind)
}

/// Looks kinds up once per apply.
#[derive(Default)]
pub(crate) struct Kinds(HashMap<String, (ApiResource, ApiCapabilities)>);

impl Kinds {
    pub(crate) async fn get(
        &mut self,
        client: &Client,
        o: &Value,
    ) -> Result<(ApiResource, ApiCapabilities), String> {
        let key = format!("{}/{}", text(o, "/apiVersion"), text(o, "/kind"));
        if let Some(found) = self.0.get(&key) {
            return Ok(found.clone());
        }
        let g = gvk(text(o, "/apiVersion"), text(o, "/kind"));
        let found = kube::discovery::pinned_kind(client, &g)
            .await
            .map_err(|e| format!("the API does not serve {key}: {}", describe(&e)))?;
        self.0.insert(key, found.clone());
        Ok(found)
    }
}

/// A kube error in one line.
pub fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

/// Apply `manifests` (id, objects) as the module says.
pub async fn apply(client: &Client, manifests: &[(String, Vec<Value>)]) -> Report {
    let mut report = Report::default();
    let mut kinds = Kinds::default();
    let mut inventory = BTreeMap::new();
    for object in ordered(manifests) {
        let name = object_name(&object);
        match apply_one(client, &mut kinds, &object).await {
            Ok((created, key)) => {
                inventory.insert(key, String::new());
                if created {
                    report.created.push(name);
                } else {
                    report.skipped.push(name);
                }
            }
            Err(e) => report.errors.push(format!("{name}: {e}")),
        }
    }
    if let Err(e) = record(client, inventory).await {
        report.errors.push(format!("inventory: {e}"));
    }
    report
}

/// Add `entries` to the inventory.
async fn record(client: &Client, mut entries: BTreeMap<String, String>) -> Result<(), String> {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), INVENTORY_NAMESPACE);
    let current = api
        .get_opt(INVENTORY_NAME)
        .await
        .map_err(|e| describe(&e))?
        .and_then(|c| c.data)
        .unwrap_or_default();
    entries.extend(current);
    record_all(client, entries).await
}

async fn apply_one(
    client: &Client,
    kinds: &mut Kinds,
    object: &Value,
) -> Result<(bool, String), String> {
    let resource = kinds.get(client, object).await?;
    let namespaced = matches!(resource.1.scope, kube::discovery::Scope::Namespaced);
    let key = inventory_key(object, namespaced);
    let ns = Some(text(object, "/metadata/namespace")).filter(|n| !n.is_empty());
    let api = dynamic_api(client, &resource, ns);
    let name = text(object, "/metadata/name");
    if api.get_opt(name).await.map_err(|e| describe(&e))?.is_some() {
        return Ok((false, key));
    }
    let mut object = object.clone();
    object["metadata"]["annotations"][OWNING_INVENTORY] = INVENTORY_ID.into();
    let obj: DynamicObject = serde_json::from_value(object).map_err(|e| e.to_string())?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(&obj))
        .await
        .map_err(|e| describe(&e))?;
    Ok((true, key))
}

/// Make `entries` the inventory (creating its ConfigMap on the first apply).
pub(crate) async fn record_all(
    client: &Client,
    entries: BTreeMap<String, String>,
) -> Result<(), String> {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), INVENTORY_NAMESPACE);
    let inventory = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": INVENTORY_NAME,
            "namespace": INVENTORY_NAMESPACE,
            "labels": {INVENTORY_LABEL: INVENTORY_ID},
        },
        "data": entries,
    });
    api.patch(
        INVENTORY_NAME,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&inventory),
    )
    .await
    .map(drop)
    .map_err(|e| describe(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::fake::FakeApi;

    fn object(api_version: &str, kind: &str, name: &str, ns: Option<&str>) -> Value {
        let mut o = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
        if let Some(ns) = ns {
            o["metadata"]["namespace"] = ns.into();
        }
        o
    }

    fn manifests() -> Vec<(String, Vec<Value>)> {
        vec![
            (
                "99-cilium".into(),
                vec![
                    object("v1", "ConfigMap", "cilium-config", Some("cilium")),
                    object("v1", "Namespace", "cilium", None),
                    object(
                        "apiextensions.k8s.io/v1",
                        "CustomResourceDefinition",
                        "b.cilium.io",
                        None,
                    ),
                ],
            ),
            (
                "05-flannel".into(),
                vec![
                    object(
                        "rbac.authorization.k8s.io/v1",
                        "ClusterRole",
                        "flannel",
                        None,
                    ),
                    object(
                        "apiextensions.k8s.io/v1",
                        "CustomResourceDefinition",
                        "a.x.io",
                        None,
                    ),
                    object("apps/v1", "DaemonSet", "kube-flannel", Some("kube-system")),
                ],
            ),
        ]
    }

    #[test]
    fn namespaces_then_crds_then_the_rest_in_manifest_order() {
        let names: Vec<String> = ordered(&manifests()).iter().map(object_name).collect();
        assert_eq!(
            names,
            [
                "/v1/Namespace/cilium",
                "apiextensions.k8s.io/v1/CustomResourceDefinition/a.x.io",
                "apiextensions.k8s.io/v1/CustomResourceDefinition/b.cilium.io",
                "rbac.authorization.k8s.io/v1/ClusterRole/flannel",
                "apps/v1/DaemonSet/kube-flannel",
                "/v1/ConfigMap/cilium-config",
            ]
        );
    }

    #[tokio::test]
    async fn against_the_fake_api_creates_missing_skips_existing_and_collects_errors() {
        let api = FakeApi::new();
        // The cluster already has the ClusterRole (someone changed it: it is kept).
        let mut existing = object(
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            "flannel",
            None,
        );
        existing["rules"] = json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]);
        api.insert(existing.clone());
        api.fail("/api/v1/namespaces/cilium/configmaps/cilium-config", 403);
        let mut m = manifests();
        m.push((
            "50-x".into(),
            vec![object("example.com/v1", "Widget", "w", None)],
        ));

        let report = apply(&api.client(), &m).await;
        assert_eq!(
            report.created,
            [
                "/v1/Namespace/cilium",
                "apiextensions.k8s.io/v1/CustomResourceDefinition/a.x.io",
                "apiextensions.k8s.io/v1/CustomResourceDefinition/b.cilium.io",
                "apps/v1/DaemonSet/kube-flannel",
            ]
        );
        assert_eq!(
            report.skipped,
            ["rbac.authorization.k8s.io/v1/ClusterRole/flannel"]
        );
        assert_eq!(report.errors.len(), 2, "{:?}", report.errors);
        assert!(report.errors[0]
            .starts_with("example.com/v1/Widget/w: the API does not serve example.com/v1/Widget"));
        assert_eq!(
            report.errors[1],
            "/v1/ConfigMap/cilium-config: injected failure (403)"
        );

        // Created by server-side apply with field manager talos, forced.
        let patches: Vec<_> = api
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH")
            .collect();
        assert!(patches
            .iter()
            .all(|r| r.content_type.starts_with("application/apply-patch")
                && r.query.contains("fieldManager=talos")
                && r.query.contains("force=true")));
        assert_eq!(patches[0].path, "/api/v1/namespaces/cilium");
        // The existing object is untouched.
        assert_eq!(
            api.get("rbac.authorization.k8s.io", "clusterroles", "", "flannel")
                .unwrap()["rules"],
            existing["rules"]
        );
        let ds = api
            .get("apps", "daemonsets", "kube-system", "kube-flannel")
            .unwrap();
        assert_eq!(
            ds["metadata"]["annotations"][OWNING_INVENTORY],
            INVENTORY_ID
        );

        // The inventory lists every object that is Talos's.
        let inv = api
            .get("", "configmaps", INVENTORY_NAMESPACE, INVENTORY_NAME)
            .unwrap();
        assert_eq!(inv["metadata"]["labels"][INVENTORY_LABEL], INVENTORY_ID);
        let keys: Vec<&String> = inv["data"].as_object().unwrap().keys().collect();
        assert!(
            keys.contains(&&"kube-system_kube-flannel_apps_DaemonSet".to_string()),
            "{keys:?}"
        );
        assert!(
            keys.contains(&&"_cilium__Namespace".to_string()),
            "{keys:?}"
        );

        // A second apply creates nothing.
        let again = apply(&api.client(), &manifests()[1..]).await;
        assert!(
            again.created.is_empty() && again.errors.is_empty(),
            "{again:?}"
        );
    }
}
