//! The machine configuration: a v1alpha1 document plus any number of typed multi-document kinds.

/// The shape language and its parser (shared with build.rs).
mod dsl;
mod shape;

/// Typed structs for every document shape (generated from the shapes by `build.rs`): every
/// field is optional, named in snake case, and (de)serializes under its Talos name.
#[allow(clippy::all)]
pub mod types {
    include!(concat!(env!("OUT_DIR"), "/types.rs"));
}

use std::fmt;
use std::path::Path;

use serde_json::Value;

pub use shape::{
    canonical, check, go_key_order, is_delete_directive, join as join_path, merge, redact,
    shaped_text, strip_directives, ty_at, Field, MissingPath, ShapeHints, ShapeProblem, Shapes, Ty,
    PATCH_KEY, REDACTED,
};

use crate::error::{Error, Problem, Result};
use crate::yaml::{self, Positions};

/// Which document this is: the v1alpha1 document, or a kind with an optional name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DocId {
    V1Alpha1,
    Kind {
        api_version: String,
        kind: String,
        name: Option<String>,
    },
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DocId::V1Alpha1 => f.write_str("/v1alpha1"),
            DocId::Kind {
                api_version,
                kind,
                name,
            } => {
                write!(f, "{api_version}/{kind}")?;
                if let Some(n) = name {
                    write!(f, "/{n}")?;
                }
                Ok(())
            }
        }
    }
}

impl DocId {
    /// The shape type of the document's root.
    pub fn root_ty(&self) -> Option<Ty> {
        match self {
            DocId::V1Alpha1 => Some(Ty::Struct("v1alpha1.Config".into())),
            DocId::Kind { kind, .. } => Shapes::get().kinds.get(kind).cloned().map(Ty::Struct),
        }
    }
}

/// One document of a configuration, in canonical form.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub id: DocId,
    pub value: Value,
}

impl Document {
    /// Build a document from a value, checking it strictly and putting it in canonical form.
    pub fn from_value(value: Value) -> Result<Document> {
        let id = identify(&value, &Positions::default())?;
        let ty = root_ty(&id)?;
        let mut problems = Vec::new();
        check(&value, &ty, "", false, &mut problems);
        if !problems.is_empty() {
            return Err(problems
                .into_iter()
                .map(|p| Problem::new(p.message).path(p.path))
                .collect::<Vec<_>>()
                .into());
        }
        let value = canonical(&value, &ty);
        Ok(Document { id, value })
    }

    pub fn encode(&self) -> String {
        match self.id.root_ty() {
            Some(ty) => yaml::to_string_annotated(&self.value, Some(&ShapeHints(ty))),
            None => yaml::to_string(&self.value),
        }
    }
}

fn root_ty(id: &DocId) -> Result<Ty> {
    id.root_ty()
        .ok_or_else(|| Error::msg(format!("unknown document kind \"{id}\"")))
}

/// Find a document's identity from its `version` or `apiVersion`/`kind`/`name`.
pub(crate) fn identify(value: &Value, positions: &Positions) -> Result<DocId> {
    let Some(m) = value.as_object() else {
        return Err(Problem::new("a config document must be a mapping")
            .at(positions.lookup(""))
            .into());
    };
    let kind = m.get("kind").and_then(Value::as_str);
    let api_version = m.get("apiVersion").and_then(Value::as_str);
    match (api_version, kind) {
        (None, None) => {
            if let Some(v) = m.get("version").filter(|v| !v.is_null()) {
                // An empty version is what a document without one encodes to.
                if !matches!(v.as_str(), Some("v1alpha1" | "")) {
                    return Err(Problem::new(format!("unsupported config version {v}"))
                        .path("version")
                        .at(positions.lookup("version"))
                        .into());
                }
            }
            Ok(DocId::V1Alpha1)
        }
        (Some(api), Some(kind)) => {
            if !Shapes::get().kinds.contains_key(kind) {
                return Err(Problem::new(format!("unknown document kind \"{kind}\""))
                    .path("kind")
                    .at(positions.lookup("kind"))
                    .into());
            }
            if api != "v1alpha1" {
                return Err(Problem::new(format!(
                    "unsupported apiVersion \"{api}\" for kind {kind}"
                ))
                .path("apiVersion")
                .at(positions.lookup("apiVersion"))
                .into());
            }
            Ok(DocId::Kind {
                api_version: api.to_string(),
                kind: kind.to_string(),
                name: match m.get("name") {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    Some(Value::Bool(b)) => Some(b.to_string()),
                    _ => None,
                },
            })
        }
        (None, Some(_)) => Err(Problem::new("document has a kind but no apiVersion")
            .at(positions.lookup("kind"))
            .into()),
        (Some(_), None) => Err(Problem::new("document has an apiVersion but no kind")
            .at(positions.lookup("apiVersion"))
            .into()),
    }
}

/// A parsed document before it is checked, with the positions of its nodes.
#[derive(Debug, Clone)]
pub struct RawDocument {
    pub id: DocId,
    pub value: Value,
    pub positions: Positions,
}

/// Read a YAML stream into identified documents. Empty documents are skipped.
pub(crate) fn read_raw(src: &str) -> Result<Vec<RawDocument>> {
    let docs = yaml::parse_stream(src).map_err(|e| {
        Error::from(Problem::new(format!("invalid YAML: {}", e.message)).at(Some(e.pos)))
    })?;
    let mut out = Vec::new();
    for d in docs {
        if d.value.is_null() {
            continue;
        }
        let id = identify(&d.value, &d.positions)?;
        out.push(RawDocument {
            id,
            value: d.value,
            positions: d.positions,
        });
    }
    Ok(out)
}

/// Check raw documents against their shapes, reporting every problem with its position.
pub(crate) fn check_raw(docs: &[RawDocument], allow_patch: bool) -> Result<()> {
    let mut problems = Vec::new();
    for d in docs {
        let ty = root_ty(&d.id)?;
        let mut found = Vec::new();
        check(&d.value, &ty, "", allow_patch, &mut found);
        problems.extend(found.into_iter().map(|p| {
            let pos = d.positions.lookup(&p.path);
            Problem::new(p.message).path(p.path).at(pos)
        }));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.into())
    }
}

/// A whole machine configuration.
///
/// A configuration read from text and left unchanged encodes back to that text, comments and
/// all; once changed it encodes canonically.
#[derive(Debug, Clone, Default)]
pub struct Config {
    documents: Vec<Document>,
    original: Option<String>,
    /// Source positions of each document while the config is as read.
    positions: Option<Vec<Positions>>,
}

impl PartialEq for Config {
    fn eq(&self, other: &Self) -> bool {
        self.documents == other.documents
    }
}

impl Config {
    /// Load a configuration strictly: unknown fields, wrong types, two v1alpha1 documents and
    /// duplicate documents are errors.
    pub fn parse(src: &str) -> Result<Config> {
        let raw = read_raw(src)?;
        check_raw(&raw, false)?;
        let mut cfg = Config {
            documents: Vec::new(),
            original: Some(src.to_string()),
            positions: Some(Vec::new()),
        };
        for (i, d) in raw.into_iter().enumerate() {
            let pos = d.positions.lookup("");
            if cfg.documents.iter().any(|x| x.id == d.id) {
                let what = if d.id == DocId::V1Alpha1 {
                    "a second v1alpha1 document is not allowed".to_string()
                } else {
                    format!("duplicate document {} is not allowed", d.id)
                };
                return Err(Problem::new(format!("document {}: {what}", i + 1))
                    .at(pos)
                    .into());
            }
            let ty = root_ty(&d.id)?;
            cfg.documents.push(Document {
                value: canonical(&d.value, &ty),
                id: d.id,
            });
            if let Some(p) = cfg.positions.as_mut() {
                p.push(d.positions);
            }
        }
        Ok(cfg)
    }

    /// Load a configuration file; errors name the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let src = std::fs::read_to_string(path)
            .map_err(|e| Error::msg(format!("{name}: cannot read: {e}")))?;
        Config::parse(&src).map_err(|e| e.in_file(&name))
    }

    pub fn from_documents(documents: Vec<Document>) -> Config {
        Config {
            documents,
            original: None,
            positions: None,
        }
    }

    pub fn documents(&self) -> &[Document] {
        &self.documents
    }

    /// Mutable access to the documents; the config then encodes canonically.
    pub fn documents_mut(&mut self) -> &mut Vec<Document> {
        self.original = None;
        self.positions = None;
        &mut self.documents
    }

    /// Where `path` of document `index` was in the source, while the config is as read.
    pub fn position(&self, index: usize, path: &str) -> Option<crate::error::Pos> {
        self.positions.as_ref()?.get(index)?.lookup(path)
    }

    /// The encoding: the original text when unchanged, otherwise the canonical form
    /// (documents joined by `---`).
    pub fn encode(&self) -> String {
        if let Some(src) = &self.original {
            return src.clone();
        }
        self.encode_canonical()
    }

    /// The canonical encoding, whatever the source looked like.
    pub fn encode_canonical(&self) -> String {
        let parts: Vec<String> = self.documents.iter().map(Document::encode).collect();
        parts.join("---\n")
    }

    pub fn v1alpha1(&self) -> Option<&Value> {
        self.document(&DocId::V1Alpha1).map(|d| &d.value)
    }

    pub fn document(&self, id: &DocId) -> Option<&Document> {
        self.documents.iter().find(|d| &d.id == id)
    }

    /// All documents of one kind.
    pub fn kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Document> + 'a {
        self.documents
            .iter()
            .filter(move |d| matches!(&d.id, DocId::Kind { kind: k, .. } if k == kind))
    }

    /// A copy with every secret (keys, tokens, passphrases) replaced by `REDACTED`, for readers
    /// who may see the config but not its secrets.
    pub fn redacted(&self) -> Config {
        let mut out = self.clone();
        for d in out.documents_mut() {
            if let Some(ty) = d.id.root_ty() {
                redact(&mut d.value, &ty);
            }
        }
        out
    }

    /// A value by path in the v1alpha1 document, e.g. `/machine/type`.
    pub fn pointer(&self, ptr: &str) -> Option<&Value> {
        self.v1alpha1().and_then(|v| v.pointer(ptr))
    }

    /// A document as its typed struct.
    pub fn typed<T: serde::de::DeserializeOwned>(&self, id: &DocId) -> Option<Result<T>> {
        self.document(id).map(|d| {
            serde_json::from_value(d.value.clone())
                .map_err(|e| Error::msg(format!("document {id}: {e}")))
        })
    }

    /// The v1alpha1 document, typed (empty when the config has none).
    pub fn v1alpha1_typed(&self) -> Result<types::V1alpha1Config> {
        self.typed(&DocId::V1Alpha1)
            .unwrap_or_else(|| Ok(Default::default()))
    }

    /// The machine type (`controlplane`, `worker`, `init`), if set.
    pub fn machine_type(&self) -> &str {
        self.pointer("/machine/type")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// Whether the machine is a control plane (`controlplane`, or the legacy `init`).
    pub fn is_control_plane(&self) -> bool {
        matches!(self.machine_type(), "controlplane" | "init")
    }

    /// The map of strings at `pointer` (such as `/machine/sysctls`); values that are not
    /// strings come as their JSON text.
    pub fn string_map(&self, pointer: &str) -> std::collections::BTreeMap<String, String> {
        self.pointer(pointer)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let v = v
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string());
                (k.clone(), v)
            })
            .collect()
    }

    /// The control plane endpoint (`cluster.controlPlane.endpoint`, or a KubeClusterConfig's
    /// `endpoint`), if set.
    pub fn control_plane_endpoint(&self) -> Option<&str> {
        self.pointer("/cluster/controlPlane/endpoint")
            .or_else(|| {
                self.kind("KubeClusterConfig")
                    .find_map(|d| d.value.get("endpoint"))
            })
            .and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_errors_name_line_and_path() {
        let src =
            "version: v1alpha1\nmachine:\n  type: worker\n  netwrk: {}\n  install:\n    wipe: 3\n";
        let e = Config::parse(src).unwrap_err();
        let lines: Vec<String> = e.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            lines,
            [
                "4:3: machine.netwrk: unknown field \"netwrk\" (did you mean \"network\"?)",
                "6:11: machine.install.wipe: expected a boolean (true or false), found number 3",
            ]
        );
        // A field spelled as Kubernetes spells it, where Talos's is lower case.
        let src = "version: v1alpha1\nmachine:\n  type: controlplane\ncluster:\n  apiServer:\n    extraVolumes:\n      - hostPath: /var/lib/a\n        mountPath: /var/lib/a\n        readOnly: true\n";
        let e = Config::parse(src).unwrap_err();
        assert_eq!(
            e.problems[0].to_string(),
            "9:19: cluster.apiServer.extraVolumes[0].readOnly: unknown field \"readOnly\" (did you mean \"readonly\"?)"
        );
    }

    #[test]
    fn typed_access() {
        let src = "version: v1alpha1\nmachine:\n    type: worker\n    install:\n        disk: /dev/vda\n    files:\n        - path: /etc/x\n          permissions: 0o644\n          op: create\n          content: x\ncluster:\n    network:\n        podSubnets: [10.0.0.0/8]\n";
        let cfg = Config::parse(src).unwrap();
        let typed = cfg.v1alpha1_typed().unwrap();
        let machine = typed.machine.unwrap();
        assert_eq!(machine.r#type.as_deref(), Some("worker"));
        assert_eq!(machine.install.unwrap().disk.as_deref(), Some("/dev/vda"));
        assert_eq!(machine.files.unwrap()[0].permissions, Some(0o644));
        let net = typed.cluster.unwrap().network.unwrap();
        assert_eq!(net.pod_subnets.unwrap(), ["10.0.0.0/8"]);
        let link = Config::parse("apiVersion: v1alpha1\nkind: LinkConfig\nname: eth0\nmtu: 9000\n")
            .unwrap();
        let id = link.documents()[0].id.clone();
        let l: types::NetworkLinkConfigV1Alpha1 = link.typed(&id).unwrap().unwrap();
        assert_eq!((l.name.as_deref(), l.mtu), (Some("eth0"), Some(9000)));
    }

    #[test]
    fn two_v1alpha1_documents_are_refused() {
        let e = Config::parse("version: v1alpha1\n---\nversion: v1alpha1\n").unwrap_err();
        assert!(e.to_string().contains("not allowed"), "{e}");
    }

    #[test]
    fn duplicate_named_document_is_refused() {
        let doc = "apiVersion: v1alpha1\nkind: LinkConfig\nname: eth0\n";
        let e = Config::parse(&format!("{doc}---\n{doc}")).unwrap_err();
        assert!(e.to_string().contains("duplicate document"), "{e}");
    }

    #[test]
    fn document_without_version_round_trips() {
        let cfg = Config::parse("machine:\n").unwrap();
        let again = Config::parse(&cfg.encode_canonical()).unwrap();
        assert_eq!(again, cfg);
    }

    #[test]
    fn private_use_characters_are_ordinary_text() {
        let src = "apiVersion: v1alpha1\nkind: HostnameConfig\nhostname: \u{e000}x\n";
        let cfg = Config::parse(src).unwrap();
        assert_eq!(Config::parse(&cfg.encode_canonical()).unwrap(), cfg);
        assert_eq!(cfg.encode_canonical(), src);
    }

    #[test]
    fn unknown_kind_is_refused() {
        let e = Config::parse("apiVersion: v1alpha1\nkind: Nope\n").unwrap_err();
        assert_eq!(e.to_string(), "2:7: kind: unknown document kind \"Nope\"");
    }
}
