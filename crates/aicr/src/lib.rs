//! aicr: recipes for GPU clusters. A catalogue of overlays (`kind: RecipeMetadata`, each with
//! one parent `spec.base`, criteria, constraints and components) and mixins (`kind:
//! RecipeMixin`: constraints and components only) is resolved for a query into one recipe:
//! the matching leaf overlays' chains merged, their mixins applied, every component's values
//! merged and the components put in dependency order. A recipe becomes a bundle: one folder per
//! component in deployment order, for Helm (`deploy.sh`) or Argo CD (Applications with sync
//! waves), its constraints checked against a snapshot of the cluster first.

mod bundle;
mod constraint;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

pub use bundle::{bundle, write, Deployer, Options};
pub use constraint::check as check_constraints;

pub type Result<T> = std::result::Result<T, String>;

pub const API_VERSION: &str = "aicr.run/v1alpha1";

/// The overlay every other inherits from, in the end.
pub const ROOT: &str = "base";

/// A number or a string, kept as text.
fn scalar<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Ok(String::new()),
        other => Err(serde::de::Error::custom(format!(
            "expected a string or a number, found {other}"
        ))),
    }
}

/// What a recipe is for (in an overlay) or what is asked for (a query, `aicr recipe`'s flags).
/// Empty is `any`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Criteria {
    /// The cloud or Kubernetes service (eks, gke, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[arg(long, default_value = "any")]
    pub service: String,
    /// The GPU (h100, gb200, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[arg(long, default_value = "any")]
    pub accelerator: String,
    /// The nodes' OS (ubuntu, talos, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[arg(long, default_value = "any")]
    pub os: String,
    /// What the cluster is for (training, inference).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[arg(long, default_value = "any")]
    pub intent: String,
    /// The platform.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[arg(long, default_value = "any")]
    pub platform: String,
    /// The number of nodes.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "scalar"
    )]
    #[arg(long, default_value = "any")]
    pub nodes: String,
}

fn is_any(v: &str) -> bool {
    v.is_empty() || v.eq_ignore_ascii_case("any")
}

impl Criteria {
    fn fields(&self) -> [&str; 6] {
        [
            &self.service,
            &self.accelerator,
            &self.os,
            &self.intent,
            &self.platform,
            &self.nodes,
        ]
    }

    /// Whether an overlay with these criteria serves `query`: each of its criteria is `any`
    /// or the query's value; `any` in the query matches only `any`.
    pub fn serves(&self, query: &Criteria) -> bool {
        self.fields()
            .iter()
            .zip(query.fields())
            .all(|(r, q)| is_any(r) || (!is_any(q) && r.eq_ignore_ascii_case(q)))
    }

    /// How many criteria are not `any`.
    pub fn specificity(&self) -> usize {
        self.fields().iter().filter(|f| !is_any(f)).count()
    }
}

/// A condition on the cluster: `{name: K8s.server.version, value: ">= 1.30"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraint {
    pub name: String,
    #[serde(deserialize_with = "scalar")]
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Helm,
    Kustomize,
}

/// A component as an overlay or mixin names it: a whole component, or (a mixin's, or an
/// overlay's for a component an ancestor has) changes to one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ComponentRef {
    pub name: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "scalar"
    )]
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub values_file: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub overrides: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre_manifest_files: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependency_refs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Document<S> {
    #[serde(default)]
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: Metadata,
    spec: S,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OverlaySpec {
    #[serde(default)]
    base: String,
    #[serde(default)]
    mixins: Vec<String>,
    #[serde(default)]
    criteria: Criteria,
    #[serde(default)]
    constraints: Vec<Constraint>,
    #[serde(default)]
    component_refs: Vec<ComponentRef>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MixinSpec {
    #[serde(default)]
    constraints: Vec<Constraint>,
    #[serde(default)]
    component_refs: Vec<ComponentRef>,
}

/// An overlay or mixin of the catalogue.
#[derive(Debug)]
pub struct Entry<S> {
    pub name: String,
    /// The file it came from.
    pub file: String,
    spec: S,
}

pub type Overlay = Entry<OverlaySpec>;
type Mixin = Entry<MixinSpec>;

impl Overlay {
    /// Its parent's name (none for the root).
    fn parent(&self) -> Option<&str> {
        match self.spec.base.as_str() {
            "" if self.name == ROOT => None,
            "" => Some(ROOT),
            b => Some(b),
        }
    }
}

/// Overlays, mixins and the files they name (values, manifests), by path.
pub struct Catalogue {
    files: BTreeMap<String, String>,
    overlays: BTreeMap<String, Overlay>,
    mixins: BTreeMap<String, Mixin>,
}

/// The built-in catalogue's files.
const BUILTIN: &[(&str, &str)] = &include!(concat!(env!("OUT_DIR"), "/catalogue.rs"));

/// Add a decoded document to its kind's entries; a name may be used once.
fn add<S>(entries: &mut BTreeMap<String, Entry<S>>, file: &str, d: Document<S>) -> Result<()> {
    let name = d.metadata.name;
    if let Some(other) = entries.get(&name) {
        return Err(format!(
            "{file}: \"{name}\" is defined twice (also in {})",
            other.file
        ));
    }
    entries.insert(
        name.clone(),
        Entry {
            name,
            file: file.to_string(),
            spec: d.spec,
        },
    );
    Ok(())
}

/// Parse `text` (from `file`) as YAML documents.
pub fn parse_yaml(file: &str, text: &str) -> Result<Vec<machinery::yaml::YamlDoc>> {
    machinery::yaml::parse_stream(text)
        .map_err(|e| format!("{file}:{}:{}: {}", e.pos.line, e.pos.column, e.message))
}

/// Decode a parsed document strictly, an error naming the file, line and field.
fn decode<T: serde::de::DeserializeOwned>(file: &str, doc: &machinery::yaml::YamlDoc) -> Result<T> {
    serde_path_to_error::deserialize(&doc.value).map_err(|e| {
        let path = e.path().to_string();
        let pos = doc
            .positions
            .lookup(&path)
            .map(|p| format!("{}:{}", p.line, p.column))
            .unwrap_or_else(|| format!("{}:{}", doc.start.line, doc.start.column));
        format!("{file}:{pos}: {path}: {}", e.into_inner())
    })
}

impl Catalogue {
    /// The catalogue built into aicr.
    pub fn builtin() -> Result<Catalogue> {
        Catalogue::from_files(
            BUILTIN
                .iter()
                .map(|(p, t)| (p.to_string(), t.to_string()))
                .collect(),
        )
    }

    /// A catalogue from a folder: every `.yaml` file under it; those of kind RecipeMetadata or
    /// RecipeMixin are overlays and mixins, the others data they name by relative path.
    pub fn from_dir(dir: &Path) -> Result<Catalogue> {
        fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) -> Result<()> {
            let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, root, out)?;
                } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                    let text =
                        std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                    let rel = p.strip_prefix(root).unwrap_or(&p);
                    out.insert(rel.to_string_lossy().into_owned(), text);
                }
            }
            Ok(())
        }
        let mut files = BTreeMap::new();
        walk(dir, dir, &mut files)?;
        Catalogue::from_files(files)
    }

    /// A catalogue from files by path.
    pub fn from_files(files: BTreeMap<String, String>) -> Result<Catalogue> {
        let mut overlays: BTreeMap<String, Overlay> = BTreeMap::new();
        let mut mixins: BTreeMap<String, Mixin> = BTreeMap::new();
        for (file, text) in &files {
            for doc in parse_yaml(file, text)? {
                let kind = doc.value.get("kind").and_then(Value::as_str).unwrap_or("");
                match kind {
                    "RecipeMetadata" => add(&mut overlays, file, decode(file, &doc)?)?,
                    "RecipeMixin" => add(&mut mixins, file, decode(file, &doc)?)?,
                    _ => {}
                }
            }
        }
        let c = Catalogue {
            files,
            overlays,
            mixins,
        };
        for o in c.overlays.values() {
            c.chain(o)?;
            for m in &o.spec.mixins {
                if !c.mixins.contains_key(m) {
                    return Err(format!(
                        "{}: overlay {} names mixin \"{m}\", which the catalogue does not have",
                        o.file, o.name
                    ));
                }
            }
        }
        Ok(c)
    }

    pub fn overlays(&self) -> impl Iterator<Item = &Overlay> {
        self.overlays.values()
    }

    /// The overlay's inheritance chain, the root first.
    fn chain<'a>(&'a self, o: &'a Overlay) -> Result<Vec<&'a Overlay>> {
        let mut chain = vec![o];
        let mut cur = o;
        while let Some(p) = cur.parent() {
            let parent = self.overlays.get(p).ok_or_else(|| {
                format!(
                    "{}: overlay {} has base \"{p}\", which the catalogue does not have",
                    cur.file, cur.name
                )
            })?;
            if chain.iter().any(|c| c.name == parent.name) {
                let names: Vec<&str> = chain.iter().rev().map(|c| c.name.as_str()).collect();
                return Err(format!(
                    "overlays inherit in a circle: {} -> {}",
                    names.join(" -> "),
                    parent.name
                ));
            }
            chain.push(parent);
            cur = parent;
        }
        chain.reverse();
        Ok(chain)
    }

    fn file(&self, path: &str, by: &str) -> Result<&str> {
        self.files
            .get(path)
            .map(String::as_str)
            .ok_or_else(|| format!("{by} names {path}, which the catalogue does not have"))
    }

    /// The recipe for `query`.
    pub fn resolve(&self, query: &Criteria) -> Result<Recipe> {
        let matching: Vec<&Overlay> = self
            .overlays
            .values()
            .filter(|o| o.spec.criteria.serves(query))
            .collect();
        let chains: Vec<Vec<&Overlay>> = matching
            .iter()
            .map(|o| self.chain(o))
            .collect::<Result<_>>()?;
        // The leaves: matching overlays that are no other matching overlay's ancestor, most
        // specific first.
        let mut leaves: Vec<(&Overlay, &Vec<&Overlay>)> = matching
            .iter()
            .zip(&chains)
            .filter(|(o, _)| {
                !chains.iter().any(|c| {
                    c.last().map(|l| &l.name) != Some(&o.name) && c.iter().any(|a| a.name == o.name)
                })
            })
            .map(|(o, c)| (*o, c))
            .collect();
        if leaves.is_empty() {
            return Err(format!(
                "no overlay serves the query {}",
                serde_json::to_string(query).unwrap_or_default()
            ));
        }
        leaves.sort_by(|a, b| {
            b.0.spec
                .criteria
                .specificity()
                .cmp(&a.0.spec.criteria.specificity())
                .then_with(|| a.0.name.cmp(&b.0.name))
        });
        // Every overlay once, ancestors first; the least specific leaf's chain first, so the
        // most specific has the last word.
        let mut order: Vec<&Overlay> = Vec::new();
        for (_, chain) in leaves.iter().rev() {
            for o in chain.iter() {
                if !order.iter().any(|x| x.name == o.name) {
                    order.push(o);
                }
            }
        }
        let mut m = Merge::default();
        for o in &order {
            for c in &o.spec.constraints {
                m.constraint(c, &o.name, false)?;
            }
            for c in &o.spec.component_refs {
                m.component(c, &format!("overlay {}", o.name), false)?;
            }
        }
        let mut mixin_names: Vec<String> = Vec::new();
        for o in &order {
            for n in &o.spec.mixins {
                if !mixin_names.contains(n) {
                    mixin_names.push(n.clone());
                }
            }
        }
        for n in &mixin_names {
            let mixin = &self.mixins[n];
            for c in &mixin.spec.constraints {
                m.constraint(c, &format!("mixin {}", mixin.name), true)?;
            }
            for c in &mixin.spec.component_refs {
                m.component(c, &format!("mixin {}", mixin.name), true)?;
            }
        }
        let mut components = Vec::new();
        for c in m.components {
            let mut values = Value::Object(Map::new());
            for f in &c.values_files {
                let by = format!("component {}", c.r.name);
                for doc in parse_yaml(f, self.file(f, &by)?)? {
                    merge(&mut values, &doc.value);
                }
            }
            for o in &c.overrides {
                merge(&mut values, &Value::Object(o.clone()));
            }
            let mut pre_manifests = Vec::new();
            for f in &c.r.pre_manifest_files {
                let by = format!("component {}", c.r.name);
                for doc in parse_yaml(f, self.file(f, &by)?)? {
                    pre_manifests.push(doc.value);
                }
            }
            components.push(Component {
                name: c.r.name.clone(),
                kind: c.r.kind.unwrap_or(Kind::Helm),
                source: c.r.source.clone(),
                version: c.r.version.clone(),
                namespace: if c.r.namespace.is_empty() {
                    c.r.name.clone()
                } else {
                    c.r.namespace.clone()
                },
                values,
                pre_manifests,
                dependency_refs: c.r.dependency_refs.clone(),
            });
        }
        let components = order_by_dependencies(components)?;
        let leaf_names: Vec<String> = leaves.iter().map(|(o, _)| o.name.clone()).collect();
        Ok(Recipe {
            api_version: API_VERSION.into(),
            kind: "Recipe".into(),
            metadata: RecipeMeta {
                name: leaf_names.join("+"),
            },
            spec: RecipeSpec {
                criteria: query.clone(),
                leaves: leaf_names,
                overlays: order.iter().map(|o| o.name.clone()).collect(),
                mixins: mixin_names,
                constraints: m.constraints.into_iter().map(|(c, _)| c).collect(),
                components,
            },
        })
    }
}

/// A component being merged from overlays and mixins.
struct Merging {
    r: ComponentRef,
    /// Who defined it.
    by: String,
    values_files: Vec<String>,
    overrides: Vec<Map<String, Value>>,
}

#[derive(Default)]
struct Merge {
    /// Constraints with who set them.
    constraints: Vec<(Constraint, String)>,
    components: Vec<Merging>,
}

impl Merge {
    /// An overlay's constraint replaces one of the same name; a mixin's (`mixin`) must agree
    /// with the chain's.
    fn constraint(&mut self, c: &Constraint, by: &str, mixin: bool) -> Result<()> {
        match self.constraints.iter_mut().find(|(x, _)| x.name == c.name) {
            Some((x, from)) if mixin && x.value != c.value => Err(format!(
                "{by} conflicts with overlay {from}: constraint {} is \"{}\" in the mixin and \"{}\" in the overlay",
                c.name, c.value, x.value
            )),
            Some((x, from)) => {
                *x = c.clone();
                *from = by.to_string();
                Ok(())
            }
            None => {
                self.constraints.push((c.clone(), by.to_string()));
                Ok(())
            }
        }
    }

    fn component(&mut self, c: &ComponentRef, by: &str, mixin: bool) -> Result<()> {
        let whole = c.kind.is_some() || !c.source.is_empty();
        let Some(cur) = self.components.iter_mut().find(|x| x.r.name == c.name) else {
            if mixin && !whole {
                // A mixin's changes to a component this recipe does not have.
                return Ok(());
            }
            if c.kind.is_none() || c.source.is_empty() {
                return Err(format!(
                    "{by}: component {} needs a type and a source (no overlay before it defines it)",
                    c.name
                ));
            }
            let mut r = c.clone();
            r.values_file.clear();
            r.overrides.clear();
            self.components.push(Merging {
                r,
                by: by.to_string(),
                values_files: (!c.values_file.is_empty())
                    .then(|| c.values_file.clone())
                    .into_iter()
                    .collect(),
                overrides: (!c.overrides.is_empty())
                    .then(|| c.overrides.clone())
                    .into_iter()
                    .collect(),
            });
            return Ok(());
        };
        if mixin {
            let clash = |field: &str, mine: &str, theirs: &str| {
                Err(format!(
                    "{by} conflicts with {}: component {} has {field} \"{mine}\" in the mixin and \"{theirs}\" in the overlay",
                    cur.by, c.name
                ))
            };
            if let Some(k) = c.kind.filter(|k| Some(*k) != cur.r.kind) {
                return clash(
                    "type",
                    &format!("{k:?}"),
                    &format!("{:?}", cur.r.kind.unwrap_or(Kind::Helm)),
                );
            }
            if !c.source.is_empty() && c.source != cur.r.source {
                return clash("source", &c.source, &cur.r.source);
            }
            if !c.version.is_empty() && c.version != cur.r.version {
                return clash("version", &c.version, &cur.r.version);
            }
        }
        let set = |to: &mut String, from: &str| {
            if !from.is_empty() {
                *to = from.to_string();
            }
        };
        if c.kind.is_some() {
            cur.r.kind = c.kind;
        }
        set(&mut cur.r.source, &c.source);
        set(&mut cur.r.version, &c.version);
        set(&mut cur.r.namespace, &c.namespace);
        if !c.values_file.is_empty() {
            cur.values_files.push(c.values_file.clone());
        }
        if !c.overrides.is_empty() {
            cur.overrides.push(c.overrides.clone());
        }
        for f in &c.pre_manifest_files {
            if !cur.r.pre_manifest_files.contains(f) {
                cur.r.pre_manifest_files.push(f.clone());
            }
        }
        for d in &c.dependency_refs {
            if !cur.r.dependency_refs.contains(d) {
                cur.r.dependency_refs.push(d.clone());
            }
        }
        Ok(())
    }
}

/// Merge `from` into `into`: maps key by key, anything else replaced.
pub fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(cur) => merge(cur, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (into, from) => *into = from.clone(),
    }
}

/// Components in deployment order: each after those it depends on, otherwise as they came.
fn order_by_dependencies(components: Vec<Component>) -> Result<Vec<Component>> {
    let index: BTreeMap<&str, usize> = components
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    for c in &components {
        for d in &c.dependency_refs {
            if !index.contains_key(d.as_str()) {
                return Err(format!(
                    "component {} depends on {d}, which the recipe does not have",
                    c.name
                ));
            }
        }
    }
    let n = components.len();
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        let next = (0..n).find(|&i| {
            !placed[i]
                && components[i]
                    .dependency_refs
                    .iter()
                    .all(|d| placed[index[d.as_str()]])
        });
        match next {
            Some(i) => {
                placed[i] = true;
                order.push(i);
            }
            None => {
                // Walk unplaced dependencies from an unplaced component until one repeats.
                let mut path: Vec<usize> = vec![(0..n).find(|&i| !placed[i]).unwrap_or(0)];
                loop {
                    let cur = *path.last().unwrap_or(&0);
                    let dep = components[cur]
                        .dependency_refs
                        .iter()
                        .map(|d| index[d.as_str()])
                        .find(|&j| !placed[j])
                        .unwrap_or(cur);
                    if let Some(at) = path.iter().position(|&p| p == dep) {
                        let mut names: Vec<&str> = path[at..]
                            .iter()
                            .map(|&i| components[i].name.as_str())
                            .collect();
                        names.push(&components[dep].name);
                        return Err(format!(
                            "the components' dependencies form a cycle: {} (each depends on the next)",
                            names.join(" -> ")
                        ));
                    }
                    path.push(dep);
                }
            }
        }
    }
    let mut slots: Vec<Option<Component>> = components.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

/// A resolved recipe: what `aicr recipe` writes and `aicr bundle` reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Recipe {
    pub api_version: String,
    pub kind: String,
    pub metadata: RecipeMeta,
    pub spec: RecipeSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeMeta {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RecipeSpec {
    /// The query.
    pub criteria: Criteria,
    /// The leaf overlays chosen, most specific first.
    pub leaves: Vec<String>,
    /// Every overlay merged, in merge order.
    pub overlays: Vec<String>,
    pub mixins: Vec<String>,
    pub constraints: Vec<Constraint>,
    /// In deployment order.
    #[serde(rename = "componentRefs")]
    pub components: Vec<Component>,
}

/// A component as resolved: its values merged, its pre-manifests read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Component {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub source: String,
    pub version: String,
    pub namespace: String,
    pub values: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre_manifests: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependency_refs: Vec<String>,
}

impl Recipe {
    pub fn to_yaml(&self) -> String {
        machinery::yaml::to_string(&serde_json::to_value(self).expect("a recipe is JSON"))
    }

    pub fn from_yaml(file: &str, text: &str) -> Result<Recipe> {
        let docs = parse_yaml(file, text)?;
        let doc = docs
            .first()
            .ok_or_else(|| format!("{file}: no recipe in it"))?;
        let r: Recipe = decode(file, doc)?;
        if r.kind != "Recipe" {
            return Err(format!(
                "{file}: kind is \"{}\": expected a Recipe (`aicr recipe` writes one)",
                r.kind
            ));
        }
        Ok(r)
    }
}
