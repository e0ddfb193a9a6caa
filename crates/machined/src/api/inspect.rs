//! InspectService: the controller runtime's dependency edges.

use std::sync::Arc;

use api::inspect::inspect_service_server::InspectService;
use api::inspect::{
    ControllerDependencyEdge, ControllerRuntimeDependenciesResponse, ControllerRuntimeDependency,
    DependencyEdgeType,
};
use resources::{InputKind, OutputKind};
use tonic::{Request, Response, Status};

use crate::node::Node;

pub struct Inspect {
    pub node: Arc<Node>,
}

#[tonic::async_trait]
impl InspectService for Inspect {
    async fn controller_runtime_dependencies(
        &self,
        _req: Request<()>,
    ) -> Result<Response<ControllerRuntimeDependenciesResponse>, Status> {
        let mut edges = Vec::new();
        for c in &self.node.controllers {
            for i in &c.inputs {
                let kind = match i.kind {
                    InputKind::Weak => DependencyEdgeType::InputWeak,
                    InputKind::Strong => DependencyEdgeType::InputStrong,
                    InputKind::DestroyReady => DependencyEdgeType::InputDestroyReady,
                };
                edges.push(ControllerDependencyEdge {
                    controller_name: c.name.clone(),
                    edge_type: kind as i32,
                    resource_namespace: i.namespace.clone(),
                    resource_type: i.ty.clone(),
                    resource_id: i.id.clone().unwrap_or_default(),
                });
            }
            for o in &c.outputs {
                let kind = match o.kind {
                    OutputKind::Exclusive => DependencyEdgeType::OutputExclusive,
                    OutputKind::Shared => DependencyEdgeType::OutputShared,
                };
                edges.push(ControllerDependencyEdge {
                    controller_name: c.name.clone(),
                    edge_type: kind as i32,
                    resource_namespace: o.namespace.clone(),
                    resource_type: o.ty.clone(),
                    resource_id: String::new(),
                });
            }
        }
        Ok(Response::new(ControllerRuntimeDependenciesResponse {
            messages: vec![ControllerRuntimeDependency {
                metadata: None,
                edges,
            }],
        }))
    }
}
