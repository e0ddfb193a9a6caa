//! YAML as Kubernetes tools write it (sigs.k8s.io/yaml): keys sorted, two-space indentation,
//! sequence items at their key's column, multi-line strings as literal blocks.

use serde_json::{Map, Value};

use machinery::yaml::scalar_str;

/// Encode `value` (any serializable Kubernetes object) as one YAML document.
pub fn to_string<T: serde::Serialize>(value: &T) -> String {
    let value = serde_json::to_value(value).unwrap_or(Value::Null);
    let mut out = String::new();
    match &value {
        Value::Object(m) if !m.is_empty() => map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => seq(&mut out, a, 0),
        other => {
            out.push_str(&inline(other).unwrap_or_else(|| literal(other, 0)));
            out.push('\n');
        }
    }
    out
}

fn map(out: &mut String, m: &Map<String, Value>, col: usize) {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    for (i, k) in keys.into_iter().enumerate() {
        // The first key of a sequence item follows its `- `.
        if !(i == 0 && out.ends_with("- ")) {
            pad(out, col);
        }
        out.push_str(&scalar_str(k));
        out.push(':');
        match &m[k] {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                map(out, inner, col + 2);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                seq(out, items, col);
            }
            other => scalar(out, other, col + 2),
        }
    }
}

fn seq(out: &mut String, items: &[Value], col: usize) {
    for item in items {
        pad(out, col);
        out.push('-');
        match item {
            Value::Object(m) if !m.is_empty() => {
                out.push(' ');
                map(out, m, col + 2);
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                seq(out, inner, col + 2);
            }
            other => scalar(out, other, col + 2),
        }
    }
}

/// ` value\n` after a `key:` or `-`.
fn scalar(out: &mut String, v: &Value, indent: usize) {
    out.push(' ');
    match inline(v) {
        Some(s) => out.push_str(&s),
        None => out.push_str(&literal(v, indent)),
    }
    out.push('\n');
}

fn inline(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.contains('\n') && literal_allowed(s) => return None,
        Value::String(s) => scalar_str(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    })
}

fn literal_allowed(s: &str) -> bool {
    !s.lines().any(|l| l.ends_with(' ') || l.ends_with('\t')) && !s.starts_with(' ')
}

/// A literal block (`|`, `|-` without a final newline, `|+` with several) indented by `indent`.
fn literal(v: &Value, indent: usize) -> String {
    let s = v.as_str().unwrap_or_default();
    let chomp = if !s.ends_with('\n') {
        "-"
    } else if s.ends_with("\n\n") {
        "+"
    } else {
        ""
    };
    let mut out = format!("|{chomp}");
    for line in s.trim_end_matches('\n').split('\n') {
        out.push('\n');
        if !line.is_empty() {
            pad(&mut out, indent);
            out.push_str(line);
        }
    }
    for _ in 1..s.len() - s.trim_end_matches('\n').len() {
        out.push('\n');
    }
    out
}

fn pad(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn sorts_keys_and_places_sequences_at_their_keys_column() {
        let v = json!({"b": [{"z": 1, "x": ["a", "b"]}], "a": {"d": "", "c": "1"}, "e": {}});
        assert_eq!(
            super::to_string(&v),
            "a:\n  c: \"1\"\n  d: \"\"\nb:\n- x:\n  - a\n  - b\n  z: 1\ne: {}\n"
        );
    }

    #[test]
    fn multi_line_strings_are_literal_blocks() {
        let v = json!({"data": {"Corefile": ".:53 {\n    errors\n}\n", "x": "a\nb"}});
        assert_eq!(
            super::to_string(&v),
            "data:\n  Corefile: |\n    .:53 {\n        errors\n    }\n  x: |-\n    a\n    b\n"
        );
    }
}
