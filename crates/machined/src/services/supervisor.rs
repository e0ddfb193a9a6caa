//! The service supervisor: services are real processes with dependencies, states (Waiting,
//! Preparing, Running, Stopping, Finished, Failed), timestamped events, TCP health
//! checks, restarts with exponential backoff, and their output kept in a bounded ring buffer
//! per service and appended to `<log dir>/<id>.log`.

use resources::ResourceType;
pub use types::runtime::ServiceStatusSpec;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use resources::State as ResourceState;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{broadcast, Notify};

const EVENTS_KEPT: usize = 64;
const LOG_BYTES_KEPT: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    Waiting,
    Preparing,
    Running,
    Stopping,
    Finished,
    Failed,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Waiting => "Waiting",
            ServiceState::Preparing => "Preparing",
            ServiceState::Running => "Running",
            ServiceState::Stopping => "Stopping",
            ServiceState::Finished => "Finished",
            ServiceState::Failed => "Failed",
        }
    }
}

use super::own::{machined, MACHINED};
use crate::sys::process;
pub use crate::sys::{BoxFuture, Task};

/// Says what a preparing service is doing or waiting for (an event in that state: Preparing,
/// or Waiting while something outside it, such as its image, is not there yet).
pub type Note = Arc<dyn Fn(ServiceState, String) + Send + Sync>;

/// Runs before each start of a service; resolves to extra arguments, or fails the start.
pub type Prepare = Arc<dyn Fn(Note) -> BoxFuture<Result<Vec<String>, String>> + Send + Sync>;

/// How a service's health is judged.
#[derive(Clone)]
pub enum HealthCheck {
    /// Healthy while this address accepts TCP connections.
    Tcp(SocketAddr),
    /// Healthy while this resolves to Ok; the error is the health message.
    Probe(Arc<dyn Fn() -> BoxFuture<Result<(), String>> + Send + Sync>),
}

/// Starts a service some other way than as a child process (a container): given the
/// program and its arguments.
pub type Launcher = Arc<dyn Fn(Vec<String>) -> BoxFuture<Result<Task, String>> + Send + Sync>;

/// What to run.
#[derive(Clone)]
pub struct ServiceSpec {
    pub id: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub depends_on: Vec<String>,
    pub health: Option<HealthCheck>,
    pub prepare: Option<Prepare>,
    /// Descriptors the process inherits, as 3, 4, … in this order.
    pub fds: Vec<i32>,
    /// How to start it, when not as a child process.
    pub launcher: Option<Launcher>,
}

impl std::fmt::Debug for ServiceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceSpec")
            .field("id", &self.id)
            .field("program", &self.program)
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct ServiceEvent {
    pub msg: String,
    pub state: ServiceState,
    pub ts: SystemTime,
}

#[derive(Debug, Clone, Default)]
pub struct Health {
    pub unknown: bool,
    pub healthy: bool,
    pub last_message: String,
    pub last_change: Option<SystemTime>,
}

/// New output of a service as it comes.
pub type LogFollower = broadcast::Receiver<Arc<[u8]>>;

/// A snapshot of a service for the API.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    pub id: String,
    pub state: ServiceState,
    pub events: Vec<ServiceEvent>,
    pub health: Health,
    /// The running process, if any.
    pub pid: Option<u32>,
}

struct Entry {
    spec: ServiceSpec,
    state: ServiceState,
    events: VecDeque<ServiceEvent>,
    health: Health,
    logs: VecDeque<u8>,
    follow: broadcast::Sender<Arc<[u8]>>,
    wanted: bool,
    wake: Arc<Notify>,
    pid: Option<u32>,
}

/// Runs services and answers questions about them.
#[derive(Clone)]
pub struct Supervisor {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    events: crate::events::Events,
    log_dir: Option<PathBuf>,
    resources: ResourceState,
    backoff: (Duration, Duration),
    /// `machine.env`: the environment of every service, as it was at boot.
    env: Arc<Vec<(String, String)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("service \"{0}\" not found")]
    NotFound(String),
    #[error("machined cannot be started, stopped or restarted: it is the node's own process (reboot the node instead)")]
    Machined,
}

impl Supervisor {
    pub fn new(resources: ResourceState, log_dir: Option<PathBuf>) -> Supervisor {
        machined(); // machined's start: now
        Supervisor {
            entries: Arc::default(),
            events: Default::default(),
            log_dir,
            resources,
            backoff: (Duration::from_secs(1), Duration::from_secs(30)),
            env: Arc::default(),
        }
    }

    /// Give every service these environment variables (`machine.env`).
    pub fn with_env(mut self, env: Vec<(String, String)>) -> Supervisor {
        self.env = Arc::new(env);
        self
    }

    /// `machine.env` as `NAME=value` (for services that run as containers).
    pub fn env(&self) -> Vec<String> {
        self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// Publish state changes on this event stream.
    pub fn with_events(mut self, events: crate::events::Events) -> Supervisor {
        self.events = events;
        self
    }

    /// Restart delays after a failure: from `min`, doubling, capped at `max`.
    #[cfg(test)]
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Supervisor {
        self.backoff = (min, max);
        self
    }

    /// Register and start a service (it waits for its dependencies first).
    pub fn start_service(&self, spec: ServiceSpec) {
        let wake = Arc::new(Notify::new());
        let (follow, _) = broadcast::channel(256);
        self.entries.lock().expect("services").insert(
            spec.id.clone(),
            Entry {
                spec: spec.clone(),
                state: ServiceState::Waiting,
                events: VecDeque::new(),
                health: Health {
                    unknown: true,
                    ..Default::default()
                },
                logs: VecDeque::new(),
                follow,
                wanted: true,
                wake: wake.clone(),
                pid: None,
            },
        );
        let sup = self.clone();
        tokio::spawn(async move { sup.run(spec, wake).await });
    }

    fn event(&self, id: &str, state: ServiceState, msg: impl Into<String>) {
        let msg = msg.into();
        tracing::info!(service = id, state = state.as_str(), "{msg}");
        let (running, health) = {
            let mut all = self.entries.lock().expect("services");
            let Some(e) = all.get_mut(id) else { return };
            e.state = state;
            if e.events.len() == EVENTS_KEPT {
                e.events.pop_front();
            }
            e.events.push_back(ServiceEvent {
                msg,
                state,
                ts: SystemTime::now(),
            });
            (state == ServiceState::Running, e.health.clone())
        };
        self.publish(id, running, &health);
        self.publish_event(id, state, &health);
    }

    fn publish(&self, id: &str, running: bool, health: &Health) {
        let spec = ServiceStatusSpec {
            running,
            healthy: running && health.healthy,
            unknown: health.unknown,
        };
        if let Err(e) = publish_status(&self.resources, id, spec) {
            tracing::warn!(service = id, error = %e, "cannot publish service status");
        }
    }

    fn publish_event(&self, id: &str, state: ServiceState, health: &Health) {
        use api::machine::service_state_event::Action;
        use prost::Message;
        let action = match state {
            ServiceState::Waiting => Action::Waiting,
            ServiceState::Preparing => Action::Preparing,
            ServiceState::Running => Action::Running,
            ServiceState::Stopping => Action::Stopping,
            ServiceState::Finished => Action::Finished,
            ServiceState::Failed => Action::Failed,
        };
        let message = self
            .entries
            .lock()
            .expect("services")
            .get(id)
            .and_then(|e| e.events.back().map(|x| x.msg.clone()))
            .unwrap_or_default();
        let ev = api::machine::ServiceStateEvent {
            service: id.into(),
            action: action as i32,
            message,
            health: Some(api::machine::ServiceHealth {
                unknown: health.unknown,
                healthy: health.healthy,
                last_message: health.last_message.clone(),
                last_change: None,
            }),
        };
        self.events
            .publish(crate::events::SERVICE_STATE_EVENT, ev.encode_to_vec());
    }

    fn state_of(&self, id: &str) -> Option<ServiceState> {
        self.entries
            .lock()
            .expect("services")
            .get(id)
            .map(|e| e.state)
    }

    fn spec_of(&self, id: &str) -> Option<ServiceSpec> {
        self.entries
            .lock()
            .expect("services")
            .get(id)
            .map(|e| e.spec.clone())
    }

    /// Run `spec`: started when the service is new, else restarted with the new spec.
    pub fn replace(&self, spec: ServiceSpec) {
        let wake = {
            let mut all = self.entries.lock().expect("services");
            match all.get_mut(&spec.id) {
                Some(e) => {
                    e.spec = spec.clone();
                    e.wanted = true;
                    Some(e.wake.clone())
                }
                None => None,
            }
        };
        match wake {
            Some(w) => w.notify_one(),
            None => self.start_service(spec),
        }
    }

    fn wanted(&self, id: &str) -> bool {
        self.entries
            .lock()
            .expect("services")
            .get(id)
            .is_some_and(|e| e.wanted)
    }

    async fn run(&self, spec: ServiceSpec, wake: Arc<Notify>) {
        let id = spec.id.clone();
        let mut delay = self.backoff.0;
        loop {
            // The current spec: `replace` may have changed it.
            let Some(spec) = self.spec_of(&id) else {
                return;
            };
            if !self.wanted(&id) {
                wake.notified().await;
                continue;
            }
            // Dependencies first.
            let mut announced = false;
            while let Some(dep) = spec
                .depends_on
                .iter()
                .find(|d| self.state_of(d) != Some(ServiceState::Running))
            {
                if !announced {
                    self.event(
                        &id,
                        ServiceState::Waiting,
                        format!("Waiting for service \"{dep}\" to be \"up\""),
                    );
                    announced = true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            self.event(&id, ServiceState::Preparing, "Running pre state");
            let mut args = spec.args.clone();
            if let Some(prepare) = &spec.prepare {
                let sup = self.clone();
                let note_id = id.clone();
                let note: Note = Arc::new(move |state, msg| sup.event(&note_id, state, msg));
                let prepared = tokio::select! {
                    r = prepare(note) => Some(r),
                    _ = wake.notified() => None,
                };
                match prepared {
                    // Stopped (or restarted) while preparing.
                    None => continue,
                    Some(Ok(extra)) => args.extend(extra),
                    Some(Err(e)) => {
                        self.event(
                            &id,
                            ServiceState::Failed,
                            format!(
                                "Failed to run pre stage: {e}, retrying in {}s",
                                delay.as_secs_f64()
                            ),
                        );
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(self.backoff.1);
                        continue;
                    }
                }
            }
            let launched = match &spec.launcher {
                Some(launch) => {
                    let mut argv = vec![spec.program.display().to_string()];
                    argv.extend(args);
                    launch(argv).await
                }
                None => process::spawn(&spec.program, &args, &self.env, &spec.fds),
            };
            let mut task = match launched {
                Ok(t) => t,
                Err(e) => {
                    self.event(&id, ServiceState::Failed, format!("Failed to start: {e}"));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.backoff.1);
                    continue;
                }
            };
            let pid = task.pid;
            if let Some(e) = self.entries.lock().expect("services").get_mut(&id) {
                e.pid = Some(pid);
            }
            let pumps: Vec<_> = std::mem::take(&mut task.outputs)
                .into_iter()
                .map(|o| self.pump(&id, o))
                .collect();
            let mut exited = task.exited;
            self.event(
                &id,
                ServiceState::Running,
                format!("Started task {id} (PID {pid})"),
            );
            let health = spec.health.clone().map(|h| self.check_health(&id, h));
            let started = tokio::time::Instant::now();
            let outcome = tokio::select! {
                status = &mut exited => Some(status),
                _ = wake.notified() => None,
            };
            if let Some(h) = health {
                h.abort();
            }
            match outcome {
                None => {
                    // Asked to stop (or restart).
                    self.event(&id, ServiceState::Stopping, "Stopping service");
                    process::terminate(pid, exited).await;
                    process::drain(pumps, task.cleanup).await;
                    self.event(&id, ServiceState::Finished, "Service finished successfully");
                    delay = self.backoff.0;
                }
                Some(status) => {
                    process::drain(pumps, task.cleanup).await;
                    let why = match status.code() {
                        Some(c) => format!("exited with code {c}"),
                        None => "was killed by a signal".into(),
                    };
                    if started.elapsed() > self.backoff.1 {
                        delay = self.backoff.0;
                    }
                    self.event(
                        &id,
                        ServiceState::Failed,
                        format!("Task {why}, restarting in {}s", delay.as_secs_f64()),
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.backoff.1);
                }
            }
        }
    }

    fn pump(
        &self,
        id: &str,
        mut out: impl AsyncRead + Unpin + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let sup = self.clone();
        let id = id.to_string();
        let file = self.log_dir.as_ref().map(|d| d.join(format!("{id}.log")));
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut log = match &file {
                Some(p) => tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .await
                    .ok(),
                None => None,
            };
            loop {
                let n = match out.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let chunk: Arc<[u8]> = Arc::from(&buf[..n]);
                if let Some(f) = log.as_mut() {
                    use tokio::io::AsyncWriteExt;
                    let _ = f.write_all(&chunk).await;
                }
                let mut all = sup.entries.lock().expect("services");
                if let Some(e) = all.get_mut(&id) {
                    e.logs.extend(chunk.iter());
                    let excess = e.logs.len().saturating_sub(LOG_BYTES_KEPT);
                    e.logs.drain(..excess);
                    crate::sys::logship::shipper().output(&id, &chunk);
                    let _ = e.follow.send(chunk);
                }
            }
        })
    }

    fn check_health(&self, id: &str, check: HealthCheck) -> tokio::task::JoinHandle<()> {
        let sup = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            loop {
                let result = match &check {
                    HealthCheck::Tcp(addr) => {
                        match tokio::time::timeout(
                            Duration::from_secs(1),
                            tokio::net::TcpStream::connect(addr),
                        )
                        .await
                        {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err(e)) => Err(format!("dial {addr}: {e}")),
                            Err(_) => Err(format!("dial {addr}: timed out")),
                        }
                    }
                    HealthCheck::Probe(probe) => {
                        match tokio::time::timeout(Duration::from_secs(5), probe()).await {
                            Ok(r) => r,
                            Err(_) => Err("health check timed out".into()),
                        }
                    }
                };
                let ok = result.is_ok();
                let message = result.err().unwrap_or_default();
                let (changed, health) = {
                    let mut all = sup.entries.lock().expect("services");
                    let Some(e) = all.get_mut(&id) else { return };
                    let changed = e.health.unknown
                        || e.health.healthy != ok
                        || e.health.last_message != message;
                    if changed {
                        e.health = Health {
                            unknown: false,
                            healthy: ok,
                            last_message: message,
                            last_change: Some(SystemTime::now()),
                        };
                    }
                    (changed, e.health.clone())
                };
                if changed {
                    match health.healthy {
                        true => tracing::info!(service = id, "healthy"),
                        false => tracing::info!(service = id, "unhealthy: {}", health.last_message),
                    }
                    sup.publish(&id, true, &health);
                }
                tokio::time::sleep(Duration::from_millis(if ok { 2000 } else { 200 })).await;
            }
        })
    }

    pub fn list(&self) -> Vec<ServiceInfo> {
        let all = self.entries.lock().expect("services");
        let mut out: Vec<ServiceInfo> = std::iter::once(machined())
            .chain(all.values().map(|e| ServiceInfo {
                id: e.spec.id.clone(),
                state: e.state,
                events: e.events.iter().cloned().collect(),
                health: e.health.clone(),
                pid: e.pid.filter(|_| e.state == ServiceState::Running),
            }))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    fn set_wanted(&self, id: &str, wanted: bool) -> Result<Arc<Notify>, ServiceError> {
        if id == MACHINED {
            return Err(ServiceError::Machined);
        }
        let mut all = self.entries.lock().expect("services");
        let e = all
            .get_mut(id)
            .ok_or_else(|| ServiceError::NotFound(id.into()))?;
        e.wanted = wanted;
        Ok(e.wake.clone())
    }

    pub fn stop(&self, id: &str) -> Result<(), ServiceError> {
        self.set_wanted(id, false)?.notify_one();
        Ok(())
    }

    pub fn start(&self, id: &str) -> Result<(), ServiceError> {
        self.set_wanted(id, true)?.notify_one();
        Ok(())
    }

    /// Stop the running task; the service loop starts it again.
    pub fn restart(&self, id: &str) -> Result<(), ServiceError> {
        self.set_wanted(id, true)?.notify_one();
        Ok(())
    }

    /// The last `tail` lines kept (all when `None`), and a receiver of what comes next.
    pub fn logs(
        &self,
        id: &str,
        tail: Option<usize>,
    ) -> Result<(Vec<u8>, LogFollower), ServiceError> {
        let all = self.entries.lock().expect("services");
        let (bytes, follow) = match all.get(id) {
            Some(e) => (e.logs.iter().copied().collect(), e.follow.subscribe()),
            None if id == MACHINED => crate::sys::selflog::read(),
            None => return Err(ServiceError::NotFound(id.into())),
        };
        let start = match tail {
            None => 0,
            Some(n) => {
                let mut seen = 0;
                let mut cut = 0;
                for (i, b) in bytes.iter().enumerate().rev() {
                    if *b == b'\n' && i + 1 < bytes.len() {
                        seen += 1;
                        if seen == n {
                            cut = i + 1;
                            break;
                        }
                    }
                }
                if seen < n {
                    0
                } else {
                    cut
                }
            }
        };
        Ok((bytes[start..].to_vec(), follow))
    }

    /// Stop every service, dependents before their dependencies.
    pub async fn shutdown(&self) {
        let order: Vec<String> = {
            let all = self.entries.lock().expect("services");
            let mut ids: Vec<(usize, String)> = all
                .values()
                .map(|e| (depth(&all, &e.spec.id), e.spec.id.clone()))
                .collect();
            ids.sort_by(|a, b| b.cmp(a));
            ids.into_iter().map(|(_, id)| id).collect()
        };
        for id in order {
            let _ = self.stop(&id);
            for _ in 0..200 {
                if matches!(
                    self.state_of(&id),
                    Some(ServiceState::Finished | ServiceState::Failed | ServiceState::Waiting)
                ) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn depth(all: &HashMap<String, Entry>, id: &str) -> usize {
    all.get(id)
        .map(|e| {
            1 + e
                .spec
                .depends_on
                .iter()
                .map(|d| depth(all, d))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Write service `id`'s status (the supervisor is its declared owner): created when missing,
/// updated when it differs, left alone when it is the same.
fn publish_status(
    state: &ResourceState,
    id: &str,
    spec: ServiceStatusSpec,
) -> resources::Result<()> {
    match state.get(&ServiceStatusSpec::pointer(id)) {
        Ok(cur) if cur.spec::<ServiceStatusSpec>() == Some(&spec) => Ok(()),
        Ok(cur) => state.update(cur.with_spec(spec)).map(drop),
        Err(_) => {
            let mut r = ServiceStatusSpec::resource(id, spec);
            r.metadata.owner = "machined".into();
            state.create(r).map(drop)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, script: &str, deps: &[&str]) -> ServiceSpec {
        ServiceSpec {
            id: id.into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            depends_on: deps.iter().map(|s| s.to_string()).collect(),
            health: None,
            prepare: None,
            fds: Vec::new(),
            launcher: None,
        }
    }

    async fn wait(sup: &Supervisor, id: &str, f: impl Fn(&ServiceInfo) -> bool) -> ServiceInfo {
        for _ in 0..400 {
            if let Some(i) = sup.list().into_iter().find(|i| i.id == id) {
                if f(&i) {
                    return i;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {id}: {:?}", sup.list());
    }

    #[tokio::test]
    async fn crashing_service_restarts_with_backoff_and_says_why() {
        let sup = Supervisor::new(ResourceState::new(), None)
            .with_backoff(Duration::from_millis(20), Duration::from_millis(200));
        sup.start_service(spec("crasher", "echo boom; exit 3", &[]));
        let info = wait(&sup, "crasher", |i| {
            i.events
                .iter()
                .filter(|e| e.state == ServiceState::Failed)
                .count()
                >= 3
        })
        .await;
        let failures: Vec<&ServiceEvent> = info
            .events
            .iter()
            .filter(|e| e.state == ServiceState::Failed)
            .collect();
        assert!(
            failures[0]
                .msg
                .starts_with("Task exited with code 3, restarting in 0.02s"),
            "{failures:?}"
        );
        assert!(
            failures[1].msg.contains("restarting in 0.04s"),
            "{failures:?}"
        );
        let (logs, _) = sup.logs("crasher", None).unwrap();
        assert!(String::from_utf8_lossy(&logs).starts_with("boom\nboom\n"));
        assert!(info.events.windows(2).all(|w| w[0].ts <= w[1].ts));
    }

    #[tokio::test]
    async fn dependencies_order_start_and_stop() {
        let res = ResourceState::new();
        let sup = Supervisor::new(res.clone(), None);
        sup.start_service(spec("app", "echo app; exec sleep 30", &["db"]));
        let waiting = wait(&sup, "app", |i| {
            i.state == ServiceState::Waiting && !i.events.is_empty()
        })
        .await;
        assert!(waiting.events[0].msg.contains("Waiting for service \"db\""));
        sup.start_service(spec("db", "exec sleep 30", &[]));
        wait(&sup, "app", |i| i.state == ServiceState::Running).await;
        let status = res.get(&ServiceStatusSpec::pointer("app")).unwrap();
        assert!(status.spec::<ServiceStatusSpec>().unwrap().running);
        sup.stop("app").unwrap();
        wait(&sup, "app", |i| i.state == ServiceState::Finished).await;
        sup.start("app").unwrap();
        wait(&sup, "app", |i| i.state == ServiceState::Running).await;
        let (logs, _) = sup.logs("app", Some(1)).unwrap();
        assert_eq!(logs, b"app\n");
        sup.shutdown().await;
        assert!(sup
            .list()
            .iter()
            .all(|i| i.state == ServiceState::Finished || i.id == MACHINED));
    }

    #[tokio::test]
    async fn health_checks_follow_the_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sup = Supervisor::new(ResourceState::new(), None);
        let mut s = spec("web", "exec sleep 30", &[]);
        s.health = Some(HealthCheck::Tcp(addr));
        sup.start_service(s);
        wait(&sup, "web", |i| i.health.healthy && !i.health.unknown).await;
        drop(listener);
        wait(&sup, "web", |i| !i.health.healthy).await;
        sup.shutdown().await;
    }
}
