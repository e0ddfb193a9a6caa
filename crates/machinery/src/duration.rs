//! Go-style durations, as Talos writes them in configs and flags.

use std::time::Duration;

use crate::{Error, Result};

/// Parse a Go duration (`8760h0m0s`, `90m`, `1h30m`, `10s`, `500ms`).
pub fn parse(s: &str) -> Result<Duration> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(
            parse("8760h0m0s").unwrap(),
            Duration::from_secs(8760 * 3600)
        );
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse("10 days").is_err());
        assert!(parse("").is_err());
    }
}
