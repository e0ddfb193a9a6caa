//! Resolving and bundling a recipe of 50 components (goal: under 50 ms).

use std::collections::BTreeMap;

use aicr::{Catalogue, Criteria, Deployer, Options};
use criterion::{criterion_group, criterion_main, Criterion};

/// A root overlay with 25 components and a leaf with 25 more (and changes to the first 25),
/// each with a values file and dependencies on earlier ones.
pub fn catalogue() -> Catalogue {
    let mut files = BTreeMap::new();
    let component = |i: usize, own: bool| {
        let mut s = format!("    - name: c{i:02}\n");
        if own {
            s += &format!(
                "      type: Helm\n      source: https://charts.example.com/c{i}\n      version: 1.{i}.0\n      valuesFile: values/c{i:02}.yaml\n"
            );
            if i > 0 {
                s += &format!("      dependencyRefs: [c{:02}, c{:02}]\n", i - 1, i / 2);
            }
        } else {
            s += &format!(
                "      overrides:\n        replicas: {i}\n        image:\n          tag: v{i}\n"
            );
        }
        s
    };
    let mut base = String::from(
        "kind: RecipeMetadata\nmetadata:\n  name: base\nspec:\n  constraints:\n    - name: K8s.server.version\n      value: \">= 1.30\"\n  componentRefs:\n",
    );
    let mut leaf = String::from(
        "kind: RecipeMetadata\nmetadata:\n  name: leaf\nspec:\n  criteria:\n    accelerator: h100\n    os: talos\n  componentRefs:\n",
    );
    for i in 0..25 {
        base += &component(i, true);
        leaf += &component(i, false);
    }
    for i in 25..50 {
        leaf += &component(i, true);
    }
    for i in 0..50 {
        files.insert(
            format!("values/c{i:02}.yaml"),
            format!("replicas: 1\nimage:\n  repository: example.com/c{i}\n  tag: v0\nresources:\n  limits:\n    cpu: 100m\n    memory: 128Mi\n"),
        );
    }
    files.insert("overlays/base.yaml".into(), base);
    files.insert("overlays/leaf.yaml".into(), leaf);
    Catalogue::from_files(files).expect("catalogue")
}

fn bench(c: &mut Criterion) {
    let cat = catalogue();
    let query = Criteria {
        accelerator: "h100".into(),
        os: "talos".into(),
        ..Default::default()
    };
    let opts = Options {
        deployer: Deployer::Helm,
        sets: vec!["c10:replicas=3".into()],
        snapshot: None,
        repo_url: String::new(),
    };
    let recipe = cat.resolve(&query).expect("resolve");
    assert_eq!(recipe.spec.components.len(), 50);
    c.bench_function("resolve and bundle 50 components", |b| {
        b.iter(|| {
            let r = cat.resolve(&query).expect("resolve");
            aicr::bundle(&r, &opts).expect("bundle")
        })
    });
    c.bench_function("load, resolve and bundle 50 components", |b| {
        b.iter(|| {
            let r = catalogue().resolve(&query).expect("resolve");
            aicr::bundle(&r, &opts).expect("bundle")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
