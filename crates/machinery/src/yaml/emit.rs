//! The canonical Talos encoding: block style, 4-space indentation with list items indented
//! under their key, scalars quoted only where a plain scalar would read back differently.

use serde_json::Value;

use super::parse::resolves_non_string;

/// Encode one document (ends with a newline).
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => emit_map(&mut out, m, 0, 4, false),
        Value::Array(a) if !a.is_empty() => emit_seq(&mut out, a, 0),
        other => {
            out.push_str(&inline(other).unwrap_or_else(|| block_scalar(other_str(other), 0)));
            out.push('\n');
        }
    }
    out
}

fn other_str(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// `key_col`: where keys go; `child`: indentation of nested blocks. `inline_first`: the first key
/// follows a `- ` already written.
fn emit_map(
    out: &mut String,
    m: &serde_json::Map<String, Value>,
    key_col: usize,
    child: usize,
    inline_first: bool,
) {
    for (i, (k, v)) in m.iter().enumerate() {
        if !(i == 0 && inline_first) {
            pad(out, key_col);
        }
        out.push_str(&scalar_str(k));
        out.push(':');
        emit_value(out, v, child, child);
    }
}

/// Writes ` value\n` after a `key:` or `-`, or a nested block. `child` is the nested block
/// indentation, `block_indent` the content indentation of a literal block scalar.
fn emit_value(out: &mut String, v: &Value, child: usize, block_indent: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            emit_map(out, m, child, child + 4, false);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            emit_seq(out, a, child);
        }
        other => {
            out.push(' ');
            match inline(other) {
                Some(s) => {
                    out.push_str(&s);
                    out.push('\n');
                }
                None => out.push_str(&block_scalar(other_str(other), block_indent)),
            }
        }
    }
}

fn emit_seq(out: &mut String, a: &[Value], dash: usize) {
    for item in a {
        pad(out, dash);
        out.push('-');
        match item {
            Value::Object(m) if !m.is_empty() => {
                out.push(' ');
                emit_map(out, m, dash + 2, dash + 4, true);
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push(' ');
                // A nested sequence starts on the same line as its parent's dash.
                let mut nested = String::new();
                emit_seq(&mut nested, inner, dash + 2);
                out.push_str(nested.trim_start());
            }
            other => emit_value(out, other, dash + 4, dash + 2),
        }
    }
}

fn pad(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// The one-line form of a value, or `None` for a string that needs a literal block.
fn inline(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.contains('\n') && block_allowed(s) => return None,
        Value::String(s) => scalar_str(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    })
}

/// A string starting with this private-use character is written verbatim (without it): used
/// for octal modes and flow lists, which have no `serde_json::Value` form of their own.
pub const VERBATIM: char = '\u{E000}';

/// Quote a string the way go-yaml v3 does: plain when it reads back as the same string,
/// single-quoted when only indicators stand in the way, double-quoted otherwise.
pub fn scalar_str(s: &str) -> String {
    if let Some(raw) = s.strip_prefix(VERBATIM) {
        return raw.to_string();
    }
    if s.is_empty() || resolves_non_string(s) {
        return double_quoted(s);
    }
    if is_old_bool(s) || is_base60(s) {
        return format!("'{s}'");
    }
    if s.chars().any(|c| is_special(c) || c == '\n') {
        return double_quoted(s);
    }
    if plain_allowed(s) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

fn is_special(c: char) -> bool {
    !(c == '\t' || (' '..='~').contains(&c) || (c >= '\u{a0}' && c != '\u{feff}'))
}

fn is_old_bool(s: &str) -> bool {
    matches!(
        s,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "on"
            | "On"
            | "ON"
            | "off"
            | "Off"
            | "OFF"
    )
}

/// Sexagesimal numbers like `1:20` that YAML 1.1 readers take as numbers.
fn is_base60(s: &str) -> bool {
    let b = s.strip_prefix(['-', '+']).unwrap_or(s);
    let mut parts = b.split(':');
    let first = parts.next().unwrap_or("");
    let rest: Vec<&str> = parts.collect();
    !rest.is_empty()
        && !first.is_empty()
        && first.chars().all(|c| c.is_ascii_digit() || c == '_')
        && rest.iter().enumerate().all(|(i, p)| {
            let p = if i + 1 == rest.len() {
                p.split('.').next().unwrap_or("")
            } else {
                p
            };
            !p.is_empty() && p.len() <= 2 && p.chars().all(|c| c.is_ascii_digit())
        })
}

/// libyaml's analysis for the plain style in block context.
fn plain_allowed(s: &str) -> bool {
    if s.starts_with("---") || s.starts_with("...") {
        return false;
    }
    let chars: Vec<char> = s.chars().collect();
    if chars[0] == ' ' || chars[chars.len() - 1] == ' ' {
        return false;
    }
    for (i, &c) in chars.iter().enumerate() {
        let next_blank = chars.get(i + 1).is_none_or(|n| *n == ' ' || *n == '\t');
        if i == 0 {
            if "#,[]{}&*!|>'\"%@`".contains(c) {
                return false;
            }
            if "?:-".contains(c) && next_blank {
                return false;
            }
        } else {
            if c == ':' && next_blank {
                return false;
            }
            if c == '#' && chars[i - 1] == ' ' {
                return false;
            }
        }
        if c == '\t' {
            return false;
        }
    }
    true
}

/// A literal block needs no trailing spaces before line breaks and no special characters.
fn block_allowed(s: &str) -> bool {
    !s.contains(" \n") && !s.chars().any(|c| c != '\n' && is_special(c)) && !s.ends_with(' ')
}

fn block_scalar(s: &str, indent: usize) -> String {
    // Talos drops leading empty lines of block contents.
    let s = s.trim_start_matches('\n');
    let mut out = String::from("|");
    if s.starts_with(' ') {
        out.push_str(&4.to_string());
    }
    let trailing = s.len() - s.trim_end_matches('\n').len();
    match trailing {
        0 => out.push('-'),
        1 => {}
        _ => out.push('+'),
    }
    out.push('\n');
    let body = s.trim_end_matches('\n');
    for line in body.split('\n') {
        if !line.is_empty() {
            pad(&mut out, indent);
            out.push_str(line);
        }
        out.push('\n');
    }
    for _ in 1..trailing {
        out.push('\n');
    }
    out
}

fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if is_special(c) => {
                let n = c as u32;
                if n <= 0xff {
                    out.push_str(&format!("\\x{n:02X}"));
                } else if n <= 0xffff {
                    out.push_str(&format!("\\u{n:04X}"));
                } else {
                    out.push_str(&format!("\\U{n:08X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse::parse_stream;
    use serde_json::json;

    #[test]
    fn quoting() {
        assert_eq!(scalar_str(""), "\"\"");
        assert_eq!(scalar_str("true"), "\"true\"");
        assert_eq!(scalar_str("yes"), "'yes'");
        assert_eq!(scalar_str("0000:04:00.00"), "'0000:04:00.00'");
        assert_eq!(scalar_str("123"), "\"123\"");
        assert_eq!(scalar_str("*"), "'*'");
        assert_eq!(scalar_str("a: b"), "'a: b'");
        assert_eq!(scalar_str("$(POD_IP):10249"), "$(POD_IP):10249");
        assert_eq!(scalar_str("https://base:6443"), "https://base:6443");
        assert_eq!(scalar_str("10.5.0.0/24"), "10.5.0.0/24");
    }

    #[test]
    fn layout() {
        let v = json!({
            "a": {"b": ["x", {"nn": 1, "m": {"k": "v"}, "l": ["z"]}], "e": {}, "f": []},
            "s": "line1\nline2\n",
        });
        let got = to_string(&v);
        let want = "a:\n    b:\n        - x\n        - nn: 1\n          m:\n            k: v\n          l:\n            - z\n    e: {}\n    f: []\ns: |\n    line1\n    line2\n";
        assert_eq!(got, want);
        let back = parse_stream(&got).unwrap();
        assert_eq!(back[0].value, v);
    }

    #[test]
    fn literal_in_sequence() {
        let v = json!({"l": ["one\ntwo\n"]});
        assert_eq!(to_string(&v), "l:\n    - |\n      one\n      two\n");
    }
}
