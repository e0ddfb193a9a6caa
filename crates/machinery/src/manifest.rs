//! Manifests as users write them (multi-document YAML, `kind: List`) split into the objects
//! they hold, each checked for what applying it needs; errors name the manifest and line.

use serde_json::Value;

/// A manifest that cannot be applied, said with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest {manifest:?}: line {line}: {message}")]
pub struct Invalid {
    pub manifest: String,
    pub line: usize,
    pub message: String,
}

/// The objects of manifest `name`: documents in order, the items of a `List` in its place;
/// empty documents (`---` alone, comments) are skipped.
pub fn objects(name: &str, text: &str) -> Result<Vec<Value>, Invalid> {
    let invalid = |line: usize, message: String| Invalid {
        manifest: name.to_string(),
        line,
        message,
    };
    let docs = crate::yaml::parse_stream(text).map_err(|e| invalid(e.pos.line, e.message))?;
    let mut out = Vec::new();
    for doc in docs {
        let line = doc.start.line;
        match &doc.value {
            Value::Null => continue,
            Value::Object(_) => {}
            other => {
                return Err(invalid(
                    line,
                    format!("a Kubernetes object is a mapping, not {}", kind_of(other)),
                ))
            }
        }
        let items: Vec<(String, &Value)> = if is_list(&doc.value) {
            doc.value
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, v)| (format!("items[{i}]"), v))
                .collect()
        } else {
            vec![(String::new(), &doc.value)]
        };
        for (path, object) in items {
            let line = doc.positions.lookup(&path).map_or(line, |p| p.line);
            check(object).map_err(|m| invalid(line, m))?;
            out.push(object.clone());
        }
    }
    Ok(out)
}

fn is_list(v: &Value) -> bool {
    v.get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k == "List" || k.ends_with("List") && v.get("items").is_some())
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "a list",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        _ => "that",
    }
}

/// What the API needs of an object to apply it: apiVersion, kind and metadata.name.
fn check(object: &Value) -> Result<(), String> {
    let text = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or("");
    for (pointer, field) in [
        ("/apiVersion", "apiVersion"),
        ("/kind", "kind"),
        ("/metadata/name", "metadata.name"),
    ] {
        if text(pointer).is_empty() {
            let what = match text("/kind") {
                "" => "an object".to_string(),
                k => format!("a {k}"),
            };
            return Err(format!("{what} without {field}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_lists_and_empty_documents() {
        let text = "# leading comment\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ci\n---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: ci\n";
        let objs = objects("ci", text).unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[1]["metadata"]["name"], "a");

        let list = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/conformance/k8s/adapters/list.yaml"
        ))
        .unwrap();
        let objs = objects("ccm", &list).unwrap();
        let names: Vec<_> = objs.iter().map(|o| o["metadata"]["name"].clone()).collect();
        assert_eq!(
            names,
            [
                "system:cloud-node-controller",
                "system:cloud-controller-manager"
            ]
        );
    }

    #[test]
    fn errors_name_the_manifest_and_line() {
        let e = objects(
            "cilium",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [a\n",
        )
        .unwrap_err();
        assert_eq!(e.manifest, "cilium");
        assert!(e.line >= 4, "{e}");
        let e = objects("x", "apiVersion: v1\nkind: Secret\nmetadata:\n  name: a\n---\nkind: Pod\nmetadata:\n  name: b\n")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "manifest \"x\": line 6: a Pod without apiVersion"
        );
        let e = objects("y", "just text\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "manifest \"y\": line 1: a Kubernetes object is a mapping, not a string"
        );
    }
}
