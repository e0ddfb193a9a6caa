//! Kubernetes resource quantities (`500m`, `4Gi`, `1e3`): parsed to check them and to derive
//! values from them (a Go memory limit from a memory limit).

/// A quantity that does not parse, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid quantity {0:?}: want a number with an optional suffix (m, k, M, G, Ki, Mi, Gi, ...)"
)]
pub struct Invalid(pub String);

/// The value of a quantity in its base unit (bytes, cores), rounded up as Kubernetes does.
pub fn value(q: &str) -> Result<i128, Invalid> {
    let bad = || Invalid(q.to_string());
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    if num.is_empty() || num == "+" || num == "-" {
        return Err(bad());
    }
    // (numerator multiplier, denominator) of the suffix
    let (mul, div): (i128, i128) = match suffix {
        "" => (1, 1),
        "m" => (1, 1000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        s if s.starts_with(['e', 'E']) => {
            let exp: u32 = s[1..].parse().map_err(|_| bad())?;
            (10i128.checked_pow(exp).ok_or_else(bad)?, 1)
        }
        _ => return Err(bad()),
    };
    let negative = num.starts_with('-');
    let digits = num.trim_start_matches(['+', '-']);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return Err(bad());
    }
    let parse = |s: &str| -> Result<i128, Invalid> {
        if s.is_empty() {
            Ok(0)
        } else if s.chars().all(|c| c.is_ascii_digit()) && s.len() <= 30 {
            s.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let scale = 10i128.pow(frac.len() as u32);
    let numerator = (parse(int)? * scale + parse(frac)?) * mul;
    let denominator = scale * div;
    let v = (numerator + denominator - 1) / denominator;
    Ok(if negative { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::value;

    #[test]
    fn values() {
        assert_eq!(value("4Gi"), Ok(4 << 30));
        assert_eq!(value("1000Mi"), Ok(1000 << 20));
        assert_eq!(value("100m"), Ok(1));
        assert_eq!(value("2"), Ok(2));
        assert_eq!(value("1.5G"), Ok(1_500_000_000));
        assert_eq!(value("1e3"), Ok(1000));
        for bad in ["", "Gi", "1GB", "abc", "1..2", "-"] {
            assert!(value(bad).is_err(), "{bad}");
        }
    }
}
