//! The upstream patch fixtures (`configpatcher/`), byte for byte where upstream compares bytes.

mod common;

use std::path::{Path, PathBuf};

use machinery::patch::{apply, load_patches, Patch};
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
    // Upstream refuses a JSON patch on a multi-document config; here it goes to the v1alpha1
    // document and leaves the others as they are.
    let cfg = Config::load(d.join("config.yaml")).unwrap();
    let patched = run(&d, "config.yaml", &["jsonpatch.yaml"]).unwrap();
    let v1 = &patched.documents()[0].value;
    assert_eq!(
        v1["machine"]["network"]["interfaces"][0]["addresses"],
        serde_json::json!(["10.1.2.3/24"])
    );
    assert_eq!(patched.documents()[1..], cfg.documents()[1..]);
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

/// JSON patches on the other documents of a config: addressed by `/@Kind[=name]`, refused
/// when that does not say which document, or when one operation spans two.
#[test]
fn json_patches_address_documents_by_kind_and_name() {
    let Some(b) = base() else { return };
    let d = b.join("multidoc");
    let cfg = || Config::load(d.join("config.yaml")).unwrap();
    let patch = |text: &str| apply(cfg(), &load_patches(&[text]).unwrap());
    let patched = patch(
        r#"[{"op": "replace", "path": "/@ExtensionServiceConfig=foo/environment/0", "value": "FOO=BAZ"},
            {"op": "replace", "path": "/@SideroLinkConfig/apiUrl", "value": "https://other/join"}]"#,
    )
    .unwrap();
    let docs = patched.documents();
    assert_eq!(docs[2].value["environment"][0], "FOO=BAZ");
    assert_eq!(docs[1].value["apiUrl"], "https://other/join");
    assert_eq!(docs[0], cfg().documents()[0]);
    for (text, why) in [
        (
            r#"[{"op": "add", "path": "/@KubeletConfig/x", "value": 1}]"#,
            "JSON patch operation 1: the config has no KubeletConfig document",
        ),
        (
            r#"[{"op": "copy", "from": "/@SideroLinkConfig/apiUrl", "path": "/machine/network/hostname"}]"#,
            "are in different documents",
        ),
        (
            r#"[{"op": "remove", "path": "/@ExtensionServiceConfig=bar/environment"}]"#,
            "no ExtensionServiceConfig=bar document",
        ),
    ] {
        let e = patch(text).unwrap_err().to_string();
        assert!(e.contains(why), "{text}: {e}");
    }
    // Without a v1alpha1 document among several, a plain path says how to address one.
    let mut docs_only = cfg();
    docs_only.documents_mut().remove(0);
    let e = apply(
        docs_only,
        &load_patches(&[r#"[{"op": "add", "path": "/x", "value": 1}]"#]).unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(
            "the config has no v1alpha1 document to apply /x to; address one of its documents"
        ),
        "{e}"
    );
}

/// A JSON patch written for v1alpha1, as the Talos docs write them, goes to the document that
/// holds the section in a generated config; a section v1alpha1 still has stays there.
#[test]
fn json_patches_follow_sections_moved_to_documents() {
    let cfg = Config::parse(
        "version: v1alpha1\nmachine:\n    type: worker\n---\napiVersion: v1alpha1\nkind: KubeletConfig\nimage: ghcr.io/siderolabs/kubelet:v1.35.0\n",
    )
    .unwrap();
    let ops = r#"[{"op": "replace", "path": "/machine/kubelet/image", "value": "k:2"},
                  {"op": "add", "path": "/machine/kubelet/extraConfig", "value": {"maxPods": 50}},
                  {"op": "replace", "path": "/machine/type", "value": "controlplane"}]"#;
    let patched = apply(cfg.clone(), &load_patches(&[ops]).unwrap()).unwrap();
    let docs = patched.documents();
    assert_eq!(docs[1].value["image"], "k:2");
    assert_eq!(docs[1].value["config"]["maxPods"], 50);
    assert_eq!(docs[0].value["machine"]["type"], "controlplane");
    assert!(docs[0].value["machine"].get("kubelet").is_none());
    assert_eq!(
        machinery::patch::json_destination(&cfg, "/machine/kubelet/image").unwrap(),
        "/image of the v1alpha1/KubeletConfig document"
    );
}
