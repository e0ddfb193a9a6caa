//! `gen config` reproduces upstream's output byte for byte for every version contract.

mod common;

use machinery::generate::{generate, Contract, GenOptions, MachineType};
use machinery::patch::{apply, load_patches};
use machinery::secrets::SecretsBundle;

fn options(contract: Contract, overrides: bool) -> GenOptions {
    let mut o = GenOptions::new("base", "https://base:6443");
    o.kubernetes_version = "1.28.0".into();
    o.contract = contract;
    if overrides {
        o.additional_sans = vec!["foo".into(), "bar".into()];
        o.allow_scheduling_on_control_planes = true;
        o.dns_domain = "example.com".into();
        o.install_disk = Some("/dev/vda".into());
        o.extra_kernel_args = vec!["foo=bar".into(), "bar=baz".into()];
        o.local_api_server_port = Some(5443);
        o.sysctls = vec![("foo".into(), "bar".into())];
        o.cni_urls = vec!["https://example.com/cni.yaml".into()];
        o.registry_mirrors = vec![(
            "ghcr.io".into(),
            vec!["https://ghcr.io.my-mirror.com".into()],
        )];
    }
    o
}

#[test]
fn stability_all_contracts() {
    let Some(d) = common::dir() else { return };
    let d = d.join("config/stability");
    let secrets = SecretsBundle::load(d.join("secrets.yaml")).unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for minor in 3..=15 {
        let contract: Contract = format!("v1.{minor}").parse().unwrap();
        for overrides in [false, true] {
            for ty in [MachineType::ControlPlane, MachineType::Worker] {
                let prefix = if overrides { "overrides" } else { "base" };
                let name = format!("v1.{minor}/{prefix}-{}.yaml", ty.as_str());
                let mut cfg = generate(&secrets, &options(contract, overrides), ty).unwrap();
                if overrides {
                    let patch = if minor >= 14 {
                        "patch.yaml"
                    } else {
                        "patch-pre14.yaml"
                    };
                    let patches = load_patches(&[format!("@{}", d.join(patch).display())]).unwrap();
                    cfg = apply(cfg, &patches).unwrap();
                }
                let want = common::read(&d.join(&name));
                checked += 1;
                if cfg.encode() != want {
                    failures.push((name, cfg.encode(), want));
                }
            }
        }
    }
    assert_eq!(checked, 52);
    if let Some((name, got, want)) = failures.first() {
        let diff: Vec<String> = got
            .lines()
            .zip(want.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(5)
            .map(|(i, (a, b))| format!("line {}: got {a:?}\n         want {b:?}", i + 1))
            .collect();
        panic!(
            "{} of {checked} differ: {:?}\nfirst: {name}\n{}\n(lines got {} want {})",
            failures.len(),
            failures.iter().map(|f| &f.0).collect::<Vec<_>>(),
            diff.join("\n"),
            got.lines().count(),
            want.lines().count()
        );
    }
}

/// The secrets bundle comes back out of generated control plane configs of every layout.
#[test]
fn secrets_from_controlplane_config() {
    let Some(d) = common::dir() else { return };
    let d = d.join("config/stability");
    let secrets = SecretsBundle::load(d.join("secrets.yaml")).unwrap();
    for minor in [3, 11, 13, 15] {
        let contract: Contract = format!("v1.{minor}").parse().unwrap();
        let cfg = generate(
            &secrets,
            &options(contract, false),
            MachineType::ControlPlane,
        )
        .unwrap();
        let back = SecretsBundle::from_config(&cfg).unwrap();
        assert_eq!(back, secrets, "v1.{minor}");
    }
    let worker = generate(
        &secrets,
        &options(Contract::CURRENT, false),
        MachineType::Worker,
    )
    .unwrap();
    assert!(SecretsBundle::from_config(&worker).is_err());
}
