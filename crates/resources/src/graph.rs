//! The controller/resource dependency graph in Graphviz DOT (`talosctl inspect dependencies`).

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::controller::{ControllerInfo, InputKind, OutputKind};
use crate::query::LabelQuery;
use crate::state::State;

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Controllers (boxes) and resource types (ellipses), with edges from inputs (dashed weak,
/// solid strong, dotted destroy-ready) and to outputs (bold exclusive, plain shared). With a
/// state, each resource instance is a node too, linked from its owner.
pub fn dependency_dot(controllers: &[ControllerInfo], resources: Option<&State>) -> String {
    let mut types: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut out = String::from("digraph {\n\trankdir=LR;\n");
    for (i, c) in controllers.iter().enumerate() {
        let _ = writeln!(out, "\tc{i}[label={}, shape=box];", quote(&c.name));
        for t in c
            .inputs
            .iter()
            .map(|x| (x.namespace.clone(), x.ty.clone()))
            .chain(
                c.outputs
                    .iter()
                    .map(|x| (x.namespace.clone(), x.ty.clone())),
            )
        {
            let n = types.len();
            types.entry(t).or_insert_with(|| format!("t{n}"));
        }
    }
    for ((_, ty), id) in &types {
        let _ = writeln!(out, "\t{id}[label={}, shape=ellipse];", quote(ty));
    }
    for (i, c) in controllers.iter().enumerate() {
        for input in &c.inputs {
            let t = &types[&(input.namespace.clone(), input.ty.clone())];
            let style = match input.kind {
                InputKind::Weak => "dashed",
                InputKind::Strong => "solid",
                InputKind::DestroyReady => "dotted",
            };
            let label = input
                .id
                .as_deref()
                .map(|id| format!(", label={}", quote(id)))
                .unwrap_or_default();
            let _ = writeln!(out, "\t{t} -> c{i}[style={style}{label}];");
        }
        for output in &c.outputs {
            let t = &types[&(output.namespace.clone(), output.ty.clone())];
            let style = match output.kind {
                OutputKind::Exclusive => "bold",
                OutputKind::Shared => "solid",
            };
            let _ = writeln!(out, "\tc{i} -> {t}[style={style}];");
        }
    }
    if let Some(state) = resources {
        let mut n = 0;
        for ((ns, ty), tid) in &types {
            for r in state.list(ns, ty, &LabelQuery::all()) {
                let _ = writeln!(
                    out,
                    "\tr{n}[label={}, shape=note];\n\t{tid} -> r{n}[style=dotted];",
                    quote(&format!("{}/{}", ty, r.metadata.id))
                );
                if let Some(i) = controllers
                    .iter()
                    .position(|c| *c.name == *r.metadata.owner)
                {
                    let _ = writeln!(out, "\tc{i} -> r{n};");
                }
                n += 1;
            }
        }
    }
    out.push_str("}\n");
    out
}
