//! machined's side of its unix socket: every service, for apid to forward to.

use std::sync::Arc;

use api::machine::machine_service_server::MachineServiceServer;
use tonic::transport::Server;

use super::{apply, auth, images, inspect, state, storage, time, Machine};
use crate::node::Node;

/// Serve the node's services to apid on a unix socket until `shutdown` resolves. apid has
/// checked each call already; the caller's roles come along in `talos-role`.
pub async fn serve_local(
    node: Arc<Node>,
    listener: tokio::net::UnixListener,
    maintenance: bool,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), String> {
    let incoming = futures::stream::unfold(listener, |l| async move {
        let conn = l.accept().await.map(|(s, _)| s);
        Some((conn, l))
    });
    // Calls under way get a moment to finish once the node stops; open streams (apid's watch
    // of its certificate, a client's `get --watch`) are cut then rather than waited for.
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = stopping.send(());
    };
    let grace = async move {
        let _ = stopped.await;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    };
    let server = Server::builder()
        .layer(auth::LocalLayer { maintenance })
        .add_service(MachineServiceServer::new(Machine {
            node: node.clone(),
            applier: apply::Applier::new(node.clone(), maintenance),
        }))
        .add_service(api::machine::image_service_server::ImageServiceServer::new(
            images::Images { node: node.clone() },
        ))
        .add_service(
            api::inspect::inspect_service_server::InspectServiceServer::new(inspect::Inspect {
                node: node.clone(),
            }),
        )
        .add_service(
            api::machine::storage_service_server::StorageServiceServer::new(storage::Storage),
        )
        .add_service(api::time::time_service_server::TimeServiceServer::new(
            time::TimeApi { node: node.clone() },
        ))
        .add_service(api::cosi::state_server::StateServer::new(
            state::StateService { node },
        ))
        .serve_with_incoming_shutdown(incoming, shutdown);
    tokio::select! {
        served = server => served.map_err(|e| e.to_string()),
        _ = grace => Ok(()),
    }
}
