//! The etcd service of control planes: the real `etcd` (Debian's etcd-server, or the config's
//! image) run as EtcdSpec says, with the certificates etcd.PKIController wrote and its data
//! under EPHEMERAL. A node forms a new cluster only when bootstrapped (`talosctl bootstrap`), once;
//! other control planes join an existing cluster by themselves: as a learner, promoted once in
//! sync. Before each start the service's pre-stage decides which of these applies.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use resources::ResourceType;
use tonic::Status;
use types::cluster::MemberSpec;
use types::etcd::{EtcdSpecSpec, ETCD_ID};
use types::runtime::BootstrapRequestSpec;
use types::secrets::EtcdCertsSpec;

use crate::services::supervisor::{HealthCheck, Note, ServiceSpec, ServiceState};

/// Who writes the bootstrap request (the API, on `talosctl bootstrap`).
const BOOTSTRAP_OWNER: &str = "api";

pub const SERVICE: &str = "etcd";

const PROGRAM: &str = "etcd";

pub struct Etcd {
    name: String,
    ip: IpAddr,
    data_dir: PathBuf,
    /// A snapshot uploaded for `bootstrap --recover-from`.
    recover_file: PathBuf,
    /// machined's own client identity towards etcd.
    tls: TlsOptions,
    /// The command line the service runs (from EtcdSpec).
    args: Vec<String>,
    pki_dir: PathBuf,
    /// Where an existing cluster may be found (other control planes' client URLs).
    candidates: Vec<String>,
    /// The node's resources: the cluster's members (their control planes are candidates
    /// too) and the bootstrap request.
    state: resources::State,
    /// Set once this node joined an existing cluster (until its data exists).
    joined: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
    client: tokio::sync::Mutex<Option<Client>>,
}

/// The running etcd, shared by the service controller that (re)makes it and the API.
pub type Handle = Arc<std::sync::RwLock<Option<Arc<Etcd>>>>;

impl Etcd {
    /// etcd as `spec` describes it, talking to members with machined's client certificate.
    pub fn new(
        spec: &EtcdSpecSpec,
        certs: &EtcdCertsSpec,
        ephemeral: &Path,
        state: resources::State,
    ) -> Result<Etcd, String> {
        let ip: IpAddr = spec
            .advertised_addresses
            .first()
            .and_then(|a| a.parse().ok())
            .ok_or("etcd has no address to advertise")?;
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(&certs.ca))
            .identity(Identity::from_pem(&certs.client_crt, &certs.client_key));
        Ok(Etcd {
            name: spec.name.clone(),
            ip,
            data_dir: PathBuf::from(&spec.data_dir),
            recover_file: ephemeral.join("etcd-recover.snapshot"),
            tls,
            args: spec.args.clone(),
            pki_dir: PathBuf::from(&spec.pki_dir),
            candidates: spec.join_candidates.clone(),
            state,
            joined: Default::default(),
            wake: tokio::sync::Notify::new(),
            client: tokio::sync::Mutex::new(None),
        })
    }

    fn peer_url(&self) -> String {
        format!("https://{}", SocketAddr::new(self.ip, 2380))
    }

    fn client_url(&self) -> String {
        format!("https://{}", SocketAddr::new(self.ip, 2379))
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
            args: self.args.clone(),
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
    pub fn binds(&self) -> Vec<crate::sys::ctrd_container::Bind> {
        vec![
            crate::sys::ctrd_container::Bind {
                source: self.data_dir.clone(),
                destination: self.data_dir.clone(),
                writable: true,
            },
            crate::sys::ctrd_container::Bind {
                source: self.pki_dir.clone(),
                destination: self.pki_dir.clone(),
                writable: false,
            },
        ]
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
            let requested = self.state.spec_of::<BootstrapRequestSpec>(ETCD_ID);
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
                        note(ServiceState::Preparing, format!(
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
        for (_, m) in self.state.specs_of::<MemberSpec>() {
            if m.machine_type == "worker" || !m.reachable {
                continue;
            }
            for a in m.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                let url = format!("https://{}", SocketAddr::new(a, 2379));
                if a != self.ip && !out.contains(&url) {
                    out.push(url);
                }
            }
        }
        out
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
        let out = crate::sys::blocking(move || {
            crate::sys::reaper::output(&mut cmd).map_err(|e| {
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
            || self
                .state
                .spec_of::<BootstrapRequestSpec>(ETCD_ID)
                .is_some()
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
        let mut intent = BootstrapRequestSpec::resource(
            ETCD_ID,
            BootstrapRequestSpec {
                recover,
                skip_hash_check,
            },
        );
        intent.metadata.owner = BOOTSTRAP_OWNER.into();
        self.state
            .create(intent)
            .map_err(|e| Status::already_exists(e.to_string()))?;
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
    pub async fn leave(
        &self,
        services: &crate::services::supervisor::Supervisor,
    ) -> Result<(), Status> {
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
                .is_none_or(|s| s.state != crate::services::supervisor::ServiceState::Running)
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
        let _ = self
            .state
            .destroy(&BootstrapRequestSpec::pointer(ETCD_ID), BOOTSTRAP_OWNER);
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
