//! The canonical Talos encoding: block style, 4-space indentation with list items indented
//! under their key, scalars quoted only where a plain scalar would read back differently.

use serde_json::Value;

use super::parse::resolves_non_string;

/// What the writer may ask about the value it writes, by path (the keys from the document
/// root, with `[]` for list items): a written form of its own (octal modes, flow lists), and
/// documentation to weave in (`gen config --with-docs`).
pub trait Annotator {
    /// The exact text for the value at `path`, when it is not written the plain way.
    fn verbatim(&self, _path: &[String], _value: &Value) -> Option<String> {
        None
    }
    /// A short description of the key at `path`.
    fn doc(&self, _path: &[String]) -> Option<String> {
        None
    }
    /// Commented examples for keys of the mapping at `path` that are not present:
    /// `(description, YAML text of {key: example value})`.
    fn examples(
        &self,
        _path: &[String],
        _present: &serde_json::Map<String, Value>,
    ) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Encode one document (ends with a newline).
pub fn to_string(value: &Value) -> String {
    to_string_annotated(value, None)
}

/// Encode one document, with documentation comments when an annotator is given.
pub fn to_string_annotated(value: &Value, ann: Option<&dyn Annotator>) -> String {
    let mut e = Emitter {
        out: String::new(),
        ann,
        path: Vec::new(),
    };
    match value {
        Value::Object(m) if !m.is_empty() => e.map(m, 0, 4, false),
        Value::Array(a) if !a.is_empty() => e.seq(a, 0),
        other => {
            let text = inline(other).unwrap_or_else(|| block_scalar(other_str(other), 2, 0));
            e.out.push_str(&text);
            e.out.push('\n');
        }
    }
    if let Some(ann) = ann {
        if let Some(m) = value.as_object() {
            e.examples(ann, m, 0);
        }
    }
    e.out
}

fn other_str(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        other => inline(other).is_none(),
    }
}

struct Emitter<'a> {
    out: String,
    ann: Option<&'a dyn Annotator>,
    path: Vec<String>,
}

impl Emitter<'_> {
    /// `key_col`: where keys go; `child`: indentation of nested blocks. `inline_first`: the
    /// first key follows a `- ` already written.
    fn map(
        &mut self,
        m: &serde_json::Map<String, Value>,
        key_col: usize,
        child: usize,
        inline_first: bool,
    ) {
        for (i, (k, v)) in m.iter().enumerate() {
            let first_inline = i == 0 && inline_first;
            self.path.push(k.clone());
            let doc = self.ann.and_then(|a| a.doc(&self.path));
            let verbatim = self.ann.and_then(|a| a.verbatim(&self.path, v));
            let block = verbatim.is_none() && is_block(v);
            if let (Some(d), true, false) = (&doc, block, first_inline) {
                pad(&mut self.out, key_col);
                self.out.push_str(&format!("# {d}\n"));
            }
            if !first_inline {
                pad(&mut self.out, key_col);
            }
            self.out.push_str(&scalar_str(k));
            self.out.push(':');
            let inline_doc = if block { None } else { doc };
            match verbatim {
                Some(text) => {
                    self.out.push(' ');
                    self.out.push_str(&text);
                    if let Some(d) = inline_doc {
                        self.out.push_str(&format!(" # {d}"));
                    }
                    self.out.push('\n');
                }
                None => self.value(v, child, child, key_col, inline_doc),
            }
            if let (Some(ann), Value::Object(inner)) = (self.ann, v) {
                self.examples(ann, inner, child);
            }
            self.path.pop();
        }
    }

    /// Commented examples for absent keys of the mapping at the current path.
    fn examples(
        &mut self,
        ann: &dyn Annotator,
        m: &serde_json::Map<String, Value>,
        key_col: usize,
    ) {
        for (doc, example) in ann.examples(&self.path, m) {
            pad(&mut self.out, key_col);
            self.out.push_str(&format!("# {doc}\n"));
            for line in example.lines() {
                pad(&mut self.out, key_col);
                self.out.push_str("# ");
                self.out.push_str(line);
                self.out.push('\n');
            }
            self.out.push('\n');
        }
    }

    /// Writes ` value\n` after a `key:` or `-`, or a nested block. `child` is the nested block
    /// indentation, `block_indent` the content indentation of a literal block scalar and
    /// `parent` the column of its key or dash.
    fn value(
        &mut self,
        v: &Value,
        child: usize,
        block_indent: usize,
        parent: usize,
        doc: Option<String>,
    ) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                self.out.push('\n');
                self.map(m, child, child + 4, false);
            }
            Value::Array(a) if !a.is_empty() => {
                self.out.push('\n');
                self.seq(a, child);
            }
            other => {
                self.out.push(' ');
                match inline(other) {
                    Some(s) => {
                        self.out.push_str(&s);
                        if let Some(d) = doc {
                            self.out.push_str(&format!(" # {d}"));
                        }
                        self.out.push('\n');
                    }
                    None => {
                        self.out
                            .push_str(&block_scalar(other_str(other), block_indent, parent))
                    }
                }
            }
        }
    }

    fn seq(&mut self, a: &[Value], dash: usize) {
        self.path.push("[]".into());
        for item in a {
            pad(&mut self.out, dash);
            self.out.push('-');
            match item {
                Value::Object(m) if !m.is_empty() => {
                    self.out.push(' ');
                    self.map(m, dash + 2, dash + 4, true);
                }
                Value::Array(inner) if !inner.is_empty() => {
                    self.out.push(' ');
                    // A nested sequence starts on the same line as its parent's dash.
                    let mut nested = Emitter {
                        out: String::new(),
                        ann: None,
                        path: Vec::new(),
                    };
                    nested.seq(inner, dash + 2);
                    self.out.push_str(nested.out.trim_start());
                }
                other => match self.ann.and_then(|a| a.verbatim(&self.path, other)) {
                    Some(text) => self.out.push_str(&format!(" {text}\n")),
                    None => self.value(other, dash + 4, dash + 2, dash, None),
                },
            }
        }
        self.path.pop();
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

/// Quote a string the way go-yaml v3 does: plain when it reads back as the same string,
/// single-quoted when only indicators stand in the way, double-quoted otherwise.
pub fn scalar_str(s: &str) -> String {
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

/// A literal block; content at `indent`, its key or dash at column `parent`. Content that
/// starts with a space needs the indentation spelled out, relative to the parent.
fn block_scalar(s: &str, indent: usize, parent: usize) -> String {
    let mut out = String::from("|");
    if s.starts_with(' ') {
        out.push_str(&(indent - parent).to_string());
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
    fn leading_spaces_in_blocks_round_trip() {
        let v = json!({"k": " a\n b\n", "l": [" x\ny"], "m": [{"n": "  p\nq"}]});
        let text = to_string(&v);
        assert_eq!(parse_stream(&text).unwrap()[0].value, v, "{text}");
    }

    #[test]
    fn literal_in_sequence() {
        let v = json!({"l": ["one\ntwo\n"]});
        assert_eq!(to_string(&v), "l:\n    - |\n      one\n      two\n");
    }
}
