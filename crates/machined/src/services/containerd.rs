//! The two containerd services: the system one (service containers such as etcd) and the
//! CRI one (Kubernetes' containers), whose configuration cri.ConfigController writes.

use std::sync::Arc;

use crate::services::supervisor::{HealthCheck, ServiceSpec, ServiceState};
use std::path::Path;
use std::time::Duration;

use crate::sys::cri::{
    daemon_config, which, write, CRI_CONFIG, CRI_SOCKET, MERGED, SYSTEM_CONFIG, SYSTEM_SOCKET,
};

fn socket_probe(socket: &'static str) -> HealthCheck {
    HealthCheck::Probe(Arc::new(move || {
        Box::pin(async move {
            tokio::net::UnixStream::connect(socket)
                .await
                .map(|_| ())
                .map_err(|e| format!("{socket}: {e}"))
        })
    }))
}

/// The two containerd services. The system one's configuration is written here; the CRI one
/// waits for its configuration from [`CriConfigController`].
pub fn services() -> Result<[ServiceSpec; 2], String> {
    let program = which("containerd").ok_or("containerd is not installed (Debian: containerd)")?;
    write(
        SYSTEM_CONFIG,
        &daemon_config(
            "/system/var/lib/containerd",
            "/system/run/containerd",
            SYSTEM_SOCKET,
            "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
        ),
    )?;
    write(
        CRI_CONFIG,
        &daemon_config(
            "/var/lib/containerd",
            "/run/containerd",
            CRI_SOCKET,
            &format!("imports = [\"{MERGED}\"]\n"),
        ),
    )?;
    let spec = |id: &str, config: &str, socket: &'static str| ServiceSpec {
        id: id.into(),
        program: program.clone(),
        args: vec!["--config".into(), config.into()],
        depends_on: Vec::new(),
        health: Some(socket_probe(socket)),
        prepare: None,
        fds: Vec::new(),
        launcher: None,
    };
    let mut cri = spec("cri", CRI_CONFIG, CRI_SOCKET);
    cri.prepare = Some(Arc::new(|note| {
        Box::pin(async move {
            let mut said = false;
            while !Path::new(MERGED).is_file() {
                if !said {
                    note(
                        ServiceState::Preparing,
                        "waiting for the CRI configuration".into(),
                    );
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Vec::new())
        })
    }));
    Ok([spec("containerd", SYSTEM_CONFIG, SYSTEM_SOCKET), cri])
}
