//! Config patches: strategic merge patches (partial config documents, with `$patch: delete`)
//! and RFC 6902 JSON patches, loaded inline or from `@file`, applied in order.

use std::path::Path;

use serde_json::Value;

use crate::config::{
    self, canonical, is_delete_directive, merge, strip_directives, Config, Document, MissingPath,
    RawDocument,
};
use crate::error::{Error, Pos, Problem, Result};

/// One loaded patch.
#[derive(Debug, Clone)]
pub enum Patch {
    /// Partial documents merged into the matching documents.
    Strategic(Vec<RawDocument>),
    /// RFC 6902 operations on the single document of a config.
    Json(JsonPatch),
}

/// RFC 6902 operations, each remembering where it was written.
#[derive(Debug, Clone)]
pub struct JsonPatch {
    pub ops: json_patch::Patch,
    origins: Vec<(Option<String>, Option<Pos>)>,
}

impl JsonPatch {
    pub fn len(&self) -> usize {
        self.ops.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.0.is_empty()
    }

    fn in_file(mut self, file: &str) -> JsonPatch {
        for o in &mut self.origins {
            o.0.get_or_insert_with(|| file.to_string());
        }
        self
    }

    fn extend(&mut self, other: JsonPatch) {
        self.ops.0.extend(other.ops.0);
        self.origins.extend(other.origins);
    }

    fn apply(&self, value: &mut Value) -> Result<()> {
        json_patch::patch(value, &self.ops).map_err(|e| {
            let (file, pos) = self.origins.get(e.operation).cloned().unwrap_or_default();
            let mut p = Problem::new(format!(
                "JSON patch operation {} failed: {} (path {})",
                e.operation + 1,
                e.kind,
                e.path
            ))
            .at(pos);
            p.file = file;
            Error::from(p)
        })
    }
}

pub const JSON6902_MULTIDOC: &str =
    "JSON6902 patches are not supported for multi-document machine configuration";

impl Patch {
    /// Load a patch from text, trying a strategic patch first and a JSON patch second.
    pub fn parse(src: &str) -> Result<Patch> {
        let strategic = config::read_raw(src).and_then(|docs| {
            config::check_raw(&docs, true)?;
            Ok(docs)
        });
        let strategic_err = match strategic {
            Ok(docs) => return Ok(Patch::Strategic(docs)),
            Err(e) => e,
        };
        let docs = crate::yaml::parse_stream(src).map_err(|_| strategic_err.clone())?;
        let (value, positions) = match docs.as_slice() {
            [one] => (&one.value, &one.positions),
            _ => return Err(strategic_err),
        };
        let Some(items) = value.as_array() else {
            return Err(strategic_err);
        };
        let ops = serde_json::from_value::<json_patch::Patch>(value.clone())
            .map_err(|e| Error::msg(format!("invalid JSON patch: {e}")))?;
        let origins = (0..items.len())
            .map(|i| (None, positions.lookup(&format!("[{i}]"))))
            .collect();
        Ok(Patch::Json(JsonPatch { ops, origins }))
    }

    /// Load a patch given the way talosctl takes it: inline text, `@file`, or a bare file name.
    pub fn load(spec: &str) -> Result<Patch> {
        let file = spec.strip_prefix('@').or_else(|| {
            let bare =
                !spec.contains([' ', '\n']) && !spec.starts_with(['[', '{']) && !spec.is_empty();
            bare.then_some(spec)
        });
        match file {
            Some(path) => {
                let src = std::fs::read_to_string(Path::new(path))
                    .map_err(|e| Error::msg(format!("patch file {path}: {e}")))?;
                match Patch::parse(&src).map_err(|e| e.in_file(path))? {
                    Patch::Json(j) => Ok(Patch::Json(j.in_file(path))),
                    other => Ok(other),
                }
            }
            None => Patch::parse(spec),
        }
    }
}

/// Load several patches; consecutive JSON patches are joined into one.
pub fn load_patches<S: AsRef<str>>(specs: &[S]) -> Result<Vec<Patch>> {
    let mut out: Vec<Patch> = Vec::new();
    for spec in specs {
        let p = Patch::load(spec.as_ref())?;
        match (out.last_mut(), p) {
            (Some(Patch::Json(prev)), Patch::Json(next)) => prev.extend(next),
            (_, p) => out.push(p),
        }
    }
    Ok(out)
}

/// Apply patches in order.
pub fn apply(mut cfg: Config, patches: &[Patch]) -> Result<Config> {
    let target = cfg.documents_mut();
    for p in patches {
        match p {
            Patch::Json(ops) => {
                if target.len() > 1 {
                    return Err(Error::msg(JSON6902_MULTIDOC));
                }
                let mut value = target
                    .pop()
                    .map(|d| d.value)
                    .unwrap_or_else(|| serde_json::json!({"version": "v1alpha1"}));
                ops.apply(&mut value)?;
                target.push(Document::from_value(value)?);
            }
            Patch::Strategic(docs) => {
                for d in docs {
                    apply_document(target, d)?;
                }
            }
        }
    }
    Ok(cfg)
}

fn apply_document(docs: &mut Vec<Document>, d: &RawDocument) -> Result<()> {
    if is_delete_directive(&d.value) {
        docs.retain(|x| x.id != d.id);
        return Ok(());
    }
    let ty = d.id.root_ty().expect("identified documents have shapes");
    match docs.iter_mut().find(|x| x.id == d.id) {
        Some(target) => {
            merge(&mut target.value, &d.value, &ty, "").map_err(|MissingPath(p)| {
                Error::msg(format!(
                    "patch delete: path '{p}' in document '{}': failed to delete path '{p}': lookup failed",
                    d.id
                ))
            })?;
            target.value = canonical(&target.value, &ty);
        }
        None => {
            let value = strip_directives(&d.value);
            docs.push(Document {
                id: d.id.clone(),
                value: canonical(&value, &ty),
            });
        }
    }
    Ok(())
}

/// The selectors of `$patch: delete` directives in a raw document, as `(path, selector)` pairs,
/// and the document left once they are taken out.
pub fn delete_selectors(value: &Value) -> (Vec<(String, Value)>, Value) {
    fn walk(v: &Value, path: &str, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let sub = config::join_path(path, k);
                    if is_delete_directive(x) {
                        out.push((sub, x.clone()));
                    } else {
                        walk(x, &sub, out);
                    }
                }
            }
            Value::Array(items) => {
                for (i, x) in items.iter().enumerate() {
                    let sub = format!("{path}[{i}]");
                    if is_delete_directive(x) {
                        out.push((sub, x.clone()));
                    } else {
                        walk(x, &sub, out);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if is_delete_directive(value) {
        return (vec![(String::new(), value.clone())], Value::Null);
    }
    walk(value, "", &mut out);
    (out, strip_directives(value))
}
