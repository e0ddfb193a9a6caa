//! `talosctl get <type> [<id>]`: resources from each node as a table, YAML or JSON, optionally
//! watching for changes.

use api::cosi::{
    EventType, GetRequest, ListRequest, Resource as PbResource, WatchOptions, WatchRequest,
};
use clap::Args;
use machinery::{Error, Result};
use serde_json::{json, Value};

use crate::client::{self, Target};
use crate::config_cmd::{table, ConnArgs};

#[derive(Args)]
pub struct GetArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    insecure: client::InsecureArgs,
    /// Resource type (name, alias or display type).
    resource_type: String,
    /// Resource id.
    id: Option<String>,
    /// Namespace (the type's default when empty).
    #[arg(long, default_value = "")]
    namespace: String,
    /// Output format.
    #[arg(short, long, default_value = "table", value_parser = ["table", "yaml", "json", "jsonpath"])]
    output: String,
    /// Watch for changes.
    #[arg(short, long)]
    watch: bool,
}

/// What talosctl needs of a resource definition.
struct Def {
    ty: String,
    display: String,
    namespace: String,
    columns: Vec<(String, String)>,
}

/// The first document of a resource's YAML spec, as a value (null when there is none).
pub fn yaml_value(text: &str) -> Value {
    machinery::yaml::parse_stream(text)
        .ok()
        .and_then(|d| d.into_iter().next())
        .map(|d| d.value)
        .unwrap_or(Value::Null)
}

/// The type `name` stands for. An alias several types share goes to the one that declares it
/// itself (`ns`: Namespaces), else, with an `id`, to the one type that has a resource of that
/// id (`sp kube-apiserver`: StaticPods); the choice is said on stderr.
async fn resolve(t: &Target, name: &str, id: Option<&str>, namespace: &str) -> Result<Def> {
    let mut state = client::state(t);
    let mut stream = state
        .list(ListRequest {
            namespace: "meta".into(),
            r#type: "ResourceDefinitions.meta.cosi.dev".into(),
            options: None,
        })
        .await
        .map_err(|s| Error::msg(s.message().to_string()))?
        .into_inner();
    let wanted = name.to_lowercase();
    let mut matches = Vec::new();
    while let Some(item) = stream
        .message()
        .await
        .map_err(|s| Error::msg(s.message().to_string()))?
    {
        let Some(r) = item.resource else { continue };
        let spec = yaml_value(&r.spec.map(|s| s.yaml_spec).unwrap_or_default());
        let ty = spec["type"].as_str().unwrap_or_default().to_string();
        let aliases: Vec<String> = spec["allAliases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_lowercase))
            .collect();
        if ty.to_lowercase() == wanted || aliases.contains(&wanted) {
            let automatic = resources::fill_aliases(&ty, &[]).1;
            let declared = spec["aliases"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str())
                .any(|a| a.to_lowercase() == wanted && !automatic.contains(&wanted));
            matches.push((
                declared,
                Def {
                    display: spec["displayType"].as_str().unwrap_or(&ty).to_string(),
                    namespace: spec["defaultNamespace"].as_str().unwrap_or_default().into(),
                    columns: spec["printColumns"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| {
                            (
                                c["name"].as_str().unwrap_or_default().to_string(),
                                c["jsonPath"].as_str().unwrap_or_default().to_string(),
                            )
                        })
                        .collect(),
                    ty,
                },
            ));
        }
    }
    if matches.len() > 1 {
        let candidates: Vec<String> = matches.iter().map(|(_, d)| d.ty.clone()).collect();
        let declared: Vec<usize> = (0..matches.len()).filter(|i| matches[*i].0).collect();
        let mut chosen = match declared.as_slice() {
            [one] => Some((*one, "it declares the alias")),
            _ => None,
        };
        if let (None, Some(id)) = (chosen, id) {
            let mut having = Vec::new();
            for (i, (_, d)) in matches.iter().enumerate() {
                let ns = if namespace.is_empty() {
                    &d.namespace
                } else {
                    namespace
                };
                let found = client::state(t)
                    .get(GetRequest {
                        namespace: ns.to_string(),
                        r#type: d.ty.clone(),
                        id: id.to_string(),
                        options: None,
                    })
                    .await
                    .is_ok_and(|r| r.into_inner().resource.is_some());
                if found {
                    having.push(i);
                }
            }
            if let [one] = having.as_slice() {
                chosen = Some((*one, "it has a resource with that id"));
            }
        }
        if let Some((i, why)) = chosen {
            let def = matches.swap_remove(i).1;
            eprintln!(
                "resource type \"{name}\" could be any of {candidates:?}: using {} ({why})",
                def.ty
            );
            return Ok(def);
        }
    }
    match matches.len() {
        1 => Ok(matches.remove(0).1),
        0 => Err(Error::msg(format!("resource \"{name}\" is not registered"))),
        _ => Err(Error::msg(format!(
            "resource type \"{name}\" is ambiguous: {:?}",
            matches
                .iter()
                .map(|(_, d)| d.ty.clone())
                .collect::<Vec<_>>()
        ))),
    }
}

/// The dot-separated segments of a path, dots inside brackets kept.
fn segments(path: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in path.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            '.' if depth == 0 => {
                out.push(&path[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&path[start..]);
    out.retain(|s| !s.is_empty());
    out
}

/// A small JSONPath: `{@}`, `{.a.b}`, `{.list[:]}`, `{.list[N]}` and
/// `{.list[?(@.key=="value")]}`.
pub fn jsonpath(spec: &Value, path: &str) -> String {
    let inner = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut cur = vec![spec.clone()];
    if inner != "@" {
        for seg in segments(inner) {
            let (key, index) = match seg.split_once('[') {
                Some((k, rest)) => (k, Some(rest.trim_end_matches(']'))),
                None => (seg, None),
            };
            let mut next = Vec::new();
            for v in cur {
                let v = if key.is_empty() {
                    v
                } else {
                    v.get(key).cloned().unwrap_or(Value::Null)
                };
                match (index, v) {
                    (None, v) => next.push(v),
                    (Some(":" | "*"), Value::Array(items)) => next.extend(items),
                    (Some(f), Value::Array(items)) if f.starts_with("?(@.") => {
                        let cond = f.trim_start_matches("?(@.").trim_end_matches(')');
                        if let Some((key, want)) = cond.split_once("==") {
                            let want = want.trim().trim_matches('"');
                            next.extend(items.into_iter().filter(|i| {
                                i.get(key.trim()).and_then(Value::as_str) == Some(want)
                            }));
                        }
                    }
                    (Some(i), Value::Array(items)) => {
                        if let Some(x) = i.parse::<usize>().ok().and_then(|i| items.get(i)) {
                            next.push(x.clone());
                        }
                    }
                    _ => {}
                }
            }
            cur = next;
        }
    }
    cur.iter()
        .filter(|v| !v.is_null())
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn metadata_value(r: &PbResource) -> Value {
    let m = r.metadata.clone().unwrap_or_default();
    let ts = |t: Option<prost_types::Timestamp>| {
        t.as_ref().map(crate::util::rfc3339).unwrap_or_default()
    };
    let mut v = json!({
        "namespace": m.namespace,
        "type": m.r#type,
        "id": m.id,
        "version": m.version.parse::<u64>().map(Value::from).unwrap_or(Value::from(m.version.clone())),
        "owner": m.owner,
        "phase": m.phase,
        "created": ts(m.created),
        "updated": ts(m.updated),
    });
    if !m.labels.is_empty() {
        v["labels"] = json!(m
            .labels
            .iter()
            .collect::<std::collections::BTreeMap<_, _>>());
    }
    if !m.finalizers.is_empty() {
        v["finalizers"] = json!(m.finalizers);
    }
    v
}

struct Printer {
    output: String,
    def: Def,
    printed: usize,
    watch: bool,
}

impl Printer {
    fn header(&self) -> Vec<String> {
        let mut h = Vec::new();
        if self.watch {
            h.push("*".to_string());
        }
        h.extend(["NODE", "NAMESPACE", "TYPE", "ID", "VERSION"].map(String::from));
        h.extend(self.def.columns.iter().map(|(n, _)| n.to_uppercase()));
        h
    }

    fn row(&self, node: &str, r: &PbResource, marker: &str) -> Vec<String> {
        let m = r.metadata.clone().unwrap_or_default();
        let spec = yaml_value(&r.spec.clone().map(|s| s.yaml_spec).unwrap_or_default());
        let mut row = Vec::new();
        if self.watch {
            row.push(marker.to_string());
        }
        row.extend([
            node.to_string(),
            m.namespace,
            self.def.display.clone(),
            m.id,
            m.version,
        ]);
        row.extend(self.def.columns.iter().map(|(_, p)| jsonpath(&spec, p)));
        row
    }

    fn print(&mut self, node: &str, r: &PbResource, marker: &str, rows: &mut Vec<Vec<String>>) {
        let spec = yaml_value(&r.spec.clone().map(|s| s.yaml_spec).unwrap_or_default());
        match self.output.as_str() {
            "table" => rows.push(self.row(node, r, marker)),
            "json" => {
                let v = json!({"node": node, "metadata": metadata_value(r), "spec": spec});
                println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            }
            _ => {
                if self.printed > 0 {
                    println!("---");
                }
                let v = json!({"node": node, "metadata": metadata_value(r), "spec": spec});
                print!("{}", machinery::yaml::to_string(&v));
            }
        }
        self.printed += 1;
    }
}

pub async fn run(a: GetArgs) -> Result<()> {
    let targets = client::connect_as(&a.conn, &a.insecure).await?;
    let def = resolve(&targets[0], &a.resource_type, a.id.as_deref(), &a.namespace).await?;
    let namespace = if a.namespace.is_empty() {
        def.namespace.clone()
    } else {
        a.namespace.clone()
    };
    let mut printer = Printer {
        output: a.output.clone(),
        def,
        printed: 0,
        watch: a.watch,
    };
    if a.watch {
        return watch(&targets, &namespace, &a, &mut printer).await;
    }
    let mut rows = vec![printer.header()];
    let mut errors = Vec::new();
    for t in &targets {
        if let Err(e) = fetch(t, &namespace, &a, &mut printer, &mut rows).await {
            errors.push(e.to_string());
        }
    }
    if printer.output == "table" {
        print!("{}", table(&rows));
    }
    client::per_node(errors)
}

async fn fetch(
    t: &Target,
    namespace: &str,
    a: &GetArgs,
    printer: &mut Printer,
    rows: &mut Vec<Vec<String>>,
) -> Result<()> {
    let mut state = client::state(t);
    let ty = printer.def.ty.clone();
    match &a.id {
        Some(id) => {
            let r = state
                .get(GetRequest {
                    namespace: namespace.into(),
                    r#type: ty,
                    id: id.clone(),
                    options: None,
                })
                .await
                .map_err(|s| client::call_error(&t.node, s))?
                .into_inner();
            if let Some(res) = r.resource {
                printer.print(&t.node, &res, "", rows);
            }
        }
        None => {
            let mut stream = state
                .list(ListRequest {
                    namespace: namespace.into(),
                    r#type: ty,
                    options: None,
                })
                .await
                .map_err(|s| client::call_error(&t.node, s))?
                .into_inner();
            while let Some(item) = stream
                .message()
                .await
                .map_err(|s| client::call_error(&t.node, s))?
            {
                if let Some(res) = item.resource {
                    printer.print(&t.node, &res, "", rows);
                }
            }
        }
    }
    Ok(())
}

async fn watch(
    targets: &[Target],
    namespace: &str,
    a: &GetArgs,
    printer: &mut Printer,
) -> Result<()> {
    // One node at a time keeps the output readable; several nodes are watched in turn.
    let t = &targets[0];
    let mut state = client::state(t);
    let mut stream = state
        .watch(WatchRequest {
            namespace: namespace.into(),
            r#type: printer.def.ty.clone(),
            id: a.id.clone(),
            options: Some(WatchOptions {
                bootstrap_contents: a.id.is_none(),
                ..Default::default()
            }),
            api_version: 1,
        })
        .await
        .map_err(|s| client::call_error(&t.node, s))?
        .into_inner();
    if printer.output == "table" {
        print!("{}", table(&[printer.header()]));
    }
    while let Some(resp) = stream
        .message()
        .await
        .map_err(|s| client::call_error(&t.node, s))?
    {
        for ev in resp.event {
            let kind = EventType::try_from(ev.event_type).unwrap_or(EventType::Noop);
            let marker = match kind {
                EventType::Created => "+",
                EventType::Destroyed => "-",
                EventType::Updated => " ",
                EventType::Errored => {
                    return Err(Error::msg(format!(
                        "{}: watch failed: {}",
                        t.node,
                        ev.error.unwrap_or_default()
                    )))
                }
                _ => continue,
            };
            if let Some(res) = ev.resource {
                let mut rows = Vec::new();
                printer.print(&t.node, &res, marker, &mut rows);
                if !rows.is_empty() {
                    let mut with_header = vec![printer.header()];
                    with_header.extend(rows);
                    // Align like the header: print only the data line.
                    let text = table(&with_header);
                    print!(
                        "{}",
                        text.lines()
                            .skip(1)
                            .map(|l| format!("{l}\n"))
                            .collect::<String>()
                    );
                }
                use std::io::Write;
                std::io::stdout().flush().ok();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpaths() {
        let v = json!({"address": "10.0.0.1/24", "aliases": ["a", "b"], "nested": {"x": 1}});
        assert_eq!(jsonpath(&v, "{.address}"), "10.0.0.1/24");
        assert_eq!(jsonpath(&v, "{.aliases[:]}"), "a b");
        assert_eq!(jsonpath(&v, "{.aliases[1]}"), "b");
        assert_eq!(jsonpath(&v, "{.nested.x}"), "1");
        assert_eq!(jsonpath(&v, "{.missing}"), "");
        assert_eq!(jsonpath(&json!("worker"), "{@}"), "worker");
        let status = json!({"conditions": [
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": "False"},
        ]});
        assert_eq!(
            jsonpath(&status, "{.conditions[?(@.type==\"Ready\")].status}"),
            "False"
        );
    }
}
