//! YAML text to `serde_json::Value` trees (key order kept), with the source position of every
//! node so that later errors can name `line:column`.
//!
//! Plain scalars resolve like go-yaml v3 does for untyped values: `null`/`~`/empty, `true`/`false`,
//! integers (decimal, `0x`, `0o`, `0b`, leading-zero octal), floats; everything else is a string.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::error::Pos;

/// One YAML document of a stream.
#[derive(Debug, Clone)]
pub struct YamlDoc {
    pub value: Value,
    pub positions: Positions,
    /// Position of the document's first node.
    pub start: Pos,
}

/// Source positions by path (`machine.network.interfaces[0].dhcp`).
#[derive(Debug, Clone, Default)]
pub struct Positions(HashMap<String, Pos>);

impl Positions {
    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn lookup(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.0.get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
            if p.is_empty() {
                return self.0.get("").copied();
            }
        }
    }
}

/// A YAML syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

fn pos(m: &Marker) -> Pos {
    Pos {
        line: m.line(),
        column: m.col() + 1,
    }
}

enum Frame {
    Seq(Vec<Value>, String, usize),
    Map(Map<String, Value>, String, usize, Option<(String, Pos)>),
}

struct Builder {
    docs: Vec<YamlDoc>,
    stack: Vec<Frame>,
    positions: HashMap<String, Pos>,
    anchors: HashMap<usize, Value>,
    doc_start: Pos,
    root: Option<Value>,
    error: Option<SyntaxError>,
}

impl Builder {
    /// Path of the node that comes next at the top of the stack.
    fn next_path(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Seq(items, path, _)) => format!("{path}[{}]", items.len()),
            Some(Frame::Map(_, path, _, Some((key, _)))) => {
                if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                }
            }
            Some(Frame::Map(_, path, _, None)) => path.clone(),
        }
    }

    fn fail(&mut self, at: Pos, message: String) {
        if self.error.is_none() {
            self.error = Some(SyntaxError { pos: at, message });
        }
    }

    /// Place a finished node in its parent (or as the document root).
    fn push_value(&mut self, value: Value, at: Pos, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Seq(items, _, _)) => items.push(value),
            Some(Frame::Map(map, _, _, pending)) => match pending.take() {
                None => {
                    let key = match value {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        Value::Bool(b) => b.to_string(),
                        Value::Number(n) => n.to_string(),
                        _ => {
                            self.fail(at, "mapping keys must be scalars".into());
                            return;
                        }
                    };
                    if map.contains_key(&key) {
                        let key = key.clone();
                        self.fail(at, format!("mapping key \"{key}\" already defined"));
                        return;
                    }
                    *pending = Some((key, at));
                }
                Some((key, _)) => {
                    map.insert(key, value);
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let at = pos(&mark);
        match ev {
            Event::DocumentStart => {
                self.positions.clear();
                self.anchors.clear();
                self.root = None;
                self.doc_start = at;
            }
            Event::DocumentEnd => {
                let value = self.root.take().unwrap_or(Value::Null);
                self.docs.push(YamlDoc {
                    value,
                    positions: Positions(std::mem::take(&mut self.positions)),
                    start: self.doc_start,
                });
            }
            Event::Alias(id) => {
                let path = self.next_path();
                match self.anchors.get(&id).cloned() {
                    Some(v) => {
                        self.positions.entry(path).or_insert(at);
                        self.push_value(v, at, 0)
                    }
                    None => self.fail(at, "unknown alias".into()),
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let path = self.next_path();
                let is_key = matches!(self.stack.last(), Some(Frame::Map(_, _, _, None)));
                let key_path = if is_key {
                    // A key's position is recorded under the path it introduces.
                    let parent = match self.stack.last() {
                        Some(Frame::Map(_, p, _, _)) => p.clone(),
                        _ => String::new(),
                    };
                    Some(if parent.is_empty() {
                        text.clone()
                    } else {
                        format!("{parent}.{text}")
                    })
                } else {
                    None
                };
                let forced_str = tag
                    .as_ref()
                    .is_some_and(|t| t.handle == "tag:yaml.org,2002:" || t.handle == "!!")
                    && tag
                        .as_ref()
                        .is_some_and(|t| t.suffix == "str" || t.suffix == "binary");
                let value = if style == TScalarStyle::Plain && !forced_str {
                    resolve_plain(&text)
                } else {
                    Value::String(text)
                };
                match key_path {
                    Some(kp) => {
                        self.positions.insert(kp, at);
                    }
                    None => {
                        // A scalar value is more precise than its key.
                        self.positions.insert(path, at);
                    }
                }
                self.push_value(value, at, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                let path = self.next_path();
                self.positions.entry(path.clone()).or_insert(at);
                self.stack.push(Frame::Seq(Vec::new(), path, anchor));
            }
            Event::MappingStart(anchor, _) => {
                let path = self.next_path();
                self.positions.entry(path.clone()).or_insert(at);
                self.stack.push(Frame::Map(Map::new(), path, anchor, None));
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(items, _, anchor)) = self.stack.pop() {
                    self.push_value(Value::Array(items), at, anchor);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(map, _, anchor, _)) = self.stack.pop() {
                    self.push_value(Value::Object(map), at, anchor);
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
}

/// Parse every document of a YAML stream.
pub fn parse_stream(src: &str) -> Result<Vec<YamlDoc>, SyntaxError> {
    // YAML allows no control characters but tab and line breaks.
    for (i, line) in src.split('\n').enumerate() {
        if let Some((col, c)) = line
            .chars()
            .enumerate()
            .find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\r' | '\u{85}'))
        {
            return Err(SyntaxError {
                pos: Pos {
                    line: i + 1,
                    column: col + 1,
                },
                message: format!("control character U+{:04X} is not allowed", c as u32),
            });
        }
    }
    let mut b = Builder {
        docs: Vec::new(),
        stack: Vec::new(),
        positions: HashMap::new(),
        anchors: HashMap::new(),
        doc_start: Pos { line: 1, column: 1 },
        root: None,
        error: None,
    };
    let mut parser = Parser::new_from_str(src);
    if let Err(e) = parser.load(&mut b, true) {
        return Err(SyntaxError {
            pos: pos(e.marker()),
            message: e.info().to_string(),
        });
    }
    match b.error {
        Some(e) => Err(e),
        None => Ok(b.docs),
    }
}

/// Resolve a plain scalar to its YAML 1.2 core type (go-yaml v3 flavour).
pub fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(i) = parse_int(s) {
        return Value::Number(i);
    }
    if looks_like_float(s) {
        if let Some(n) = s.parse::<f64>().ok().and_then(Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::String(s.to_string())
}

/// Whether a string would resolve to something other than a string when written plain.
pub fn resolves_non_string(s: &str) -> bool {
    !matches!(resolve_plain(s), Value::String(_))
        || matches!(
            s,
            ".inf" | "-.inf" | "+.inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN"
        )
}

fn parse_int(s: &str) -> Option<Number> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty() {
        return None;
    }
    let (radix, digits) = if let Some(d) = body.strip_prefix("0x").or(body.strip_prefix("0X")) {
        (16, d)
    } else if let Some(d) = body.strip_prefix("0o").or(body.strip_prefix("0O")) {
        (8, d)
    } else if let Some(d) = body.strip_prefix("0b").or(body.strip_prefix("0B")) {
        (2, d)
    } else if body.len() > 1 && body.starts_with('0') {
        (8, &body[1..])
    } else {
        (10, body)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let mag = u64::from_str_radix(digits, radix).ok()?;
    if neg {
        let v = i64::try_from(mag).ok()?;
        Some(Number::from(-v))
    } else {
        Some(Number::from(mag))
    }
}

fn looks_like_float(s: &str) -> bool {
    let b = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mant, exp) = match b.find(['e', 'E']) {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    };
    let mant_ok = {
        let mut parts = mant.splitn(2, '.');
        let int = parts.next().unwrap_or("");
        let frac = parts.next();
        let int_ok = int.chars().all(|c| c.is_ascii_digit());
        let frac_ok = frac.is_none_or(|f| f.chars().all(|c| c.is_ascii_digit()));
        int_ok && frac_ok && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty()))
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    });
    mant_ok && exp_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_resolve() {
        assert_eq!(resolve_plain("~"), Value::Null);
        assert_eq!(resolve_plain("0o755"), json!(493));
        assert_eq!(resolve_plain("0755"), json!(493));
        assert_eq!(resolve_plain("0x10"), json!(16));
        assert_eq!(resolve_plain("-3"), json!(-3));
        assert_eq!(resolve_plain("1.5"), json!(1.5));
        assert_eq!(resolve_plain("1.2.3"), json!("1.2.3"));
        assert_eq!(resolve_plain("yes"), json!("yes"));
        assert_eq!(resolve_plain("10.5.0.0/24"), json!("10.5.0.0/24"));
    }

    #[test]
    fn positions_and_order() {
        let docs = parse_stream("b: 1\na:\n  - x: '2'\n---\nc: null\n").unwrap();
        assert_eq!(docs.len(), 2);
        let keys: Vec<_> = docs[0].value.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["b", "a"]);
        assert_eq!(docs[0].value["a"][0]["x"], json!("2"));
        let p = docs[0].positions.lookup("a[0].x").unwrap();
        assert_eq!((p.line, p.column), (3, 8));
        let p = docs[0].positions.lookup("a[0].missing").unwrap();
        assert_eq!(p.line, 3);
    }

    #[test]
    fn duplicate_key_is_error() {
        let e = parse_stream("a: 1\na: 2\n").unwrap_err();
        assert!(e.message.contains("already defined"), "{e:?}");
        assert_eq!(e.pos.line, 2);
    }

    #[test]
    fn control_characters_are_refused() {
        let e = parse_stream("a: 1\nb: x\0y\n").unwrap_err();
        assert_eq!((e.pos.line, e.pos.column), (2, 5));
    }

    #[test]
    fn syntax_error_has_position() {
        let e = parse_stream("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.line >= 1);
    }
}
