//! The upstream patch fixtures (`configpatcher/`), byte for byte where upstream compares bytes.

mod common;

use std::path::{Path, PathBuf};

use machinery::patch::{apply, load_patches, Patch, JSON6902_MULTIDOC};
use machinery::Config;

fn base() -> Option<PathBuf> {
    common::dir().map(|d| d.join("configpatcher"))
}

fn specs(dir: &Path, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| format!("@{}", dir.join(n).display()))
        .collect()
}

fn run(dir: &Path, input: &str, patches: &[&str]) -> machinery::Result<Config> {
    let cfg = Config::load(dir.join(input))?;
    apply(cfg, &load_patches(&specs(dir, patches))?)
}

fn expect_bytes(dir: &Path, input: &str, patches: &[&str], expected: &str) {
    let got = run(dir, input, patches).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let want = common::read(&dir.join(expected));
    assert_eq!(got.encode(), want, "{} {patches:?}", dir.display());
}

#[test]
fn apply_sequence() {
    let Some(b) = base() else { return };
    let d = b.join("apply");
    let patches = [
        "strategic1.yaml",
        "jsonpatch1.yaml",
        "jsonpatch2.yaml",
        "strategic2.yaml",
        "strategic3.yaml",
    ];
    let loaded = load_patches(&specs(&d, &patches)).unwrap();
    assert_eq!(loaded.len(), 4, "the two JSON patches are joined");
    expect_bytes(&d, "config.yaml", &patches, "expected.yaml");
}

#[test]
fn apply_manifests() {
    let Some(b) = base() else { return };
    let d = b.join("apply");
    expect_bytes(
        &d,
        "config.yaml",
        &["strategic4.yaml"],
        "expected_manifests.yaml",
    );
    // The output still loads.
    Config::parse(&common::read(&d.join("expected_manifests.yaml"))).unwrap();
}

#[test]
fn audit_policy_is_replaced() {
    let Some(b) = base() else { return };
    expect_bytes(
        &b.join("auditpolicy"),
        "config.yaml",
        &["patch1.yaml"],
        "expected.yaml",
    );
}

#[test]
fn multidoc() {
    let Some(b) = base() else { return };
    let d = b.join("multidoc");
    let e = run(&d, "config.yaml", &["jsonpatch.yaml", "strategic1.yaml"]).unwrap_err();
    assert_eq!(e.to_string(), JSON6902_MULTIDOC);
    expect_bytes(
        &d,
        "config.yaml",
        &["strategic1.yaml", "strategic2.yaml", "strategic3.yaml"],
        "expected.yaml",
    );
    let alone = apply(
        Config::default(),
        &load_patches(&specs(&d, &["strategic2.yaml"])).unwrap(),
    )
    .unwrap();
    assert_eq!(alone.documents().len(), 2);
}

#[test]
fn patch_delete() {
    let Some(b) = base() else { return };
    let d = b.join("patchdelete");
    expect_bytes(&d, "config.yaml", &["strategic1.yaml"], "expected.yaml");
    expect_bytes(
        &d,
        "controlplane_orig.yaml",
        &["strategic2.yaml", "strategic3.yaml", "strategic4.yaml"],
        "controlplane_expected.yaml",
    );
}

#[test]
fn patch_delete_missing() {
    let Some(b) = base() else { return };
    let e = run(
        &b.join("patchdeletemissing"),
        "config.yaml",
        &["strategic1.yaml"],
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "patch delete: path 'machine.network.hostname' in document '/v1alpha1': failed to delete path 'machine.network.hostname': lookup failed"
    );
}

#[test]
fn patch_link_and_mixed() {
    let Some(b) = base() else { return };
    expect_bytes(
        &b.join("patchlink"),
        "base.yaml",
        &["patch.yaml"],
        "expected.yaml",
    );
    expect_bytes(
        &b.join("patchmixed"),
        "base.yaml",
        &["patch.yaml"],
        "expected.yaml",
    );
}

#[test]
fn patch_loading() {
    let Some(b) = base() else { return };
    let json = Patch::load(&format!("@{}", b.join("patch.json").display())).unwrap();
    assert!(matches!(&json, Patch::Json(p) if p.len() == 1));
    let yaml = Patch::load(&format!("@{}", b.join("patch.yaml").display())).unwrap();
    assert!(matches!(yaml, Patch::Json(_)));
    let strategic_path = b.join("strategic.yaml");
    match Patch::load(&format!("@{}", strategic_path.display())).unwrap() {
        Patch::Strategic(docs) => {
            assert_eq!(docs.len(), 1);
            let cfg = Config::parse(&common::read(&strategic_path)).unwrap();
            assert_eq!(cfg.encode(), common::read(&strategic_path));
        }
        other => panic!("expected a strategic patch, got {other:?}"),
    }
    let literal = r#"[{"op": "add", "path": "/machine/network/hostname", "value": "x"}]"#;
    let p = |n: &str| format!("@{}", b.join(n).display());
    let joined = load_patches(&[p("patch.json"), p("patch.yaml"), literal.to_string()]).unwrap();
    assert!(matches!(joined.as_slice(), [Patch::Json(ops)] if ops.len() == 3));
    let mixed = load_patches(&[
        p("patch.json"),
        p("strategic.yaml"),
        p("patch.yaml"),
        literal.to_string(),
    ])
    .unwrap();
    assert!(matches!(
        mixed.as_slice(),
        [Patch::Json(_), Patch::Strategic(_), Patch::Json(ops)] if ops.len() == 2
    ));
    // A bare file name is a file too.
    assert!(matches!(
        Patch::load(&b.join("patch.json").display().to_string()).unwrap(),
        Patch::Json(_)
    ));
}

/// `merge(left, right) == expected`, compared as decoded documents (as upstream does).
#[test]
fn v1alpha1_strategic_merge() {
    let Some(b) = base() else { return };
    for n in 1..=6 {
        let d = b.join(format!("v1alpha1-strategic/{n:03}"));
        let got = run(&d, "left.yaml", &["right.yaml"]).unwrap_or_else(|e| panic!("{n}: {e}"));
        let want = Config::load(d.join("expected.yaml")).unwrap();
        assert_eq!(normalize(got), normalize(want), "case {n:03}");
    }
}

/// Endpoint URLs compare without a trailing slash (upstream compares parsed URLs).
fn normalize(mut cfg: Config) -> Config {
    for d in cfg.documents_mut() {
        if let Some(e) = d.value.pointer_mut("/cluster/controlPlane/endpoint") {
            let s = e
                .as_str()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string();
            *e = s.into();
        }
    }
    cfg
}
