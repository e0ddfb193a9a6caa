//! trustd signs a joining node's CSR when, and only when, it presents the machine token.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use api::security::security_service_client::SecurityServiceClient;
use api::security::CertificateRequest;
use machinery::generate::{generate, GenOptions, MachineType};
use machinery::pki::{self, Key, KeyKind};
use machinery::secrets::SecretsBundle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_needs_the_machine_token() {
    let secrets = SecretsBundle::generate().unwrap();
    let dir = std::env::temp_dir().join(format!("machined-trustd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = generate(
        &secrets,
        &GenOptions::new("t", "https://127.0.0.1:6443"),
        MachineType::ControlPlane,
    )
    .unwrap();
    let path = dir.join("cp.yaml");
    std::fs::write(&path, cfg.encode()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_machined"))
        .args([
            "--role",
            "trustd",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();

    let os_ca = secrets.certs.os.decode().unwrap();
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&os_ca.crt)))
        .unwrap()
        .connect_lazy();
    let key = Key::generate(KeyKind::Ed25519).unwrap();
    let csr = pki::new_csr(&key, Some("10.5.0.3".parse().unwrap()), &[]).unwrap();
    let request = |token: &str, csr: &str| {
        let mut r = tonic::Request::new(CertificateRequest {
            csr: csr.as_bytes().to_vec(),
        });
        r.metadata_mut().insert("token", token.parse().unwrap());
        r
    };
    let mut client = SecurityServiceClient::new(channel);
    let denied = client
        .certificate(request("wrong.token", &csr))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let bad = client
        .certificate(request(&secrets.trustdinfo.token, "not a csr"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let resp = client
        .certificate(request(&secrets.trustdinfo.token, &csr))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(String::from_utf8(resp.ca).unwrap(), os_ca.crt);
    let crt = String::from_utf8(resp.crt).unwrap();
    let block = pem::parse(&crt).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(block.contents()).unwrap();
    let ca_block = pem::parse(&os_ca.crt).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(ca_block.contents()).unwrap();
    cert.verify_signature(Some(ca.public_key())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
