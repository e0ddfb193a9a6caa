// The shape language: types, fields and their flags, and its parser. Plain std code, shared
// with `build.rs`, which turns the same shapes into typed Rust structs.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ty {
    String,
    Bool,
    Int,
    Float,
    /// An integer written in octal (`0o644`), like file modes.
    Octal,
    Any,
    List(Box<Ty>),
    Map(Box<Ty>),
    Struct(String),
}

#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub ty: Ty,
    pub always: bool,
    pub ptr: bool,
    pub replace: bool,
    /// A list written in flow style (`[0,7]`).
    pub flow: bool,
    /// Replaced by `REDACTED` when the config is redacted.
    pub secret: bool,
    /// Inside this free-form value, entries with this name are redacted.
    pub redact_key: Option<String>,
    pub keys: Vec<String>,
}

#[derive(Debug, Default)]
pub struct ShapeSet {
    pub structs: HashMap<String, Vec<Field>>,
    /// kind name → struct name
    pub kinds: HashMap<String, String>,
}

impl ShapeSet {
    pub fn parse(&mut self, src: &str) {
        let mut current: Option<String> = None;
        for line in src.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut words = trimmed.split_whitespace();
            if !line.starts_with(' ') {
                match (words.next(), words.next(), words.next()) {
                    (Some("kind"), Some(kind), Some(name)) => {
                        self.kinds.insert(kind.into(), name.into());
                    }
                    (Some("struct"), Some(name), None) => {
                        self.structs.insert(name.into(), Vec::new());
                        current = Some(name.into());
                    }
                    (Some("extend"), Some(name), None) => {
                        self.structs.entry(name.into()).or_default();
                        current = Some(name.into());
                    }
                    _ => panic!("bad shape line: {line}"),
                }
                continue;
            }
            let name = words.next().expect("field name");
            let ty = parse_ty(words.next().expect("field type"));
            let mut field = Field {
                name: name.into(),
                ty,
                always: false,
                ptr: false,
                replace: false,
                flow: false,
                secret: false,
                redact_key: None,
                keys: Vec::new(),
            };
            for flag in words {
                match flag {
                    "always" => field.always = true,
                    "ptr" => field.ptr = true,
                    "replace" => field.replace = true,
                    "flow" => field.flow = true,
                    "secret" => field.secret = true,
                    f if f.starts_with("redact=") => field.redact_key = Some(f[7..].to_string()),
                    f if f.starts_with("key=") => {
                        field.keys = f[4..].split('|').map(String::from).collect()
                    }
                    other => panic!("bad shape flag {other} in: {line}"),
                }
            }
            let fields = self
                .structs
                .get_mut(current.as_ref().expect("field outside struct"))
                .expect("struct");
            match fields.iter_mut().find(|f| f.name == field.name) {
                Some(existing) => *existing = field,
                None => fields.push(field),
            }
        }
    }
}

pub fn parse_ty(s: &str) -> Ty {
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return Ty::List(Box::new(parse_ty(inner)));
    }
    if let Some(inner) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        return Ty::Map(Box::new(parse_ty(inner)));
    }
    match s {
        "string" => Ty::String,
        "bool" => Ty::Bool,
        "int" => Ty::Int,
        "float" => Ty::Float,
        "octal" => Ty::Octal,
        "any" => Ty::Any,
        name => Ty::Struct(name.into()),
    }
}
