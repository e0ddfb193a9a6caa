//! apid's access rules against a real machined process on loopback: the role matrix for the
//! methods served (and the admin-only fallback for everything else), and foreign, expired or
//! missing client certificates.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use api::machine::machine_service_client::MachineServiceClient;
use machinery::generate::{generate, GenOptions, MachineType};
use machinery::pki::{self, CertAndKey, Key, KeyKind, LeafSpec};
use machinery::secrets::SecretsBundle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

struct Node {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(secrets: &SecretsBundle) -> Node {
    start_named(secrets, "a")
}

fn start_named(secrets: &SecretsBundle, name: &str) -> Node {
    let dir = std::env::temp_dir().join(format!("machined-apid-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = generate(
        secrets,
        &GenOptions::new("t", "https://127.0.0.1:6443"),
        MachineType::ControlPlane,
    )
    .unwrap();
    let path = dir.join("controlplane.yaml");
    std::fs::write(&path, cfg.encode()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_machined"))
        .args([
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--trustd-listen",
            "127.0.0.1:0",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut reader = BufReader::new(stderr);
    let mut line = String::new();
    while !line.starts_with("apid listening") {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("machined ended without listening");
        }
    }
    // Keep draining the node's log so that it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
    Node { child, port, dir }
}

fn client_cert(ca: &CertAndKey, roles: &[&str]) -> (String, String) {
    let key = Key::generate(KeyKind::Ed25519).unwrap();
    let spec = LeafSpec {
        organizations: roles.iter().map(|r| r.to_string()).collect(),
        client: true,
        ..Default::default()
    };
    (pki::sign_leaf(ca, &key, &spec).unwrap(), key.to_pkcs8_pem())
}

fn expired_cert(ca: &CertAndKey) -> (String, String) {
    let ca_key = Key::from_pem(&ca.key).unwrap();
    let issuer = rcgen::CertificateParams::from_ca_cert_pem(&ca.crt)
        .unwrap()
        .self_signed(ca_key.pair())
        .unwrap();
    let key = Key::generate(KeyKind::Ed25519).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "os:admin");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(10);
    params.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let cert = params
        .signed_by(key.pair(), &issuer, ca_key.pair())
        .unwrap();
    (cert.pem(), key.to_pkcs8_pem())
}

async fn channel(port: u16, ca: &str, identity: Option<(String, String)>) -> Channel {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((crt, key)) = identity {
        tls = tls.identity(Identity::from_pem(crt, key));
    }
    Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// Call any method path with an empty request (to reach methods no typed client has).
async fn raw_call(ch: Channel, path: &'static str) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    grpc.unary(
        tonic::Request::new(()),
        http::uri::PathAndQuery::from_static(path),
        codec,
    )
    .await
    .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_matrix_and_certificates() {
    let secrets = SecretsBundle::generate().unwrap();
    let node = start(&secrets);
    let os_ca = secrets.certs.os.decode().unwrap();

    // Allowed (Version, Hostname) vs. the admin-only fallback, per role.
    let cases: [(&[&str], bool, bool); 6] = [
        (&["os:admin"], true, true),
        (&["os:operator"], true, false),
        (&["os:reader"], true, false),
        (&["os:etcd:backup"], false, false),
        (&["os:reader", "os:admin"], true, true),
        (&[], false, false),
    ];
    for (roles, read_ok, admin_ok) in cases {
        let ch = channel(node.port, &os_ca.crt, Some(client_cert(&os_ca, roles))).await;
        let mut m = MachineServiceClient::new(ch.clone());
        let v = m.version(()).await;
        assert_eq!(v.is_ok(), read_ok, "{roles:?} Version: {v:?}");
        if let Err(s) = &v {
            assert_eq!(s.code(), tonic::Code::PermissionDenied);
            assert!(s.message().starts_with("not authorized: /machine.MachineService/Version needs one of the roles os:admin"), "{}", s.message());
        }
        let h = m.hostname(()).await;
        assert_eq!(h.is_ok(), read_ok, "{roles:?} Hostname: {h:?}");
        let load = m.load_avg(()).await;
        assert_eq!(load.is_ok(), read_ok, "{roles:?} LoadAvg: {load:?}");
        let cpus = m.cpu_info(()).await;
        assert_eq!(cpus.is_ok(), read_ok, "{roles:?} CPUInfo: {cpus:?}");
        if let Ok(c) = cpus {
            let c = c.into_inner();
            assert!(!c.messages[0].cpu_info.is_empty());
            assert!(!c.messages[0].cpu_info[0].flags.is_empty());
        }
        // Methods outside the table need os:admin (the admin then reaches the router, which
        // does not serve this one).
        let want = if admin_ok {
            tonic::Code::Unimplemented
        } else {
            tonic::Code::PermissionDenied
        };
        for path in [
            "/machine.MachineService/NotInTheTable",
            "/machine.LifecycleService/Install",
        ] {
            let r = raw_call(ch.clone(), path).await.unwrap_err();
            assert_eq!(r.code(), want, "{roles:?} {path}: {r:?}");
        }
        // etcd methods pass the role check as the table says (and then find no etcd on a
        // node outside container mode).
        let etcd_methods: [(&str, &[&str]); 4] = [
            (
                "/machine.MachineService/EtcdStatus",
                &["os:admin", "os:operator", "os:reader", "os:etcd:backup"],
            ),
            (
                "/machine.MachineService/EtcdSnapshot",
                &["os:admin", "os:operator", "os:etcd:backup"],
            ),
            ("/machine.MachineService/EtcdLeaveCluster", &["os:admin"]),
            ("/machine.MachineService/Bootstrap", &["os:admin"]),
        ];
        for (path, allowed) in etcd_methods {
            let r = raw_call(ch.clone(), path).await.unwrap_err();
            let want = if roles.iter().any(|r| allowed.contains(r)) {
                tonic::Code::FailedPrecondition
            } else {
                tonic::Code::PermissionDenied
            };
            assert_eq!(r.code(), want, "{roles:?} {path}: {r:?}");
        }
    }

    // A certificate from another CA, an expired one, and none at all: rejected.
    let foreign = pki::new_ca("talos", KeyKind::Ed25519).unwrap();
    let ch = channel(
        node.port,
        &os_ca.crt,
        Some(client_cert(&foreign, &["os:admin"])),
    )
    .await;
    assert!(
        MachineServiceClient::new(ch).version(()).await.is_err(),
        "foreign CA"
    );
    let ch = channel(node.port, &os_ca.crt, Some(expired_cert(&os_ca))).await;
    assert!(
        MachineServiceClient::new(ch).version(()).await.is_err(),
        "expired"
    );
    let ch = channel(node.port, &os_ca.crt, None).await;
    assert!(
        MachineServiceClient::new(ch).version(()).await.is_err(),
        "no certificate"
    );

    // The server proves itself with the machine CA: a client trusting another CA refuses it.
    let ch = channel(
        node.port,
        &foreign.crt,
        Some(client_cert(&os_ca, &["os:admin"])),
    )
    .await;
    assert!(
        MachineServiceClient::new(ch).version(()).await.is_err(),
        "server not trusted"
    );

    let ch = channel(
        node.port,
        &os_ca.crt,
        Some(client_cert(&os_ca, &["os:reader"])),
    )
    .await;
    let h = MachineServiceClient::new(ch)
        .hostname(())
        .await
        .unwrap()
        .into_inner();
    assert!(h.messages[0].hostname.starts_with("talos-"), "{h:?}");
}

/// `nodes` metadata: one call through node A fans out to A, B and a dead address; every node
/// answers in its own message, the dead one with its error, and the call itself succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_through_one_node() {
    let secrets = SecretsBundle::generate().unwrap();
    let a = start_named(&secrets, "fan-a");
    let b = start_named(&secrets, "fan-b");
    let os_ca = secrets.certs.os.decode().unwrap();
    let ch = channel(
        a.port,
        &os_ca.crt,
        Some(client_cert(&os_ca, &["os:reader"])),
    )
    .await;
    let targets = [
        format!("127.0.0.1:{}", a.port),
        format!("127.0.0.1:{}", b.port),
        "127.0.0.1:1".to_string(),
    ];
    let mut req = tonic::Request::new(());
    for t in &targets {
        req.metadata_mut().append("nodes", t.parse().unwrap());
    }
    let resp = MachineServiceClient::new(ch.clone())
        .version(req)
        .await
        .unwrap()
        .into_inner();
    let hosts: Vec<(String, bool)> = resp
        .messages
        .iter()
        .map(|m| {
            let md = m.metadata.clone().unwrap_or_default();
            (md.hostname, md.error.is_empty())
        })
        .collect();
    assert_eq!(
        hosts,
        [
            (targets[0].clone(), true),
            (targets[1].clone(), true),
            (targets[2].clone(), false)
        ]
    );
    assert!(resp.messages[1].version.is_some());
    // The entry node checks the caller's roles before forwarding anything.
    let backup = channel(
        a.port,
        &os_ca.crt,
        Some(client_cert(&os_ca, &["os:etcd:backup"])),
    )
    .await;
    let mut req = tonic::Request::new(());
    req.metadata_mut()
        .insert("node", targets[1].parse().unwrap());
    let denied = MachineServiceClient::new(backup)
        .version(req)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    // A single `node` goes to that node only.
    let mut req = tonic::Request::new(());
    req.metadata_mut()
        .insert("node", targets[1].parse().unwrap());
    let one = MachineServiceClient::new(ch)
        .hostname(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.messages.len(), 1);
}
