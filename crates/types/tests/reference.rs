//! Every type the node registers matches upstream's (`../shared/reference/resources.yaml`):
//! namespace, aliases, `talosctl get` columns and sensitivity.

use std::path::PathBuf;

use serde_json::Value;

fn reference() -> Option<Value> {
    let path = std::env::var_os("TALOS_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference")
        })
        .join("resources.yaml");
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(
            machinery::yaml::parse_stream(&text)
                .unwrap()
                .remove(0)
                .value,
        ),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("reference data missing at {}", path.display())
        }
        Err(_) => None,
    }
}

#[test]
fn registered_types_match_upstream() {
    let Some(r) = reference() else { return };
    let upstream: Vec<&Value> = r["resources_by_group"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|g| g.as_array().unwrap())
        .collect();
    let mut wrong = Vec::new();
    for def in types::definitions() {
        let Some(u) = upstream.iter().find(|u| u["type"] == def.ty.as_str()) else {
            // Types of this project's own (none upstream to match).
            continue;
        };
        let ours = serde_json::json!({
            "namespace": def.default_namespace,
            "aliases": def.all_aliases,
            "columns": def.print_columns.iter().map(|c| [&c.name, &c.json_path]).collect::<Vec<_>>(),
            "sensitive": def.sensitivity == "sensitive",
        });
        let theirs = serde_json::json!({
            "namespace": u["default_namespace"],
            "aliases": u["all_aliases"],
            "columns": u["print_columns"].as_array().unwrap().iter()
                .map(|c| [&c["name"], &c["jsonpath"]]).collect::<Vec<_>>(),
            "sensitive": u["sensitive"],
        });
        if ours != theirs {
            wrong.push(format!(
                "{}:\n  ours     {ours}\n  upstream {theirs}",
                def.ty
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
