//! Issue targets: ≥1,000,000 updates/s on one core with no watchers, ≥300,000 with 10 kind
//! watchers (drained as it goes), one event to 1,000 watchers in under 2 ms.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use resources::{Resource, State, WatchKindOptions, Watcher};

const NS: &str = "bench";
const TY: &str = "Items.bench.dev";
const N: usize = 1000;

fn populated() -> (State, Vec<std::sync::Arc<Resource>>) {
    let s = State::new();
    let rs = (0..N)
        .map(|i| {
            let mut r = Resource::new(NS, TY, &format!("item-{i}"), i as u64);
            r.metadata.owner = "bench".into();
            s.create(r).unwrap()
        })
        .collect();
    (s, rs)
}

fn updates(c: &mut Criterion, watchers: usize) {
    let (s, mut rs) = populated();
    let mut ws: Vec<Watcher> = (0..watchers)
        .map(|_| {
            s.watch_kind(
                NS,
                TY,
                WatchKindOptions {
                    buffer: Some(2 * N),
                    ..Default::default()
                },
            )
            .unwrap()
        })
        .collect();
    let mut g = c.benchmark_group("state");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function(format!("{N} updates, {watchers} kind watchers"), |b| {
        b.iter(|| {
            for r in rs.iter_mut() {
                let v = *r.spec::<u64>().unwrap() + 1;
                *r = s.update(r.with_spec(v)).unwrap();
            }
            for w in ws.iter_mut() {
                while w.try_next().is_some() {}
            }
        })
    });
    g.finish();
}

fn no_watchers(c: &mut Criterion) {
    updates(c, 0);
}

fn ten_watchers(c: &mut Criterion) {
    updates(c, 10);
}

fn fan_out(c: &mut Criterion) {
    let (s, rs) = populated();
    let mut ws: Vec<Watcher> = (0..1000)
        .map(|_| s.watch_kind(NS, TY, WatchKindOptions::default()).unwrap())
        .collect();
    let mut r = rs[0].clone();
    c.bench_function("one event to 1000 watchers", |b| {
        b.iter_batched(
            || {
                for w in ws.iter_mut() {
                    while w.try_next().is_some() {}
                }
            },
            |_| {
                let v = *r.spec::<u64>().unwrap() + 1;
                r = s.update(r.with_spec(v)).unwrap();
            },
            BatchSize::PerIteration,
        )
    });
}

criterion_group!(benches, no_watchers, ten_watchers, fan_out);
criterion_main!(benches);
