//! The registry client against Debian's `docker-registry` on loopback: push, pull through a
//! mirror list whose first endpoint is dead, `overridePath`, basic auth and a wrong password.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use machinery::cri::{Auth, Endpoint, HostConfig, Mirror, Registries};
use oci::registry::Client;
use oci::{Entry, Image, Reference, RunConfig};

struct Registry {
    child: Child,
    dir: std::path::PathBuf,
    port: u16,
}

impl Registry {
    fn start(htpasswd: Option<&str>) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("oci-registry-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        if let Some(line) = htpasswd {
            std::fs::write(dir.join("htpasswd"), line).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(std::fs::File::create(dir.join("log")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the registry did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, dir, port }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn image() -> Image {
    let layer = oci::layer(&[
        Entry::Dir("etc".into()),
        Entry::File {
            path: "etc/motd".into(),
            data: b"made in a test\n".to_vec(),
            mode: 0o644,
        },
    ]);
    Image::build(&[layer], RunConfig::default())
}

fn mirror(endpoints: &[(&str, bool)], skip_fallback: bool) -> Mirror {
    Mirror {
        endpoints: endpoints
            .iter()
            .map(|(url, override_path)| Endpoint {
                url: url.to_string(),
                override_path: *override_path,
            })
            .collect(),
        skip_fallback,
    }
}

fn pull_all(client: &Client, reference: &str) -> Result<Image, String> {
    let r = Reference::parse(reference)?;
    let found = client.resolve(&r)?;
    let mut blobs = std::collections::BTreeMap::new();
    for d in std::iter::once(&found.manifest.config).chain(&found.manifest.layers) {
        let mut data = Vec::new();
        client
            .blob(&found.source, d)?
            .read_to_end(&mut data)
            .unwrap();
        assert_eq!(oci::sha256(&data), d.digest);
        blobs.insert(d.digest.clone(), data);
    }
    Ok(Image {
        manifest: found.bytes,
        blobs,
    })
}

#[test]
fn push_and_pull_through_mirrors_with_override_path_and_credentials() {
    if !Path::new("/usr/bin/docker-registry").exists() || !Path::new("/usr/bin/htpasswd").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "needs docker-registry and htpasswd"
        );
        return;
    }
    let plain = Registry::start(None);
    let line = Command::new("htpasswd")
        .args(["-Bbn", "agent", "s3cret"])
        .output()
        .unwrap();
    let private = Registry::start(Some(&String::from_utf8_lossy(&line.stdout)));
    let img = image();

    // Push to both (the private one with credentials).
    let plain_host = format!("127.0.0.1:{}", plain.port);
    let private_host = format!("127.0.0.1:{}", private.port);
    let mut reg = Registries::default();
    reg.hosts.insert(
        private_host.clone(),
        HostConfig {
            auth: Some(Auth {
                username: "agent".into(),
                password: "s3cret".into(),
                ..Default::default()
            }),
            tls: None,
        },
    );
    let pusher = Client::new(reg.clone());
    let digest = pusher
        .push(
            &Reference::parse(&format!("{plain_host}/cache/app:1")).unwrap(),
            &img,
            true,
        )
        .unwrap();
    assert_eq!(digest, oci::sha256(&img.manifest));
    pusher
        .push(
            &Reference::parse(&format!("{plain_host}/app:1")).unwrap(),
            &img,
            true,
        )
        .unwrap();
    pusher
        .push(
            &Reference::parse(&format!("{private_host}/app:1")).unwrap(),
            &img,
            true,
        )
        .unwrap();

    // A made-up registry: a dead endpoint first, then the plain registry.
    reg.mirrors.insert(
        "registry.example.test".into(),
        mirror(
            &[
                ("http://127.0.0.1:1", false),
                (&format!("http://{plain_host}"), false),
            ],
            true,
        ),
    );
    reg.mirrors.insert(
        "override.example.test".into(),
        mirror(&[(&format!("http://{plain_host}/v2/cache"), true)], true),
    );
    reg.mirrors.insert(
        "private.example.test".into(),
        mirror(&[(&format!("http://{private_host}"), false)], true),
    );
    let client = Client::new(reg.clone());
    let got = pull_all(&client, "registry.example.test/app:1").unwrap();
    assert_eq!(got.manifest, img.manifest);
    assert_eq!(got.blobs, img.blobs);
    let got = pull_all(&client, "override.example.test/app:1").unwrap();
    assert_eq!(got.manifest, img.manifest);
    assert!(plain.log().contains("/v2/cache/app/manifests/1"));
    let got = pull_all(&client, "private.example.test/app:1").unwrap();
    assert_eq!(got.blobs, img.blobs);

    // A wrong password names the registry and the status; a missing tag names the endpoint.
    reg.hosts
        .get_mut(&private_host)
        .unwrap()
        .auth
        .as_mut()
        .unwrap()
        .password = "wrong".into();
    let err = pull_all(&Client::new(reg.clone()), "private.example.test/app:1").unwrap_err();
    assert!(
        err.contains(&private_host) && err.contains("401 Unauthorized"),
        "{err}"
    );
    let err = pull_all(&client, "registry.example.test/app:2").unwrap_err();
    assert!(
        err.contains("127.0.0.1:1") && err.contains(&format!("{plain_host}: 404")),
        "{err}"
    );
}
