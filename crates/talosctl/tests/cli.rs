//! The offline talosctl commands, driven as a user would drive them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("talosctl-cli-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }

    fn read(&self, f: &str) -> String {
        fs::read_to_string(self.path(f)).unwrap()
    }

    fn write(&self, f: &str, text: &str) -> PathBuf {
        let p = self.path(f);
        fs::write(&p, text).unwrap();
        p
    }

    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn talosctl(dir: &Dir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_talosctl"))
        .args(args)
        .current_dir(&dir.0)
        .env("TALOSCONFIG", dir.path("talosconfig-home"))
        .output()
        .unwrap()
}

fn ok(dir: &Dir, args: &[&str]) -> String {
    let out = talosctl(dir, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(dir: &Dir, args: &[&str]) -> String {
    let out = talosctl(dir, args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn gen_config_writes_three_valid_files_and_never_clobbers() {
    let d = Dir::new("gen");
    ok(&d, &["gen", "config", "demo", "https://10.5.0.2:6443"]);
    assert_eq!(
        d.files(),
        ["controlplane.yaml", "talosconfig", "worker.yaml"]
    );
    let out = ok(
        &d,
        &[
            "validate",
            "--config",
            "controlplane.yaml",
            "--mode",
            "metal",
        ],
    );
    assert_eq!(out, "controlplane.yaml is valid for metal mode\n");
    ok(&d, &["validate", "-c", "worker.yaml", "-m", "container"]);
    let before = d.read("controlplane.yaml");
    let err = fails(&d, &["gen", "config", "demo", "https://10.5.0.2:6443"]);
    assert!(err.contains("already exists, use --force"), "{err}");
    assert_eq!(d.read("controlplane.yaml"), before);
    ok(
        &d,
        &["gen", "config", "demo", "https://10.5.0.2:6443", "--force"],
    );
    assert_ne!(d.read("controlplane.yaml"), before);
}

#[test]
fn gen_config_single_type_to_stdout_and_version_contract() {
    let d = Dir::new("stdout");
    let out = ok(
        &d,
        &[
            "gen",
            "config",
            "demo",
            "https://10.5.0.2:6443",
            "-t",
            "controlplane",
            "-o",
            "-",
            "--talos-version",
            "v1.8",
            "--with-docs=false",
            "--install-disk",
            "/dev/vda",
        ],
    );
    assert!(out.starts_with(
        "version: v1alpha1\ndebug: false\npersist: true\nmachine:\n    type: controlplane\n"
    ));
    assert!(!out.contains("---"), "v1.8 is a single document");
    assert!(out.contains("        disk: /dev/vda\n"));
    assert!(d.files().is_empty());
    let err = fails(
        &d,
        &[
            "gen",
            "config",
            "demo",
            "https://x:6443",
            "--talos-version",
            "v0.9",
        ],
    );
    assert!(err.contains("not supported"), "{err}");
}

#[test]
fn gen_config_patches_and_bad_input_write_nothing() {
    let d = Dir::new("patches");
    d.write("cp.yaml", "machine:\n  network:\n    hostname: cp-1\n");
    ok(
        &d,
        &[
            "gen",
            "config",
            "demo",
            "https://10.5.0.2:6443",
            "--talos-version",
            "v1.11",
            "--config-patch-control-plane",
            "@cp.yaml",
            "--config-patch",
            r#"[{"op": "add", "path": "/machine/nodeLabels", "value": {"zone": "a"}}]"#,
        ],
    );
    let cp = d.read("controlplane.yaml");
    assert!(cp.contains("hostname: cp-1"));
    assert!(cp.contains("zone: a"));
    assert!(!d.read("worker.yaml").contains("cp-1"));

    let e = Dir::new("patches-bad");
    let err = fails(
        &e,
        &[
            "gen",
            "config",
            "demo",
            "https://10.5.0.2:6443",
            "--config-patch",
            "@missing.yaml",
        ],
    );
    assert!(err.contains("missing.yaml"), "{err}");
    e.write("bad.yaml", "machine:\n  network:\n    hostnme: x\n");
    let err = fails(
        &e,
        &[
            "gen",
            "config",
            "demo",
            "https://10.5.0.2:6443",
            "--config-patch",
            "@bad.yaml",
        ],
    );
    assert!(
        err.contains("bad.yaml:3:14: machine.network.hostnme: unknown field \"hostnme\""),
        "{err}"
    );
    let err = fails(
        &e,
        &[
            "gen",
            "config",
            "demo",
            "https://10.5.0.2:6443",
            "--talos-version",
            "v1.11",
            "--config-patch",
            r#"[{"op": "remove", "path": "/machine/network/nothing"}]"#,
        ],
    );
    assert!(err.contains("JSON patch operation 1 failed"), "{err}");
    assert!(err.contains("/machine/network/nothing"), "{err}");
    e.write(
        "ops.yaml",
        "- op: add\n  path: /machine/network/hostname\n  value: x\n- op: remove\n  path: /machine/nope\n",
    );
    let err = fails(
        &e,
        &[
            "gen",
            "config",
            "demo",
            "https://10.5.0.2:6443",
            "--talos-version",
            "v1.11",
            "--config-patch",
            "@ops.yaml",
        ],
    );
    assert!(
        err.contains("ops.yaml:4:5: JSON patch operation 2 failed"),
        "{err}"
    );
    assert_eq!(e.files(), ["bad.yaml", "ops.yaml"], "nothing written");
    let err = fails(&e, &["gen", "config", "demo", "10.5.0.2:6443"]);
    assert!(err.contains("https://"), "{err}");
}

#[test]
fn secrets_bundle_round_trip() {
    let d = Dir::new("secrets");
    ok(&d, &["gen", "secrets"]);
    ok(
        &d,
        &[
            "gen",
            "config",
            "demo",
            "https://10.5.0.2:6443",
            "--with-secrets",
            "secrets.yaml",
            "--with-docs=false",
        ],
    );
    ok(
        &d,
        &[
            "gen",
            "secrets",
            "--from-controlplane-config",
            "controlplane.yaml",
            "-o",
            "again.yaml",
        ],
    );
    assert_eq!(d.read("again.yaml"), d.read("secrets.yaml"));
    d.write(
        "broken.yaml",
        "cluster:\n    id: x\ncerts:\n    os:\n        crt: notbase64!\n",
    );
    let err = fails(
        &d,
        &[
            "gen",
            "config",
            "demo",
            "https://10.5.0.2:6443",
            "--with-secrets",
            "broken.yaml",
            "-o",
            "out",
        ],
    );
    assert!(
        err.contains("broken.yaml: cluster.secret: is required"),
        "{err}"
    );
    assert!(err.contains("certs.os.crt"), "{err}");
    assert!(!d.path("out").exists());
}

#[test]
fn machineconfig_patch_and_diff() {
    let d = Dir::new("mc");
    ok(
        &d,
        &[
            "gen",
            "config",
            "demo",
            "https://10.5.0.2:6443",
            "--talos-version",
            "v1.11",
            "--with-docs=false",
        ],
    );
    d.write("p.yaml", "machine:\n  network:\n    hostname: node-1\n");
    ok(
        &d,
        &[
            "machineconfig",
            "patch",
            "worker.yaml",
            "--patch",
            "@p.yaml",
            "-o",
            "patched.yaml",
        ],
    );
    assert!(d.read("patched.yaml").contains("hostname: node-1"));
    let diff = ok(&d, &["mc", "diff", "worker.yaml", "patched.yaml"]);
    assert_eq!(diff, "machine:\n    network:\n        hostname: node-1\n");
    d.write("diff.yaml", &diff);
    let again = ok(
        &d,
        &["machineconfig", "patch", "worker.yaml", "-p", "@diff.yaml"],
    );
    assert_eq!(again, d.read("patched.yaml"));
    d.write("broken.yaml", "machine: [\n");
    let err = fails(
        &d,
        &[
            "machineconfig",
            "patch",
            "worker.yaml",
            "-p",
            "@broken.yaml",
            "-o",
            "x.yaml",
        ],
    );
    assert!(err.contains("broken.yaml:"), "{err}");
    assert!(!d.path("x.yaml").exists());
}

#[test]
fn validate_reports_every_problem() {
    let d = Dir::new("validate");
    d.write(
        "c.yaml",
        "version: v1alpha1\nmachine:\n    type: boss\n    tokn: x\ncluster:\n    network:\n        podSubnets: nope\n",
    );
    let err = fails(&d, &["validate", "-c", "c.yaml", "-m", "metal"]);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "error: c.yaml:4:11: machine.tokn: unknown field \"tokn\" (did you mean \"token\"?)",
            "error: c.yaml:7:21: cluster.network.podSubnets: expected a list, found string \"nope\"",
        ]
    );
    d.write("d.yaml", "version: v1alpha1\nmachine:\n    type: boss\n");
    let err = fails(&d, &["validate", "-c", "d.yaml", "-m", "metal"]);
    assert!(
        err.contains("d.yaml:3:11: machine.type: unknown machine type \"boss\""),
        "{err}"
    );
    assert!(
        err.contains("machine.token: machine token is required"),
        "{err}"
    );
    let err = fails(&d, &["validate", "-c", "d.yaml"]);
    assert!(err.contains("a runtime mode is required"), "{err}");
}

#[test]
fn talosconfig_commands() {
    let d = Dir::new("talosconfig");
    ok(&d, &["gen", "secrets"]);
    ok(
        &d,
        &[
            "config",
            "new",
            "--with-secrets",
            "secrets.yaml",
            "--roles",
            "os:reader",
            "reader.yaml",
        ],
    );
    ok(
        &d,
        &[
            "gen",
            "config",
            "demo",
            "https://10.5.0.2:6443",
            "-t",
            "talosconfig",
        ],
    );
    // Merge into the (empty) user talosconfig, twice: the clash gets an index, nothing is lost.
    ok(&d, &["config", "merge", "talosconfig"]);
    ok(&d, &["config", "merge", "reader.yaml"]);
    let info = ok(&d, &["config", "info"]);
    assert!(info.contains("Roles:               os:reader"), "{info}");
    assert!(
        info.contains("Certificate expires: 1 year from now"),
        "{info}"
    );
    let contexts = ok(&d, &["config", "contexts"]);
    assert_eq!(
        contexts,
        "CURRENT   NAME    ENDPOINTS   NODES\n          demo    127.0.0.1\n*         talos   127.0.0.1\n"
    );
    ok(&d, &["config", "context", "demo"]);
    ok(&d, &["config", "endpoint", "10.5.0.2", "10.5.0.3"]);
    ok(&d, &["config", "node", "10.5.0.2"]);
    let info = ok(&d, &["config", "info", "-o", "json"]);
    assert!(info.contains("\"10.5.0.3\""), "{info}");
    let err = fails(&d, &["config", "context", "nope"]);
    assert!(err.contains("context \"nope\" is not defined"), "{err}");
    ok(&d, &["config", "remove", "tal*", "-y"]);
    assert!(!ok(&d, &["config", "contexts"]).contains("talos "));
    let err = fails(
        &d,
        &[
            "config",
            "new",
            "--roles",
            "os:root",
            "--with-secrets",
            "secrets.yaml",
        ],
    );
    assert!(err.contains("unknown role"), "{err}");
}

#[test]
fn pki_commands() {
    let d = Dir::new("pki");
    ok(&d, &["gen", "ca", "--organization", "myca"]);
    ok(&d, &["gen", "key", "--name", "node"]);
    ok(
        &d,
        &[
            "gen",
            "csr",
            "--key",
            "node.key",
            "--ip",
            "10.5.0.2",
            "--roles",
            "os:reader",
        ],
    );
    ok(
        &d,
        &[
            "gen", "crt", "--ca", "myca", "--csr", "node.csr", "--name", "node",
        ],
    );
    ok(
        &d,
        &[
            "gen",
            "keypair",
            "--organization",
            "self",
            "--ip",
            "127.0.0.1",
        ],
    );
    assert_eq!(
        d.files(),
        [
            "myca.crt",
            "myca.key",
            "myca.sha256",
            "node.crt",
            "node.csr",
            "node.key",
            "self.crt",
            "self.key"
        ]
    );
    let crt = d.read("node.crt");
    assert_eq!(
        machinery::pki::cert_organizations(&crt).unwrap(),
        ["os:reader"]
    );
    let err = fails(&d, &["gen", "key", "--name", "node"]);
    assert!(err.contains("already exists"), "{err}");
    let err = fails(&d, &["gen", "ca", "--organization", "x", "--rsa"]);
    assert!(err.contains("RSA"), "{err}");
    assert!(Path::new(&d.path("myca.sha256")).exists());
}

/// The machined binary built beside talosctl (scripts/test builds every binary first).
fn machined() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_BIN_EXE_talosctl")).with_file_name("machined");
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{} is missing: build the workspace's binaries first",
            p.display()
        );
    }
    eprintln!("{} not built: skipped", p.display());
    None
}

/// A machined process on loopback serving the directory's controlplane.yaml.
struct RunningNode {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(d: &Dir) -> Option<RunningNode> {
    ok(
        d,
        &[
            "gen",
            "config",
            "demo",
            "https://127.0.0.1:6443",
            "--with-docs=false",
        ],
    );
    let cfg = d.path("controlplane.yaml");
    spawn_node(d, &["--config", cfg.to_str().unwrap()], "127.0.0.1:0").map(|(n, _)| n)
}

/// machined with `extra` arguments, a state and log directory in `d`; returns the node and the
/// log lines printed before apid started listening.
fn spawn_node(d: &Dir, extra: &[&str], listen: &str) -> Option<(RunningNode, Vec<String>)> {
    use std::io::{BufRead, BufReader};
    let machined = machined()?;
    let state = d.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let mut child = Command::new(machined)
        .args(extra)
        .args(["--listen", listen, "--state-dir", state.to_str().unwrap()])
        .args([
            "--log-dir",
            d.path("log").to_str().unwrap(),
            "--trustd-listen",
            "127.0.0.1:0",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut before = Vec::new();
    let endpoint = loop {
        let line = lines.next().expect("machined output").unwrap();
        if let Some(addr) = line.strip_prefix("apid listening on ") {
            break addr.to_string();
        }
        before.push(line);
    };
    // Keep reading the node's log so that it never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Some((RunningNode { child, endpoint }, before))
}

/// talosctl with the directory's generated talosconfig (or another one).
fn node_cmd(d: &Dir, talosconfig: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_talosctl"))
        .args(args)
        .env("TALOSCONFIG", d.path(talosconfig))
        .output()
        .unwrap()
}

#[test]
fn version_against_a_node() {
    let d = Dir::new("version");
    let Some(node) = start_node(&d) else { return };
    let ep = node.endpoint.as_str();
    let out = node_cmd(&d, "talosconfig", &["version", "-e", ep]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("Server:\n\tNODE:        {ep}\n\tTag:         v")),
        "{text}"
    );
    assert!(text.contains("\tEnabled:     RBAC\n"), "{text}");
    let cp = d.path("controlplane.yaml");
    // A talosconfig issued offline from the control plane's config.
    let issue = |how: &[&str], file: &str| {
        let mut args = vec![
            "config",
            "new",
            "--from-controlplane-config",
            cp.to_str().unwrap(),
        ];
        args.extend_from_slice(how);
        let path = d.path(file);
        args.push(path.to_str().unwrap());
        let made = node_cmd(&d, "talosconfig", &args);
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
    };
    issue(&["--roles", "os:etcd:backup"], "backup.tc");
    // Upgrades and rollbacks need a machine installed on its disk: refused, nothing done.
    for args in [
        &["upgrade", "-e", ep, "--image", "registry.test/installer:v9"][..],
        &["rollback", "-e", ep][..],
    ] {
        let out = node_cmd(&d, "talosconfig", args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(
            err.contains("FailedPrecondition")
                && err.contains(
                    "upgrades need a machine installed on its disk: it runs in a container"
                ),
            "{args:?}: {err}"
        );
    }
    let denied = node_cmd(&d, "backup.tc", &["version", "-e", ep]);
    assert!(!denied.status.success());
    let err = String::from_utf8_lossy(&denied.stderr);
    // The error names what the method needs and what the certificate has, and what to do.
    assert!(
        err.contains("rpc error: code = PermissionDenied desc = not authorized: /machine.MachineService/Version needs one of the roles os:admin")
            && err.contains("has the roles [os:etcd:backup]")
            && err.contains("talosctl config new --roles"),
        "{err}"
    );
    // An expired client certificate, a talosconfig of another cluster, a node that does not
    // answer (directly, and behind the endpoint): each says what to do.
    issue(&["--crt-ttl", "1s"], "expired.tc");
    std::thread::sleep(std::time::Duration::from_secs(2));
    std::fs::create_dir_all(d.path("other")).unwrap();
    let other = Command::new(env!("CARGO_BIN_EXE_talosctl"))
        .args(["gen", "config", "other", "https://127.0.0.1:6443", "-o"])
        .arg(d.path("other"))
        .output()
        .unwrap();
    assert!(other.status.success());
    for (tc, args, hint) in [
        ("expired.tc", &["version", "-e", ep][..], "expired on"),
        (
            "other/talosconfig",
            &["version", "-e", ep],
            "is not signed by the CA of the talosconfig (context \"other\"): the talosconfig belongs to another cluster",
        ),
        (
            "talosconfig",
            &["memory", "-e", "127.0.0.1:1"],
            "127.0.0.1:1 does not answer on the Talos API",
        ),
        (
            "talosconfig",
            &["memory", "-e", ep, "-n", "127.0.0.1:1"],
            "127.0.0.1:1 does not answer (the call went through the endpoint",
        ),
    ] {
        let out = node_cmd(&d, tc, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(hint), "{args:?}: {err}");
    }
}

#[test]
fn get_resources_from_a_node() {
    let d = Dir::new("get");
    let Some(node) = start_node(&d) else { return };
    let ep = node.endpoint.as_str();
    let get = |tc: &str, args: &[&str]| {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-e", ep]);
        node_cmd(&d, tc, &all)
    };
    let text = |o: &Output| String::from_utf8_lossy(&o.stdout).to_string();
    // The connection flags go before the subcommand too, as the Talos docs write them.
    let before = node_cmd(&d, "talosconfig", &["-e", ep, "-n", ep, "get", "hostname"]);
    assert!(
        before.status.success() && text(&before).contains("HostnameStatus"),
        "{}",
        String::from_utf8_lossy(&before.stderr)
    );
    // Aliases, display types and full type names resolve alike.
    // "hs" is both HostnameSpec and HostnameStatus: ambiguous, as upstream says.
    let hs = get("talosconfig", &["hs"]);
    assert!(
        String::from_utf8_lossy(&hs.stderr).contains("resource type \"hs\" is ambiguous"),
        "{}",
        String::from_utf8_lossy(&hs.stderr)
    );
    // The docs' `get ns config`: Namespaces declares "ns" itself (the two others have it
    // from their names), so it is used, and said.
    let ns = get("talosconfig", &["ns", "config"]);
    let said = String::from_utf8_lossy(&ns.stderr);
    assert!(ns.status.success(), "{said}");
    assert!(
        text(&ns).contains("Namespace") && text(&ns).contains("config"),
        "{}",
        text(&ns)
    );
    assert!(
        said.contains("using Namespaces.meta.cosi.dev (it declares the alias)"),
        "{said}"
    );
    // No type declares "ks": with an id, the one type that has it decides (as `get sp
    // kube-apiserver` finds the static pod); without one, the candidates are listed.
    let ks = get("talosconfig", &["ks", "k8s-certs"]);
    let said = String::from_utf8_lossy(&ks.stderr);
    assert!(ks.status.success(), "{said}");
    assert!(
        said.contains("using KubernetesSecrets.secrets.talos.dev (it has a resource with that id)"),
        "{said}"
    );
    let ks = get("talosconfig", &["ks"]);
    let said = String::from_utf8_lossy(&ks.stderr);
    assert!(
        said.contains("resource type \"ks\" is ambiguous") && said.contains("KubeletSpecs"),
        "{said}"
    );
    for name in [
        "hostname",
        "HostnameStatus",
        "hostnamestatuses.net.talos.dev",
        "hostnamestatus",
    ] {
        let out = get("talosconfig", &[name]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t = text(&out);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NODE"), "{t}");
        assert!(
            lines[0].contains("NAMESPACE   TYPE             ID         VERSION   HOSTNAME"),
            "{t}"
        );
        assert!(
            lines[1].contains("network     HostnameStatus   hostname   1         talos-"),
            "{t}"
        );
    }
    let yaml = text(&get("talosconfig", &["machinetype", "-o", "yaml"]));
    assert!(
        yaml.contains("    type: MachineTypes.config.talos.dev\n"),
        "{yaml}"
    );
    assert!(yaml.ends_with("spec: controlplane\n"), "{yaml}");
    let json = text(&get("talosconfig", &["hostname", "hostname", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["metadata"]["id"], "hostname");
    assert!(v["spec"]["hostname"]
        .as_str()
        .unwrap()
        .starts_with("talos-"));
    let time = text(&get("talosconfig", &["timestatus"]));
    assert!(
        time.lines()
            .nth(1)
            .unwrap()
            .ends_with("runtime     TimeStatus   node   1         true"),
        "{time}"
    );
    let ns = text(&get("talosconfig", &["namespaces"]));
    for n in ["config", "meta", "network", "runtime"] {
        assert!(
            ns.contains(&format!("   meta        Namespace   {n} ")),
            "{ns}"
        );
    }
    // The machine config is sensitive: a reader may not see it, an admin may.
    assert!(get("talosconfig", &["mc"]).status.success());
    let cp = d.path("controlplane.yaml");
    let made = node_cmd(
        &d,
        "talosconfig",
        &[
            "config",
            "new",
            "--from-controlplane-config",
            cp.to_str().unwrap(),
            "--roles",
            "os:reader",
            d.path("reader.tc").to_str().unwrap(),
        ],
    );
    assert!(made.status.success());
    let denied = get("reader.tc", &["machineconfig"]);
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("is sensitive"));
    assert!(get("reader.tc", &["hostname"]).status.success());
    let unknown = get("talosconfig", &["nope"]);
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("resource \"nope\" is not registered")
    );
}

#[test]
fn get_watch_streams_events() {
    use std::io::{BufRead, BufReader};
    let d = Dir::new("watch");
    let Some(node) = start_node(&d) else { return };
    let mut child = Command::new(env!("CARGO_BIN_EXE_talosctl"))
        .args(["get", "hostname", "--watch", "-e", &node.endpoint])
        .env("TALOSCONFIG", d.path("talosconfig"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let header = lines.next().unwrap().unwrap();
    let first = lines.next().unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(header.starts_with("*   NODE"), "{header}");
    assert!(
        first.starts_with("+   "),
        "created events are marked +: {first}"
    );
    assert!(first.contains("HostnameStatus   hostname"), "{first}");
}

#[test]
fn inspect_dependencies_of_a_node() {
    let d = Dir::new("inspect");
    let Some(node) = start_node(&d) else { return };
    let out = node_cmd(
        &d,
        "talosconfig",
        &["inspect", "dependencies", "-e", &node.endpoint],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dot = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(dot.starts_with("digraph {"), "{dot}");
    assert!(
        dot.contains("[label=\"config.MachineTypeController\", shape=box]"),
        "{dot}"
    );
    assert!(
        dot.contains("[label=\"MachineConfigs.config.talos.dev\", shape=ellipse]"),
        "{dot}"
    );
    assert!(
        dot.contains("[style=dashed, label=\"v1alpha1\"]"),
        "narrowed weak input: {dot}"
    );
    let out = node_cmd(
        &d,
        "talosconfig",
        &[
            "inspect",
            "dependencies",
            "--with-resources",
            "-e",
            &node.endpoint,
        ],
    );
    let dot = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        dot.contains("label=\"HostnameStatuses.net.talos.dev/hostname\", shape=note"),
        "{dot}"
    );
}

/// The hostname a node reports through `talosctl get hostname`.
fn node_hostname(d: &Dir, ep: &str) -> Option<String> {
    let out = node_cmd(
        d,
        "talosconfig",
        &["get", "hostname", "-o", "json", "-e", ep],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["spec"]["hostname"].as_str().map(String::from)
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn apply_config_modes() {
    let d = Dir::new("apply");
    let Some(node) = start_node(&d) else { return };
    let ep = node.endpoint.as_str();
    let apply = |file: &str, extra: &[&str]| {
        let mut args = vec!["apply-config", "-f", file, "-e", ep];
        args.extend_from_slice(extra);
        node_cmd(&d, "talosconfig", &args)
    };
    let stdout = |o: &Output| String::from_utf8_lossy(&o.stdout).to_string();
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).to_string();
    let patch = |from: &str, p: &str, to: &str| {
        ok(&d, &["machineconfig", "patch", from, "-p", p, "-o", to])
    };
    let persisted = || std::fs::read_to_string(d.path("state/config.yaml")).unwrap();

    // A dry run shows the diff and changes nothing.
    patch(
        "controlplane.yaml",
        "machine: {network: {hostname: node-a}}",
        "a.yaml",
    );
    let dry = apply(&d.path("a.yaml").display().to_string(), &["--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let text = stdout(&dry);
    assert!(text.starts_with("Dry run summary:\nApplied configuration without a reboot (skipped in dry-run).\nConfig diff:\n\n--- a\n+++ b\n"), "{text}");
    assert!(text.contains("+        hostname: node-a\n"), "{text}");
    assert_ne!(node_hostname(&d, ep).as_deref(), Some("node-a"));

    // Live change without a reboot; persisted.
    let out = apply(
        &d.path("a.yaml").display().to_string(),
        &["-m", "no-reboot"],
    );
    assert_eq!(
        stdout(&out),
        "Applied configuration without a reboot\n",
        "{}",
        stderr(&out)
    );
    wait_for("the new hostname", || {
        node_hostname(&d, ep).as_deref() == Some("node-a")
    });
    assert!(persisted().contains("hostname: node-a"));

    // A change that needs a reboot is refused in no-reboot mode, naming the fields.
    patch("a.yaml", "machine: {env: {A: b}}", "b.yaml");
    let out = apply(
        &d.path("b.yaml").display().to_string(),
        &["--mode", "no-reboot"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("need a reboot, so they cannot be applied in no-reboot mode: machine.env"),
        "{}",
        stderr(&out)
    );
    assert!(!persisted().contains("A: b"));

    // An invalid config is refused with its problems, and the node keeps its config.
    d.write("bad.yaml", "version: v1alpha1\nmachine:\n    type: boss\n");
    let out = apply(&d.path("bad.yaml").display().to_string(), &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown machine type \"boss\""),
        "{}",
        stderr(&out)
    );
    assert!(persisted().contains("hostname: node-a"));

    // Staged: persisted, not active.
    patch("a.yaml", "machine: {network: {hostname: node-s}}", "s.yaml");
    let out = apply(&d.path("s.yaml").display().to_string(), &["-m", "staged"]);
    assert_eq!(
        stdout(&out),
        "Staged configuration to be applied after the next reboot\n",
        "{}",
        stderr(&out)
    );
    assert!(persisted().contains("hostname: node-s"));
    assert_eq!(node_hostname(&d, ep).as_deref(), Some("node-a"));

    // Try: active now, reverted after the timeout (a non-try apply would cancel it).
    patch("a.yaml", "machine: {network: {hostname: node-t}}", "t.yaml");
    let out = apply(
        &d.path("t.yaml").display().to_string(),
        &["-m", "try", "--timeout", "1s"],
    );
    assert!(
        stdout(&out).contains("will be automatically reverted back in 1s"),
        "{}",
        stdout(&out)
    );
    wait_for("the tried hostname", || {
        node_hostname(&d, ep).as_deref() == Some("node-t")
    });
    wait_for("the rollback", || {
        node_hostname(&d, ep).as_deref() == Some("node-a")
    });

    // Auto with a change that needs a reboot: the node restarts and boots the new config.
    let out = apply(&d.path("b.yaml").display().to_string(), &[]);
    assert_eq!(
        stdout(&out),
        "Applied configuration with a reboot\n",
        "{}",
        stderr(&out)
    );
    assert!(persisted().contains("A: b"));
    wait_for("the node after its reboot", || {
        node_cmd(&d, "talosconfig", &["version", "-e", ep])
            .status
            .success()
    });
    wait_for("the hostname after the reboot", || {
        node_hostname(&d, ep).as_deref() == Some("node-a")
    });
}

#[test]
fn try_mode_across_a_reboot_keeps_a_healthy_config_and_returns_from_an_unconfirmed_one() {
    let d = Dir::new("try-reboot");
    let Some(node) = start_node(&d) else { return };
    let ep = node.endpoint.as_str();
    let persisted = || std::fs::read_to_string(d.path("state/config.yaml")).unwrap();
    let trial =
        || d.path("state/try.json").exists() || d.path("state/config.last-good.yaml").exists();
    let up = || {
        node_cmd(&d, "talosconfig", &["version", "-e", ep])
            .status
            .success()
    };
    let try_apply = |env: &str, timeout: &str| {
        let file = format!("{env}.yaml");
        ok(
            &d,
            &[
                "machineconfig",
                "patch",
                "controlplane.yaml",
                "-p",
                &format!("machine: {{env: {{A: {env}}}}}"),
                "-o",
                &file,
            ],
        );
        let f = d.path(&file).display().to_string();
        let out = node_cmd(
            &d,
            "talosconfig",
            &[
                "apply-config",
                "-f",
                &f,
                "-e",
                ep,
                "-m",
                "try",
                "--timeout",
                timeout,
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.contains("Applied configuration with a reboot")
                && text.contains("returns to the last good config by itself unless it is healthy"),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // Healthy within the time: the node reboots into the config and keeps it.
    try_apply("b", "1m");
    assert!(persisted().contains("A: b"));
    wait_for("the tried config confirmed", || up() && !trial());
    assert!(persisted().contains("A: b"));

    // Not healthy for long enough within a second: back to the last good config, rebooted.
    try_apply("c", "1s");
    wait_for("the return to the last good config", || {
        !trial() && persisted().contains("A: b")
    });
    wait_for("the node after the return", up);
    assert!(!persisted().contains("A: c"));
}

#[test]
fn config_new_patch_and_edit_against_a_node() {
    let d = Dir::new("node-config");
    let Some(node) = start_node(&d) else { return };
    let ep = node.endpoint.as_str();
    // A node issues a reader certificate.
    let out = node_cmd(
        &d,
        "talosconfig",
        &[
            "config",
            "new",
            "--roles",
            "os:reader",
            "--crt-ttl",
            "2h",
            "-e",
            ep,
            d.path("reader.tc").to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = node_cmd(&d, "reader.tc", &["config", "info"]);
    let info = String::from_utf8_lossy(&info.stdout).to_string();
    assert!(info.contains("Roles:               os:reader"), "{info}");
    assert!(
        info.contains(&format!("Endpoints:           {ep}")),
        "{info}"
    );
    assert!(
        info.contains("Certificate expires: 2 hours from now"),
        "{info}"
    );
    assert!(node_cmd(&d, "reader.tc", &["get", "hostname"])
        .status
        .success());
    // A reader may not mint certificates.
    let denied = node_cmd(
        &d,
        "reader.tc",
        &[
            "config",
            "new",
            "--roles",
            "os:admin",
            d.path("x.tc").to_str().unwrap(),
        ],
    );
    assert!(!denied.status.success());

    // patch machineconfig: the node's own config, patched and applied.
    let out = node_cmd(
        &d,
        "talosconfig",
        &[
            "patch",
            "machineconfig",
            "-p",
            "machine: {network: {hostname: node-p}}",
            "-e",
            ep,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Applied configuration without a reboot\n"
    );
    wait_for("the patched hostname", || {
        node_hostname(&d, ep).as_deref() == Some("node-p")
    });
    // The docs' JSON patch, on a generated (multi-document) config, flags first as they write.
    let before = String::from_utf8_lossy(
        &node_cmd(&d, "talosconfig", &["get", "mc", "-o", "yaml", "-e", ep]).stdout,
    )
    .to_string();
    assert!(
        before.matches("\n---\n").count() >= 1 || before.contains("kind: "),
        "{before}"
    );
    let out = node_cmd(
        &d,
        "talosconfig",
        &[
            "-e",
            ep,
            "-n",
            ep,
            "patch",
            "mc",
            "-p",
            r#"[{"op": "replace", "path": "/machine/kubelet/image", "value": "ghcr.io/siderolabs/kubelet:v1.99.0"}]"#,
            "--mode=no-reboot",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("JSON patch path /machine/kubelet/image applies to /image of the v1alpha1/KubeletConfig document"),
        "{err}"
    );
    let after = String::from_utf8_lossy(
        &node_cmd(&d, "talosconfig", &["get", "mc", "-o", "yaml", "-e", ep]).stdout,
    )
    .to_string();
    assert!(
        after.contains("image: ghcr.io/siderolabs/kubelet:v1.99.0"),
        "{after}"
    );

    // edit machineconfig through $TALOS_EDITOR.
    let out = Command::new(env!("CARGO_BIN_EXE_talosctl"))
        .args(["edit", "machineconfig", "-e", ep])
        .env("TALOSCONFIG", d.path("talosconfig"))
        .env(
            "TALOS_EDITOR",
            "sed -i s/hostname:\\ node-p/hostname:\\ node-e/",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the edited hostname", || {
        node_hostname(&d, ep).as_deref() == Some("node-e")
    });
    let out = Command::new(env!("CARGO_BIN_EXE_talosctl"))
        .args(["edit", "machineconfig", "-e", ep])
        .env("TALOSCONFIG", d.path("talosconfig"))
        .env("TALOS_EDITOR", "true")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Apply was skipped: no changes detected.\n"
    );
}

#[test]
fn services_and_logs() {
    let d = Dir::new("services");
    let Some(node) = start_node(&d) else { return };
    let ep = node.endpoint.as_str();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["-e", ep]);
        node_cmd(&d, "talosconfig", &all)
    };
    let stdout = |o: &Output| String::from_utf8_lossy(&o.stdout).to_string();
    // A service's row: its id, state and health.
    let row = |list: &str, id: &str| -> Option<(String, String)> {
        list.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&id)).then(|| (f[2].to_string(), f[3].to_string()))
        })
    };
    let running = |id: &str| {
        Some(("Running".to_string(), "OK".to_string())) == row(&stdout(&run(&["services"])), id)
    };
    wait_for("trustd to be healthy", || running("trustd"));
    let list = stdout(&run(&["services"]));
    assert!(list.starts_with("NODE"), "{list}");
    assert!(
        list.contains("SERVICE    STATE     HEALTH   LAST CHANGE   LAST EVENT"),
        "{list}"
    );
    let status = stdout(&run(&["service", "trustd"]));
    assert!(
        status.contains("ID       trustd\nSTATE    Running\nHEALTH   OK\n"),
        "{status}"
    );
    assert!(status.contains("]: Started task trustd (PID "), "{status}");
    // Every line with its node, as upstream prints it.
    let logs = stdout(&run(&["logs", "trustd"]));
    assert!(
        logs.starts_with(&format!("{ep}: trustd listening on 127.0.0.1:")),
        "{logs}"
    );
    assert!(
        logs.lines().all(|l| l.starts_with(&format!("{ep}: "))),
        "{logs}"
    );
    let k = run(&["logs", "-k", "kube-apiserver"]);
    assert!(
        String::from_utf8_lossy(&k.stderr).contains("containerd is not running on this node"),
        "{k:?}"
    );
    assert!(std::fs::read_to_string(d.path("log/trustd.log"))
        .unwrap()
        .starts_with("trustd listening"));
    let out = run(&["service", "trustd", "restart"]);
    assert_eq!(
        stdout(&out),
        format!("{ep}: Service \"trustd\" restarted\n")
    );
    wait_for("the restart", || {
        stdout(&run(&["service", "trustd"])).contains("[Stopping]: Stopping service")
            && running("trustd")
    });
    let out = run(&["service", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("service \"nope\" not found"));
    // machined is a service as upstream lists it, with its own log; it is not restarted.
    assert!(running("machined"));
    let logs = stdout(&run(&["logs", "machined", "--tail", "50"]));
    assert!(logs.lines().count() > 3, "{logs}");
    assert!(
        logs.contains(&format!("{ep}: ")) && logs.contains("apid listening on"),
        "{logs}"
    );
    let out = run(&["service", "machined", "restart"]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("machined cannot be started, stopped or restarted"),
        "{out:?}"
    );
    let svc = stdout(&run(&["get", "services"]));
    assert!(svc.contains("runtime     Service   trustd"), "{svc}");
}

#[test]
fn maintenance_mode_until_a_config_is_applied() {
    let d = Dir::new("maintenance");
    ok(
        &d,
        &[
            "gen",
            "config",
            "demo",
            "https://127.0.0.1:6443",
            "--with-docs=false",
        ],
    );
    // A STATE that does not load: maintenance mode, with the reason in the log.
    std::fs::create_dir_all(d.path("state")).unwrap();
    std::fs::write(d.path("state/config.yaml"), "machine: [\n").unwrap();
    let Some((node, log)) = spawn_node(&d, &[], "127.0.0.1:0") else {
        return;
    };
    let ep = node.endpoint.clone();
    assert!(
        log.iter()
            .any(|l| l.contains("the persisted config is unusable")),
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l.contains("maintenance mode")),
        "{log:?}"
    );
    let insecure = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--insecure", "-n", &ep]);
        node_cmd(&d, "talosconfig", &all)
    };
    let v = insecure(&["version"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    // What helps to write a config is served: kernel log, memory, resources that are not
    // sensitive; secrets and everything else are not.
    for args in [
        &["dmesg"][..],
        &["memory"],
        &["get", "links"],
        &["services"],
    ] {
        let out = insecure(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let secret = insecure(&["get", "machineconfig"]);
    assert!(!secret.status.success());
    let reboot = insecure(&["service", "apid", "restart"]);
    let err = String::from_utf8_lossy(&reboot.stderr);
    assert!(
        err.contains("not available in maintenance mode")
            && err.contains("apply-config --insecure"),
        "{err}"
    );
    // The node's certificate pinned by its fingerprint (from its log): the right one is
    // accepted, another is refused.
    let apid_log = std::fs::read_to_string(d.path("log/apid.log")).unwrap();
    let fp = apid_log
        .lines()
        .find_map(|l| l.split("(for --cert-fingerprint): ").nth(1))
        .expect("the fingerprint in apid's log")
        .to_string();
    assert!(insecure(&["version", "--cert-fingerprint", &fp])
        .status
        .success());
    let wrong = insecure(&["version", "--cert-fingerprint", "AAAA"]);
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("is not one of --cert-fingerprint"));
    // Without --insecure: refused, with what to do.
    let denied = Command::new(env!("CARGO_BIN_EXE_talosctl"))
        .args(["services", "-e", &ep])
        .env("TALOSCONFIG", d.path("talosconfig"))
        .output()
        .unwrap();
    assert!(!denied.status.success());
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(
        err.contains(&format!(
            "{ep} is in maintenance mode (it has no config yet): add --insecure"
        )),
        "{err}"
    );
    // An invalid config is refused and the node stays in maintenance.
    d.write(
        "bad.yaml",
        "version: v1alpha1\nmachine:\n    type: worker\n",
    );
    let bad = insecure(&["apply-config", "-f", d.path("bad.yaml").to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("machine token is required"));
    assert!(insecure(&["version"]).status.success());
    // A valid one boots the node.
    let out = insecure(&[
        "apply-config",
        "-f",
        d.path("controlplane.yaml").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the configured node", || {
        node_cmd(&d, "talosconfig", &["version", "-e", &ep])
            .status
            .success()
    });
    assert!(machinery::Config::load(d.path("state/config.yaml")).is_ok());
}

/// `kill -9` of machined at any moment of an apply leaves STATE as the old or the new config.
#[test]
fn killed_during_apply_state_is_old_or_new() {
    let d = Dir::new("kill9");
    ok(
        &d,
        &[
            "gen",
            "config",
            "demo",
            "https://127.0.0.1:6443",
            "--with-docs=false",
        ],
    );
    let cfg = d.path("controlplane.yaml");
    let Some((first, _)) = spawn_node(&d, &["--config", cfg.to_str().unwrap()], "127.0.0.1:0")
    else {
        return;
    };
    let listen = first.endpoint.clone();
    drop(first);
    for i in 0..12u64 {
        let (mut node, _) = spawn_node(&d, &[], &listen).unwrap();
        let before = std::fs::read_to_string(d.path("state/config.yaml")).unwrap();
        let name = format!("node-{i}");
        let patched = d.path("next.yaml");
        ok(
            &d,
            &[
                "machineconfig",
                "patch",
                "controlplane.yaml",
                "-p",
                &format!("machine: {{network: {{hostname: {name}}}}}"),
                "-o",
                patched.to_str().unwrap(),
            ],
        );
        let mut apply = Command::new(env!("CARGO_BIN_EXE_talosctl"))
            .args([
                "apply-config",
                "-m",
                "no-reboot",
                "-f",
                patched.to_str().unwrap(),
                "-e",
                &listen,
            ])
            .env("TALOSCONFIG", d.path("talosconfig"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(i * 7 % 60));
        let _ = node.child.kill();
        let _ = node.child.wait();
        let _ = apply.wait();
        let after = std::fs::read_to_string(d.path("state/config.yaml")).unwrap();
        let loaded = machinery::Config::parse(&after).expect("STATE always loads");
        let host = loaded
            .pointer("/machine/network/hostname")
            .and_then(|v| v.as_str())
            .map(String::from);
        assert!(
            after == before || host.as_deref() == Some(name.as_str()),
            "iteration {i}: STATE is neither the old nor the new config"
        );
        // A kill in the middle of a write leaves at most its one temporary file, which the
        // next start removes.
        let leftovers: Vec<String> = std::fs::read_dir(d.path("state"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp."))
            .collect();
        assert!(
            leftovers.len() <= 1,
            "temporary files pile up: {leftovers:?}"
        );
    }
}

#[test]
fn node_introspection_reboot_and_shutdown() {
    let d = Dir::new("introspect");
    let Some(mut node) = start_node(&d) else {
        return;
    };
    let ep = node.endpoint.clone();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["-e", &ep]);
        node_cmd(&d, "talosconfig", &all)
    };
    let stdout = |o: &Output| String::from_utf8_lossy(&o.stdout).to_string();
    let mem = stdout(&run(&["memory"]));
    assert!(mem.starts_with("NODE"), "{mem}");
    assert!(mem.contains("TOTAL   USED"), "{mem}");
    let total: u64 = mem
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(total > 0);
    let mounts = stdout(&run(&["mounts"]));
    assert!(mounts.contains("MOUNTED ON"), "{mounts}");
    assert!(mounts.lines().any(|l| l.ends_with(" /")), "{mounts}");
    let ps = stdout(&run(&["processes"]));
    let header: Vec<&str> = ps.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NODE", "PID", "STATE", "THREADS", "CPU-TIME", "VIRTMEM", "RESMEM", "LABEL", "COMMAND"]
    );
    let own = node.child.id().to_string();
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().nth(1) == Some(own.as_str())),
        "machined is listed: {ps}"
    );
    // Stats of the system services: the control plane runs trustd.
    let stats = stdout(&run(&["stats"]));
    let header: Vec<&str> = stats.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NODE", "NAMESPACE", "ID", "MEMORY(MB)", "CPU"],
        "{stats}"
    );
    let trustd = stats
        .lines()
        .find(|l| l.contains(" trustd "))
        .unwrap_or_else(|| panic!("{stats}"));
    let mb: f64 = trustd.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(mb > 1.0, "{trustd}");
    assert_eq!(stdout(&run(&["stats", "-k"])).lines().count(), 1);
    let dmesg = run(&["dmesg"]);
    assert!(dmesg.status.success() || String::from_utf8_lossy(&dmesg.stderr).contains("/dev/kmsg"));
    // Files: list and read (the node's STATE directory holds its config).
    let state = d.path("state");
    let ls = stdout(&run(&["ls", state.to_str().unwrap()]));
    assert!(ls.lines().any(|l| l.ends_with("config.yaml")), "{ls}");
    let long = stdout(&run(&["ls", "-l", state.to_str().unwrap()]));
    assert!(long.contains("-rw-------"), "{long}");
    let cat = run(&["read", state.join("config.yaml").to_str().unwrap()]);
    assert_eq!(
        stdout(&cat),
        std::fs::read_to_string(state.join("config.yaml")).unwrap()
    );
    // Copy a directory out of the node, and disk usage.
    let dest = d.path("copied");
    let out = run(&["cp", state.to_str().unwrap(), dest.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("state/config.yaml")).unwrap(),
        std::fs::read_to_string(state.join("config.yaml")).unwrap()
    );
    let du = stdout(&run(&["du", "-a", "-d", "1", state.to_str().unwrap()]));
    let size = std::fs::metadata(state.join("config.yaml")).unwrap().len();
    assert!(du.starts_with("NODE"), "{du}");
    assert!(
        du.lines()
            .any(|l| l.contains(&format!("   {size}   ")) && l.ends_with("config.yaml")),
        "{du}"
    );
    let missing = run(&["read", "/definitely/not/here"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("No such file"));
    // A reboot brings the node back; a shutdown ends it.
    // (The node reboots a moment after its reply: trustd starting again marks the new boot.)
    let trustd_starts = || {
        std::fs::read_to_string(d.path("log/trustd.log"))
            .unwrap_or_default()
            .matches("trustd listening")
            .count()
    };
    let before = trustd_starts();
    let out = run(&["reboot"]);
    assert_eq!(stdout(&out), format!("{ep}: rebooting\n"));
    // reboot follows the node until it is back (--wait, the default as upstream's).
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("{ep}: back from the reboot after")),
        "{said}"
    );
    assert!(trustd_starts() > before);
    wait_for("the node after its reboot", || {
        run(&["version"]).status.success()
    });
    // --wait=false returns at once.
    let out = run(&["reboot", "--wait=false"]);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the node after its second reboot", || {
        trustd_starts() > before + 1 && run(&["version"]).status.success()
    });
    let out = run(&["shutdown"]);
    assert_eq!(stdout(&out), format!("{ep}: shutting down\n"));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{ep}: stopped after")));
    wait_for("machined to exit", || {
        node.child.try_wait().ok().flatten().is_some()
    });
}

#[test]
fn calls_through_an_endpoint_reach_other_nodes() {
    let d = Dir::new("proxy-a");
    let Some(a) = start_node(&d) else { return };
    let other = Dir::new("proxy-b");
    std::fs::copy(d.path("controlplane.yaml"), other.path("controlplane.yaml")).unwrap();
    let cfg = other.path("controlplane.yaml");
    let (b, _) = spawn_node(&other, &["--config", cfg.to_str().unwrap()], "127.0.0.1:0").unwrap();
    let out = node_cmd(
        &d,
        "talosconfig",
        &[
            "get",
            "hostname",
            "-e",
            &a.endpoint,
            "-n",
            &format!("{},{}", a.endpoint, b.endpoint),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.lines().nth(1).unwrap().starts_with(&a.endpoint),
        "{text}"
    );
    assert!(
        text.lines().nth(2).unwrap().starts_with(&b.endpoint),
        "{text}"
    );
    // A dead node fails on its own line; the others answer.
    let out = node_cmd(
        &d,
        "talosconfig",
        &[
            "version",
            "-e",
            &a.endpoint,
            "-n",
            &format!("{},127.0.0.1:1", b.endpoint),
        ],
    );
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains(&format!("NODE:        {}", b.endpoint)),
        "{text}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:1: rpc error: code = Unavailable")
    );
}

#[test]
fn reset_wipes_state_and_returns_to_maintenance() {
    let d = Dir::new("reset");
    let Some(node) = start_node(&d) else { return };
    let ep = node.endpoint.clone();
    assert!(d.path("state/config.yaml").exists());
    let bad = node_cmd(
        &d,
        "talosconfig",
        &["reset", "--system-labels-to-wipe", "BOOT", "-e", &ep],
    );
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unknown partition label"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    // As the Talos docs write it: the endpoint first, `--reboot=true`.
    let out = node_cmd(
        &d,
        "talosconfig",
        &[
            "-e",
            &ep,
            "reset",
            "--system-labels-to-wipe",
            "STATE",
            "--reboot=true",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{ep}: reset\n")
    );
    // The command returned once the node had left its config, not before.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("reset: the node left its config"), "{said}");
    // Back in maintenance mode: nothing persisted, only insecure calls answered.
    wait_for("maintenance mode", || {
        node_cmd(&d, "talosconfig", &["version", "--insecure", "-n", &ep])
            .status
            .success()
    });
    assert!(!d.path("state/config.yaml").exists());
    assert!(!node_cmd(&d, "talosconfig", &["version", "-e", &ep])
        .status
        .success());
}

#[test]
fn events_stream_service_changes() {
    use std::io::{BufRead, BufReader};
    let d = Dir::new("events");
    let Some(node) = start_node(&d) else { return };
    let ep = node.endpoint.clone();
    let running = |id: &str| {
        String::from_utf8_lossy(&node_cmd(&d, "talosconfig", &["services", "-e", &ep]).stdout)
            .lines()
            .any(|l| l.split_whitespace().skip(1).take(2).eq([id, "Running"]))
    };
    wait_for("trustd running", || running("trustd"));
    wait_for("apid running", || running("apid"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_talosctl"))
        .args(["events", "--tail", "4", "-e", &ep])
        .env("TALOSCONFIG", d.path("talosconfig"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let header = lines.next().unwrap().unwrap();
    assert_eq!(header, "NODE\tID\tEVENT\tSOURCE\tMESSAGE");
    let past: Vec<String> = (0..4).map(|_| lines.next().unwrap().unwrap()).collect();
    let started = past
        .iter()
        .find(|l| l.contains("\tmachine.ServiceStateEvent\ttrustd\tStarted task trustd (PID "))
        .unwrap_or_else(|| panic!("{past:?}"));
    assert!(started.ends_with(": Running"), "{past:?}");
    // A restart shows up live.
    node_cmd(
        &d,
        "talosconfig",
        &["service", "trustd", "restart", "-e", &ep],
    );
    let next = lines.next().unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(next.contains("Stopping service: Stopping"), "{next}");
}

/// Services never outlive machined, even when it is killed outright.
#[test]
fn services_die_with_machined() {
    let d = Dir::new("orphans");
    let Some(mut node) = start_node(&d) else {
        return;
    };
    let ep = node.endpoint.clone();
    let mut pid = None;
    wait_for("trustd's pid", || {
        let status = String::from_utf8_lossy(
            &node_cmd(&d, "talosconfig", &["service", "trustd", "-e", &ep]).stdout,
        )
        .to_string();
        pid = status
            .split("Started task trustd (PID ")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .and_then(|p| p.parse::<u32>().ok());
        pid.is_some()
    });
    let proc_dir = format!("/proc/{}", pid.unwrap());
    assert!(Path::new(&proc_dir).exists());
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    wait_for("trustd to be gone", || {
        std::fs::read_to_string(format!("{proc_dir}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
    });
}

/// Completion scripts come from the command tree: bash's passes `bash -n` and completes the
/// commands and their aliases; every shell's is generated, with and without descriptions.
#[test]
fn completion_scripts_for_every_shell() {
    let d = Dir::new("completion");
    let bash = ok(&d, &["completion", "bash"]);
    d.write("talosctl.bash", &bash);
    let check = Command::new("bash")
        .arg("-n")
        .arg(d.path("talosctl.bash"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Sourced, it offers the commands (aliases too) after `talosctl `.
    let offered = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(talosctl ne); COMP_CWORD=1; COMP_LINE='talosctl ne'; COMP_POINT=11; _talosctl talosctl ne talosctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            d.path("talosctl.bash").display()
        ))
        .output()
        .unwrap();
    let words = String::from_utf8_lossy(&offered.stdout);
    assert!(words.lines().any(|w| w == "netstat"), "{words}");
    for shell in ["zsh", "fish", "powershell"] {
        let full = ok(&d, &["completion", shell]);
        let bare = ok(&d, &["completion", shell, "--no-descriptions"]);
        assert!(
            full.contains("netstat") && bare.contains("netstat"),
            "{shell}"
        );
        assert!(
            full.contains("network connections and sockets")
                && !bare.contains("network connections and sockets"),
            "{shell}"
        );
    }
    let err = fails(&d, &["completion", "tcsh"]);
    assert!(err.contains("tcsh"), "{err}");
}

/// `image k8s-bundle` (`image default`): the images of a cluster of the given versions.
#[test]
fn image_k8s_bundle_lists_a_clusters_images() {
    let d = Dir::new("k8s-bundle");
    let out = ok(
        &d,
        &[
            "image",
            "k8s-bundle",
            "--k8s-version",
            "1.34.1",
            "--etcd-version",
            "v3.6.5",
        ],
    );
    for image in [
        "registry.k8s.io/kube-apiserver:v1.34.1",
        "registry.k8s.io/kube-proxy:v1.34.1",
        "ghcr.io/siderolabs/kubelet:v1.34.1",
        "gcr.io/etcd-development/etcd:v3.6.5",
        "registry.k8s.io/coredns/coredns:v1.14.7",
        "ghcr.io/siderolabs/flannel:v0.28.9",
        "registry.k8s.io/pause:3.10",
    ] {
        assert!(out.lines().any(|l| l == image), "{image} in\n{out}");
    }
    assert_eq!(
        ok(&d, &["images", "default"]).lines().count(),
        out.lines().count()
    );
    let err = fails(&d, &["image", "k8s-bundle", "--k8s-version", "latest"]);
    assert!(
        err.contains("--k8s-version \"latest\" is not a version"),
        "{err}"
    );
}

#[test]
fn inject_serviceaccount_as_the_docs_show() {
    let d = Dir::new("inject");
    fs::write(
        d.path("deployment.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: talos-api-access\nspec:\n  selector:\n    matchLabels:\n      app: a\n  template:\n    metadata:\n      labels:\n        app: a\n    spec:\n      containers:\n      - name: talos\n        image: ghcr.io/siderolabs/talosctl\n",
    )
    .unwrap();
    let out = ok(
        &d,
        &[
            "inject",
            "serviceaccount",
            "-f",
            "deployment.yaml",
            "--roles",
            "os:reader,os:etcd:backup",
        ],
    );
    assert!(out.contains("kind: ServiceAccount\nmetadata:\n  name: talos-api-access-talos-secrets\nspec:\n  roles:\n  - os:reader\n  - os:etcd:backup\n"), "{out}");
    assert!(
        out.contains("mountPath: /var/run/secrets/talos.dev"),
        "{out}"
    );
    // The alias and standard input; a file that is not Kubernetes objects is named with its line.
    fs::write(
        d.path("bad.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: [\n",
    )
    .unwrap();
    let err = fails(&d, &["inject", "tsa", "-f", "bad.yaml"]);
    assert!(err.contains("manifest \"bad.yaml\": line"), "{err}");
    let err = fails(&d, &["inject", "serviceaccount"]);
    assert!(err.contains("pass -f"), "{err}");
}
