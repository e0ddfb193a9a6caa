//! "Did you mean …?" for a name that is not one of those known.

/// The candidate `name` most likely meant, if one is close: the same but for case, or within
/// a small edit distance.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = name.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d == 0 || (*d <= 2 && c.len() > 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean "x"?)`, or nothing.
pub fn suggestion<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(name, candidates)
        .map(|c| format!(" (did you mean \"{c}\"?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_are_suggested() {
        let fields = ["hostPath", "mountPath", "readonly", "name"];
        assert_eq!(did_you_mean("readOnly", fields), Some("readonly"));
        assert_eq!(did_you_mean("mountPth", fields), Some("mountPath"));
        assert_eq!(did_you_mean("xy", fields), None);
        assert_eq!(did_you_mean("totallyDifferent", fields), None);
        assert_eq!(
            suggestion("hostpath", fields),
            " (did you mean \"hostPath\"?)"
        );
    }
}
