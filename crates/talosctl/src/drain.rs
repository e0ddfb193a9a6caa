//! `--drain` of `reboot` and `upgrade`: the node's Kubernetes Node cordoned and its pods
//! evicted before the request (`k8s::client::drain`). A cluster whose API does not answer, or
//! that has no Node with the node's address, is said so and not waited for: Talos itself must
//! stay upgradable when Kubernetes is down.

use std::time::Duration;

use machinery::{Error, Result};

use crate::client::Target;

/// A client of the cluster `t` belongs to: through `t`'s kubeconfig, else (a worker issues
/// none) through a control plane's, reached over the same connection.
async fn kube_for(t: &Target) -> std::result::Result<(kube::Client, String), String> {
    let first = match crate::health_k8s::kube_client(t, "").await {
        Ok(k) => return Ok(k),
        Err(e) => e,
    };
    let members = crate::health::members(t).await.map_err(|e| e.to_string())?;
    for (_, cp) in members.into_iter().filter(|(ty, _)| ty != "worker") {
        let through = Target {
            node: cp.clone(),
            channel: t.channel.clone(),
            route: Some(cp),
        };
        if let Ok(k) = crate::health_k8s::kube_client(&through, "").await {
            return Ok(k);
        }
    }
    Err(first)
}

/// How long finding the cluster's API may take.
const REACH: Duration = Duration::from_secs(15);

/// A drained node: the client and Node name, to lift the cordon if the reboot does not happen.
pub struct Drained(Option<(kube::Client, String)>);

impl Drained {
    /// Lift the cordon (the request that was to reboot the node failed).
    pub async fn undo(self) {
        if let Some((client, name)) = self.0 {
            if let Err(e) = k8s::client::drain::uncordon(&client, &name).await {
                eprintln!("{e}");
            }
        }
    }
}

/// Drain the node of `t` within `timeout`.
pub async fn drain(t: &Target, timeout: Duration) -> Result<Drained> {
    let skip = |why: String| {
        eprintln!("{}: not draining: {why}", t.node);
        Ok(Drained(None))
    };
    let reach = async {
        let (client, server) = kube_for(t).await?;
        match client.apiserver_version().await {
            Ok(_) => Ok(client),
            Err(e) => Err(format!(
                "the Kubernetes API at {server} does not answer: {e}"
            )),
        }
    };
    let client = match tokio::time::timeout(REACH, reach).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => return skip(e),
        Err(_) => return skip(format!("no Kubernetes API answered within {REACH:?}")),
    };
    let name = match k8s::client::drain::node_by_address(&client, &t.node).await {
        Ok(Some(name)) => name,
        Ok(None) => return skip("no Kubernetes Node has this address".into()),
        Err(e) => return skip(e),
    };
    let node = t.node.clone();
    k8s::client::drain::drain(&client, &name, timeout, &mut |l| eprintln!("{node}: {l}"))
        .await
        .map_err(Error::msg)?;
    Ok(Drained(Some((client, name))))
}
