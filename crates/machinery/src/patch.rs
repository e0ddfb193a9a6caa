//! Config patches: strategic merge patches (partial config documents, with `$patch: delete`)
//! and RFC 6902 JSON patches, loaded inline or from `@file`, applied in order.

use std::path::Path;

use serde_json::Value;

use crate::config::{
    self, canonical, is_delete_directive, merge, strip_directives, Config, Document, MissingPath,
    RawDocument,
};
use crate::error::{Error, Pos, Problem, Result};

/// One loaded patch.
#[derive(Debug, Clone)]
pub enum Patch {
    /// Partial documents merged into the matching documents.
    Strategic(Vec<RawDocument>),
    /// RFC 6902 operations on the single document of a config.
    Json(JsonPatch),
}

/// RFC 6902 operations, each remembering where it was written.
#[derive(Debug, Clone)]
pub struct JsonPatch {
    pub ops: json_patch::Patch,
    origins: Vec<(Option<String>, Option<Pos>)>,
}

impl JsonPatch {
    pub fn len(&self) -> usize {
        self.ops.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.0.is_empty()
    }

    fn in_file(mut self, file: &str) -> JsonPatch {
        for o in &mut self.origins {
            o.0.get_or_insert_with(|| file.to_string());
        }
        self
    }

    fn extend(&mut self, other: JsonPatch) {
        self.ops.0.extend(other.ops.0);
        self.origins.extend(other.origins);
    }
}

impl Patch {
    /// Load a patch from text, trying a strategic patch first and a JSON patch second.
    pub fn parse(src: &str) -> Result<Patch> {
        let strategic = config::read_raw(src).and_then(|docs| {
            config::check_raw(&docs, true)?;
            Ok(docs)
        });
        let strategic_err = match strategic {
            Ok(docs) => return Ok(Patch::Strategic(docs)),
            Err(e) => e,
        };
        let docs = crate::yaml::parse_stream(src).map_err(|_| strategic_err.clone())?;
        let (value, positions) = match docs.as_slice() {
            [one] => (&one.value, &one.positions),
            _ => return Err(strategic_err),
        };
        let Some(items) = value.as_array() else {
            return Err(strategic_err);
        };
        let ops = serde_json::from_value::<json_patch::Patch>(value.clone())
            .map_err(|e| Error::msg(format!("invalid JSON patch: {e}")))?;
        let origins = (0..items.len())
            .map(|i| (None, positions.lookup(&format!("[{i}]"))))
            .collect();
        Ok(Patch::Json(JsonPatch { ops, origins }))
    }

    /// Load a patch given the way talosctl takes it: inline text, `@file`, or a bare file name.
    pub fn load(spec: &str) -> Result<Patch> {
        let file = spec.strip_prefix('@').or_else(|| {
            let bare =
                !spec.contains([' ', '\n']) && !spec.starts_with(['[', '{']) && !spec.is_empty();
            bare.then_some(spec)
        });
        match file {
            Some(path) => {
                let src = std::fs::read_to_string(Path::new(path))
                    .map_err(|e| Error::msg(format!("patch file {path}: {e}")))?;
                match Patch::parse(&src).map_err(|e| e.in_file(path))? {
                    Patch::Json(j) => Ok(Patch::Json(j.in_file(path))),
                    other => Ok(other),
                }
            }
            None => Patch::parse(spec),
        }
    }
}

/// Load several patches; consecutive JSON patches are joined into one.
pub fn load_patches<S: AsRef<str>>(specs: &[S]) -> Result<Vec<Patch>> {
    let mut out: Vec<Patch> = Vec::new();
    for spec in specs {
        let p = Patch::load(spec.as_ref())?;
        match (out.last_mut(), p) {
            (Some(Patch::Json(prev)), Patch::Json(next)) => prev.extend(next),
            (_, p) => out.push(p),
        }
    }
    Ok(out)
}

/// Apply patches in order.
///
/// A JSON patch (RFC 6902) goes to the config's v1alpha1 document, or, when its path starts
/// with `/@<Kind>` or `/@<Kind>=<name>`, to the document of that kind (and name): `/@KubeletConfig/
/// extraConfig/maxPods`, `/@NetworkRuleConfig=ingress/ingress/0/subnet`. A config with a single
/// document takes it whatever its kind; one without documents gets a v1alpha1 document. What
/// cannot be decided (no v1alpha1 document among several, a kind with several documents and no
/// name, one operation moving between documents) is refused, saying why.
pub fn apply(mut cfg: Config, patches: &[Patch]) -> Result<Config> {
    let target = cfg.documents_mut();
    for p in patches {
        match p {
            Patch::Json(ops) => {
                for (i, op) in ops.ops.0.iter().enumerate() {
                    apply_json_op(target, ops, i, op)?;
                }
            }
            Patch::Strategic(docs) => {
                for d in docs {
                    apply_document(target, d)?;
                }
            }
        }
    }
    Ok(cfg)
}

/// v1alpha1 sections that a generated config holds in documents of their own: a JSON patch
/// written for v1alpha1 (as the Talos docs write them) goes there when v1alpha1 lacks the
/// section and the config has that document.
const MOVED: &[(&str, &str, &str)] = &[
    ("/machine/kubelet/extraConfig", "KubeletConfig", "/config"),
    (
        "/machine/kubelet/registerWithFQDN",
        "KubeNodeConfig",
        "/registerWithFQDN",
    ),
    (
        "/machine/kubelet/skipNodeRegistration",
        "KubeNodeConfig",
        "/skipNodeRegistration",
    ),
    ("/machine/kubelet/nodeIP", "KubeNodeConfig", "/nodeIP"),
    ("/machine/kubelet", "KubeletConfig", ""),
    ("/machine/nodeLabels", "KubeNodeConfig", "/labels"),
    ("/machine/nodeTaints", "KubeNodeConfig", "/taints"),
    ("/machine/network/hostname", "HostnameConfig", "/hostname"),
    (
        "/machine/features/kubePrism/port",
        "KubePrismConfig",
        "/port",
    ),
    ("/cluster/clusterName", "KubeClusterConfig", "/clusterName"),
    (
        "/cluster/controlPlane/endpoint",
        "KubeClusterConfig",
        "/endpoint",
    ),
    (
        "/cluster/controlPlane/localAPIServerPort",
        "KubeAPIServerConfig",
        "/apiPort",
    ),
    (
        "/cluster/apiServer/certSANs",
        "KubeAPIServerConfig",
        "/certExtraSANs",
    ),
    ("/cluster/apiServer", "KubeAPIServerConfig", ""),
    (
        "/cluster/controllerManager",
        "KubeControllerManagerConfig",
        "",
    ),
    ("/cluster/scheduler", "KubeSchedulerConfig", ""),
    ("/cluster/proxy", "KubeProxyConfig", ""),
    (
        "/cluster/network/dnsDomain",
        "KubeNetworkConfig",
        "/dnsDomain",
    ),
    (
        "/cluster/network/podSubnets",
        "KubeNetworkConfig",
        "/podSubnets",
    ),
    (
        "/cluster/network/serviceSubnets",
        "KubeNetworkConfig",
        "/serviceSubnets",
    ),
];

/// Where a JSON patch path written for v1alpha1 goes in `docs`: the moved section's
/// document and path, when v1alpha1 lacks the section.
fn moved(docs: &[Document], v1: &Value, pointer: &str) -> Option<(usize, String)> {
    MOVED.iter().find_map(|(prefix, kind, field)| {
        let rest = pointer.strip_prefix(prefix)?;
        if !(rest.is_empty() || rest.starts_with('/')) || v1.pointer(prefix).is_some() {
            return None;
        }
        let i = docs
            .iter()
            .position(|d| matches!(&d.id, config::DocId::Kind { kind: k, .. } if k == kind))?;
        Some((i, format!("{field}{rest}")))
    })
}

/// Where a JSON patch path goes in `cfg`, said for people: "the v1alpha1 document",
/// "/image of the KubeletConfig document".
pub fn json_destination(cfg: &Config, pointer: &str) -> std::result::Result<String, String> {
    let docs = cfg.documents();
    let (doc, inner) = json_target(docs, pointer)?;
    Ok(match doc.map(|i| &docs[i].id) {
        None | Some(config::DocId::V1Alpha1) => "the v1alpha1 document".to_string(),
        Some(id) => format!("{inner} of the {id} document"),
    })
}

/// The document a JSON pointer addresses, and the pointer within it.
fn json_target(
    docs: &[Document],
    pointer: &str,
) -> std::result::Result<(Option<usize>, String), String> {
    let Some(rest) = pointer.strip_prefix("/@") else {
        let v1 = docs.iter().position(|d| d.id == config::DocId::V1Alpha1);
        if let Some(found) = v1.and_then(|i| moved(docs, &docs[i].value, pointer)) {
            return Ok((Some(found.0), found.1));
        }
        return match (v1, docs.len()) {
            (Some(i), _) => Ok((Some(i), pointer.to_string())),
            (None, 0) => Ok((None, pointer.to_string())),
            (None, 1) => Ok((Some(0), pointer.to_string())),
            (None, _) => Err(format!(
                "the config has no v1alpha1 document to apply {pointer} to; address one of its documents ({}) as /@<Kind>[=<name>]{pointer}",
                docs.iter().map(|d| d.id.to_string()).collect::<Vec<_>>().join(", ")
            )),
        };
    };
    let (head, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (kind, name) = match head.split_once('=') {
        Some((k, n)) => (k, Some(n)),
        None => (head, None),
    };
    let found: Vec<usize> = docs
        .iter()
        .enumerate()
        .filter(|(_, d)| match &d.id {
            config::DocId::Kind {
                kind: k, name: n, ..
            } => k == kind && (name.is_none() || n.as_deref() == name),
            config::DocId::V1Alpha1 => kind == "v1alpha1" && name.is_none(),
        })
        .map(|(i, _)| i)
        .collect();
    match found.as_slice() {
        [one] => Ok((Some(*one), tail.to_string())),
        [] => Err(format!("the config has no {head} document")),
        several => Err(format!(
            "the config has {} {kind} documents ({}): name one as /@{kind}=<name>",
            several.len(),
            several
                .iter()
                .map(|i| docs[*i].id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// One operation of a JSON patch, on the document it addresses.
fn apply_json_op(
    docs: &mut Vec<Document>,
    patch: &JsonPatch,
    i: usize,
    op: &json_patch::PatchOperation,
) -> Result<()> {
    // `msg` follows "JSON patch operation N".
    let at = |msg: String| {
        let (file, pos) = patch.origins.get(i).cloned().unwrap_or_default();
        let mut p = Problem::new(format!("JSON patch operation {}{msg}", i + 1)).at(pos);
        p.file = file;
        Error::from(p)
    };
    let why = |e: String| at(format!(": {e}"));
    let mut value = serde_json::to_value(op).map_err(|e| why(e.to_string()))?;
    let path = value["path"].as_str().unwrap_or_default().to_string();
    let (doc, inner) = json_target(docs, &path).map_err(why)?;
    value["path"] = Value::String(inner);
    if let Some(from) = value.get("from").and_then(Value::as_str).map(String::from) {
        let (from_doc, from_inner) = json_target(docs, &from).map_err(why)?;
        if from_doc != doc {
            return Err(why(format!(
                "{from} and {path} are in different documents: an operation stays within one"
            )));
        }
        value["from"] = Value::String(from_inner);
    }
    let one: json_patch::PatchOperation =
        serde_json::from_value(value).map_err(|e| why(e.to_string()))?;
    let mut target = match doc {
        Some(i) => docs[i].value.clone(),
        None => serde_json::json!({"version": "v1alpha1"}),
    };
    json_patch::patch(&mut target, &json_patch::Patch(vec![one]))
        .map_err(|e| at(format!(" failed: {} (path {path})", e.kind)))?;
    let updated = Document::from_value(target)?;
    match doc {
        Some(i) => docs[i] = updated,
        None => docs.push(updated),
    }
    Ok(())
}

fn apply_document(docs: &mut Vec<Document>, d: &RawDocument) -> Result<()> {
    if is_delete_directive(&d.value) {
        docs.retain(|x| x.id != d.id);
        return Ok(());
    }
    let ty = d.id.root_ty().expect("identified documents have shapes");
    match docs.iter_mut().find(|x| x.id == d.id) {
        Some(target) => {
            merge(&mut target.value, &d.value, &ty, "").map_err(|MissingPath(p)| {
                Error::msg(format!(
                    "patch delete: path '{p}' in document '{}': failed to delete path '{p}': lookup failed",
                    d.id
                ))
            })?;
            target.value = canonical(&target.value, &ty);
        }
        None => {
            let value = strip_directives(&d.value);
            docs.push(Document {
                id: d.id.clone(),
                value: canonical(&value, &ty),
            });
        }
    }
    Ok(())
}

/// The selectors of `$patch: delete` directives in a raw document, as `(path, selector)` pairs,
/// and the document left once they are taken out.
pub fn delete_selectors(value: &Value) -> (Vec<(String, Value)>, Value) {
    fn walk(v: &Value, path: &str, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let sub = config::join_path(path, k);
                    if is_delete_directive(x) {
                        out.push((sub, x.clone()));
                    } else {
                        walk(x, &sub, out);
                    }
                }
            }
            Value::Array(items) => {
                for (i, x) in items.iter().enumerate() {
                    let sub = format!("{path}[{i}]");
                    if is_delete_directive(x) {
                        out.push((sub, x.clone()));
                    } else {
                        walk(x, &sub, out);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if is_delete_directive(value) {
        return (vec![(String::new(), value.clone())], Value::Null);
    }
    walk(value, "", &mut out);
    (out, strip_directives(value))
}
