//! Helpers shared by commands: durations, output files, booleans that default to true.

use std::path::Path;
use std::time::Duration;

use machinery::fsutil::write_atomic;
use machinery::{Error, Result};

/// Parse a Go duration (`8760h0m0s`, `90m`, `1h30m`, `10s`, `500ms`).
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = || {
        Error::msg(format!(
            "invalid duration \"{s}\": expected e.g. 8760h, 30m, 1h30m0s"
        ))
    };
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(
            parse_duration("8760h0m0s").unwrap(),
            Duration::from_secs(8760 * 3600)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("10 days").is_err());
        assert!(parse_duration("").is_err());
    }
}
