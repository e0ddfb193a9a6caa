//! The node's labels, taints, annotations and cordon as the config wants them, on its Node
//! object. Talos records the keys it set in annotations (`talos.dev/owned-labels`, …): a key
//! it owned that the config dropped is removed; a key someone else set is left alone (unless
//! the config wants the same value, which Talos then owns too). One JSON merge patch a change.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{json, Map, Value};

use super::apply::describe;

pub const OWNED_LABELS: &str = "talos.dev/owned-labels";
pub const OWNED_TAINTS: &str = "talos.dev/owned-taints";
pub const OWNED_ANNOTATIONS: &str = "talos.dev/owned-annotations";
/// Marks a node Talos cordoned (and so may uncordon).
pub const CORDONED: &str = "talos.dev/cordoned";

/// What the config wants of the Node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wanted {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// (key, value, effect)
    pub taints: Vec<(String, String, String)>,
    pub cordoned: bool,
}

/// What an apply changed, and the keys left alone because others set them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub patched: bool,
    pub not_owned: Vec<String>,
}

fn owned(annotations: &BTreeMap<String, String>, key: &str) -> BTreeSet<String> {
    annotations
        .get(key)
        .and_then(|v| serde_json::from_str::<Vec<String>>(v).ok())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// The merge of `wanted` into `current` for one map (labels or annotations): the patch of
/// the map, the keys Talos now owns, and the keys it left alone.
fn merge_map(
    current: &BTreeMap<String, String>,
    was_owned: &BTreeSet<String>,
    wanted: &BTreeMap<String, String>,
    what: &str,
) -> (Map<String, Value>, BTreeSet<String>, Vec<String>) {
    let mut patch = Map::new();
    let mut now_owned = BTreeSet::new();
    let mut not_owned = Vec::new();
    for (k, v) in wanted {
        match current.get(k) {
            Some(cur) if !was_owned.contains(k) && cur != v => {
                not_owned.push(format!("{what} {k:?} (set to {cur:?} by someone else)"));
                continue;
            }
            Some(cur) if cur == v => {}
            _ => {
                patch.insert(k.clone(), v.clone().into());
            }
        }
        now_owned.insert(k.clone());
    }
    for k in was_owned {
        if !wanted.contains_key(k) && current.contains_key(k) {
            patch.insert(k.clone(), Value::Null);
        }
    }
    (patch, now_owned, not_owned)
}

/// The patch that brings `node` to `wanted`, if anything is to change.
pub fn patch_for(node: &Node, wanted: &Wanted) -> (Option<Value>, Vec<String>) {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let annotations = node.metadata.annotations.clone().unwrap_or_default();
    let mut wanted_annotations = wanted.annotations.clone();
    // The ownership annotations are Talos's own, never the config's.
    for k in [OWNED_LABELS, OWNED_TAINTS, OWNED_ANNOTATIONS, CORDONED] {
        wanted_annotations.remove(k);
    }

    let (mut label_patch, labels_owned, mut not_owned) = merge_map(
        &labels,
        &owned(&annotations, OWNED_LABELS),
        &wanted.labels,
        "label",
    );
    let (mut annotation_patch, annotations_owned, more) = merge_map(
        &annotations,
        &owned(&annotations, OWNED_ANNOTATIONS),
        &wanted_annotations,
        "annotation",
    );
    not_owned.extend(more);

    // Taints: Talos's (owned) ones are replaced by the wanted ones; others' are kept.
    let current_taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let taints_were_owned = owned(&annotations, OWNED_TAINTS);
    let wanted_keys: BTreeSet<&String> = wanted.taints.iter().map(|t| &t.0).collect();
    let mut taints: Vec<Taint> = Vec::new();
    let mut taints_owned = BTreeSet::new();
    for t in &current_taints {
        let ours = taints_were_owned.contains(&t.key) || wanted_keys.contains(&t.key);
        if !ours {
            taints.push(t.clone());
        }
    }
    for (key, value, effect) in &wanted.taints {
        let theirs = current_taints
            .iter()
            .find(|t| &t.key == key && !taints_were_owned.contains(key));
        if let Some(t) = theirs {
            if t.effect != *effect || t.value.as_deref().unwrap_or("") != value {
                not_owned.push(format!("taint {key:?} (set by someone else)"));
                taints.push(t.clone());
                continue;
            }
        }
        taints.push(Taint {
            key: key.clone(),
            value: (!value.is_empty()).then(|| value.clone()),
            effect: effect.clone(),
            time_added: None,
        });
        taints_owned.insert(key.clone());
    }
    let taints_changed = taints != current_taints;

    let as_list = |s: &BTreeSet<String>| serde_json::to_string(s).expect("strings serialize");
    for (key, set) in [
        (OWNED_LABELS, &labels_owned),
        (OWNED_ANNOTATIONS, &annotations_owned),
        (OWNED_TAINTS, &taints_owned),
    ] {
        let value = (!set.is_empty()).then(|| as_list(set));
        if annotations.get(key) != value.as_ref() {
            annotation_patch.insert(key.into(), value.map_or(Value::Null, Value::from));
        }
    }

    // Cordon: set when wanted; lifted only when Talos set it.
    let unschedulable = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let mut spec = Map::new();
    if wanted.cordoned && !unschedulable {
        spec.insert("unschedulable".into(), true.into());
        annotation_patch.insert(CORDONED.into(), "true".into());
    } else if !wanted.cordoned && annotations.contains_key(CORDONED) {
        spec.insert("unschedulable".into(), Value::Null);
        annotation_patch.insert(CORDONED.into(), Value::Null);
    }
    if taints_changed {
        spec.insert(
            "taints".into(),
            serde_json::to_value(&taints).expect("taints serialize"),
        );
    }

    let mut patch = json!({});
    if !label_patch.is_empty() {
        patch["metadata"]["labels"] = Value::Object(std::mem::take(&mut label_patch));
    }
    if !annotation_patch.is_empty() {
        patch["metadata"]["annotations"] = Value::Object(annotation_patch);
    }
    if !spec.is_empty() {
        patch["spec"] = Value::Object(spec);
    }
    let empty = patch.as_object().is_some_and(Map::is_empty);
    ((!empty).then_some(patch), not_owned)
}

/// Bring Node `name` to `wanted`.
pub async fn apply(client: &Client, name: &str, wanted: &Wanted) -> Result<Outcome, String> {
    let api: Api<Node> = Api::all(client.clone());
    let node = api
        .get_opt(name)
        .await
        .map_err(|e| format!("node {name}: {}", describe(&e)))?
        .ok_or_else(|| format!("node {name} is not registered yet"))?;
    let (patch, not_owned) = patch_for(&node, wanted);
    if let Some(patch) = &patch {
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| format!("node {name}: {}", describe(&e)))?;
    }
    Ok(Outcome {
        patched: patch.is_some(),
        not_owned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::fake::FakeApi;

    fn wanted(labels: &[(&str, &str)], taints: &[(&str, &str, &str)]) -> Wanted {
        Wanted {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            taints: taints
                .iter()
                .map(|(k, v, e)| (k.to_string(), v.to_string(), e.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn node(api: &FakeApi) -> Value {
        api.get("", "nodes", "", "n1").unwrap()
    }

    #[tokio::test]
    async fn labels_and_taints_follow_the_config_and_leave_others_alone() {
        let api = FakeApi::new();
        api.insert(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1",
            "labels": {"kubernetes.io/hostname": "n1", "team": "storage"}},
            "spec": {"taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]}}),
        );
        let client = api.client();

        // The config sets two labels (one clashes with someone else's) and a taint.
        let w = wanted(
            &[("rack", "r1"), ("team", "gpu")],
            &[("dedicated", "gpu", "NoExecute")],
        );
        let out = apply(&client, "n1", &w).await.unwrap();
        assert!(out.patched);
        assert_eq!(
            out.not_owned,
            ["label \"team\" (set to \"storage\" by someone else)"]
        );
        let n = node(&api);
        assert_eq!(n["metadata"]["labels"]["rack"], "r1");
        assert_eq!(n["metadata"]["labels"]["team"], "storage");
        assert_eq!(n["metadata"]["annotations"][OWNED_LABELS], "[\"rack\"]");
        assert_eq!(
            n["metadata"]["annotations"][OWNED_TAINTS],
            "[\"dedicated\"]"
        );
        let taints = n["spec"]["taints"].as_array().unwrap();
        assert_eq!(taints.len(), 2);
        assert_eq!(
            taints[1],
            json!({"key": "dedicated", "value": "gpu", "effect": "NoExecute"})
        );
        let patch = api
            .requests()
            .into_iter()
            .rfind(|r| r.method == "PATCH")
            .unwrap();
        assert_eq!(patch.content_type, "application/merge-patch+json");

        // Nothing to change: no patch.
        let patches = api.calls("PATCH").len();
        assert!(!apply(&client, "n1", &w).await.unwrap().patched);
        assert_eq!(api.calls("PATCH").len(), patches);

        // The config drops the label and the taint: Talos's go, the others stay.
        let out = apply(&client, "n1", &wanted(&[], &[])).await.unwrap();
        assert!(out.patched && out.not_owned.is_empty());
        let n = node(&api);
        assert!(n["metadata"]["labels"].get("rack").is_none());
        assert_eq!(n["metadata"]["labels"]["team"], "storage");
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/hostname"], "n1");
        assert!(n["metadata"]["annotations"].get(OWNED_LABELS).is_none());
        assert_eq!(
            n["spec"]["taints"],
            json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}])
        );
    }

    #[tokio::test]
    async fn cordon_is_lifted_only_when_talos_set_it() {
        let api = FakeApi::new();
        api.insert(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}));
        let client = api.client();
        let cordon = Wanted {
            cordoned: true,
            ..Default::default()
        };
        apply(&client, "n1", &cordon).await.unwrap();
        assert_eq!(node(&api)["spec"]["unschedulable"], true);
        assert_eq!(node(&api)["metadata"]["annotations"][CORDONED], "true");
        apply(&client, "n1", &Wanted::default()).await.unwrap();
        assert!(node(&api)["spec"].get("unschedulable").is_none());

        // Cordoned by an operator: Talos leaves it so.
        api.insert(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}, "spec": {"unschedulable": true}}));
        assert!(
            !apply(&client, "n2", &Wanted::default())
                .await
                .unwrap()
                .patched
        );
        assert_eq!(
            apply(&client, "nope", &Wanted::default())
                .await
                .unwrap_err(),
            "node nope is not registered yet"
        );
    }
}
