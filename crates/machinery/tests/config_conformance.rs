//! The upstream config fixtures: loader, decoder, documents (canonical encoding of every kind).

mod common;

use machinery::patch::delete_selectors;
use machinery::yaml::parse_stream;
use machinery::{Config, Document};

#[test]
fn configloader_fixtures_load() {
    let Some(d) = common::dir() else { return };
    let mut n = 0;
    for e in std::fs::read_dir(d.join("config/configloader")).unwrap() {
        let path = e.unwrap().path();
        Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        n += 1;
    }
    assert!(n >= 7);
}

#[test]
fn decoder_fixtures() {
    let Some(d) = common::dir() else { return };
    let d = d.join("config/decoder");
    Config::load(d.join("controlplane.yaml")).unwrap();
    Config::load(d.join("worker.yaml")).unwrap();
    let e = Config::load(d.join("double/v1alpha1.yaml")).unwrap_err();
    assert!(e.to_string().contains("not allowed"), "{e}");
}

#[test]
fn decoder_delete_selectors() {
    let Some(d) = common::dir() else { return };
    let d = d.join("config/decoder/delete");
    let docs = parse_stream(&common::read(&d.join("delete.yaml"))).unwrap();
    let mut selectors = Vec::new();
    let mut left = Vec::new();
    for doc in docs {
        let (s, rest) = delete_selectors(&doc.value);
        selectors.extend(s);
        if !rest.is_null() {
            left.push(rest);
        }
    }
    let paths: Vec<&str> = selectors.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "",
            "configFiles[0]",
            "machine.hostname",
            "machine.network[0]"
        ]
    );
    let want: Vec<_> = parse_stream(&common::read(&d.join("delete_expected.yaml")))
        .unwrap()
        .into_iter()
        .map(|d| d.value)
        .collect();
    assert_eq!(left, want);
}

/// Every document example decodes and encodes back to the same bytes.
#[test]
fn documents_round_trip() {
    let Some(d) = common::dir() else { return };
    let mut failures = Vec::new();
    let mut n = 0;
    for group in std::fs::read_dir(d.join("config/documents")).unwrap() {
        for e in std::fs::read_dir(group.unwrap().path()).unwrap() {
            let path = e.unwrap().path();
            let name = path.display().to_string();
            if name.ends_with("_redacted.yaml") || name.contains("/meta/") {
                continue;
            }
            n += 1;
            let src = common::read(&path);
            match Config::parse(&src) {
                Ok(cfg) if cfg.encode_canonical() == src => {}
                Ok(cfg) => failures.push(format!(
                    "{name}: encodes differently:\n{}",
                    cfg.encode_canonical()
                )),
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
    }
    assert!(n > 80, "{n} documents");
    assert!(
        failures.is_empty(),
        "{} of {n} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn configdiff_fixtures_load() {
    let Some(d) = common::dir() else { return };
    for f in ["original.yaml", "modified.yaml"] {
        let cfg = Config::load(d.join("config/configdiff").join(f)).unwrap();
        assert!(!cfg.documents().is_empty());
    }
}

#[test]
fn document_from_value_is_canonical() {
    let doc = Document::from_value(serde_json::json!({
        "name": "eth0", "kind": "LinkConfig", "apiVersion": "v1alpha1", "mtu": 9000
    }))
    .unwrap();
    assert_eq!(
        doc.encode(),
        "apiVersion: v1alpha1\nkind: LinkConfig\nname: eth0\nmtu: 9000\n"
    );
}

/// The Args value forms (string, list, mixed, empty) keep their form and sort their keys.
#[test]
fn args_forms() {
    let Some(d) = common::dir() else { return };
    for e in std::fs::read_dir(d.join("config/documents/meta")).unwrap() {
        let path = e.unwrap().path();
        let src = common::read(&path);
        let docs = parse_stream(&src).unwrap();
        let value = docs.first().map(|d| d.value.clone()).unwrap_or_default();
        let value = if value.is_null() {
            serde_json::json!({})
        } else {
            value
        };
        let ty = machinery::config::Ty::Map(Box::new(machinery::config::Ty::Any));
        let mut problems = Vec::new();
        machinery::config::check(&value, &ty, "", false, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let got = machinery::yaml::to_string(&machinery::config::canonical(&value, &ty));
        assert_eq!(got, src, "{}", path.display());
    }
}

#[test]
fn secrets_bundles() {
    let Some(d) = common::dir() else { return };
    let d = d.join("config/generate-secrets");
    machinery::secrets::SecretsBundle::load(d.join("secrets.yaml")).unwrap();
    let e = machinery::secrets::SecretsBundle::load(d.join("invalid-secrets.yaml")).unwrap_err();
    let text = e.to_string();
    for missing in [
        "cluster.secret",
        "trustdinfo.token",
        "certs.etcd.key",
        "certs.k8saggregator.crt",
        "certs.os.crt",
    ] {
        assert!(text.contains(missing), "{missing} not reported in:\n{text}");
    }
    let stability = common::dir().unwrap().join("config/stability/secrets.yaml");
    machinery::secrets::SecretsBundle::load(stability).unwrap();
}

/// `*_redacted.yaml` fixtures: they load, redaction leaves them as they are, and redacting the
/// plain fixture of the same kind replaces exactly the fields the redacted one shows as REDACTED.
#[test]
fn redacted_documents() {
    let Some(d) = common::dir() else { return };
    let mut n = 0;
    for group in std::fs::read_dir(d.join("config/documents")).unwrap() {
        for e in std::fs::read_dir(group.unwrap().path()).unwrap() {
            let path = e.unwrap().path();
            let name = path.display().to_string();
            let Some(plain) = name.strip_suffix("_redacted.yaml") else {
                continue;
            };
            n += 1;
            let redacted = Config::load(&path).unwrap();
            assert_eq!(
                redacted.redacted().encode_canonical(),
                common::read(&path),
                "{name}"
            );
            let original = Config::load(format!("{plain}.yaml")).unwrap().redacted();
            let text = original.encode_canonical();
            assert!(
                text.contains("REDACTED"),
                "{name}: nothing redacted:\n{text}"
            );
            assert!(
                !text.contains("PRIVATE KEY") && !text.contains("PRIVATE-KEY"),
                "{text}"
            );
        }
    }
    assert_eq!(n, 5);
}

#[test]
fn v1alpha1_secrets_are_redacted() {
    let Some(d) = common::dir() else { return };
    let cfg = Config::load(d.join("config/stability/v1.11/base-controlplane.yaml")).unwrap();
    let text = cfg.redacted().encode();
    for path in [
        "/machine/token",
        "/machine/ca/key",
        "/cluster/token",
        "/cluster/secret",
        "/cluster/ca/key",
        "/cluster/etcd/ca/key",
        "/cluster/serviceAccount/key",
        "/cluster/secretboxEncryptionSecret",
    ] {
        assert_eq!(
            cfg.redacted().pointer(path).and_then(|v| v.as_str()),
            Some("REDACTED"),
            "{path}"
        );
    }
    assert!(text.contains("crt: LS0t"), "certificates stay");
}
