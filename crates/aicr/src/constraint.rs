//! Constraints checked against a snapshot of the cluster: a YAML map such as
//! `{OS: {release: {ID: talos}}, K8s: {server: {version: v1.32.1}}, Kernel: {version: 6.12.1}}`.
//! A constraint's name is the path of a value in it (segments matched ignoring case); its
//! value an operator (`>=`, `<=`, `>`, `<`, `==`, `!=`) and an operand, or an exact value.
//! Versions compare by their numbers (`v1.32.1-talos` is 1.32.1).

use std::cmp::Ordering;

use serde_json::Value;

use crate::{Constraint, Result};

const OPERATORS: [&str; 6] = [">=", "<=", "!=", "==", ">", "<"];

/// Check every constraint against the snapshot; the first one not met is the error, with what
/// the snapshot has.
pub fn check(constraints: &[Constraint], snapshot: &Value) -> Result<()> {
    for c in constraints {
        let (op, want) = split(&c.value);
        let shown = format!("{} {op} {want}", c.name);
        let have = lookup(snapshot, &c.name).ok_or_else(|| {
            format!(
                "constraint {shown} cannot be checked: the snapshot has no {}",
                c.name
            )
        })?;
        let ok = match (version(&have), version(want)) {
            (Some(h), Some(w)) => holds(op, compare(&h, &w)),
            _ if op == "==" => have == want,
            _ if op == "!=" => have != want,
            _ => {
                return Err(format!(
                    "constraint {shown}: {op} compares versions, and \"{have}\" or \"{want}\" is not one"
                ))
            }
        };
        if !ok {
            return Err(format!(
                "constraint {shown} is not met: the snapshot has {} = {have}",
                c.name
            ));
        }
    }
    Ok(())
}

fn split(value: &str) -> (&'static str, &str) {
    let v = value.trim();
    OPERATORS
        .iter()
        .find_map(|op| v.strip_prefix(op).map(|rest| (*op, rest.trim())))
        .unwrap_or(("==", v))
}

/// The snapshot's value at a dotted path, segments matched ignoring case.
fn lookup(snapshot: &Value, path: &str) -> Option<String> {
    let mut cur = snapshot;
    for seg in path.split('.') {
        cur = cur
            .as_object()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(seg))
            .map(|(_, v)| v)?;
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `v1.32.1-talos` → [1, 32, 1]; none when it does not start with a number.
fn version(s: &str) -> Option<Vec<u64>> {
    let s = s.trim().trim_start_matches(['v', 'V']);
    let numeric: String = s
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let parts: Vec<u64> = numeric
        .split('.')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    (!parts.is_empty()).then_some(parts)
}

fn compare(a: &[u64], b: &[u64]) -> Ordering {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            a.get(i)
                .copied()
                .unwrap_or(0)
                .cmp(&b.get(i).copied().unwrap_or(0))
        })
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

fn holds(op: &str, o: Ordering) -> bool {
    match op {
        ">=" => o.is_ge(),
        "<=" => o.is_le(),
        ">" => o.is_gt(),
        "<" => o.is_lt(),
        "!=" => o.is_ne(),
        _ => o.is_eq(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, value: &str) -> Constraint {
        Constraint {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn operators_versions_and_exact_values() {
        let snap = serde_json::json!({
            "OS": {"release": {"ID": "talos", "VERSION_ID": "v1.11.2"}},
            "k8s": {"server": {"version": "v1.32.4"}},
            "gpu": {"count": 8}
        });
        for ok in [
            c("OS.release.ID", "talos"),
            c("os.release.id", "== talos"),
            c("OS.release.ID", "!= ubuntu"),
            c("K8s.server.version", ">= 1.30"),
            c("K8s.server.version", "< 1.33.0"),
            c("K8s.server.version", "> v1.32.3"),
            c("K8s.server.version", "<= 1.32.4"),
            c("GPU.count", ">= 8"),
        ] {
            check(std::slice::from_ref(&ok), &snap).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        let err = check(&[c("OS.release.ID", "== ubuntu")], &snap).unwrap_err();
        assert_eq!(
            err,
            "constraint OS.release.ID == ubuntu is not met: the snapshot has OS.release.ID = talos"
        );
        let err = check(&[c("Kernel.version", ">= 6.1")], &snap).unwrap_err();
        assert!(err.contains("the snapshot has no Kernel.version"), "{err}");
        let err = check(&[c("OS.release.ID", ">= 2")], &snap).unwrap_err();
        assert!(err.contains("compares versions"), "{err}");
    }
}
