//! Display types and aliases match upstream's for every resource type Talos registers
//! (`../shared/reference/resources.yaml`), and ambiguous aliases are reported as such.

use resources::{display_type, explicit_aliases, fill_aliases, Definition, Registry, State};
use serde_json::Value;

fn reference() -> Option<Value> {
    machinery::yaml::reference("resources.yaml")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn all_types(r: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for group in r["resources_by_group"].as_object().unwrap().values() {
        out.extend(group.as_array().unwrap());
    }
    out
}

#[test]
fn display_types_and_aliases_match_upstream() {
    let Some(r) = reference() else { return };
    let types = all_types(&r);
    assert!(types.len() > 190, "{}", types.len());
    let mut wrong = Vec::new();
    for t in types {
        let ty = t["type"].as_str().unwrap();
        let explicit = strings(&t["aliases"]);
        let explicit: Vec<&str> = explicit.iter().map(String::as_str).collect();
        let (after_fill, all) = if t["skip_automatic_aliases"] == Value::Bool(true) {
            explicit_aliases(&explicit)
        } else {
            fill_aliases(ty, &explicit)
        };
        if display_type(ty) != t["display_type"].as_str().unwrap() {
            wrong.push(format!(
                "{ty}: display {} != {}",
                display_type(ty),
                t["display_type"]
            ));
        }
        if after_fill != strings(&t["aliases_after_fill"]) || all != strings(&t["all_aliases"]) {
            wrong.push(format!(
                "{ty}: aliases {all:?} != {:?}",
                strings(&t["all_aliases"])
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn ambiguous_aliases_are_reported() {
    let Some(r) = reference() else { return };
    let registry = Registry::new(State::new()).unwrap();
    for t in all_types(&r) {
        if t["registered"] == Value::Bool(false) {
            continue;
        }
        let explicit = strings(&t["aliases"]);
        let explicit: Vec<&str> = explicit.iter().map(String::as_str).collect();
        let mut def = Definition::new(
            t["type"].as_str().unwrap(),
            t["default_namespace"].as_str().unwrap(),
            &explicit,
        );
        if t["skip_automatic_aliases"] == Value::Bool(true) {
            def = def.without_automatic_aliases(&explicit);
        }
        registry.register(def).unwrap();
    }
    for (alias, types) in r["ambiguous_aliases"].as_object().unwrap() {
        let e = registry.resolve(alias).unwrap_err().to_string();
        assert!(e.contains("is ambiguous"), "{alias}: {e}");
        for ty in strings(types) {
            assert!(e.contains(&ty), "{alias}: {ty} not in {e}");
        }
    }
    assert_eq!(
        registry.resolve("addresses").unwrap().ty,
        "AddressStatuses.net.talos.dev"
    );
    assert_eq!(
        registry.resolve("AddressStatus").unwrap().ty,
        "AddressStatuses.net.talos.dev"
    );
    assert_eq!(
        registry.resolve("rd").unwrap().ty,
        "ResourceDefinitions.meta.cosi.dev"
    );
}
