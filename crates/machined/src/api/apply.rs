//! ApplyConfiguration: validate a new machine config, then apply it now, at the next boot, for
//! a trial period, or with a reboot, as the mode says. `--dry-run` shows the diff instead.

use resources::ResourceType;
use std::sync::Arc;
use std::time::Duration;

use api::machine::apply_configuration_request::Mode;
use api::machine::{ApplyConfiguration, ApplyConfigurationRequest, ApplyConfigurationResponse};
use machinery::validate::{validate, Mode as RuntimeMode};
use machinery::Config;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use super::auth::Roles;
use crate::node::Node;

pub const DEFAULT_TRY_TIMEOUT: Duration = Duration::from_secs(60);

/// Config paths API calls read when they run, so a change of them is live: an upgrade installs
/// what `machine.install` says; apply syncs the disks' key slots at once (the rest of an
/// encryption section applies when a partition is formatted).
const READ_ON_DEMAND: &[&str] = &["/machine/install", "/machine/systemDiskEncryption"];

/// Who reads which config paths (JSON pointers into the v1alpha1 document): the running
/// controllers' declared inputs and the API's on-demand reads are `live`; what is read once
/// at boot is `boot`.
#[derive(Debug, Default)]
pub struct Readers {
    pub live: Vec<String>,
    pub boot: Vec<String>,
}

impl Readers {
    pub fn of(node: &Node) -> Readers {
        Readers::new(&node.controllers, &node.boot_inputs)
    }

    /// From the controllers' declared machine-config inputs and the paths read at boot.
    pub fn new(controllers: &[resources::ControllerInfo], boot: &[&str]) -> Readers {
        let config = <types::config::MachineConfigSpec as ResourceType>::TYPE;
        let mut live: Vec<String> = controllers
            .iter()
            .flat_map(|c| &c.inputs)
            .filter(|i| i.ty == config)
            .flat_map(|i| i.paths.iter().cloned())
            .collect();
        live.extend(READ_ON_DEMAND.iter().map(|p| p.to_string()));
        Readers {
            live,
            boot: boot.iter().map(|p| p.to_string()).collect(),
        }
    }
}

/// What a config change does on this node.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// Changed fields read only at boot: they need a reboot.
    pub reboot: Vec<String>,
    /// Changed fields nothing on this node reads (yet): applied, without effect.
    pub unread: Vec<String>,
}

/// Whether the changed field `field` (`machine.network.hostname`) is or lies under, or holds,
/// the declared pointer `ptr` (`/machine/network`).
fn overlaps(field: &str, ptr: &str) -> bool {
    let declared = ptr.trim_start_matches('/').replace('/', ".");
    let under = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}."));
    !ptr.starts_with("kind:") && (under(field, &declared) || under(&declared, field))
}

/// A value's fields: an object's, none for null (a section added or removed as a whole
/// differs in each of its fields).
fn fields(v: &Value) -> Option<&serde_json::Map<String, Value>> {
    static EMPTY: std::sync::LazyLock<serde_json::Map<String, Value>> =
        std::sync::LazyLock::new(serde_json::Map::new);
    match v {
        Value::Object(m) => Some(m),
        Value::Null => Some(&EMPTY),
        _ => None,
    }
}

fn differing(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (fields(a), fields(b)) {
        (Some(x), Some(y)) if a.is_object() || b.is_object() => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                differing(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &sub,
                    out,
                );
            }
        }
        _ if a != b => out.push(path.to_string()),
        _ => {}
    }
}

/// The v1alpha1 fields that differ between `old` and `new`, by who reads them. Other
/// documents are read by controllers only, so their changes are live.
pub fn changes(old: &Config, new: &Config, readers: &Readers) -> Changes {
    let v1 = |c: &Config| c.v1alpha1().cloned().unwrap_or(Value::Null);
    let mut fields = Vec::new();
    differing(&v1(old), &v1(new), "", &mut fields);
    let mut out = Changes::default();
    for f in fields {
        if let Some(p) = readers.boot.iter().find(|p| overlaps(&f, p)) {
            // Named as its reader declares it (`machine.env`, not each variable).
            let declared = p.trim_start_matches('/').replace('/', ".");
            let name = if f.starts_with(&declared) {
                declared
            } else {
                f
            };
            if !out.reboot.contains(&name) {
                out.reboot.push(name);
            }
        } else if !readers.live.iter().any(|p| overlaps(&f, p)) {
            out.unread.push(f);
        }
    }
    out
}

fn unified_diff(old: &str, new: &str) -> String {
    if old == new {
        return "No changes.".into();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .header("a", "b")
        .to_string()
}

/// After a key change: wait (briefly) until the volumes' status, which
/// block.VolumeStatusController reads from the partitions, shows the slots `cfg` has, so the
/// client's next read sees what it applied.
async fn volume_status_settled(node: &Node, cfg: &Config) {
    let slots = |label: &str| -> Option<Vec<u32>> {
        let mut s: Vec<u32> = crate::sys::luks::configured(cfg, label)?
            .keys
            .iter()
            .map(|k| k.slot)
            .collect();
        s.sort();
        Some(s)
    };
    let shown = |label: &str| -> Option<Vec<u32>> {
        let status = node
            .state
            .spec_of::<types::runtime::VolumeStatusSpec>(label)?;
        Some(status.encryption_key_slots.iter().map(|k| k.slot).collect())
    };
    let settled = crate::sys::wait_for(Some(Duration::from_secs(10)), || {
        [disk::STATE, disk::EPHEMERAL]
            .iter()
            .all(|l| slots(l).is_none() || shown(l) == slots(l))
    })
    .await;
    if !settled {
        tracing::warn!("the volumes' status does not show the new key slots yet");
    }
}

pub struct Applier {
    pub node: Arc<Node>,
    /// The node has no config yet: anyone may apply one, and it is booted at once.
    maintenance: bool,
    busy: Mutex<()>,
    rollback: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Applier {
    pub fn new(node: Arc<Node>, maintenance: bool) -> Applier {
        Applier {
            node,
            maintenance,
            busy: Mutex::new(()),
            rollback: Default::default(),
        }
    }

    fn cancel_rollback(&self) {
        if let Some(h) = self.rollback.lock().expect("rollback").take() {
            h.abort();
        }
    }

    pub async fn apply(
        &self,
        req: Request<ApplyConfigurationRequest>,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        let _guard = self.busy.try_lock().map_err(|_| {
            Status::failed_precondition("another apply configuration is already in progress")
        })?;
        if !self.maintenance && !req.extensions().get::<Roles>().is_some_and(Roles::is_admin) {
            return Err(Status::permission_denied(
                "not authorized: /machine.MachineService/ApplyConfiguration needs the role os:admin",
            ));
        }
        let r = req.into_inner();
        let mode = Mode::try_from(r.mode).map_err(|_| {
            Status::invalid_argument(format!(
                "incorrect mode '{}' specified for the apply config call",
                r.mode
            ))
        })?;
        if mode != Mode::Try {
            self.cancel_rollback();
            // Another apply replaces a config being tried after a reboot: it is kept.
            if let Some(f) = &self.node.state_file {
                crate::boot::trial::forget(f);
            }
        }
        let text = String::from_utf8(r.data)
            .map_err(|_| Status::invalid_argument("the machine config is not UTF-8 text"))?;
        let new = Config::parse(&text).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if new.v1alpha1().is_none() {
            return Err(Status::invalid_argument(
                "the applied machine configuration doesn't contain v1alpha1 config, did you mean to patch the machine config instead?",
            ));
        }
        let mut warnings: Vec<String> = validate(&new, RuntimeMode::Container)
            .into_result(false)
            .map_err(|e| Status::invalid_argument(format!("the machine config is invalid:\n{e}")))?
            .iter()
            .map(ToString::to_string)
            .collect();
        let links: std::collections::BTreeSet<String> = self
            .node
            .state
            .specs_of::<types::network::LinkStatusSpec>()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let unknown = crate::controllers::network::sources::unknown_route_links(&new, &links);
        if !unknown.is_empty() {
            return Err(Status::invalid_argument(format!(
                "the machine config is invalid:\n{}",
                unknown.join("\n")
            )));
        }
        if self.maintenance {
            return self.leave_maintenance(&new, r.dry_run, warnings).await;
        }
        let old = self.node.active_config().map_err(Status::internal)?;
        let changes = changes(&old, &new, &Readers::of(&self.node));
        if !changes.unread.is_empty() {
            warnings.push(format!(
                "not read by this node yet (kept in the config, no effect): {}",
                changes.unread.join(", ")
            ));
        }
        let needs_reboot = changes.reboot;
        let timeout = r
            .try_mode_timeout
            .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_TRY_TIMEOUT);
        let (used, details) = match mode {
            Mode::Auto if needs_reboot.is_empty() => (Mode::NoReboot, "Applied configuration without a reboot".to_string()),
            Mode::NoReboot if needs_reboot.is_empty() => (Mode::NoReboot, "Applied configuration without a reboot".to_string()),
            Mode::NoReboot => {
                return Err(Status::failed_precondition(format!(
                    "the changes need a reboot, so they cannot be applied in no-reboot mode: {}",
                    needs_reboot.join(", ")
                )))
            }
            Mode::Auto | Mode::Reboot => (Mode::Reboot, "Applied configuration with a reboot".to_string()),
            Mode::Staged => (Mode::Staged, "Staged configuration to be applied after the next reboot".to_string()),
            Mode::Try if needs_reboot.is_empty() => (
                Mode::Try,
                format!(
                    "Applied configuration without a reboot\nThe config is applied in 'try' mode and will be automatically reverted back in {}",
                    crate::boot::trial::go_duration(timeout)
                ),
            ),
            // Beyond upstream: tried across a reboot, kept only if the node comes up healthy.
            Mode::Try if self.node.state_file.is_some() => (
                Mode::Reboot,
                format!(
                    "Applied configuration with a reboot\nThe config is applied in 'try' mode: the node reboots into it and returns to the last good config by itself unless it is healthy within {}",
                    crate::boot::trial::go_duration(timeout)
                ),
            ),
            Mode::Try => {
                return Err(Status::failed_precondition(format!(
                    "the changes need a reboot, so they cannot be tried: {}",
                    needs_reboot.join(", ")
                )))
            }
        };
        let tried = mode == Mode::Try && used == Mode::Reboot;
        // Disk encryption keys are changed on the partitions themselves, at once.
        let keys_change = self.node.mode.installed()
            && [disk::STATE, disk::EPHEMERAL].iter().any(|l| {
                crate::sys::luks::configured(&old, l) != crate::sys::luks::configured(&new, l)
            });
        if keys_change && used != Mode::Staged {
            if mode == Mode::Try {
                return Err(Status::failed_precondition(
                    "disk encryption changes cannot be tried: apply them with --mode=auto",
                ));
            }
            crate::sys::luks::check(&old, &new).map_err(|e| {
                Status::invalid_argument(format!("the machine config is invalid:\n{e}"))
            })?;
        }
        if r.dry_run {
            let diff = unified_diff(&old.encode_canonical(), &new.encode_canonical());
            return Ok(reply(
                used,
                format!(
                    "Dry run summary:\n{details} (skipped in dry-run).\nConfig diff:\n\n{diff}"
                ),
                Vec::new(),
            ));
        }
        tracing::info!(mode = ?used, "apply config request");
        if keys_change && matches!(used, Mode::NoReboot | Mode::Reboot) {
            let (o, n) = (old.clone(), new.clone());
            let done = crate::sys::blocking(move || crate::sys::luks::sync_all(&o, &n))
                .await
                .map_err(|e| Status::failed_precondition(format!("disk encryption: {e}")))?;
            for d in done {
                tracing::info!("disk encryption: {d}");
            }
        }
        match used {
            Mode::NoReboot => {
                self.node.persist(&new).map_err(Status::internal)?;
                self.node.set_active(&new).map_err(Status::internal)?;
                if keys_change {
                    volume_status_settled(&self.node, &new).await;
                }
            }
            Mode::Staged => self.node.persist(&new).map_err(Status::internal)?,
            Mode::Try => {
                self.node.set_active(&new).map_err(Status::internal)?;
                let node = self.node.clone();
                let handle = tokio::spawn(async move {
                    tokio::time::sleep(timeout).await;
                    tracing::info!("rolling back the configuration");
                    if let Err(e) = node.set_active(&old) {
                        tracing::error!(error = %e, "rollback failed");
                    }
                });
                if let Some(prev) = self.rollback.lock().expect("rollback").replace(handle) {
                    prev.abort();
                }
            }
            Mode::Reboot | Mode::Auto => {
                match &self.node.state_file {
                    Some(f) if tried => crate::boot::trial::start(f, &old, &new, timeout)
                        .map_err(Status::internal)?,
                    _ => self.node.persist(&new).map_err(Status::internal)?,
                }
                let reboot = self.node.reboot.clone();
                tokio::spawn(async move {
                    // Let the reply reach the client first.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    reboot.notify_one();
                });
            }
        }
        Ok(reply(
            if tried { Mode::Try } else { used },
            details,
            warnings,
        ))
    }
}

impl Applier {
    /// In maintenance mode a valid config is persisted and booted (machined starts again with
    /// it, in the same process).
    async fn leave_maintenance(
        &self,
        new: &Config,
        dry_run: bool,
        warnings: Vec<String>,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        let details = "Applied configuration without a reboot".to_string();
        if dry_run {
            return Ok(reply(
                Mode::NoReboot,
                format!("Dry run summary:\n{details} (skipped in dry-run).\n"),
                Vec::new(),
            ));
        }
        if self.node.state_file.is_some() {
            if self.node.mode.installed() {
                // STATE was wiped: it is encrypted now if the config asks.
                let c = new.clone();
                crate::sys::blocking(move || crate::sys::luks::encrypt_state(&c))
                    .await
                    .map_err(|e| Status::internal(format!("disk encryption: {e}")))?;
            }
            self.node.persist(new).map_err(Status::internal)?;
        } else {
            *self.node.handover.lock().expect("handover") = Some(new.encode());
        }
        let reboot = self.node.reboot.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            reboot.notify_one();
        });
        Ok(reply(Mode::NoReboot, details, warnings))
    }
}

fn reply(
    mode: Mode,
    details: String,
    warnings: Vec<String>,
) -> Response<ApplyConfigurationResponse> {
    Response::new(ApplyConfigurationResponse {
        messages: vec![ApplyConfiguration {
            metadata: None,
            warnings,
            mode: mode as i32,
            mode_details: details,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The readers of a control plane's config, from the controllers it registers.
    fn readers() -> Readers {
        let state = resources::State::new();
        let mut rt = resources::Runtime::new(state.clone());
        crate::controllers::register(
            &mut rt,
            crate::controllers::Wiring {
                rooted: true,
                runs: true,
                installed: true,
                cmdline: Default::default(),
                services: crate::services::supervisor::Supervisor::new(state.clone(), None),
                discovery: Default::default(),
                etcd: Default::default(),
                state,
                ephemeral: "/var".into(),
            },
        )
        .unwrap();
        Readers::new(rt.controllers(), crate::boot::CONFIG_AT_BOOT)
    }

    fn worker(extra: &str) -> Config {
        Config::parse(&format!(
            "version: v1alpha1\nmachine:\n    type: worker\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn reboot_fields_ignore_live_paths() {
        let r = readers();
        let a = worker("    network:\n        hostname: a\n");
        let b = worker("    network:\n        hostname: b\n");
        assert!(changes(&a, &b, &r).reboot.is_empty());
        let c = Config::parse(
            "version: v1alpha1\nmachine:\n    type: controlplane\n    env:\n        A: b\n",
        )
        .unwrap();
        assert_eq!(changes(&a, &c, &r).reboot, ["machine.env", "machine.type"]);
    }

    /// Per section of the config: which changes apply live, which need a reboot, which
    /// nothing reads yet.
    #[test]
    fn each_section_live_or_reboot_from_its_readers() {
        let r = readers();
        let base = worker("");
        for (field, yaml, want) in [
            (
                "machine.network",
                "    network:\n        hostname: x\n",
                "live",
            ),
            ("machine.type", "", "reboot"),
            ("machine.env", "    env:\n        A: b\n", "reboot"),
            ("machine.token", "    token: abc.def\n", "reboot"),
            ("machine.ca", "    ca:\n        crt: eA==\n", "live"),
            ("machine.certSANs", "    certSANs: [a.example]\n", "live"),
            (
                "machine.sysctls",
                "    sysctls:\n        net.a: \"1\"\n",
                "live",
            ),
            (
                "machine.time",
                "    time:\n        servers: [t.example]\n",
                "live",
            ),
            (
                "machine.logging",
                "    logging:\n        destinations: []\n",
                "live",
            ),
            (
                "machine.install",
                "    install:\n        disk: /dev/vda\n",
                "live",
            ),
            ("machine.files", "    files: []\n", "live"),
            (
                "machine.registries",
                "    registries:\n        mirrors: {}\n",
                "live",
            ),
            (
                "machine.systemDiskEncryption",
                "    systemDiskEncryption: {}\n",
                "live",
            ),
            (
                "machine.kubelet",
                "    kubelet:\n        image: k\n",
                "live",
            ),
            (
                "cluster.etcd",
                "cluster:\n    etcd:\n        extraArgs:\n            a: b\n",
                "live",
            ),
            (
                "cluster.discovery",
                "cluster:\n    discovery:\n        enabled: false\n",
                "live",
            ),
            ("cluster.id", "cluster:\n    id: abc\n", "live"),
            (
                "cluster.apiServer",
                "cluster:\n    apiServer:\n        image: k\n",
                "live",
            ),
            (
                "cluster.coreDNS",
                "cluster:\n    coreDNS:\n        disabled: true\n",
                "live",
            ),
            (
                "machine.seccompProfiles",
                "    seccompProfiles:\n        - name: audit.json\n          value:\n              defaultAction: SCMP_ACT_LOG\n",
                "unread",
            ),
        ] {
            let new = if field == "machine.type" {
                Config::parse("version: v1alpha1\nmachine:\n    type: controlplane\n").unwrap()
            } else if yaml.starts_with("cluster") {
                Config::parse(&format!(
                    "version: v1alpha1\nmachine:\n    type: worker\n{yaml}"
                ))
                .unwrap()
            } else {
                worker(yaml)
            };
            let c = changes(&base, &new, &r);
            let got = if !c.reboot.is_empty() {
                "reboot"
            } else if !c.unread.is_empty() {
                "unread"
            } else {
                "live"
            };
            assert_eq!(got, want, "{field}: {c:?}");
        }
    }

    /// Every config path a controller's source reads is among the paths some controller
    /// declares (or that boot or the API declares): an undeclared read would make a live
    /// change look unread, or a boot-time one look live.
    #[test]
    fn controllers_declare_the_config_paths_they_read() {
        let r = readers();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        let mut stack = vec![dir.join("controllers"), dir.join("sys")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
        let mut undeclared = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (i, _) in text
                .match_indices("\"/machine/")
                .chain(text.match_indices("\"/cluster/"))
            {
                let lit: String = text[i + 1..].chars().take_while(|c| *c != '"').collect();
                let field = lit
                    .trim_start_matches('/')
                    .split(['{', '/'])
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(".");
                if !r.live.iter().chain(&r.boot).any(|p| overlaps(&field, p)) {
                    undeclared.push(format!("{}: {lit}", f.display()));
                }
            }
        }
        assert!(
            undeclared.is_empty(),
            "read but not declared: {undeclared:#?}"
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(
            crate::boot::trial::go_duration(Duration::from_secs(60)),
            "1m0s"
        );
        assert_eq!(
            crate::boot::trial::go_duration(Duration::from_secs(5)),
            "5s"
        );
        assert_eq!(
            crate::boot::trial::go_duration(Duration::from_secs(3723)),
            "1h2m3s"
        );
    }
}
