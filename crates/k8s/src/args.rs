//! Command lines of Kubernetes components: Talos's flags, merged with the config's
//! `extraArgs` by a policy per flag.

use std::collections::BTreeMap;

pub use machinery::kubernetes::Merge;

/// A flag `extraArgs` may not set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("extra arg {flag:?} is not allowed: Talos manages it")]
pub struct Denied {
    pub flag: String,
}

/// Flags (without `--`) and their values; a flag with several values is repeated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args(BTreeMap<String, Vec<String>>);

impl Args {
    pub fn new<'a>(flags: impl IntoIterator<Item = (&'a str, String)>) -> Args {
        Args(
            flags
                .into_iter()
                .map(|(k, v)| (k.to_string(), vec![v]))
                .collect(),
        )
    }

    pub fn set(&mut self, flag: &str, value: impl Into<String>) {
        self.0.insert(flag.to_string(), vec![value.into()]);
    }

    pub fn contains(&self, flag: &str) -> bool {
        self.0.contains_key(flag)
    }

    /// Merge the user's flags with `policy(flag)`; the first denied flag (in name order) is an
    /// error and leaves `self` as it was.
    pub fn merge(
        &mut self,
        extra: &BTreeMap<String, Vec<String>>,
        policy: impl Fn(&str) -> Merge,
    ) -> Result<(), Denied> {
        check(extra, &policy)?;
        for (flag, values) in extra {
            let flag = flag.trim_start_matches('-');
            match policy(flag) {
                Merge::Overwrite | Merge::Denied => {
                    self.0.insert(flag.to_string(), values.clone());
                }
                Merge::Append => self
                    .0
                    .entry(flag.to_string())
                    .or_default()
                    .extend(values.iter().cloned()),
                Merge::Additive => {
                    let current = self.0.entry(flag.to_string()).or_default();
                    let mut items: Vec<String> = current
                        .iter()
                        .flat_map(|v| v.split(','))
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect();
                    for v in values.iter().flat_map(|v| v.split(',')) {
                        if !v.is_empty() && !items.iter().any(|i| i == v) {
                            items.push(v.to_string());
                        }
                    }
                    *current = vec![items.join(",")];
                }
            }
        }
        Ok(())
    }

    /// `--flag=value` for each flag in name order.
    pub fn to_vec(&self) -> Vec<String> {
        self.0
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| format!("--{k}={v}")))
            .collect()
    }
}

/// The first flag of `extra` that `policy` denies.
pub fn check(
    extra: &BTreeMap<String, Vec<String>>,
    policy: impl Fn(&str) -> Merge,
) -> Result<(), Denied> {
    match extra
        .keys()
        .map(|k| k.trim_start_matches('-'))
        .find(|k| policy(k) == Merge::Denied)
    {
        Some(flag) => Err(Denied {
            flag: flag.to_string(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extra(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn policy(flag: &str) -> Merge {
        match flag {
            "enable-admission-plugins" => Merge::Additive,
            "service-account-issuer" => Merge::Append,
            "etcd-servers" => Merge::Denied,
            _ => Merge::Overwrite,
        }
    }

    #[test]
    fn merges_by_policy_and_sorts() {
        let mut a = Args::new([
            ("enable-admission-plugins", "NodeRestriction".to_string()),
            ("service-account-issuer", "https://a".to_string()),
            ("profiling", "false".to_string()),
        ]);
        a.merge(
            &extra(&[
                ("enable-admission-plugins", &["PodSecurity,NodeRestriction"]),
                ("service-account-issuer", &["https://b"]),
                ("profiling", &["true"]),
                ("oidc-issuer-url", &["https://oidc"]),
            ]),
            policy,
        )
        .unwrap();
        assert_eq!(
            a.to_vec(),
            [
                "--enable-admission-plugins=NodeRestriction,PodSecurity",
                "--oidc-issuer-url=https://oidc",
                "--profiling=true",
                "--service-account-issuer=https://a",
                "--service-account-issuer=https://b",
            ]
        );
    }

    #[test]
    fn a_denied_flag_is_named_and_nothing_changes() {
        let mut a = Args::new([("etcd-servers", "https://127.0.0.1:2379".to_string())]);
        let before = a.clone();
        let err = a
            .merge(
                &extra(&[("a", &["1"]), ("etcd-servers", &["https://evil"])]),
                policy,
            )
            .unwrap_err();
        assert_eq!(err.flag, "etcd-servers");
        assert!(err.to_string().contains("\"etcd-servers\""), "{err}");
        assert_eq!(a, before);
    }
}
