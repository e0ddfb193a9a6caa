//! etcd on control planes: the real `etcd` (Debian's etcd-server) as a supervised service,
//! with peer and client TLS from the etcd CA in the machine config and its data under
//! EPHEMERAL. A node forms a new cluster only when bootstrapped (`talosctl bootstrap`), once;
//! other control planes join an existing cluster by themselves: as a learner, promoted once in
//! sync. Before each start the service's pre-stage decides which of these applies.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use machinery::pki::{self, CertAndKey, Key, KeyKind, LeafSpec};
use machinery::secrets::unb64;
use machinery::Config;
use tonic::Status;

use crate::services::{HealthCheck, Note, ServiceSpec};

pub const SERVICE: &str = "etcd";
const PROGRAM: &str = "etcd";

#[derive(Debug, Clone, Copy)]
struct BootstrapRequest {
    recover: bool,
    skip_hash_check: bool,
}

pub struct Etcd {
    name: String,
    ip: IpAddr,
    data_dir: PathBuf,
    secrets_dir: PathBuf,
    /// A snapshot uploaded for `bootstrap --recover-from`.
    recover_file: PathBuf,
    /// machined's own client identity towards etcd.
    tls: TlsOptions,
    /// Where an existing cluster may be found (other control planes' client URLs).
    candidates: Vec<String>,
    /// Where the cluster's members are (discovery): their control planes are candidates too.
    members: Option<resources::State>,
    /// `--key=value` arguments from `cluster.etcd.extraArgs`.
    extra_args: Vec<(String, String)>,
    bootstrap: Mutex<Option<BootstrapRequest>>,
    /// Set once this node joined an existing cluster (until its data exists).
    joined: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
    client: tokio::sync::Mutex<Option<Client>>,
    ca: CertAndKey,
}

fn bracket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

fn etcd_ca(cfg: &Config) -> Result<CertAndKey, String> {
    let get = |k: &str| {
        cfg.pointer(&format!("/cluster/etcd/ca/{k}"))
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("the machine config has no cluster.etcd.ca.{k}"))
            .and_then(|s| unb64(s).map_err(|e| format!("cluster.etcd.ca.{k}: {e}")))
    };
    Ok(CertAndKey {
        crt: get("crt")?,
        key: get("key")?,
    })
}

/// This member's server and peer certificates (both usable by servers and clients) and the CA,
/// written under `dir`; etcd reads them on each new connection, so rewriting them renews them.
fn write_member_certs(ca: &CertAndKey, dir: &Path, name: &str, ip: IpAddr) -> Result<(), String> {
    let mut ips = vec![ip];
    for l in ["127.0.0.1", "::1"] {
        let l: IpAddr = l.parse().expect("ip");
        if l != ip {
            ips.push(l);
        }
    }
    let spec = LeafSpec {
        common_name: name.into(),
        dns_names: vec!["localhost".to_string(), name.to_string()],
        ip_addresses: ips,
        server: true,
        client: true,
        ..Default::default()
    };
    let write = |file: &str, data: &str| {
        let p = dir.join(file);
        machinery::fsutil::write_atomic(&p, data.as_bytes(), 0o600)
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    write("ca.crt", &ca.crt)?;
    for role in ["server", "peer"] {
        let (crt, key) = issue(ca, &spec)?;
        write(&format!("{role}.crt"), &crt)?;
        write(&format!("{role}.key"), &key)?;
    }
    Ok(())
}

/// A certificate for `spec` signed by the etcd CA: (certificate, PKCS#8 key).
fn issue(ca: &CertAndKey, spec: &LeafSpec) -> Result<(String, String), String> {
    let key = Key::generate(KeyKind::EcdsaP256).map_err(|e| e.to_string())?;
    let crt = pki::sign_leaf(ca, &key, spec).map_err(|e| e.to_string())?;
    Ok((crt, key.to_pkcs8_pem()))
}

impl Etcd {
    /// Issue this node's etcd certificates (written under `secrets_dir`) from the config's CA.
    pub fn new(
        cfg: &Config,
        name: &str,
        ip: IpAddr,
        ephemeral: &Path,
        secrets_dir: &Path,
    ) -> Result<Etcd, String> {
        let ca = etcd_ca(cfg)?;
        std::fs::create_dir_all(secrets_dir)
            .map_err(|e| format!("{}: {e}", secrets_dir.display()))?;
        write_member_certs(&ca, secrets_dir, name, ip)?;
        let (crt, key) = issue(
            &ca,
            &LeafSpec {
                common_name: "talos".into(),
                client: true,
                ..Default::default()
            },
        )?;
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(&ca.crt))
            .identity(Identity::from_pem(crt, key));
        let mut candidates = Vec::new();
        if let Some(ep) = cfg.control_plane_endpoint() {
            if let Ok(host) = machinery::generate::endpoint_host(ep) {
                let own = host.parse::<IpAddr>().is_ok_and(|h| h == ip) || host == name;
                if !own {
                    let host = match host.parse::<IpAddr>() {
                        Ok(h) => bracket(h),
                        Err(_) => host,
                    };
                    candidates.push(format!("https://{host}:2379"));
                }
            }
        }
        let extra_args = cfg
            .string_map("/cluster/etcd/extraArgs")
            .into_iter()
            .collect();
        Ok(Etcd {
            name: name.into(),
            ip,
            data_dir: ephemeral.join("lib/etcd"),
            secrets_dir: secrets_dir.into(),
            recover_file: ephemeral.join("etcd-recover.snapshot"),
            tls,
            candidates,
            members: None,
            extra_args,
            bootstrap: Mutex::new(None),
            joined: Default::default(),
            wake: tokio::sync::Notify::new(),
            client: tokio::sync::Mutex::new(None),
            ca,
        })
    }

    /// Renew the member certificates once two thirds of their validity have passed.
    pub fn renew_certificates(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let due = std::fs::read_to_string(me.secrets_dir.join("server.crt"))
                    .ok()
                    .and_then(|c| crate::secrets::renew_at(&c).ok())
                    .unwrap_or(0);
                let now = crate::secrets::now();
                if now < due {
                    tokio::time::sleep(Duration::from_secs(due - now)).await;
                    continue;
                }
                match write_member_certs(&me.ca, &me.secrets_dir, &me.name, me.ip) {
                    Ok(_) => tracing::info!("renewed the etcd certificates"),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the etcd certificates");
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                }
            }
        });
    }

    fn peer_url(&self) -> String {
        format!("https://{}:2380", bracket(self.ip))
    }

    fn client_url(&self) -> String {
        format!("https://{}:2379", bracket(self.ip))
    }

    /// Whether this node has etcd data (it is, or was, a member).
    pub fn is_member(&self) -> bool {
        self.initialized()
    }

    fn initialized(&self) -> bool {
        self.data_dir.join("member").exists()
    }

    /// The etcd service of this node.
    pub fn service(self: &Arc<Self>) -> ServiceSpec {
        let prep = self.clone();
        let probe = self.clone();
        ServiceSpec {
            id: SERVICE.into(),
            program: PROGRAM.into(),
            args: self.base_args(),
            depends_on: Vec::new(),
            health: Some(HealthCheck::Probe(Arc::new(move || {
                let e = probe.clone();
                Box::pin(async move { e.probe().await })
            }))),
            prepare: Some(Arc::new(move |note| {
                let e = prep.clone();
                Box::pin(async move { e.prepare(note).await })
            })),
            fds: Vec::new(),
            launcher: None,
        }
    }

    /// What etcd sees of the node when it runs as a container: its data and certificates, at
    /// the same paths.
    pub fn binds(&self) -> Vec<crate::ctrd::Bind> {
        vec![
            crate::ctrd::Bind {
                source: self.data_dir.clone(),
                destination: self.data_dir.clone(),
                writable: true,
            },
            crate::ctrd::Bind {
                source: self.secrets_dir.clone(),
                destination: self.secrets_dir.clone(),
                writable: false,
            },
        ]
    }

    fn base_args(&self) -> Vec<String> {
        let s = |f: &str| self.secrets_dir.join(f).display().to_string();
        let mut listen_client = vec![self.client_url()];
        if !self.ip.is_loopback() {
            listen_client.push("https://127.0.0.1:2379".into());
        }
        let mut args: Vec<(String, String)> = vec![
            ("name".into(), self.name.clone()),
            ("data-dir".into(), self.data_dir.display().to_string()),
            ("listen-peer-urls".into(), self.peer_url()),
            ("initial-advertise-peer-urls".into(), self.peer_url()),
            ("listen-client-urls".into(), listen_client.join(",")),
            ("advertise-client-urls".into(), self.client_url()),
            ("cert-file".into(), s("server.crt")),
            ("key-file".into(), s("server.key")),
            ("trusted-ca-file".into(), s("ca.crt")),
            ("client-cert-auth".into(), "true".into()),
            ("peer-cert-file".into(), s("peer.crt")),
            ("peer-key-file".into(), s("peer.key")),
            ("peer-trusted-ca-file".into(), s("ca.crt")),
            ("peer-client-cert-auth".into(), "true".into()),
            ("auto-compaction-mode".into(), "periodic".into()),
            ("auto-compaction-retention".into(), "5m".into()),
            ("experimental-initial-corrupt-check".into(), "true".into()),
            // Members join as learners (no effect on quorum) and are promoted only once in
            // sync, which etcd checks on its own; the strict check would additionally hold
            // every membership change for 5 s after any member connects.
            ("strict-reconfig-check".into(), "false".into()),
        ];
        for (k, v) in &self.extra_args {
            match args.iter_mut().find(|(a, _)| a == k) {
                Some(slot) => slot.1 = v.clone(),
                None => args.push((k.clone(), v.clone())),
            }
        }
        args.into_iter()
            .map(|(k, v)| format!("--{k}={v}"))
            .collect()
    }

    async fn connect(&self, endpoints: &[String], timeout: Duration) -> Result<Client, String> {
        let opts = ConnectOptions::new()
            .with_tls(self.tls.clone())
            .with_connect_timeout(timeout)
            .with_timeout(timeout);
        tokio::time::timeout(timeout, Client::connect(endpoints, Some(opts)))
            .await
            .map_err(|_| format!("{}: connection timed out", endpoints.join(",")))?
            .map_err(|e| format!("{}: {}", endpoints.join(","), describe(&e)))
    }

    /// A client of the local member.
    pub async fn client(&self) -> Result<Client, String> {
        let mut cached = self.client.lock().await;
        if let Some(c) = cached.as_ref() {
            return Ok(c.clone());
        }
        let c = self
            .connect(&[self.client_url()], Duration::from_secs(5))
            .await?;
        *cached = Some(c.clone());
        Ok(c)
    }

    /// Healthy: the local member answers a linearizable read (which needs a quorum).
    async fn probe(&self) -> Result<(), String> {
        let mut c = self.client().await?;
        match tokio::time::timeout(Duration::from_secs(3), c.get("health", None)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("etcd: {}", describe(&e))),
            Err(_) => Err("etcd: no answer within 3s: the cluster has no quorum".into()),
        }
    }

    /// The pre-stage: the arguments that start etcd from its data, a new cluster, a restored
    /// snapshot, or an existing cluster it joins; waits until one of these applies.
    async fn prepare(self: Arc<Self>, note: Note) -> Result<Vec<String>, String> {
        let mut announced = false;
        loop {
            if self.initialized() {
                return Ok(vec!["--initial-cluster-state=existing".into()]);
            }
            let requested = *self.bootstrap.lock().expect("bootstrap");
            if let Some(req) = requested {
                let initial = format!("--initial-cluster={}={}", self.name, self.peer_url());
                if req.recover {
                    self.restore(req.skip_hash_check).await?;
                    return Ok(vec![initial, "--initial-cluster-state=existing".into()]);
                }
                return Ok(vec![initial, "--initial-cluster-state=new".into()]);
            }
            match self.join().await {
                Ok(args) => return Ok(args),
                Err(e) => {
                    if !announced {
                        note(format!(
                            "etcd is waiting to join the cluster ({e}); if this node is the first control plane, run `talosctl bootstrap` against it"
                        ));
                        announced = true;
                    }
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// Control planes to join through: the config's endpoint, then the control planes among
    /// the cluster's members.
    fn candidates(&self) -> Vec<String> {
        let mut out = self.candidates.clone();
        let Some(state) = &self.members else {
            return out;
        };
        let members = state.list(
            crate::discovery::CLUSTER_NS,
            crate::discovery::MEMBER,
            &resources::LabelQuery::all(),
        );
        for m in members
            .iter()
            .filter_map(|r| r.spec::<crate::discovery::MemberSpec>())
        {
            if m.machine_type == "worker" || !m.reachable {
                continue;
            }
            for a in m.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                let url = format!("https://{}:2379", bracket(a));
                if a != self.ip && !out.contains(&url) {
                    out.push(url);
                }
            }
        }
        out
    }

    /// Members of the cluster's discovery are candidates to join through.
    pub fn with_members(mut self, state: resources::State) -> Etcd {
        self.members = Some(state);
        self
    }

    /// Join an existing cluster through one of the candidates: as a learner, promoted once
    /// it has caught up.
    async fn join(self: &Arc<Self>) -> Result<Vec<String>, String> {
        let candidates = self.candidates();
        if candidates.is_empty() {
            return Err("no other control plane is known".into());
        }
        let mut last = String::new();
        for cand in &candidates {
            // Short: a cluster busy promoting another member is simply asked again.
            let mut c = match self
                .connect(std::slice::from_ref(cand), Duration::from_secs(1))
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let list = match c.member_list().await {
                Ok(l) => l,
                Err(e) => {
                    last = format!("{cand}: {}", describe(&e));
                    continue;
                }
            };
            let peer = self.peer_url();
            // A member with our peer URL is a previous life of this node (its data is gone).
            for m in list.members() {
                if m.peer_urls().contains(&peer) {
                    c.member_remove(m.id()).await.map_err(|e| {
                        format!("remove the stale member {:x}: {}", m.id(), describe(&e))
                    })?;
                }
            }
            let added = c
                .member_add(
                    [peer.as_str()],
                    Some(etcd_client::MemberAddOptions::new().with_is_learner()),
                )
                .await
                .map_err(|e| format!("{cand}: add this node: {}", describe(&e)))?;
            let id = added.member().map(|m| m.id()).unwrap_or_default();
            let now = c
                .member_list()
                .await
                .map_err(|e| format!("{cand}: {}", describe(&e)))?;
            let initial: Vec<String> = now
                .members()
                .iter()
                .flat_map(|m| {
                    let name = if m.id() == id {
                        self.name.clone()
                    } else {
                        m.name().to_string()
                    };
                    m.peer_urls()
                        .iter()
                        .map(move |u| format!("{name}={u}"))
                        .collect::<Vec<_>>()
                })
                .collect();
            self.joined.store(true, std::sync::atomic::Ordering::SeqCst);
            let me = self.clone();
            let via = cand.clone();
            tokio::spawn(async move { me.promote(id, via).await });
            return Ok(vec![
                format!("--initial-cluster={}", initial.join(",")),
                "--initial-cluster-state=existing".into(),
            ]);
        }
        Err(last)
    }

    /// Promote this node from learner to voting member once etcd accepts it.
    async fn promote(&self, id: u64, via: String) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let endpoints = [via.clone(), self.client_url()];
            let Ok(mut c) = self.connect(&endpoints, Duration::from_secs(2)).await else {
                continue;
            };
            match c.member_promote(id).await {
                Ok(_) => {
                    tracing::info!(
                        member = format!("{id:x}"),
                        "promoted to a voting etcd member"
                    );
                    return;
                }
                Err(e) if e.to_string().contains("not a learner") => return,
                Err(e) => tracing::debug!(error = %e, "etcd promotion not yet possible"),
            }
        }
    }

    async fn restore(&self, skip_hash_check: bool) -> Result<(), String> {
        if !self.recover_file.exists() {
            return Err("no snapshot was uploaded to recover from".into());
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
        if let Some(parent) = self.data_dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mut cmd = std::process::Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg("snapshot")
            .arg("restore")
            .arg(&self.recover_file)
            .arg(format!("--name={}", self.name))
            .arg(format!(
                "--initial-cluster={}={}",
                self.name,
                self.peer_url()
            ))
            .arg(format!("--initial-advertise-peer-urls={}", self.peer_url()))
            .arg(format!("--data-dir={}", self.data_dir.display()));
        if skip_hash_check {
            cmd.arg("--skip-hash-check=true");
        }
        // machined collects every child it has: the tool's exit comes through the reaper.
        let out = crate::blocking(move || {
            crate::reaper::output(&mut cmd).map_err(|e| {
                format!("etcdctl snapshot restore: {e} (install Debian's etcd-client)")
            })
        })
        .await?;
        if !out.status.success() {
            return Err(format!(
                "etcdctl snapshot restore: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let _ = std::fs::remove_file(&self.recover_file);
        Ok(())
    }

    /// `talosctl bootstrap`: form a new cluster here, exactly once.
    pub async fn bootstrap(&self, recover: bool, skip_hash_check: bool) -> Result<(), Status> {
        let exists = || Status::already_exists("etcd data directory is not empty");
        if self.initialized()
            || self.bootstrap.lock().expect("bootstrap").is_some()
            || self.joined.load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(exists());
        }
        for cand in &self.candidates() {
            if let Ok(mut c) = self
                .connect(std::slice::from_ref(cand), Duration::from_secs(2))
                .await
            {
                if c.member_list().await.is_ok() {
                    return Err(Status::already_exists(format!(
                        "an etcd cluster is already running at {cand}: this node joins it by itself"
                    )));
                }
            }
        }
        if recover && !self.recover_file.exists() {
            return Err(Status::failed_precondition(
                "no etcd snapshot was uploaded: use talosctl bootstrap --recover-from FILE",
            ));
        }
        *self.bootstrap.lock().expect("bootstrap") = Some(BootstrapRequest {
            recover,
            skip_hash_check,
        });
        self.wake.notify_waiters();
        Ok(())
    }

    /// Keep an uploaded snapshot for a recovering bootstrap.
    pub fn store_snapshot(&self, data: &[u8]) -> Result<(), String> {
        if let Some(parent) = self.recover_file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        machinery::fsutil::write_atomic(&self.recover_file, data, 0o600)
            .map_err(|e| format!("{}: {e}", self.recover_file.display()))
    }

    /// This member's id, from the local member.
    pub async fn member_id(&self) -> Result<u64, Status> {
        let mut c = self.client().await.map_err(Status::unavailable)?;
        let st = c.status().await.map_err(status)?;
        Ok(st.header().map(|h| h.member_id()).unwrap_or_default())
    }

    /// This member's id, when it may leave the cluster: the last voting member cannot.
    pub async fn can_leave(&self) -> Result<u64, Status> {
        let mut c = self.client().await.map_err(Status::unavailable)?;
        let me = self.member_id().await?;
        let list = c.member_list().await.map_err(status)?;
        let voters: Vec<u64> = list
            .members()
            .iter()
            .filter(|m| !m.is_learner())
            .map(|m| m.id())
            .collect();
        if voters == [me] {
            return Err(Status::failed_precondition(
                "this node is the last member of the etcd cluster: it cannot leave",
            ));
        }
        Ok(me)
    }

    /// Leave the cluster: hand leadership on, remove this member, stop etcd and drop its data.
    /// The last voting member cannot leave.
    pub async fn leave(&self, services: &crate::services::Supervisor) -> Result<(), Status> {
        let me = self.can_leave().await?;
        let mut c = self.client().await.map_err(Status::unavailable)?;
        let _ = self.forfeit_leadership().await;
        c.member_remove(me).await.map_err(status)?;
        let _ = services.stop(SERVICE);
        *self.client.lock().await = None;
        // Wait for the service to stop before its data goes.
        for _ in 0..200 {
            if services
                .list()
                .iter()
                .find(|s| s.id == SERVICE)
                .is_none_or(|s| s.state != crate::services::ServiceState::Running)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.wipe();
        Ok(())
    }

    /// Forget this node's etcd data and bootstrap state.
    pub fn wipe(&self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
        *self.bootstrap.lock().expect("bootstrap") = None;
        self.joined
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// If this member leads, move leadership to another voting member; the old leader's name.
    pub async fn forfeit_leadership(&self) -> Result<Option<String>, Status> {
        let mut c = self.client().await.map_err(Status::unavailable)?;
        let st = c.status().await.map_err(status)?;
        let me = st.header().map(|h| h.member_id()).unwrap_or_default();
        if st.leader() != me {
            return Ok(None);
        }
        let list = c.member_list().await.map_err(status)?;
        let Some(next) = list
            .members()
            .iter()
            .find(|m| m.id() != me && !m.is_learner() && !m.name().is_empty())
        else {
            return Ok(None);
        };
        c.move_leader(next.id()).await.map_err(status)?;
        Ok(Some(self.name.clone()))
    }
}

/// An etcd error in few words: the gRPC message and its root cause.
pub fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let mut root: Option<&dyn std::error::Error> = std::error::Error::source(s);
            while let Some(next) = root.and_then(|r| r.source()) {
                root = Some(next);
            }
            match root {
                Some(r) => format!("{}: {r}", s.message()),
                None => s.message().to_string(),
            }
        }
        other => other.to_string(),
    }
}

/// An etcd error as an API status.
pub fn status(e: etcd_client::Error) -> Status {
    let code = match &e {
        etcd_client::Error::GRpcStatus(s) => s.code(),
        _ => tonic::Code::Unavailable,
    };
    Status::new(code, format!("etcd: {}", describe(&e)))
}
