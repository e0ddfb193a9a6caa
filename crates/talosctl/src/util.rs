//! Helpers shared by commands: durations, output files, booleans that default to true.

use std::path::Path;

use machinery::fsutil::write_atomic;
use machinery::{Error, Result};

pub use machinery::duration::parse as parse_duration;

/// Write an output file; an existing file is an error unless `force`.
pub fn write_output(path: &Path, data: &[u8], mode: u32, force: bool) -> Result<()> {
    if !force && path.exists() {
        return Err(Error::msg(format!(
            "{} already exists, use --force to overwrite",
            path.display()
        )));
    }
    write_atomic(path, data, mode)
}

/// Refuse early when any of the outputs exists (so nothing is half written).
pub fn check_outputs_free(paths: &[&Path], force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    for p in paths {
        if p.exists() {
            return Err(Error::msg(format!(
                "{} already exists, use --force to overwrite",
                p.display()
            )));
        }
    }
    Ok(())
}

pub fn read_file(path: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::msg(format!("{path}: {e}")))
}

/// Split repeated and comma-separated values (pflag `strings`).
pub fn split_commas(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A size in decimal units: `512 B`, `1.2 MB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A timestamp as RFC 3339 (empty when it cannot be shown).
pub fn rfc3339(t: &prost_types::Timestamp) -> String {
    time::OffsetDateTime::from_unix_timestamp(t.seconds)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
