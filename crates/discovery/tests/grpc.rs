//! The discovery service over gRPC on loopback: two nodes' worth of sealed affiliates, what the
//! service stores (ciphertext only), refusals of bad input and floods, and health afterwards.

use std::time::Duration;

use discovery::crypto::Cipher;
use discovery::pb::client::{Affiliate, Endpoint};
use discovery::pb::server::cluster_client::ClusterClient;
use discovery::pb::server::*;
use discovery::service::{Limits, Service};
use tonic::transport::Channel;

async fn serve(service: Service) -> Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(service.server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn ttl(secs: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: secs,
        nanos: 0,
    })
}

#[tokio::test]
async fn the_service_sees_only_ciphertext_and_survives_bad_input() {
    let service = Service::new(Limits::default());
    let ch = serve(service.clone()).await;
    let mut client = ClusterClient::new(ch.clone());
    let cipher = Cipher::from_secret("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    let hello = client
        .hello(HelloRequest {
            cluster_id: "cluster-a".into(),
            client_version: "v1.0.0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hello.client_ip, vec![127, 0, 0, 1]);

    let mut watch = client
        .watch(WatchRequest {
            cluster_id: "cluster-a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(watch
        .message()
        .await
        .unwrap()
        .unwrap()
        .affiliates
        .is_empty());

    let node = Affiliate {
        node_id: "node-one".into(),
        addresses: vec![vec![10, 5, 0, 2]],
        hostname: "secret-host-one".into(),
        nodename: "secret-host-one".into(),
        machine_type: "controlplane".into(),
        operating_system: "Talos (v1)".into(),
        ..Default::default()
    };
    let endpoint = Endpoint {
        ip: vec![10, 5, 0, 2],
        port: 51820,
    };
    for _ in 0..2 {
        client
            .affiliate_update(AffiliateUpdateRequest {
                cluster_id: "cluster-a".into(),
                affiliate_id: "node-one".into(),
                affiliate_data: Some(cipher.seal_affiliate(&node)),
                affiliate_endpoints: vec![cipher.seal_endpoint(&endpoint)],
                ttl: ttl(60),
            })
            .await
            .unwrap();
    }
    // Another node reads it back.
    let seen = watch.message().await.unwrap().unwrap();
    assert_eq!(
        cipher.open_affiliate(&seen.affiliates[0].data).unwrap(),
        node
    );
    assert_eq!(
        cipher
            .open_endpoint(&seen.affiliates[0].endpoints[0])
            .unwrap(),
        endpoint
    );

    // What the service holds: one data blob and one endpoint (the same endpoint twice is
    // stored once), none with the hostname, the address or the node's text in it.
    let snap = service.snapshot();
    assert_eq!(snap.blobs.len(), 2);
    for blob in &snap.blobs {
        for needle in [
            &b"secret-host-one"[..],
            b"controlplane",
            b"Talos",
            &[10, 5, 0, 2],
        ] {
            assert!(
                !blob.windows(needle.len()).any(|w| w == needle),
                "plaintext {needle:?} stored"
            );
        }
    }

    // Bad input: clear refusals.
    let refuse = |r: Result<tonic::Response<AffiliateUpdateResponse>, tonic::Status>| {
        r.expect_err("refused")
    };
    let e = refuse(
        client
            .affiliate_update(AffiliateUpdateRequest {
                cluster_id: "cluster-a".into(),
                affiliate_id: "big".into(),
                affiliate_data: Some(vec![0; 4096]),
                affiliate_endpoints: vec![],
                ttl: ttl(60),
            })
            .await,
    );
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("4096 bytes, the limit is 2048"), "{e}");
    let e = refuse(
        client
            .affiliate_update(AffiliateUpdateRequest {
                cluster_id: "x".repeat(300),
                affiliate_id: "a".into(),
                affiliate_data: Some(vec![1]),
                affiliate_endpoints: vec![],
                ttl: ttl(60),
            })
            .await,
    );
    assert!(
        e.message().contains("cluster ID must be 1 to 256 bytes"),
        "{e}"
    );
    let e = refuse(
        client
            .affiliate_update(AffiliateUpdateRequest {
                cluster_id: "cluster-a".into(),
                affiliate_id: "many".into(),
                affiliate_data: Some(vec![1]),
                affiliate_endpoints: (0..100u8).map(|i| vec![i; 16]).collect(),
                ttl: ttl(60),
            })
            .await,
    );
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(e.message().contains("64 endpoints"), "{e}");

    // A flood from one address: past the burst it is slowed, then refused; the service stays up.
    let mut refused = 0;
    let flood: Vec<_> = (0..150)
        .map(|_| {
            let mut c = ClusterClient::new(ch.clone());
            tokio::spawn(async move {
                let mut req = tonic::Request::new(ListRequest {
                    cluster_id: "cluster-a".into(),
                });
                req.set_timeout(Duration::from_millis(500));
                c.list(req).await
            })
        })
        .collect();
    for f in flood {
        if let Err(e) = f.await.unwrap() {
            // Slowed past the caller's own deadline (a busy machine) is not a refusal.
            if e.code() == tonic::Code::Cancelled && e.message().contains("Timeout expired") {
                continue;
            }
            assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
            assert!(
                e.message().contains("rate limit exceeded for 127.0.0.1"),
                "{e}"
            );
            refused += 1;
        }
    }
    assert!(refused > 50, "only {refused} of 150 refused");
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status, 1, "serving");
}
