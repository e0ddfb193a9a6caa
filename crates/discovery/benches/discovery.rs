//! The discovery service's throughput and fan-out.
//!
//! - `update/in-process`: one affiliate update (sealed data of a real size, one endpoint) into
//!   a service holding 1,000 affiliates across 100 clusters, each with a watcher.
//! - `update/grpc-16`: the same over gRPC on loopback, 16 callers at once (rate limit raised:
//!   in a real cluster every node has its own address).
//! - `watch/100`: one update until all 100 watchers of its cluster have it.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use discovery::crypto::Cipher;
use discovery::pb::client::{Affiliate, Endpoint};
use discovery::pb::server::cluster_client::ClusterClient;
use discovery::pb::server::AffiliateUpdateRequest;
use discovery::service::{Limits, Service};
use futures::StreamExt;

fn request(cipher: &Cipher, cluster: usize, node: usize) -> AffiliateUpdateRequest {
    let a = Affiliate {
        node_id: format!("node-{cluster}-{node}"),
        addresses: vec![vec![10, 5, cluster as u8, node as u8]],
        hostname: format!("cluster-{cluster}-node-{node}"),
        nodename: format!("cluster-{cluster}-node-{node}"),
        machine_type: "worker".into(),
        operating_system: "Talos (v1.0.0)".into(),
        ..Default::default()
    };
    AffiliateUpdateRequest {
        cluster_id: format!("cluster-{cluster}"),
        affiliate_id: a.node_id.clone(),
        affiliate_data: Some(cipher.seal_affiliate(&a)),
        affiliate_endpoints: vec![cipher.seal_endpoint(&Endpoint {
            ip: vec![10, 5, cluster as u8, node as u8],
            port: 51820,
        })],
        ttl: Some(prost_types::Duration {
            seconds: 300,
            nanos: 0,
        }),
    }
}

fn limits() -> Limits {
    Limits {
        rate: 1e9,
        burst: 1e9,
        watch_buffer: 1 << 20,
        ..Limits::default()
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cipher = Cipher::new(&[7; 32]).unwrap();
    let requests: Vec<AffiliateUpdateRequest> = (0..100)
        .flat_map(|cl| (0..10).map(move |n| (cl, n)))
        .map(|(cl, n)| request(&cipher, cl, n))
        .collect();

    let mut g = c.benchmark_group("update");
    g.throughput(Throughput::Elements(1));
    let service = Service::new(limits());
    let _watchers: Vec<_> = rt.block_on(async {
        (0..100)
            .map(|cl| service.watch(format!("cluster-{cl}")).unwrap())
            .collect()
    });
    for r in &requests {
        service.update(r.clone()).unwrap();
    }
    let mut i = 0;
    g.bench_function("in-process", |b| {
        b.iter(|| {
            service
                .update(requests[i % requests.len()].clone())
                .unwrap();
            i += 1;
        })
    });
    drop(_watchers);

    let service = Service::new(limits());
    let channel = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service.server())
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    });
    g.throughput(Throughput::Elements(1600));
    g.bench_function("grpc-16x100", |b| {
        b.iter(|| {
            rt.block_on(async {
                let tasks: Vec<_> = (0..16)
                    .map(|t| {
                        let mut client = ClusterClient::new(channel.clone());
                        let reqs: Vec<_> =
                            requests.iter().skip(t * 60).take(100).cloned().collect();
                        tokio::spawn(async move {
                            for r in reqs {
                                client.affiliate_update(r).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group("watch");
    let service = Service::new(limits());
    let mut watchers: Vec<_> = (0..100)
        .map(|_| service.watch("cluster-0".into()).unwrap())
        .collect();
    rt.block_on(async {
        for w in &mut watchers {
            w.next().await.unwrap().unwrap();
        }
    });
    g.bench_function("100-watchers", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for n in 0..iters {
                    let started = Instant::now();
                    service
                        .update(request(&cipher, 0, (n % 10) as usize))
                        .unwrap();
                    for w in &mut watchers {
                        w.next().await.unwrap().unwrap();
                    }
                    total += started.elapsed();
                }
                total
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
