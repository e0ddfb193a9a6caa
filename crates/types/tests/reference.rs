//! Every type the node registers matches upstream's (`../shared/reference/resources.yaml`):
//! namespace, aliases, `talosctl get` columns and sensitivity.

use serde_json::Value;

fn reference() -> Option<Value> {
    machinery::yaml::reference("resources.yaml")
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
