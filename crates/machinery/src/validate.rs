//! Semantic validation of a machine configuration for a runtime mode. Every problem is reported
//! at once, each with its YAML path (and source position when the config is as read).

use std::net::IpAddr;
use std::str::FromStr;

use serde_json::Value;

use crate::config::{Config, DocId};
use crate::cri;
use crate::error::{Error, Problem, Result};

/// Where the node runs; some rules depend on it (an install disk is needed on metal only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Metal,
    Container,
    Cloud,
}

impl FromStr for Mode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Mode> {
        match s {
            "metal" => Ok(Mode::Metal),
            "container" => Ok(Mode::Container),
            "cloud" => Ok(Mode::Cloud),
            "" => Err(Error::msg(
                "a runtime mode is required: metal, cloud or container",
            )),
            other => Err(Error::msg(format!(
                "unknown runtime mode \"{other}\": expected metal, cloud or container"
            ))),
        }
    }
}

/// The outcome: errors fail validation, warnings only with `--strict`.
#[derive(Debug, Default)]
pub struct Report {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Report {
    pub fn into_result(self, strict: bool) -> Result<Vec<Problem>> {
        let mut errors = self.errors;
        if strict {
            errors.extend(self.warnings.iter().cloned());
        }
        if errors.is_empty() {
            Ok(self.warnings)
        } else {
            Err(errors.into())
        }
    }
}

struct Checker<'a> {
    cfg: &'a Config,
    doc: usize,
    report: Report,
}

impl Checker<'_> {
    fn problem(&self, path: &str, message: String) -> Problem {
        Problem::new(message)
            .path(path)
            .at(self.cfg.position(self.doc, path))
    }

    fn error(&mut self, path: &str, message: impl Into<String>) {
        let p = self.problem(path, message.into());
        self.report.errors.push(p);
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        let p = self.problem(path, message.into());
        self.report.warnings.push(p);
    }
}

fn str_at<'v>(v: &'v Value, ptr: &str) -> Option<&'v str> {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn items<'v>(v: &'v Value, ptr: &str) -> &'v [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// `10.0.0.0/8`, `fd00::/64`; with `allow_negation`, a leading `!` too.
pub fn parse_cidr(s: &str, allow_negation: bool) -> Option<(IpAddr, u8)> {
    let s = if allow_negation {
        s.strip_prefix('!').unwrap_or(s)
    } else {
        s
    };
    let (ip, bits) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}

fn check_url(s: &str, schemes: &[&str]) -> std::result::Result<(), String> {
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(format!(
            "\"{s}\" is not a URL (expected {}://HOST)",
            schemes[0]
        ));
    };
    if !schemes.contains(&scheme) {
        return Err(format!(
            "\"{s}\" has scheme {scheme}, expected {}",
            schemes.join(" or ")
        ));
    }
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.starts_with(':') {
        return Err(format!("\"{s}\" has no host"));
    }
    if let Some((_, port)) = authority
        .rsplit_once(':')
        .filter(|_| !authority.ends_with(']'))
    {
        if !port.is_empty() && port.parse::<u16>().is_err() && !authority.starts_with('[') {
            return Err(format!("\"{s}\" has an invalid port \"{port}\""));
        }
    }
    Ok(())
}

/// Validate a whole configuration for a mode.
pub fn validate(cfg: &Config, mode: Mode) -> Report {
    let mut c = Checker {
        cfg,
        doc: 0,
        report: Report::default(),
    };
    let has_installer_doc = cfg.kind("UnattendedInstallConfig").next().is_some();
    let mut saw_v1alpha1 = false;
    for (i, doc) in cfg.documents().iter().enumerate() {
        c.doc = i;
        match &doc.id {
            DocId::V1Alpha1 => {
                saw_v1alpha1 = true;
                v1alpha1(&mut c, &doc.value, mode, has_installer_doc);
            }
            DocId::Kind { kind, .. } => multidoc(&mut c, kind, &doc.value),
        }
    }
    if !saw_v1alpha1 && cfg.kind("KubeClusterConfig").next().is_none() {
        c.doc = usize::MAX;
        c.error(
            "",
            "the config has no v1alpha1 document (machine type, token and CAs)",
        );
    }
    c.report
}

fn v1alpha1(c: &mut Checker, v: &Value, mode: Mode, has_installer_doc: bool) {
    let machine_type = str_at(v, "/machine/type").unwrap_or("");
    match machine_type {
        "controlplane" | "init" | "worker" => {}
        "" => c.error(
            "machine.type",
            "machine type is required (controlplane or worker)",
        ),
        other => c.error(
            "machine.type",
            format!("unknown machine type \"{other}\": expected controlplane or worker"),
        ),
    }
    if machine_type == "init" {
        c.warn(
            "machine.type",
            "machine type \"init\" is deprecated: use controlplane",
        );
    }
    let control_plane = matches!(machine_type, "controlplane" | "init");
    if str_at(v, "/machine/token").is_none() {
        c.error("machine.token", "machine token is required");
    }
    if str_at(v, "/machine/ca/crt").is_none() {
        c.error("machine.ca.crt", "the machine CA certificate is required");
    }
    if control_plane && str_at(v, "/machine/ca/key").is_none() {
        c.error("machine.ca.key", "a control plane needs the machine CA key");
    }
    if let Some(ep) = str_at(v, "/cluster/controlPlane/endpoint") {
        if let Err(e) = check_url(ep, &["https"]) {
            c.error(
                "cluster.controlPlane.endpoint",
                format!("invalid control plane endpoint: {e}"),
            );
        }
    } else if v.pointer("/cluster/controlPlane").is_some() {
        c.error(
            "cluster.controlPlane.endpoint",
            "control plane endpoint is required",
        );
    }
    for key in ["podSubnets", "serviceSubnets"] {
        for (i, s) in items(v, &format!("/cluster/network/{key}"))
            .iter()
            .enumerate()
        {
            if s.as_str().and_then(|s| parse_cidr(s, false)).is_none() {
                c.error(
                    &format!("cluster.network.{key}[{i}]"),
                    format!("{s} is not a valid CIDR"),
                );
            }
        }
    }
    if let Some(d) = str_at(v, "/cluster/network/dnsDomain") {
        if !valid_dns_name(d) {
            c.error(
                "cluster.network.dnsDomain",
                format!("\"{d}\" is not a valid DNS domain"),
            );
        }
    }
    if mode == Mode::Metal
        && !has_installer_doc
        && str_at(v, "/machine/install/disk").is_none()
        && v.pointer("/machine/install/diskSelector").is_none()
    {
        c.error(
            "machine.install.disk",
            "an install disk (or diskSelector) is required in metal mode",
        );
    }
    if v.pointer("/machine/install/bootloader").is_some() {
        c.warn(
            "machine.install.bootloader",
            "the bootloader field is deprecated and ignored",
        );
    }
    if v.pointer("/cluster/allowSchedulingOnMasters").is_some() {
        c.warn(
            "cluster.allowSchedulingOnMasters",
            "deprecated: use allowSchedulingOnControlPlanes",
        );
    }
    for (i, subnet) in items(v, "/machine/kubelet/nodeIP/validSubnets")
        .iter()
        .enumerate()
    {
        if subnet.as_str().and_then(|s| parse_cidr(s, true)).is_none() {
            c.error(
                &format!("machine.kubelet.nodeIP.validSubnets[{i}]"),
                format!("{subnet} is not a valid CIDR"),
            );
        }
    }
    files(c, v);
    network(c, v);
    if let Some(e) = str_at(v, "/cluster/discovery/registries/service/ttl").and_then(discovery_ttl)
    {
        c.error("cluster.discovery.registries.service.ttl", e);
    }
    encryption(c, v);
    for (i, d) in items(v, "/machine/logging/destinations").iter().enumerate() {
        let path = format!("machine.logging.destinations[{i}]");
        match str_at(d, "/endpoint") {
            Some(ep) => {
                if let Err(e) = check_url(ep, &["udp", "tcp"]) {
                    c.error(&format!("{path}.endpoint"), e);
                }
            }
            None => c.error(
                &format!("{path}.endpoint"),
                "a logging endpoint is required",
            ),
        }
        if str_at(d, "/format") != Some("json_lines") {
            c.error(
                &format!("{path}.format"),
                "the only supported format is json_lines",
            );
        }
    }
    if let Some(taints) = v.pointer("/machine/nodeTaints").and_then(Value::as_object) {
        for (k, t) in taints {
            if let Some(problem) = taint_problem(t) {
                c.error(&format!("machine.nodeTaints.{k}"), problem);
            }
        }
    }
    registries(c, v);
    kubernetes(c, v);
    manifests(c, v);
}

/// Inline manifests must hold Kubernetes objects; extra manifests are fetched over HTTP(S).
fn manifests(c: &mut Checker, v: &Value) {
    for (i, m) in items(v, "/cluster/inlineManifests").iter().enumerate() {
        let name = m.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            c.error(
                &format!("cluster.inlineManifests[{i}].name"),
                "an inline manifest needs a name",
            );
        }
        let contents = m.get("contents").and_then(Value::as_str).unwrap_or("");
        if let Err(e) = crate::manifest::objects(name, contents) {
            c.error(
                &format!("cluster.inlineManifests[{i}].contents"),
                e.to_string(),
            );
        }
    }
    for (i, url) in items(v, "/cluster/extraManifests").iter().enumerate() {
        if let Some(problem) = manifest_url(url.as_str().unwrap_or("")) {
            c.error(&format!("cluster.extraManifests[{i}]"), problem);
        }
    }
}

/// What is wrong with a manifest's URL, if anything.
fn manifest_url(url: &str) -> Option<String> {
    let ok = ["http://", "https://"]
        .iter()
        .any(|s| url.strip_prefix(s).is_some_and(|rest| !rest.is_empty()));
    (!ok).then(|| format!("{url:?} is not an http(s) URL"))
}

/// A taint's value: `[value:]Effect` with one of Kubernetes's effects.
fn taint_problem(t: &Value) -> Option<String> {
    let effect = t.as_str().unwrap_or("").rsplit(':').next().unwrap_or("");
    (!matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute")).then(|| {
        format!(
            "invalid taint effect \"{effect}\": expected NoSchedule, PreferNoSchedule or NoExecute"
        )
    })
}

/// Kubernetes components: flags Talos owns, host volumes, the kubelet's extra configuration.
fn kubernetes(c: &mut Checker, v: &Value) {
    use crate::kubernetes as k;
    for &k::Component {
        pointer: ptr,
        path,
        flag: policy,
    } in k::COMPONENTS
    {
        if let Some(args) = v
            .pointer(&format!("{ptr}/extraArgs"))
            .and_then(Value::as_object)
        {
            for flag in args.keys() {
                if policy(flag.trim_start_matches('-')) == k::Merge::Denied {
                    c.error(
                        &format!("{path}.extraArgs.{flag}"),
                        format!("extra arg \"{flag}\" is not allowed: Talos manages it"),
                    );
                }
            }
        }
        for (i, vol) in items(v, &format!("{ptr}/extraVolumes")).iter().enumerate() {
            for key in ["hostPath", "mountPath"] {
                if str_at(vol, &format!("/{key}")).is_none() {
                    c.error(
                        &format!("{path}.extraVolumes[{i}].{key}"),
                        format!("{key} is required"),
                    );
                }
            }
        }
    }
    if let Some(extra) = v.pointer("/machine/kubelet/extraConfig") {
        for (field, message) in k::kubelet_extra_config_problems(extra) {
            let at = if field.is_empty() {
                "machine.kubelet.extraConfig".to_string()
            } else {
                format!("machine.kubelet.extraConfig.{field}")
            };
            c.error(&at, message);
        }
    }
}

/// `machine.registries`: mirror names and endpoint URLs, credentials and TLS material.
fn registries(c: &mut Checker, v: &Value) {
    if let Some(mirrors) = v
        .pointer("/machine/registries/mirrors")
        .and_then(Value::as_object)
    {
        for (host, m) in mirrors {
            let path = format!("machine.registries.mirrors.{host}");
            if let Err(e) = cri::check_registry_name(host, true) {
                c.error(&path, e);
            }
            for (i, ep) in items(m, "/endpoints").iter().enumerate() {
                if let Err(e) = check_url(ep.as_str().unwrap_or(""), &["https", "http"]) {
                    c.error(&format!("{path}.endpoints[{i}]"), e);
                }
            }
        }
    }
    let Some(configs) = v
        .pointer("/machine/registries/config")
        .and_then(Value::as_object)
    else {
        return;
    };
    for (host, rc) in configs {
        let path = format!("machine.registries.config.{host}");
        if let Err(e) = cri::check_registry_name(host, false) {
            c.error(&path, e);
        }
        registry_auth(
            c,
            rc.get("auth").unwrap_or(&Value::Null),
            &format!("{path}.auth."),
        );
        let pem = |b64: &str| cri::decode_pem(b64);
        if let Some(ca) = str_at(rc, "/tls/ca") {
            if let Err(e) = pem(ca).and_then(|p| cri::check_certificates(&p)) {
                c.error(&format!("{path}.tls.ca"), format!("invalid CA: {e}"));
            }
        }
        let crt = str_at(rc, "/tls/clientIdentity/crt");
        let key = str_at(rc, "/tls/clientIdentity/key");
        client_identity(
            c,
            crt.map(pem),
            key.map(pem),
            &format!("{path}.tls.clientIdentity."),
            ("crt", "key"),
        );
    }
}

fn registry_auth(c: &mut Checker, a: &Value, prefix: &str) {
    if let Some(auth) = str_at(a, "/auth") {
        if let Err(e) = cri::check_auth(auth) {
            c.error(&format!("{prefix}auth"), e);
        }
    }
    if str_at(a, "/password").is_some() && str_at(a, "/username").is_none() {
        c.error(&format!("{prefix}username"), "a password needs a username");
    }
}

/// A client certificate and key come together and parse.
fn client_identity(
    c: &mut Checker,
    crt: Option<std::result::Result<String, String>>,
    key: Option<std::result::Result<String, String>>,
    prefix: &str,
    (crt_name, key_name): (&str, &str),
) {
    match (crt, key) {
        (None, None) => {}
        (Some(crt), Some(key)) => {
            if let Err(e) = crt.and_then(|p| cri::check_certificates(&p)) {
                c.error(
                    &format!("{prefix}{crt_name}"),
                    format!("invalid client certificate: {e}"),
                );
            }
            if let Err(e) = key.and_then(|p| cri::check_key(&p)) {
                c.error(
                    &format!("{prefix}{key_name}"),
                    format!("invalid client key: {e}"),
                );
            }
        }
        (Some(_), None) => c.error(
            &format!("{prefix}{key_name}"),
            "a client certificate needs its key",
        ),
        (None, Some(_)) => c.error(
            &format!("{prefix}{crt_name}"),
            "a client key needs its certificate",
        ),
    }
}

fn valid_dns_name(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        })
}

fn files(c: &mut Checker, v: &Value) {
    for (i, f) in items(v, "/machine/files").iter().enumerate() {
        let path = format!("machine.files[{i}]");
        match str_at(f, "/op") {
            Some("create" | "append" | "overwrite") => {}
            Some(op) => c.error(
                &format!("{path}.op"),
                format!("unknown file op \"{op}\": expected create, append or overwrite"),
            ),
            None => c.error(
                &format!("{path}.op"),
                "a file op is required (create, append or overwrite)",
            ),
        }
        match str_at(f, "/path") {
            Some(p) if p.starts_with('/') => {}
            Some(p) => c.error(
                &format!("{path}.path"),
                format!("\"{p}\" is not an absolute path"),
            ),
            None => c.error(&format!("{path}.path"), "a file path is required"),
        }
        if let Some(mode) = f.get("permissions").and_then(Value::as_u64) {
            if mode > 0o7777 {
                c.error(
                    &format!("{path}.permissions"),
                    format!("{mode:o} is not a valid file mode"),
                );
            }
        }
    }
}

fn network(c: &mut Checker, v: &Value) {
    for (i, dev) in items(v, "/machine/network/interfaces").iter().enumerate() {
        let path = format!("machine.network.interfaces[{i}]");
        let named = str_at(dev, "/interface").is_some();
        let selected = dev.get("deviceSelector").is_some_and(|s| !s.is_null());
        if named == selected {
            c.error(
                &path,
                "exactly one of interface or deviceSelector is required",
            );
        }
        addresses(c, dev, &path);
        let mut seen = Vec::new();
        for (j, vlan) in items(dev, "/vlans").iter().enumerate() {
            let vpath = format!("{path}.vlans[{j}]");
            match vlan.get("vlanId").and_then(Value::as_u64) {
                Some(id @ 1..=4094) => {
                    if seen.contains(&id) {
                        c.error(
                            &format!("{vpath}.vlanId"),
                            format!("duplicate VLAN id {id}"),
                        );
                    }
                    seen.push(id);
                }
                _ => c.error(
                    &format!("{vpath}.vlanId"),
                    "a VLAN id from 1 to 4094 is required",
                ),
            }
            addresses(c, vlan, &vpath);
        }
        if let Some(mode) = str_at(dev, "/bond/mode") {
            const MODES: [&str; 7] = [
                "balance-rr",
                "active-backup",
                "balance-xor",
                "broadcast",
                "802.3ad",
                "balance-tlb",
                "balance-alb",
            ];
            if !MODES.contains(&mode) {
                c.error(
                    &format!("{path}.bond.mode"),
                    format!("unknown bond mode \"{mode}\""),
                );
            }
        }
        if let Some(ip) = str_at(dev, "/vip/ip") {
            if ip.parse::<IpAddr>().is_err() {
                c.error(
                    &format!("{path}.vip.ip"),
                    format!("\"{ip}\" is not an IP address"),
                );
            }
        }
    }
}

fn addresses(c: &mut Checker, dev: &Value, path: &str) {
    for (j, a) in items(dev, "/addresses").iter().enumerate() {
        let s = a.as_str().unwrap_or("");
        if parse_cidr(s, false).is_none() {
            let why = if s.parse::<IpAddr>().is_ok() {
                format!("\"{s}\" has no prefix length: write it as an address with its prefix, such as {s}/24")
            } else {
                format!("\"{s}\" is not an address with a prefix length (CIDR)")
            };
            c.error(&format!("{path}.addresses[{j}]"), why);
        }
    }
    for (j, r) in items(dev, "/routes").iter().enumerate() {
        let rpath = format!("{path}.routes[{j}]");
        if let Some(n) = str_at(r, "/network") {
            if parse_cidr(n, false).is_none() {
                c.error(
                    &format!("{rpath}.network"),
                    format!("\"{n}\" is not a valid CIDR"),
                );
            }
        }
        if let Some(g) = str_at(r, "/gateway") {
            if g.parse::<IpAddr>().is_err() {
                c.error(
                    &format!("{rpath}.gateway"),
                    format!("\"{g}\" is not an IP address"),
                );
            }
        }
    }
}

fn encryption(c: &mut Checker, v: &Value) {
    for label in SYSTEM_VOLUMES {
        let part = label.to_lowercase();
        if let Some(spec) = v.pointer(&format!("/machine/systemDiskEncryption/{part}")) {
            encryption_spec(
                c,
                spec,
                &format!("machine.systemDiskEncryption.{part}"),
                label,
            );
        }
    }
}

/// The system volumes whose encryption a config can set: in `machine.systemDiskEncryption`
/// or in a `VolumeConfig` document of that name.
const SYSTEM_VOLUMES: [&str; 2] = ["STATE", "EPHEMERAL"];

/// The volumes a `VolumeConfig` document may name (as upstream has them).
const VOLUME_CONFIG_NAMES: [&str; 7] = [
    "STATE",
    "EPHEMERAL",
    "IMAGECACHE",
    "ETCD",
    "CRI",
    "KUBELET",
    "LOG",
];

/// A `VolumeConfig` document: a known volume; STATE takes neither provisioning nor mount
/// options nor keys locked to STATE; encryption set here and in the v1alpha1 document for the
/// same volume is a conflict.
fn volume_config(c: &mut Checker, v: &Value) {
    let name = str_at(v, "/name").unwrap_or("");
    if !VOLUME_CONFIG_NAMES.contains(&name) {
        c.error(
            "name",
            format!(
                "unknown volume \"{name}\": a VolumeConfig names one of {}",
                VOLUME_CONFIG_NAMES.join(", ")
            ),
        );
        return;
    }
    let present = |ptr: &str| v.pointer(ptr).is_some_and(|x| !x.is_null());
    if name == "STATE" {
        for section in ["provisioning", "mount"] {
            if present(&format!("/{section}")) {
                c.error(
                    section,
                    format!("the STATE volume takes no {section} config"),
                );
            }
        }
    }
    let Some(spec) = v.pointer("/encryption").filter(|e| !e.is_null()) else {
        return;
    };
    if !SYSTEM_VOLUMES.contains(&name) {
        c.error(
            "encryption",
            format!("the {name} volume cannot be encrypted here: only STATE and EPHEMERAL can"),
        );
        return;
    }
    let legacy = format!("machine.systemDiskEncryption.{}", name.to_lowercase());
    if c.cfg
        .pointer(&format!("/{}", legacy.replace('.', "/")))
        .is_some()
    {
        c.error(
            "encryption",
            format!("the encryption of {name} is set both here and in {legacy}: keep one"),
        );
    }
    encryption_spec(c, spec, "encryption", name);
}

/// One volume's encryption (`label`: STATE or EPHEMERAL) at `path`.
fn encryption_spec(c: &mut Checker, spec: &Value, path: &str, label: &str) {
    match str_at(spec, "/provider") {
        Some("luks2") => {}
        Some(p) => c.error(
            &format!("{path}.provider"),
            format!("unknown provider \"{p}\": expected luks2"),
        ),
        None => c.error(
            &format!("{path}.provider"),
            "an encryption provider is required (luks2)",
        ),
    }
    let keys = items(spec, "/keys");
    if keys.is_empty() {
        c.error(
            &format!("{path}.keys"),
            "at least one encryption key is required",
        );
    }
    let has = |key: &Value, kind: &str| key.get(kind).is_some_and(|x| !x.is_null());
    // STATE is opened at boot before the network is up: a key service cannot be reached.
    if label == "STATE" && !keys.is_empty() && keys.iter().all(|k| has(k, "kms")) {
        c.error(
            &format!("{path}.keys"),
            "STATE is opened before the network is up, so kms keys alone cannot open it: add a nodeID or static key",
        );
    }
    let mut slots = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let kpath = format!("{path}.keys[{i}]");
        let slot = key.get("slot").and_then(Value::as_u64).unwrap_or(0);
        if slots.contains(&slot) {
            c.error(
                &format!("{kpath}.slot"),
                format!("key slot {slot} is used more than once"),
            );
        }
        slots.push(slot);
        let kinds = ["static", "nodeID", "kms", "tpm"]
            .iter()
            .filter(|k| has(key, k))
            .count();
        if kinds != 1 {
            c.error(
                &kpath,
                "each key needs exactly one of static, nodeID, kms or tpm",
            );
        }
        if has(key, "kms") && str_at(key, "/kms/endpoint").is_none_or(str::is_empty) {
            c.error(
                &format!("{kpath}.kms.endpoint"),
                "a kms key needs an endpoint",
            );
        }
        if key.get("static").is_some() && str_at(key, "/static/passphrase").is_none() {
            c.error(
                &format!("{kpath}.static.passphrase"),
                "a static key needs a passphrase",
            );
        }
        let mut pcrs = Vec::new();
        for (j, pcr) in items(key, "/tpm/options/pcrs").iter().enumerate() {
            let n = pcr.as_u64().unwrap_or(u64::MAX);
            if n > 23 || pcrs.contains(&n) {
                c.error(
                    &format!("{kpath}.tpm.options.pcrs[{j}]"),
                    format!("{pcr} is not a PCR of its own: PCRs are 0 to 23, each once"),
                );
            }
            pcrs.push(n);
        }
        // v1alpha1 spells it lockToSTATE, VolumeConfig lockToState.
        let locked = ["lockToSTATE", "lockToState"]
            .iter()
            .any(|k| key.get(*k).and_then(Value::as_bool) == Some(true));
        if locked && label == "STATE" {
            c.error(
                &kpath,
                "a STATE key cannot be locked to STATE (lockToState is for EPHEMERAL)",
            );
        }
    }
}

/// What is wrong with a discovery TTL, if anything: a Go duration up to the service's 30m.
fn discovery_ttl(ttl: &str) -> Option<String> {
    match crate::duration::parse(ttl) {
        Err(e) => Some(e.to_string()),
        Ok(d) if d.is_zero() || d > std::time::Duration::from_secs(30 * 60) => Some(format!(
            "a discovery TTL from 1s to 30m is required, not \"{ttl}\""
        )),
        Ok(_) => None,
    }
}

/// The multi-document Kubernetes kinds: flags Talos owns, the kubelet's configuration.
fn kubernetes_doc(c: &mut Checker, kind: &str, v: &Value) {
    use crate::kubernetes as k;
    let policy: Option<fn(&str) -> k::Merge> = match kind {
        "KubeAPIServerConfig" => Some(k::api_server_flag),
        "KubeControllerManagerConfig" => Some(k::controller_manager_flag),
        "KubeSchedulerConfig" => Some(k::scheduler_flag),
        "KubeletConfig" => Some(k::kubelet_flag),
        _ => None,
    };
    if let (Some(policy), Some(args)) = (policy, v.get("extraArgs").and_then(Value::as_object)) {
        for flag in args.keys() {
            if policy(flag.trim_start_matches('-')) == k::Merge::Denied {
                c.error(
                    &format!("{kind}.extraArgs.{flag}"),
                    format!("extra arg \"{flag}\" is not allowed: Talos manages it"),
                );
            }
        }
    }
    if kind == "KubeletConfig" {
        if let Some(config) = v.get("config") {
            for (field, message) in k::kubelet_extra_config_problems(config) {
                c.error(&format!("{kind}.config.{field}"), message);
            }
        }
    }
}

fn multidoc(c: &mut Checker, kind: &str, v: &Value) {
    kubernetes_doc(c, kind, v);
    match kind {
        "VolumeConfig" => volume_config(c, v),
        "KubeClusterConfig" => {
            if let Some(ep) = str_at(v, "/endpoint") {
                if let Err(e) = check_url(ep, &["https"]) {
                    c.error("endpoint", format!("invalid control plane endpoint: {e}"));
                }
            }
        }
        "DiscoveryServiceConfig" => {
            if let Some(e) = str_at(v, "/ttl").and_then(discovery_ttl) {
                c.error("ttl", e);
            }
            if let Some(ep) = str_at(v, "/endpoint") {
                if let Err(e) = check_url(ep, &["https", "http"]) {
                    c.error("endpoint", format!("invalid discovery endpoint: {e}"));
                }
            }
        }
        "RegistryMirrorConfig" => {
            if let Err(e) = cri::check_registry_name(str_at(v, "/name").unwrap_or(""), true) {
                c.error("name", e);
            }
            let endpoints = items(v, "/endpoints");
            if endpoints.is_empty() {
                c.error("endpoints", "at least one mirror endpoint is required");
            }
            for (i, ep) in endpoints.iter().enumerate() {
                if let Err(e) = check_url(str_at(ep, "/url").unwrap_or(""), &["https", "http"]) {
                    c.error(&format!("endpoints[{i}].url"), e);
                }
            }
        }
        "RegistryAuthConfig" => {
            if let Err(e) = cri::check_registry_name(str_at(v, "/name").unwrap_or(""), false) {
                c.error("name", e);
            }
            registry_auth(c, v, "");
        }
        "RegistryTLSConfig" => {
            if let Err(e) = cri::check_registry_name(str_at(v, "/name").unwrap_or(""), false) {
                c.error("name", e);
            }
            if let Some(ca) = str_at(v, "/ca") {
                if let Err(e) = cri::check_certificates(ca) {
                    c.error("ca", format!("invalid CA: {e}"));
                }
            }
            let pem = |p: Option<&str>| p.map(|p| Ok(p.to_string()));
            client_identity(
                c,
                pem(str_at(v, "/clientIdentity/cert")),
                pem(str_at(v, "/clientIdentity/key")),
                "clientIdentity.",
                ("cert", "key"),
            );
        }
        "CRICustomizationConfig" => {
            let name = str_at(v, "/name").unwrap_or("");
            if let Err(e) = cri::merge_parts(&[(
                name.to_string(),
                str_at(v, "/content").unwrap_or("").to_string(),
            )]) {
                c.error("content", format!("invalid TOML: {e}"));
            }
        }
        "KubeInlineManifestConfig" => {
            let name = str_at(v, "/name").unwrap_or("");
            if let Err(e) = crate::manifest::objects(name, str_at(v, "/manifest").unwrap_or("")) {
                c.error("manifest", e.to_string());
            }
        }
        "KubeExternalManifestConfig" => {
            if let Some(problem) = manifest_url(str_at(v, "/url").unwrap_or("")) {
                c.error("url", problem);
            }
        }
        "KubeNodeConfig" => {
            for (k, t) in v
                .get("taints")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                if let Some(problem) = taint_problem(t) {
                    c.error(&format!("taints.{k}"), problem);
                }
            }
        }
        "KubeNetworkConfig" => {
            for key in ["podSubnets", "serviceSubnets"] {
                for (i, s) in items(v, &format!("/{key}")).iter().enumerate() {
                    if s.as_str().and_then(|s| parse_cidr(s, false)).is_none() {
                        c.error(&format!("{key}[{i}]"), format!("{s} is not a valid CIDR"));
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_configs_are_checked() {
        let src = "version: v1alpha1\nmachine:\n    type: worker\n    token: t\n    ca:\n        crt: x\n    registries:\n        mirrors:\n            http://docker.io:\n                endpoints: [ftp://m]\n        config:\n            m.local:\n                auth:\n                    password: p\n                    auth: '!!'\n                tls:\n                    ca: bm90IGEgY2VydA==\n                    clientIdentity:\n                        crt: bm90IGEgY2VydA==\n---\napiVersion: v1alpha1\nkind: RegistryMirrorConfig\nname: ghcr.io\nendpoints:\n    - url: mirror.local\n---\napiVersion: v1alpha1\nkind: RegistryTLSConfig\nname: \"*\"\nca: nope\n---\napiVersion: v1alpha1\nkind: CRICustomizationConfig\nname: bad\ncontent: \"[x\"\n";
        let cfg = Config::parse(src).unwrap();
        let err = validate(&cfg, Mode::Container)
            .into_result(false)
            .unwrap_err();
        let text = err.to_string();
        for want in [
            "machine.registries.mirrors.http://docker.io: \"http://docker.io\" must be a host (and port), not a URL or path",
            "machine.registries.mirrors.http://docker.io.endpoints[0]: \"ftp://m\" has scheme ftp, expected https or http",
            "machine.registries.config.m.local.auth.auth: auth must be base64 of username:password",
            "machine.registries.config.m.local.auth.username: a password needs a username",
            "machine.registries.config.m.local.tls.ca: invalid CA: no PEM certificate found",
            "machine.registries.config.m.local.tls.clientIdentity.key: a client certificate needs its key",
            "endpoints[0].url: \"mirror.local\" is not a URL",
            "name: \"*\" names every registry and is only allowed for mirrors",
            "ca: invalid CA: ",
            "content: invalid TOML: bad: ",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    /// What validation for container mode says of `src`, which must fail it.
    fn container_errors(src: &str) -> String {
        let cfg = Config::parse(src).unwrap();
        validate(&cfg, Mode::Container)
            .into_result(false)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn manifests_and_taints_are_checked_naming_the_entry() {
        let src = "version: v1alpha1\nmachine:\n    type: worker\n    nodeTaints:\n        dedicated: gpu\ncluster:\n    inlineManifests:\n        - name: cilium\n          contents: |\n            apiVersion: v1\n            kind: ConfigMap\n            metadata:\n              name: [oops\n    extraManifests:\n        - ftp://example.com/x.yaml\n---\napiVersion: v1alpha1\nkind: KubeInlineManifestConfig\nname: ns\nmanifest: |\n    kind: Namespace\n    metadata:\n      name: x\n---\napiVersion: v1alpha1\nkind: KubeNodeConfig\ntaints:\n    a: b\n";
        let err = container_errors(src);
        for want in [
            "machine.nodeTaints.dedicated: invalid taint effect \"gpu\"",
            "cluster.inlineManifests[0].contents: manifest \"cilium\": line 5: while parsing a flow sequence",
            "cluster.extraManifests[0]: \"ftp://example.com/x.yaml\" is not an http(s) URL",
            "manifest: manifest \"ns\": line 1: a Namespace without apiVersion",
            "taints.a: invalid taint effect \"b\"",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
    }

    #[test]
    fn encryption_keys_must_be_usable() {
        let src = "version: v1alpha1\nmachine:\n    type: worker\n    systemDiskEncryption:\n        state:\n            provider: luks2\n            keys:\n                - slot: 0\n                  kms:\n                      endpoint: http://kms\n        ephemeral:\n            provider: luks2\n            keys:\n                - slot: 0\n                  tpm: {}\n                - slot: 1\n                  kms: {}\n";
        let err = container_errors(src);
        for want in [
            "machine.systemDiskEncryption.state.keys: STATE is opened before the network is up, so kms keys alone cannot open it",
            "machine.systemDiskEncryption.ephemeral.keys[1].kms.endpoint: a kms key needs an endpoint",
        ] {
            assert!(err.contains(want), "{want} missing in:\n{err}");
        }
        assert!(!err.contains("keys[0]"), "a tpm key is fine:\n{err}");
    }

    #[test]
    fn volume_config_encryption_is_checked_like_the_v1alpha1_one() {
        let src = "version: v1alpha1\nmachine:\n    type: worker\n    systemDiskEncryption:\n        ephemeral:\n            provider: luks2\n            keys:\n                - slot: 0\n                  nodeID: {}\n---\napiVersion: v1alpha1\nkind: VolumeConfig\nname: EPHEMERAL\nencryption:\n    provider: luks2\n    keys:\n        - slot: 0\n          tpm:\n              options:\n                  pcrs: [7, 24]\n---\napiVersion: v1alpha1\nkind: VolumeConfig\nname: STATE\nprovisioning:\n    maxSize: 1GiB\nencryption:\n    provider: luks2\n    keys:\n        - slot: 0\n          nodeID: {}\n          lockToState: true\n---\napiVersion: v1alpha1\nkind: VolumeConfig\nname: DATA\n";
        let err = container_errors(src);
        for want in [
            "encryption: the encryption of EPHEMERAL is set both here and in machine.systemDiskEncryption.ephemeral: keep one",
            "encryption.keys[0].tpm.options.pcrs[1]: 24 is not a PCR of its own: PCRs are 0 to 23, each once",
            "provisioning: the STATE volume takes no provisioning config",
            "encryption.keys[0]: a STATE key cannot be locked to STATE (lockToState is for EPHEMERAL)",
            "name: unknown volume \"DATA\": a VolumeConfig names one of STATE, EPHEMERAL, IMAGECACHE, ETCD, CRI, KUBELET, LOG",
        ] {
            assert!(err.contains(want), "{want} missing in:\n{err}");
        }
        assert!(!err.contains("pcrs[0]"), "PCR 7 is fine:\n{err}");
        // On its own, a VolumeConfig's encryption is fine.
        let ok = "version: v1alpha1\nmachine:\n    type: worker\n---\napiVersion: v1alpha1\nkind: VolumeConfig\nname: EPHEMERAL\nencryption:\n    provider: luks2\n    keys:\n        - slot: 0\n          nodeID: {}\n          lockToState: true\n";
        let report = validate(&Config::parse(ok).unwrap(), Mode::Container);
        let problems: Vec<_> = report.errors.iter().map(ToString::to_string).collect();
        assert!(
            problems.iter().all(|p| !p.contains("encryption")),
            "{problems:?}"
        );
    }

    #[test]
    fn reports_every_problem_with_position() {
        let src = "version: v1alpha1\nmachine:\n    type: worker\n    token: t\n    ca:\n        crt: x\n    files:\n        - path: etc/x\n          op: replace\n          content: a\n    systemDiskEncryption:\n        state:\n            provider: luks2\n            keys:\n                - slot: 1\n                  nodeID: {}\n                - slot: 1\n                  nodeID: {}\ncluster:\n    controlPlane:\n        endpoint: ftp://x\n    network:\n        podSubnets: [10.0.0.0/33]\n";
        let cfg = Config::parse(src).unwrap();
        let err = validate(&cfg, Mode::Metal).into_result(false).unwrap_err();
        let lines: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "21:19: cluster.controlPlane.endpoint: invalid control plane endpoint: \"ftp://x\" has scheme ftp, expected https",
                "23:22: cluster.network.podSubnets[0]: \"10.0.0.0/33\" is not a valid CIDR",
                "2:1: machine.install.disk: an install disk (or diskSelector) is required in metal mode",
                "9:15: machine.files[0].op: unknown file op \"replace\": expected create, append or overwrite",
                "8:17: machine.files[0].path: \"etc/x\" is not an absolute path",
                "17:25: machine.systemDiskEncryption.state.keys[1].slot: key slot 1 is used more than once",
            ]
        );
        // The same config is fine in container mode but for the other problems.
        let err = validate(&cfg, Mode::Container)
            .into_result(false)
            .unwrap_err();
        assert_eq!(err.problems.len(), 5);
    }

    #[test]
    fn discovery_ttls_are_checked() {
        let src = "version: v1alpha1\nmachine:\n    type: worker\n    token: t\n    ca:\n        crt: x\ncluster:\n    controlPlane:\n        endpoint: https://10.5.0.2:6443\n    discovery:\n        enabled: true\n        registries:\n            service:\n                ttl: 2h\n---\napiVersion: v1alpha1\nkind: DiscoveryServiceConfig\nname: default\nendpoint: ftp://x\nttl: soon\n";
        let cfg = Config::parse(src).unwrap();
        let err = validate(&cfg, Mode::Container)
            .into_result(false)
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("cluster.discovery.registries.service.ttl: a discovery TTL from 1s to 30m is required, not \"2h\""),
            "{text}"
        );
        assert!(text.contains("ttl: invalid duration \"soon\""), "{text}");
        assert!(text.contains("invalid discovery endpoint"), "{text}");
    }

    #[test]
    fn kubernetes_mistakes_are_named() {
        let src = "version: v1alpha1\nmachine:\n    type: controlplane\n    token: t\n    ca:\n        crt: x\n        key: y\n    kubelet:\n        extraArgs:\n            config: /tmp/k.yaml\n        extraConfig:\n            maxPods: 250\n            staticPodPath: /tmp\n            maxPod: 3\ncluster:\n    controlPlane:\n        endpoint: https://10.5.0.2:6443\n    apiServer:\n        extraArgs:\n            etcd-servers: https://10.0.0.1:2379\n            oidc-issuer-url: https://oidc\n        extraVolumes:\n            - hostPath: /var/lib/audit\n";
        let text = container_errors(src);
        for want in [
            "machine.kubelet.extraArgs.config: extra arg \"config\" is not allowed: Talos manages it",
            "machine.kubelet.extraConfig.staticPodPath: kubelet configuration field \"staticPodPath\" can't be overridden: Talos sets it",
            "machine.kubelet.extraConfig.maxPod: unknown KubeletConfiguration field \"maxPod\" (did you mean \"maxPods\"?)",
            "cluster.apiServer.extraArgs.etcd-servers: extra arg \"etcd-servers\" is not allowed: Talos manages it",
            "cluster.apiServer.extraVolumes[0].mountPath: mountPath is required",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("oidc-issuer-url"), "{text}");
        assert!(!text.contains("extraConfig.maxPods"), "{text}");
    }

    #[test]
    fn network_mistakes_are_named() {
        let src = "version: v1alpha1\nmachine:\n    type: worker\n    token: t\n    ca:\n        crt: x\n    network:\n        interfaces:\n            - interface: eth0\n              addresses: [10.5.0.7]\n              vlans:\n                  - vlanId: 5000\ncluster:\n    controlPlane:\n        endpoint: https://10.5.0.2:6443\n";
        let cfg = Config::parse(src).unwrap();
        let err = validate(&cfg, Mode::Container)
            .into_result(false)
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(
                "machine.network.interfaces[0].addresses[0]: \"10.5.0.7\" has no prefix length"
            ),
            "{text}"
        );
        assert!(
            text.contains("machine.network.interfaces[0].vlans[0].vlanId: a VLAN id from 1 to 4094 is required"),
            "{text}"
        );
    }

    #[test]
    fn mode_parsing() {
        assert_eq!("metal".parse::<Mode>().unwrap(), Mode::Metal);
        assert!("bare".parse::<Mode>().is_err());
    }
}
