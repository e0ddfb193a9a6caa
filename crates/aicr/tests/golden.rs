//! Golden tests: recipes and bundles compared with the files under `tests/golden/` (write them
//! anew with `AICR_BLESS=1 cargo test -p aicr`), and the errors of bad recipes. Every emitted
//! YAML parses; Namespaces and Applications deserialize strictly into Kubernetes' and Argo CD's
//! types; the scripts pass shellcheck; `checksums.txt` holds for every file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use aicr::{Catalogue, Criteria, Deployer, Options, Recipe};
use serde::Deserialize;
use serde_json::Value;

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// Compare `text` with the golden file `name` (or write it when blessing).
fn golden(name: &str, text: &str) {
    let path = here().join("golden").join(name);
    if std::env::var_os("AICR_BLESS").is_some() {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (write it with AICR_BLESS=1)", path.display()));
    assert!(
        want == text,
        "{name} differs from the golden file; got:\n{text}"
    );
}

fn query(os: &str, accelerator: &str, intent: &str) -> Criteria {
    Criteria {
        os: os.into(),
        accelerator: accelerator.into(),
        intent: intent.into(),
        ..Default::default()
    }
}

fn options(deployer: Deployer) -> Options {
    Options {
        deployer,
        sets: Vec::new(),
        snapshot: None,
        repo_url: "https://git.example.com/gpu-bundle.git".into(),
    }
}

/// The bundle as one text: each file under its path.
fn listing(files: &[(String, Vec<u8>)]) -> String {
    files
        .iter()
        .map(|(p, d)| format!("=== {p}\n{}", String::from_utf8_lossy(d)))
        .collect()
}

/// Write the bundle to a fresh folder; every YAML file parses, `sha256sum -c` holds and the
/// scripts pass shellcheck.
fn written(name: &str, files: &[(String, Vec<u8>)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aicr-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    aicr::write(&dir, files).unwrap();
    for (p, d) in files {
        if p.ends_with(".yaml") {
            aicr::parse_yaml(p, std::str::from_utf8(d).unwrap()).unwrap();
        }
    }
    let sums = Command::new("sha256sum")
        .args(["-c", "--quiet", "checksums.txt"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        sums.status.success(),
        "{}",
        String::from_utf8_lossy(&sums.stdout)
    );
    let scripts: Vec<&String> = files
        .iter()
        .map(|(p, _)| p)
        .filter(|p| p.ends_with(".sh"))
        .collect();
    if !scripts.is_empty() {
        let out = Command::new("shellcheck")
            .args(&scripts)
            .current_dir(&dir)
            .output()
            .expect("shellcheck (Debian: shellcheck)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    dir
}

#[test]
fn a_base_only_recipe_and_its_helm_bundle() {
    let cat = Catalogue::builtin().unwrap();
    let recipe = cat.resolve(&Criteria::default()).unwrap();
    assert_eq!(recipe.spec.leaves, ["base"]);
    assert!(recipe.spec.mixins.is_empty());
    let names: Vec<&str> = recipe
        .spec
        .components
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["cert-manager", "kube-prometheus-stack", "gpu-operator"]
    );
    let text = recipe.to_yaml();
    golden("base-recipe.yaml", &text);
    // What `aicr recipe` writes, `aicr bundle` reads back unchanged.
    assert_eq!(Recipe::from_yaml("r", &text).unwrap().to_yaml(), text);

    let mut opts = options(Deployer::Helm);
    opts.sets = vec![
        "gpu-operator:driver.enabled=false".into(),
        "cert-manager:replicaCount=2".into(),
    ];
    let files = aicr::bundle(&recipe, &opts).unwrap();
    golden("base-helm.txt", &listing(&files));
    let dir = written("base", &files);
    // --set comes last: over the values files and overrides.
    let values = std::fs::read_to_string(dir.join("003-gpu-operator/values.yaml")).unwrap();
    assert!(values.contains("enabled: false"), "{values}");
    let deploy = std::fs::read_to_string(dir.join("deploy.sh")).unwrap();
    let at = |s: &str| deploy.find(s).unwrap();
    assert!(at("001-cert-manager") < at("003-gpu-operator"), "{deploy}");
    std::fs::remove_dir_all(dir).unwrap();

    let err = aicr::bundle(&recipe, &{
        let mut o = options(Deployer::Helm);
        o.sets = vec!["nvsentinel:x=1".into()];
        o
    })
    .unwrap_err();
    assert_eq!(
        err,
        "--set nvsentinel:x=1: the recipe has no component nvsentinel"
    );
}

/// Argo CD's Application, as far as bundles use it (its CRD's field names), strictly.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Application {
    api_version: String,
    kind: String,
    metadata: AppMeta,
    spec: AppSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppMeta {
    name: String,
    namespace: String,
    annotations: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AppSpec {
    project: String,
    source: AppSource,
    destination: Destination,
    sync_policy: SyncPolicy,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AppSource {
    #[serde(rename = "repoURL")]
    repo_url: String,
    chart: Option<String>,
    path: Option<String>,
    target_revision: String,
    helm: Option<HelmSource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HelmSource {
    release_name: String,
    values_object: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Destination {
    server: String,
    namespace: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SyncPolicy {
    automated: Automated,
    sync_options: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Automated {
    prune: bool,
    self_heal: bool,
}

const PRIVILEGED: [&str; 5] = [
    "gpu-operator",
    "network-operator",
    "nvsentinel",
    "nvidia-dra-driver-gpu",
    "nodewright-operator",
];

#[test]
fn a_talos_leaf_with_the_mixin_makes_privileged_namespaces_before_their_charts() {
    let cat = Catalogue::builtin().unwrap();
    let recipe = cat.resolve(&query("talos", "gb200", "training")).unwrap();
    // gb200 is the ancestor of the most specific leaf: dropped as a leaf, merged as its base.
    assert_eq!(
        recipe.spec.leaves,
        ["gb200-talos-training", "talos", "training"]
    );
    assert!(recipe.spec.overlays.contains(&"gb200".to_string()));
    assert_eq!(recipe.spec.mixins, ["os-talos"]);
    assert!(recipe
        .spec
        .constraints
        .iter()
        .any(|c| c.name == "OS.release.ID" && c.value == "talos"));
    golden("talos-gb200-training-recipe.yaml", &recipe.to_yaml());

    let mut opts = options(Deployer::Argocd);
    opts.snapshot = Some(snapshot("talos-snapshot.yaml"));
    let files = aicr::bundle(&recipe, &opts).unwrap();
    golden("talos-gb200-training-argocd.txt", &listing(&files));
    let dir = written("talos", &files);

    let mut namespaces = Vec::new();
    let mut waves: BTreeMap<String, usize> = BTreeMap::new();
    for (path, data) in &files {
        let text = std::str::from_utf8(data).unwrap();
        if path.ends_with("manifests.yaml") {
            for doc in aicr::parse_yaml(path, text).unwrap() {
                // Strictly a Kubernetes Namespace: nothing is lost going through the type.
                let ns: k8s_openapi::api::core::v1::Namespace =
                    serde_json::from_value(doc.value.clone()).unwrap();
                let mut back = serde_json::to_value(&ns).unwrap();
                back.as_object_mut().unwrap().remove("spec");
                assert_eq!(back, doc.value, "{path}");
                namespaces.push(ns);
            }
        }
        if path.ends_with("application.yaml") {
            let doc = &aicr::parse_yaml(path, text).unwrap()[0];
            let app: Application =
                serde_json::from_value(doc.value.clone()).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(
                (app.api_version.as_str(), app.kind.as_str()),
                ("argoproj.io/v1alpha1", "Application")
            );
            assert_eq!(app.metadata.namespace, "argocd");
            assert_eq!(app.spec.project, "default");
            assert_eq!(
                app.spec.destination.server,
                "https://kubernetes.default.svc"
            );
            assert!(
                app.spec.sync_policy.automated.prune && app.spec.sync_policy.automated.self_heal
            );
            assert_eq!(
                app.spec.sync_policy.sync_options,
                ["CreateNamespace=true", "ServerSideApply=true"]
            );
            let folder = path.split('/').next().unwrap();
            let index: usize = folder[..3].parse().unwrap();
            let wave: usize = app.metadata.annotations["argocd.argoproj.io/sync-wave"]
                .parse()
                .unwrap();
            assert_eq!(wave, index, "{path}");
            assert_eq!(app.metadata.labels["app.kubernetes.io/managed-by"], "aicr");
            if let Some(helm) = &app.spec.source.helm {
                assert_eq!(
                    app.spec.source.chart.as_deref(),
                    Some(helm.release_name.as_str())
                );
                assert!(helm.values_object.is_object());
            } else {
                assert!(app.spec.source.path.is_some(), "{path}");
            }
            assert!(
                !app.spec.source.repo_url.is_empty() && !app.spec.source.target_revision.is_empty()
            );
            if PRIVILEGED.contains(&app.metadata.name.trim_end_matches("-pre")) {
                assert_eq!(
                    app.spec.destination.namespace,
                    format!("privileged-{}", app.metadata.name.trim_end_matches("-pre"))
                );
            }
            waves.insert(app.metadata.name, wave);
        }
    }
    // The five namespaces, labelled to allow privileged pods, each applied one wave before
    // its chart.
    let mut names: Vec<String> = namespaces
        .iter()
        .map(|n| n.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    let mut want: Vec<String> = PRIVILEGED
        .iter()
        .map(|c| format!("privileged-{c}"))
        .collect();
    want.sort();
    assert_eq!(names, want);
    for ns in &namespaces {
        let labels = ns.metadata.labels.clone().unwrap();
        let component = labels["app.kubernetes.io/component"].clone();
        let mut expect: BTreeMap<String, String> = ["enforce", "audit", "warn"]
            .iter()
            .flat_map(|m| {
                [
                    (
                        format!("pod-security.kubernetes.io/{m}"),
                        "privileged".to_string(),
                    ),
                    (
                        format!("pod-security.kubernetes.io/{m}-version"),
                        "latest".to_string(),
                    ),
                ]
            })
            .collect();
        expect.insert("app.kubernetes.io/managed-by".into(), "aicr".into());
        expect.insert("app.kubernetes.io/component".into(), component.clone());
        expect.insert("aicr.run/os".into(), "talos".into());
        assert_eq!(labels, expect);
        assert_eq!(waves[&format!("{component}-pre")] + 1, waves[&component]);
    }
    // Other components keep their namespaces and have no pre folder.
    for c in [
        "cert-manager",
        "kube-prometheus-stack",
        "nodewright-customizations",
    ] {
        assert!(!waves.contains_key(&format!("{c}-pre")), "{c}");
    }
    // gpu-operator comes after cert-manager, nvsentinel after gpu-operator.
    assert!(waves["cert-manager"] < waves["gpu-operator-pre"]);
    assert!(waves["gpu-operator"] < waves["nvsentinel-pre"]);
    std::fs::remove_dir_all(dir).unwrap();
}

fn snapshot(name: &str) -> Value {
    let path = here().join("data").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    aicr::parse_yaml(name, &text).unwrap().remove(0).value
}

#[test]
fn errors_name_what_and_where() {
    let cat = Catalogue::builtin().unwrap();
    let recipe = cat.resolve(&query("talos", "gb200", "training")).unwrap();
    let mut opts = options(Deployer::Helm);
    opts.snapshot = Some(snapshot("ubuntu-snapshot.yaml"));
    let constraint = aicr::bundle(&recipe, &opts).unwrap_err();

    let cycle = Catalogue::from_dir(&here().join("data/cycle"))
        .unwrap()
        .resolve(&Criteria::default())
        .unwrap_err();
    let conflict = Catalogue::from_dir(&here().join("data/conflict"))
        .unwrap()
        .resolve(&query("ubuntu", "", ""))
        .unwrap_err();
    let mut files = BTreeMap::new();
    files.insert(
        "overlays/base.yaml".to_string(),
        "kind: RecipeMetadata\nmetadata:\n  name: base\nspec:\n  componentRefs:\n    - name: a\n      kind: Helm\n".to_string(),
    );
    let unknown_field = Catalogue::from_files(files).err().unwrap();
    let no_argocd_repo = aicr::bundle(
        &recipe,
        &Options {
            repo_url: String::new(),
            ..options(Deployer::Argocd)
        },
    )
    .unwrap_err();
    golden(
        "errors.txt",
        &format!(
            "constraint: {constraint}\ncycle: {cycle}\nconflict: {conflict}\nunknown field: {unknown_field}\nargocd: {no_argocd_repo}\n"
        ),
    );
    assert!(constraint.contains("OS.release.ID == talos") && constraint.contains("ubuntu"));
    assert!(cycle.contains("a -> c -> b -> a"), "{cycle}");
    assert!(
        conflict.contains("mixin os-talos") && conflict.contains("overlay ubuntu"),
        "{conflict}"
    );
}
