//! YAML in and out: a position-aware reader and the canonical Talos writer.

mod emit;
mod parse;

pub use emit::{scalar_str, to_string, to_string_annotated, Annotator};
pub use parse::{parse_stream, resolve_plain, Positions, SyntaxError, YamlDoc};
