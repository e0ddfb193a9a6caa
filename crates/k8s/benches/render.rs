//! The cost of rendering the control plane's three static pods (command lines merged, objects
//! built, YAML written) against only encoding the same objects as YAML: what rendering adds.

use criterion::{criterion_group, criterion_main, Criterion};
use k8s::pods::{self, Versions};

#[path = "../tests/common/mod.rs"]
mod common;

fn render(c: &mut Criterion) {
    let (a, m, s) = common::defaults();
    let v = Versions::default();
    c.bench_function("render three static pods", |b| {
        b.iter(|| {
            let a = k8s::flags::api_server(&a).unwrap();
            let m = k8s::flags::controller_manager(&m).unwrap();
            let s = k8s::flags::scheduler(&s).unwrap();
            [
                k8s::yaml::to_string(&pods::api_server(&a, &v).unwrap()),
                k8s::yaml::to_string(&pods::controller_manager(&m, &v).unwrap()),
                k8s::yaml::to_string(&pods::scheduler(&s, &v).unwrap()),
            ]
        })
    });
    let built = [
        pods::api_server(&k8s::flags::api_server(&a).unwrap(), &v).unwrap(),
        pods::controller_manager(&k8s::flags::controller_manager(&m).unwrap(), &v).unwrap(),
        pods::scheduler(&k8s::flags::scheduler(&s).unwrap(), &v).unwrap(),
    ];
    c.bench_function("YAML encode of the same three pods", |b| {
        b.iter(|| built.iter().map(k8s::yaml::to_string).collect::<Vec<_>>())
    });
}

criterion_group!(benches, render);
criterion_main!(benches);
