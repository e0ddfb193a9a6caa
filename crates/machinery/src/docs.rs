//! Documentation comments for generated configs (`gen config --with-docs`, `--with-examples`).
//! The text lives in `config/shapes/docs.txt`; comments never change what the config loads as.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::config::{shaped_text, ty_at, Config, DocId, ShapeHints, Shapes, Ty};
use crate::yaml::{self, Annotator};

#[derive(Default)]
struct Docs {
    fields: HashMap<(String, String), String>,
    kinds: HashMap<String, String>,
    examples: HashMap<(String, String), Value>,
}

fn docs() -> &'static Docs {
    static DOCS: OnceLock<Docs> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut d = Docs::default();
        for line in include_str!("config/shapes/docs.txt").lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, text) = line.split_once(": ").expect("docs line `key: text`");
            if let Some(kind) = key.strip_prefix("kind ") {
                d.kinds.insert(kind.into(), text.into());
            } else if let Some(field) = key.strip_prefix("example ") {
                let (s, f) = field.rsplit_once('.').expect("STRUCT.FIELD");
                let v = serde_json::from_str(text).expect("example is JSON");
                d.examples.insert((s.into(), f.into()), v);
            } else {
                let (s, f) = key.rsplit_once('.').expect("STRUCT.FIELD");
                d.fields.insert((s.into(), f.into()), text.into());
            }
        }
        d
    })
}

struct DocAnnotator {
    root: Ty,
    examples: bool,
}

impl DocAnnotator {
    /// The type of the mapping that holds the last key of `path`, and that key.
    fn parent_struct<'p>(&self, path: &'p [String]) -> Option<(String, &'p str)> {
        let (last, parents) = path.split_last()?;
        match ty_at(&self.root, parents)?.0 {
            Ty::Struct(name) => Some((name, last.as_str())),
            _ => None,
        }
    }
}

impl Annotator for DocAnnotator {
    fn verbatim(&self, path: &[String], value: &Value) -> Option<String> {
        shaped_text(&self.root, path, value)
    }

    fn doc(&self, path: &[String]) -> Option<String> {
        let (s, f) = self.parent_struct(path)?;
        docs().fields.get(&(s, f.to_string())).cloned()
    }

    fn examples(&self, path: &[String], present: &Map<String, Value>) -> Vec<(String, String)> {
        if !self.examples {
            return Vec::new();
        }
        let Some((Ty::Struct(name), _)) = ty_at(&self.root, path) else {
            return Vec::new();
        };
        Shapes::get()
            .fields(&name)
            .iter()
            .filter(|f| !present.contains_key(&f.name))
            .filter_map(|f| {
                let key = (name.clone(), f.name.clone());
                let example = docs().examples.get(&key)?;
                let doc = docs()
                    .fields
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| f.name.clone());
                let mut m = Map::new();
                m.insert(f.name.clone(), example.clone());
                let hints = ShapeHints(Ty::Struct(name.clone()));
                let text = yaml::to_string_annotated(&Value::Object(m), Some(&hints));
                Some((format!("{doc} For example:"), text))
            })
            .collect()
    }
}

/// Encode a config with documentation comments (and commented examples of unset fields).
pub fn encode_with_docs(cfg: &Config, examples: bool) -> String {
    let parts: Vec<String> = cfg
        .documents()
        .iter()
        .map(|d| {
            let Some(root) = d.id.root_ty() else {
                return d.encode();
            };
            let ann = DocAnnotator {
                root: root.clone(),
                examples,
            };
            let mut text = String::new();
            if let DocId::Kind { kind, .. } = &d.id {
                if let Some(k) = docs().kinds.get(kind) {
                    text.push_str(&format!("# {k}\n"));
                }
            }
            text.push_str(&yaml::to_string_annotated(&d.value, Some(&ann)));
            text
        })
        .collect();
    parts.join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{generate, Contract, GenOptions, MachineType};
    use crate::secrets::SecretsBundle;

    #[test]
    fn documented_configs_load_unchanged() {
        let secrets = SecretsBundle::generate().unwrap();
        for minor in [8, 13, 15] {
            let mut o = GenOptions::new("demo", "https://10.5.0.2:6443");
            o.contract = format!("v1.{minor}").parse::<Contract>().unwrap();
            for ty in [MachineType::ControlPlane, MachineType::Worker] {
                let cfg = generate(&secrets, &o, ty).unwrap();
                let text = encode_with_docs(&cfg, true);
                assert!(
                    text.contains("# Settings of this machine.\nmachine:"),
                    "{text}"
                );
                let back = Config::parse(&text).unwrap();
                assert_eq!(back, cfg, "v1.{minor} {ty:?}");
            }
        }
    }

    #[test]
    fn docs_name_real_fields() {
        for (s, f) in docs().fields.keys().chain(docs().examples.keys()) {
            assert!(
                Shapes::get().field(s, f).is_some(),
                "{s}.{f} is not a field"
            );
        }
        for k in docs().kinds.keys() {
            assert!(Shapes::get().kinds.contains_key(k), "{k} is not a kind");
        }
    }
}
