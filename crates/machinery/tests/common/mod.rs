//! Locating the upstream conformance data (`../shared/conformance`, or `$TALOS_CONFORMANCE_DIR`).

use std::path::PathBuf;

/// The conformance directory, or `None` (skip) outside CI when it is missing.
/// Under `CI=true` a missing directory fails the test.
pub fn dir() -> Option<PathBuf> {
    let dir = std::env::var_os("TALOS_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance")
        });
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("conformance data missing at {}", dir.display());
    }
    eprintln!("conformance data missing at {}: skipped", dir.display());
    None
}

pub fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
