//! Issue targets: `gen config` (keys and certs included) under 20 ms; loading the largest
//! fixture under 1 ms; applying the `apply/` patch sequence under 200 µs.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use machinery::clientconfig;
use machinery::generate::{generate, GenOptions, MachineType};
use machinery::patch::{apply, load_patches};
use machinery::secrets::SecretsBundle;
use machinery::Config;

fn conformance() -> PathBuf {
    std::env::var_os("TALOS_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance")
        })
}

fn gen_config(c: &mut Criterion) {
    let opts = GenOptions::new("bench", "https://10.5.0.2:6443");
    c.bench_function(
        "gen config (secrets, controlplane, worker, talosconfig)",
        |b| {
            b.iter(|| {
                let secrets = SecretsBundle::generate().unwrap();
                let cp = generate(&secrets, &opts, MachineType::ControlPlane)
                    .unwrap()
                    .encode();
                let w = generate(&secrets, &opts, MachineType::Worker)
                    .unwrap()
                    .encode();
                let tc = clientconfig::from_secrets(
                    &secrets,
                    "bench",
                    &["os:admin".into()],
                    Duration::from_secs(3600),
                    vec!["127.0.0.1".into()],
                )
                .unwrap()
                .encode();
                (cp, w, tc)
            })
        },
    );
}

fn load_largest(c: &mut Criterion) {
    let dir = conformance();
    let mut largest = (0, String::new());
    for sub in [
        "config/configloader",
        "config/decoder",
        "configpatcher/patchdelete",
    ] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                let text = std::fs::read_to_string(&p).unwrap();
                if text.len() > largest.0 && Config::parse(&text).is_ok() {
                    largest = (text.len(), text);
                }
            }
        }
    }
    let text = largest.1;
    c.bench_function(
        &format!("load largest fixture ({} bytes)", text.len()),
        |b| b.iter(|| Config::parse(&text).unwrap()),
    );
}

fn apply_sequence(c: &mut Criterion) {
    let d = conformance().join("configpatcher/apply");
    let cfg = Config::load(d.join("config.yaml")).unwrap();
    let specs: Vec<String> = [
        "strategic1.yaml",
        "jsonpatch1.yaml",
        "jsonpatch2.yaml",
        "strategic2.yaml",
        "strategic3.yaml",
    ]
    .iter()
    .map(|f| format!("@{}", d.join(f).display()))
    .collect();
    let patches = load_patches(&specs).unwrap();
    c.bench_function("apply the apply/ patch sequence", |b| {
        b.iter(|| apply(cfg.clone(), &patches).unwrap())
    });
}

criterion_group!(benches, gen_config, load_largest, apply_sequence);
criterion_main!(benches);
