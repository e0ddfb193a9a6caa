//! Document shapes: the typed description of every config document (field order, types, omit
//! rules, merge rules). They drive strict checking, the canonical encoding and patch merging.
//!
//! The v1alpha1 shapes are written by hand (`shapes/v1alpha1.shape`); the multi-document kinds are
//! generated from the published config schema (`shapes/multidoc.shape`, see `tools/gen-shapes.py`).

use std::cmp::Ordering;
use std::sync::OnceLock;

use serde_json::{Map, Value};

pub use super::dsl::{Field, ShapeSet as Shapes, Ty};

impl Shapes {
    pub fn get() -> &'static Shapes {
        static SHAPES: OnceLock<Shapes> = OnceLock::new();
        SHAPES.get_or_init(|| {
            let mut s = Shapes::default();
            s.parse(include_str!("shapes/multidoc.shape"));
            s.parse(include_str!("shapes/multidoc-extra.shape"));
            s.parse(include_str!("shapes/v1alpha1.shape"));
            s
        })
    }

    pub fn fields(&self, name: &str) -> &[Field] {
        self.structs.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn field(&self, name: &str, field: &str) -> Option<&Field> {
        self.fields(name).iter().find(|f| f.name == field)
    }
}

/// The key under which patches carry directives (`$patch: delete`).
pub const PATCH_KEY: &str = "$patch";

/// A problem found while checking a value against its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeProblem {
    pub path: String,
    pub message: String,
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// Check `v` against `ty`, collecting every problem. `allow_patch` accepts `$patch` directives.
pub fn check(v: &Value, ty: &Ty, path: &str, allow_patch: bool, out: &mut Vec<ShapeProblem>) {
    let mut bad = |expected: &str| {
        out.push(ShapeProblem {
            path: path.to_string(),
            message: format!("expected {expected}, found {}", type_name(v)),
        })
    };
    if v.is_null() {
        return;
    }
    if allow_patch && is_delete_directive(v) {
        return;
    }
    match ty {
        Ty::Any => {}
        Ty::String => {
            if v.is_array() || v.is_object() {
                bad("a string")
            }
        }
        Ty::Bool => {
            if !v.is_boolean() {
                bad("a boolean (true or false)")
            }
        }
        Ty::Int | Ty::Octal => {
            if !(v.is_i64() || v.is_u64()) {
                bad("an integer")
            }
        }
        Ty::Float => {
            if !v.is_number() {
                bad("a number")
            }
        }
        Ty::List(inner) => match v.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    check(item, inner, &format!("{path}[{i}]"), allow_patch, out);
                }
            }
            None => bad("a list"),
        },
        Ty::Map(inner) => match v.as_object() {
            Some(m) => {
                for (k, item) in m {
                    check(item, inner, &join(path, k), allow_patch, out);
                }
            }
            None => bad("a mapping"),
        },
        Ty::Struct(name) => match v.as_object() {
            Some(m) => {
                let shapes = Shapes::get();
                for (k, item) in m {
                    if allow_patch && k == PATCH_KEY {
                        continue;
                    }
                    match shapes.field(name, k) {
                        Some(f) => check(item, &f.ty, &join(path, k), allow_patch, out),
                        None => out.push(ShapeProblem {
                            path: join(path, k),
                            message: format!(
                                "unknown field \"{k}\"{}",
                                crate::suggest::suggestion(
                                    k,
                                    shapes.fields(name).iter().map(|f| f.name.as_str())
                                )
                            ),
                        }),
                    }
                }
            }
            None => bad("a mapping"),
        },
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
    }
}

fn zero_of(ty: &Ty) -> Value {
    match ty {
        Ty::String => Value::String(String::new()),
        Ty::Bool => Value::Bool(false),
        Ty::Int | Ty::Float | Ty::Octal => Value::from(0),
        Ty::List(_) => Value::Array(Vec::new()),
        Ty::Map(_) => Value::Object(Map::new()),
        Ty::Any | Ty::Struct(_) => Value::Null,
    }
}

/// The canonical form of a checked value: fields in shape order, omitted where Talos omits them,
/// maps sorted the way go-yaml sorts them, scalars in string fields turned into strings.
pub fn canonical(v: &Value, ty: &Ty) -> Value {
    match (ty, v) {
        // Talos drops the leading empty lines of multi-line strings (block scalars).
        (Ty::String, Value::String(s)) if s.starts_with('\n') => {
            Value::String(s.trim_start_matches('\n').to_string())
        }
        (Ty::String, Value::Number(n)) => Value::String(n.to_string()),
        (Ty::String, Value::Bool(b)) => Value::String(b.to_string()),
        (Ty::List(inner), Value::Array(items)) => {
            Value::Array(items.iter().map(|i| canonical(i, inner)).collect())
        }
        (Ty::Map(inner), Value::Object(m)) => sorted(m, |x| canonical(x, inner)),
        (Ty::Any, Value::Object(m)) => sorted(m, |x| canonical(x, &Ty::Any)),
        (Ty::Any, Value::Array(items)) => {
            Value::Array(items.iter().map(|i| canonical(i, &Ty::Any)).collect())
        }
        (Ty::Struct(name), Value::Object(m)) => {
            let mut out = Map::new();
            for f in Shapes::get().fields(name) {
                match m.get(&f.name) {
                    Some(x) if !x.is_null() => {
                        let x = canonical(x, &f.ty);
                        let keep = f.always
                            || match &f.ty {
                                Ty::Struct(_) | Ty::Any => true,
                                _ => f.ptr || !is_zero(&x),
                            };
                        if keep {
                            out.insert(f.name.clone(), x);
                        }
                    }
                    _ if f.always => {
                        out.insert(f.name.clone(), zero_of(&f.ty));
                    }
                    _ => {}
                }
            }
            Value::Object(out)
        }
        _ => v.clone(),
    }
}

fn sorted(m: &Map<String, Value>, f: impl Fn(&Value) -> Value) -> Value {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort_by(|a, b| go_key_order(a, b));
    Value::Object(keys.into_iter().map(|k| (k.clone(), f(&m[k]))).collect())
}

/// The order go-yaml gives map keys: character by character, with runs of digits compared as
/// numbers and letters placed around other characters the way its sorter does.
pub fn go_key_order(a: &str, b: &str) -> Ordering {
    let ar: Vec<char> = a.chars().collect();
    let br: Vec<char> = b.chars().collect();
    let mut digits = false;
    let n = ar.len().min(br.len());
    for i in 0..n {
        if ar[i] == br[i] {
            digits = ar[i].is_ascii_digit();
            continue;
        }
        let al = ar[i].is_alphabetic();
        let bl = br[i].is_alphabetic();
        if al && bl {
            return ar[i].cmp(&br[i]);
        }
        if al || bl {
            let a_first = if digits { al } else { bl };
            return if a_first {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        let (mut an, mut bn) = (0i128, 0i128);
        if ar[i] == '0' || br[i] == '0' {
            let mut j = i;
            while j > 0 && ar[j - 1].is_ascii_digit() {
                j -= 1;
                if ar[j] != '0' {
                    an = 1;
                    bn = 1;
                    break;
                }
            }
        }
        let mut ai = i;
        while ai < ar.len() && ar[ai].is_ascii_digit() {
            an = an * 10 + (ar[ai] as i128 - '0' as i128);
            ai += 1;
        }
        let mut bi = i;
        while bi < br.len() && br[bi].is_ascii_digit() {
            bn = bn * 10 + (br[bi] as i128 - '0' as i128);
            bi += 1;
        }
        if an != bn {
            return an.cmp(&bn);
        }
        if ai != bi {
            return ai.cmp(&bi);
        }
        return ar[i].cmp(&br[i]);
    }
    ar.len().cmp(&br.len())
}

/// Whether `v` is `{$patch: delete, ...}`.
pub fn is_delete_directive(v: &Value) -> bool {
    v.get(PATCH_KEY).and_then(Value::as_str) == Some("delete")
}

/// Remove every `$patch` directive from a value (what remains when a patch adds new content).
pub fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, x)| *k != PATCH_KEY && !is_delete_directive(x))
                .map(|(k, x)| (k.clone(), strip_directives(x)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|x| !is_delete_directive(x))
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The path of the first delete directive inside `v`: on new content it has nothing to delete.
fn first_directive(v: &Value, path: &str) -> Option<String> {
    match v {
        Value::Object(m) => m.iter().find_map(|(k, x)| {
            let sub = join(path, k);
            if is_delete_directive(x) {
                Some(sub)
            } else {
                first_directive(x, &sub)
            }
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| first_directive(x, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// A failed delete directive: the path that was not there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingPath(pub String);

/// Strategic merge of `right` into `left`, both of type `ty`.
pub fn merge(left: &mut Value, right: &Value, ty: &Ty, path: &str) -> Result<(), MissingPath> {
    match (ty, right) {
        (Ty::Struct(_) | Ty::Map(_) | Ty::Any, Value::Object(rm)) => {
            if !left.is_object() {
                *left = Value::Object(Map::new());
            }
            for (k, rv) in rm {
                if k == PATCH_KEY {
                    continue;
                }
                let field = match ty {
                    Ty::Struct(name) => Shapes::get().field(name, k).cloned(),
                    Ty::Map(inner) => Some(plain_field(k, inner)),
                    _ => Some(plain_field(k, &Ty::Any)),
                };
                let Some(field) = field else { continue };
                let lm = left.as_object_mut().expect("object");
                let sub = join(path, k);
                if is_delete_directive(rv) {
                    if lm.shift_remove(k).is_none() {
                        return Err(MissingPath(sub));
                    }
                    continue;
                }
                if rv.is_null() {
                    continue;
                }
                let skip_zero = !field.ptr
                    && matches!(field.ty, Ty::String | Ty::Int | Ty::Float | Ty::Octal)
                    && is_zero(rv);
                if skip_zero {
                    continue;
                }
                match lm.get_mut(k) {
                    Some(lv) if !lv.is_null() && !field.replace => {
                        merge_field(lv, rv, &field, &sub)?
                    }
                    _ => {
                        if let Some(missing) = first_directive(rv, &sub) {
                            return Err(MissingPath(missing));
                        }
                        lm.insert(k.clone(), strip_directives(rv));
                    }
                }
            }
            Ok(())
        }
        _ => {
            *left = strip_directives(right);
            Ok(())
        }
    }
}

fn plain_field(name: &str, ty: &Ty) -> Field {
    Field {
        name: name.into(),
        ty: ty.clone(),
        always: false,
        ptr: true,
        replace: false,
        flow: false,
        secret: false,
        redact_key: None,
        keys: Vec::new(),
    }
}

pub const REDACTED: &str = "REDACTED";

/// Replace every secret of a canonical value by `REDACTED`.
pub fn redact(v: &mut Value, ty: &Ty) {
    match (ty, v) {
        (Ty::List(inner) | Ty::Map(inner), Value::Array(items)) => {
            items.iter_mut().for_each(|x| redact(x, inner))
        }
        (Ty::Map(inner), Value::Object(m)) => m.values_mut().for_each(|x| redact(x, inner)),
        (Ty::Struct(name), Value::Object(m)) => {
            for (k, x) in m.iter_mut() {
                let Some(f) = Shapes::get().field(name, k) else {
                    continue;
                };
                if f.secret && !is_zero(x) {
                    *x = Value::String(REDACTED.into());
                } else if let Some(key) = &f.redact_key {
                    redact_named(x, key);
                } else {
                    redact(x, &f.ty);
                }
            }
        }
        _ => {}
    }
}

fn redact_named(v: &mut Value, key: &str) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == key {
                    *x = Value::String(REDACTED.into());
                } else {
                    redact_named(x, key);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|x| redact_named(x, key)),
        _ => {}
    }
}

/// The type at `path` (keys, `[]` for list items) below `root`, and the field that holds it.
pub fn ty_at(root: &Ty, path: &[String]) -> Option<(Ty, Option<Field>)> {
    let mut ty = root.clone();
    let mut field = None;
    for seg in path {
        let (next, f) = match (&ty, seg.as_str()) {
            (Ty::List(inner), "[]") => ((**inner).clone(), None),
            (Ty::Map(inner), _) => ((**inner).clone(), None),
            (Ty::Struct(name), key) => {
                let f = Shapes::get().field(name, key)?;
                (f.ty.clone(), Some(f.clone()))
            }
            _ => return None,
        };
        ty = next;
        field = f;
    }
    Some((ty, field))
}

/// The written form a shape gives a value: octal for file modes, flow style for flow lists.
pub fn shaped_text(root: &Ty, path: &[String], v: &Value) -> Option<String> {
    let (ty, field) = ty_at(root, path)?;
    match (ty, v) {
        (Ty::Octal, Value::Number(n)) => n.as_u64().map(|u| format!("0o{u:o}")),
        (Ty::List(_), Value::Array(items)) if field.is_some_and(|f| f.flow) => {
            let parts: Vec<String> = items.iter().map(|i| i.to_string()).collect();
            Some(format!("[{}]", parts.join(",")))
        }
        _ => None,
    }
}

/// Writer hints from a document's shape.
pub struct ShapeHints(pub Ty);

impl crate::yaml::Annotator for ShapeHints {
    fn verbatim(&self, path: &[String], value: &Value) -> Option<String> {
        shaped_text(&self.0, path, value)
    }
}

fn merge_field(left: &mut Value, right: &Value, f: &Field, path: &str) -> Result<(), MissingPath> {
    let inner = match (&f.ty, right.as_array()) {
        (Ty::List(inner), Some(_)) => inner.as_ref().clone(),
        (Ty::Any, Some(_)) => Ty::Any,
        _ => return merge(left, right, &f.ty, path),
    };
    let ritems = right.as_array().expect("checked above");
    let Some(litems) = left.as_array_mut() else {
        *left = strip_directives(right);
        return Ok(());
    };
    for ritem in ritems {
        if is_delete_directive(ritem) {
            let selector: Vec<(&String, &Value)> = ritem
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| *k != PATCH_KEY)
                .collect();
            let before = litems.len();
            litems.retain(|l| !selector.iter().all(|(k, v)| l.get(k.as_str()) == Some(v)));
            if litems.len() == before {
                let what = selector
                    .first()
                    .map(|(k, v)| format!("{k}={v}"))
                    .unwrap_or_default();
                return Err(MissingPath(format!("{path}.[{what}]")));
            }
            continue;
        }
        let matched = f.keys.iter().find_map(|key| {
            let rk = ritem.get(key).filter(|v| !v.is_null())?;
            litems.iter().position(|l| l.get(key) == Some(rk))
        });
        match matched {
            Some(i) => merge(&mut litems[i], ritem, &inner, path)?,
            None => litems.push(strip_directives(ritem)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_load() {
        let s = Shapes::get();
        assert!(s.structs.contains_key("v1alpha1.Config"));
        assert!(s.kinds.contains_key("LinkConfig"));
        assert!(s.kinds.len() >= 88);
    }

    #[test]
    fn go_sort() {
        let mut keys = vec!["b10", "b9", "a-b", "a", "ab", "B"];
        keys.sort_by(|a, b| go_key_order(a, b));
        assert_eq!(keys, vec!["B", "a", "a-b", "ab", "b9", "b10"]);
    }

    #[test]
    fn check_reports_everything() {
        let ty = Ty::Struct("v1alpha1.Config".into());
        let v =
            json!({"machine": {"typo": 1, "install": {"wipe": "yes"}}, "cluster": {"bad": true}});
        let mut out = Vec::new();
        check(&v, &ty, "", false, &mut out);
        let paths: Vec<_> = out.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["machine.typo", "machine.install.wipe", "cluster.bad"]
        );
    }
}
