//! YAML in and out: a position-aware reader and the canonical Talos writer.

mod emit;
mod parse;

pub use emit::{scalar_str, to_string, to_string_annotated, Annotator};
pub use parse::{parse_stream, resolve_plain, Positions, SyntaxError, YamlDoc};

/// One file of upstream's reference data (`../shared/reference/`, or `$TALOS_REFERENCE_DIR`),
/// for the tests that compare against it: `None` when it is not there, except under CI, where
/// its absence is an error.
pub fn reference(file: &str) -> Option<serde_json::Value> {
    let path = std::env::var_os("TALOS_REFERENCE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference")
        })
        .join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(
            parse_stream(&text)
                .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
                .remove(0)
                .value,
        ),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("reference data missing at {}", path.display())
        }
        Err(_) => None,
    }
}
