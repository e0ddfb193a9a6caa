//! `talosctl inspect dependencies`: the node's controller/resource graph in Graphviz DOT.

use std::collections::BTreeMap;

use api::cosi::ListRequest;
use api::inspect::DependencyEdgeType;
use clap::{Args, Subcommand};
use machinery::{Error, Result};
use resources::{ControllerInfo, Input, InputKind, Output, OutputKind, Resource, State};

use crate::client;
use crate::config_cmd::ConnArgs;

#[derive(Args)]
pub struct InspectArgs {
    #[command(subcommand)]
    command: InspectCommand,
}

#[derive(Subcommand)]
enum InspectCommand {
    /// Print the controller dependency graph (Graphviz DOT).
    Dependencies(DepArgs),
}

#[derive(Args)]
struct DepArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Include every resource instance in the graph.
    #[arg(long)]
    with_resources: bool,
}

pub async fn run(a: InspectArgs) -> Result<()> {
    let InspectCommand::Dependencies(a) = a.command;
    let targets = client::connect(&a.conn).await?;
    let t = targets
        .first()
        .ok_or_else(|| Error::msg("no node to inspect"))?;
    let resp = client::inspect(t)
        .controller_runtime_dependencies(())
        .await
        .map_err(|s| client::call_error(&t.node, s))?
        .into_inner();
    let mut controllers: BTreeMap<String, ControllerInfo> = BTreeMap::new();
    for e in resp.messages.into_iter().flat_map(|m| m.edges) {
        let c = controllers
            .entry(e.controller_name.clone())
            .or_insert_with(|| ControllerInfo {
                name: e.controller_name.clone(),
                inputs: Vec::new(),
                outputs: Vec::new(),
            });
        let input = |kind| {
            let mut i = Input::new(&e.resource_namespace, &e.resource_type, kind);
            if !e.resource_id.is_empty() {
                i = i.id(&e.resource_id);
            }
            i
        };
        match DependencyEdgeType::try_from(e.edge_type).unwrap_or(DependencyEdgeType::InputWeak) {
            DependencyEdgeType::InputWeak => c.inputs.push(input(InputKind::Weak)),
            DependencyEdgeType::InputStrong => c.inputs.push(input(InputKind::Strong)),
            DependencyEdgeType::InputDestroyReady => c.inputs.push(input(InputKind::DestroyReady)),
            DependencyEdgeType::OutputExclusive => c.outputs.push(Output {
                namespace: e.resource_namespace.clone(),
                ty: e.resource_type.clone(),
                kind: OutputKind::Exclusive,
            }),
            DependencyEdgeType::OutputShared => c.outputs.push(Output {
                namespace: e.resource_namespace.clone(),
                ty: e.resource_type.clone(),
                kind: OutputKind::Shared,
            }),
        }
    }
    let infos: Vec<ControllerInfo> = controllers.into_values().collect();
    let state = if a.with_resources {
        let state = State::new();
        let mut types: Vec<(String, String)> = infos
            .iter()
            .flat_map(|c| {
                c.inputs
                    .iter()
                    .map(|i| (i.namespace.clone(), i.ty.clone()))
                    .chain(
                        c.outputs
                            .iter()
                            .map(|o| (o.namespace.clone(), o.ty.clone())),
                    )
            })
            .collect();
        types.sort();
        types.dedup();
        let mut cosi = client::state(t);
        for (ns, ty) in types {
            let Ok(resp) = cosi
                .list(ListRequest {
                    namespace: ns.clone(),
                    r#type: ty.clone(),
                    options: None,
                })
                .await
            else {
                continue; // sensitive types are left out for non-admins
            };
            let mut stream = resp.into_inner();
            while let Ok(Some(item)) = stream.message().await {
                let Some(m) = item.resource.and_then(|r| r.metadata) else {
                    continue;
                };
                let mut r = Resource::new(&ns, &ty, &m.id, ());
                r.metadata.owner = m.owner.as_str().into();
                let _ = state.create(r);
            }
        }
        Some(state)
    } else {
        None
    };
    print!("{}", resources::dependency_dot(&infos, state.as_ref()));
    Ok(())
}
