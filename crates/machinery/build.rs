//! Turns the document shapes into typed Rust structs (`config::types`), so code reads configs
//! through types while the shapes stay the single description.

use std::fmt::Write;
use std::path::PathBuf;

#[allow(dead_code)]
mod dsl {
    include!("src/config/dsl.rs");
}

use dsl::{ShapeSet, Ty};

const SHAPES: [&str; 3] = [
    "src/config/shapes/multidoc.shape",
    "src/config/shapes/multidoc-extra.shape",
    "src/config/shapes/v1alpha1.shape",
];

fn type_name(shape: &str) -> String {
    shape
        .split('.')
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn field_name(name: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if i > 0 && (prev_lower || (next_lower && chars[i - 1].is_uppercase())) {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else if c.is_alphanumeric() {
            out.push(c);
        } else {
            out.push('_');
        }
    }
    match out.as_str() {
        "type" | "static" | "match" | "ref" | "mod" | "move" | "use" | "impl" | "enum" | "loop"
        | "struct" | "trait" | "where" | "override" => format!("r#{out}"),
        _ => out,
    }
}

fn rust_type(ty: &Ty) -> String {
    match ty {
        Ty::String => "String".into(),
        Ty::Bool => "bool".into(),
        Ty::Int => "i64".into(),
        Ty::Float => "f64".into(),
        Ty::Octal => "u32".into(),
        Ty::Any => "serde_json::Value".into(),
        Ty::List(inner) => format!("Vec<{}>", rust_type(inner)),
        Ty::Map(inner) => format!("std::collections::BTreeMap<String, {}>", rust_type(inner)),
        Ty::Struct(name) => type_name(name),
    }
}

fn main() {
    let mut set = ShapeSet::default();
    for path in SHAPES {
        println!("cargo:rerun-if-changed={path}");
        set.parse(&std::fs::read_to_string(path).expect("shape file"));
    }
    println!("cargo:rerun-if-changed=src/config/dsl.rs");
    let mut names: Vec<&String> = set.structs.keys().collect();
    names.sort();
    let mut out = String::new();
    for name in names {
        let _ = writeln!(out, "/// The `{name}` shape.");
        let _ = writeln!(
            out,
            "#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]"
        );
        let _ = writeln!(out, "pub struct {} {{", type_name(name));
        for f in &set.structs[name] {
            let _ = writeln!(
                out,
                "    #[serde(rename = {:?}, default, skip_serializing_if = \"Option::is_none\")]",
                f.name
            );
            let _ = writeln!(
                out,
                "    pub {}: Option<{}>,",
                field_name(&f.name),
                rust_type(&f.ty)
            );
        }
        let _ = writeln!(out, "}}\n");
    }
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("types.rs");
    std::fs::write(dest, out).expect("write types.rs");
}
