//! `machineconfig diff A B`: a strategic patch that turns A into B, so that
//! `patch(A, diff(A, B)) == B`.
//!
//! Merging can add and change but not shrink a list in place, so a changed document becomes two
//! patch documents with the same identity: the first deletes what has to go (keys, and lists that
//! are not a plain extension of the old one), the second sets what is new or different.

use serde_json::{json, Map, Value};

use crate::config::{Config, DocId, Document, Shapes, Ty, PATCH_KEY};

fn delete() -> Value {
    json!({ PATCH_KEY: "delete" })
}

fn identity(id: &DocId) -> Map<String, Value> {
    match id {
        // A document without apiVersion and kind is the v1alpha1 one; naming its version here
        // would change it.
        DocId::V1Alpha1 => Map::new(),
        DocId::Kind {
            api_version,
            kind,
            name,
        } => {
            let mut m = Map::new();
            m.insert("apiVersion".into(), json!(api_version));
            m.insert("kind".into(), json!(kind));
            if let Some(n) = name {
                m.insert("name".into(), json!(n));
            }
            m
        }
    }
}

/// Field facts needed to know how a merge treats a value.
struct FieldInfo {
    ty: Ty,
    replace: bool,
    ptr: bool,
}

fn field_info(parent: &Ty, key: &str) -> FieldInfo {
    match parent {
        Ty::Struct(name) => match Shapes::get().field(name, key) {
            Some(f) => FieldInfo {
                ty: f.ty.clone(),
                replace: f.replace,
                ptr: f.ptr,
            },
            None => FieldInfo {
                ty: Ty::Any,
                replace: false,
                ptr: true,
            },
        },
        Ty::Map(inner) => FieldInfo {
            ty: (**inner).clone(),
            replace: false,
            ptr: true,
        },
        _ => FieldInfo {
            ty: Ty::Any,
            replace: false,
            ptr: true,
        },
    }
}

/// A value a merge would skip (zero scalars of non-pointer fields).
fn skipped_by_merge(v: &Value, f: &FieldInfo) -> bool {
    let zero = match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    };
    v.is_null() || (zero && !f.ptr && matches!(f.ty, Ty::String | Ty::Int | Ty::Float | Ty::Octal))
}

/// Compute `(deletions, changes)` for two objects of type `ty`.
fn diff_object(
    a: &Map<String, Value>,
    b: &Map<String, Value>,
    ty: &Ty,
) -> (Map<String, Value>, Map<String, Value>) {
    let mut del = Map::new();
    let mut set = Map::new();
    for k in a.keys() {
        if !b.contains_key(k) {
            del.insert(k.clone(), delete());
        }
    }
    for (k, bv) in b {
        let f = field_info(ty, k);
        let Some(av) = a.get(k) else {
            set.insert(k.clone(), bv.clone());
            continue;
        };
        if av == bv {
            continue;
        }
        if skipped_by_merge(bv, &f) {
            del.insert(k.clone(), delete());
            continue;
        }
        match (av, bv) {
            (Value::Object(am), Value::Object(bm))
                if !f.replace && !matches!(f.ty, Ty::List(_)) =>
            {
                let (d, s) = diff_object(am, bm, &f.ty);
                if !d.is_empty() {
                    del.insert(k.clone(), Value::Object(d));
                }
                if !s.is_empty() {
                    set.insert(k.clone(), Value::Object(s));
                }
            }
            (Value::Array(al), Value::Array(bl)) if !f.replace => {
                let keyed = matches!(&f.ty, Ty::List(_)) && keyed_list(ty, k);
                if !keyed && bl.len() > al.len() && bl[..al.len()] == al[..] {
                    set.insert(k.clone(), Value::Array(bl[al.len()..].to_vec()));
                } else {
                    del.insert(k.clone(), delete());
                    set.insert(k.clone(), bv.clone());
                }
            }
            _ if f.replace
                || !(av.is_object() || av.is_array() || bv.is_object() || bv.is_array()) =>
            {
                set.insert(k.clone(), bv.clone());
            }
            _ => {
                del.insert(k.clone(), delete());
                set.insert(k.clone(), bv.clone());
            }
        }
    }
    (del, set)
}

fn keyed_list(parent: &Ty, key: &str) -> bool {
    match parent {
        Ty::Struct(name) => Shapes::get()
            .field(name, key)
            .is_some_and(|f| !f.keys.is_empty()),
        _ => false,
    }
}

/// The patch documents turning `a` into `b`, in the order they must be applied. Documents keep
/// B's order: once B's order departs from A's, later documents are deleted and added whole.
pub fn diff_documents(a: &Config, b: &Config) -> Vec<Value> {
    let mut deletes = Vec::new();
    let mut changes = Vec::new();
    let delete_doc = |id: &DocId| {
        let mut m = identity(id);
        m.insert(PATCH_KEY.into(), json!("delete"));
        Value::Object(m)
    };
    for d in a.documents() {
        if b.document(&d.id).is_none() {
            deletes.push(delete_doc(&d.id));
        }
    }
    let survivors: Vec<&DocId> = a
        .documents()
        .iter()
        .map(|d| &d.id)
        .filter(|id| b.document(id).is_some())
        .collect();
    let mut next = 0;
    let mut in_order = true;
    for d in b.documents() {
        match a.document(&d.id) {
            None => {
                in_order = false;
                changes.push(d.value.clone());
            }
            Some(old) if in_order && survivors.get(next) == Some(&&d.id) => {
                next += 1;
                changes.extend(diff_document(old, d));
            }
            Some(_) => {
                in_order = false;
                deletes.push(delete_doc(&d.id));
                changes.push(d.value.clone());
            }
        }
    }
    deletes.extend(changes);
    deletes
}

fn diff_document(a: &Document, b: &Document) -> Vec<Value> {
    let ty = a.id.root_ty().expect("known document");
    let empty = Map::new();
    let (del, set) = diff_object(
        a.value.as_object().unwrap_or(&empty),
        b.value.as_object().unwrap_or(&empty),
        &ty,
    );
    let mut out = Vec::new();
    for part in [del, set] {
        if !part.is_empty() {
            let mut m = identity(&a.id);
            m.extend(part);
            out.push(Value::Object(m));
        }
    }
    out
}

/// The patch as YAML text (multi-document), empty when A and B are the same.
pub fn diff(a: &Config, b: &Config) -> String {
    diff_documents(a, b)
        .iter()
        .map(crate::yaml::to_string)
        .collect::<Vec<_>>()
        .join("---\n")
}
