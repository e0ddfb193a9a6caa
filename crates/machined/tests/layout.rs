//! machined's shape, checked on its sources: no import cycle of more than three files, no
//! file over 800 lines, and dependencies pointing one way (boot and api → controllers and
//! services → sys → types): controllers never import the API, boot, the node handle or each
//! other (only their shared `inputs` and the network group's `layers` and `sources`);
//! services and sys never import controllers, the API, boot or the node.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src`, by its path relative to it.
fn sources() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p: PathBuf = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(&root).unwrap().display().to_string();
                out.insert(rel, std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    out
}

/// A file's module path: `controllers/etcd/spec.rs` → [controllers, etcd, spec].
fn module_of(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "main")) {
        parts.pop();
    }
    parts
}

/// The code without its unit tests (what the binary is made of).
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests {")
        .map_or(text, |i| &text[..i])
}

/// Module paths (`a::b::c`) that follow `prefix` in `text`.
fn paths_after<'a>(text: &'a str, prefix: &'a str) -> impl Iterator<Item = Vec<String>> + 'a {
    text.match_indices(prefix).filter_map(move |(i, _)| {
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            return None;
        }
        let rest = &text[i + prefix.len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == ':')
            .collect();
        let segs: Vec<String> = path
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        (!segs.is_empty()).then_some(segs)
    })
}

/// The files each file uses: through `crate::…`, `super::…`, or a child module it declares.
fn edges(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let by_module: BTreeMap<Vec<String>, String> =
        files.keys().map(|f| (module_of(f), f.clone())).collect();
    let resolve = |segs: &[String]| -> Option<String> {
        (1..=segs.len())
            .rev()
            .find_map(|n| by_module.get(&segs[..n]).cloned())
    };
    let mut out = BTreeMap::new();
    for (file, text) in files {
        let code = without_tests(text);
        let me = module_of(file);
        let mut uses = BTreeSet::new();
        for segs in paths_after(code, "crate::") {
            uses.extend(resolve(&segs));
        }
        let parent = &me[..me.len().saturating_sub(1)];
        for segs in paths_after(code, "super::") {
            let full: Vec<String> = parent.iter().cloned().chain(segs).collect();
            uses.extend(resolve(&full));
        }
        for line in code.lines() {
            let l = line.trim_start().trim_start_matches("pub ");
            if let Some(child) = l.strip_prefix("mod ").and_then(|m| m.strip_suffix(';')) {
                let used = paths_after(code, &format!("{child}::")).next().is_some();
                if used {
                    let full: Vec<String> = me.iter().cloned().chain([child.to_string()]).collect();
                    uses.extend(resolve(&full));
                }
            }
        }
        uses.remove(file);
        out.insert(file.clone(), uses);
    }
    out
}

/// Strongly connected components (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            for w in &self.edges[v] {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.stack.contains(&w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    comp.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                self.out.push(comp);
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.out.into_iter().filter(|c| c.len() > 1).collect()
}

#[test]
fn no_import_cycle_of_more_than_three_files() {
    let big: Vec<Vec<String>> = cycles(&edges(&sources()))
        .into_iter()
        .filter(|c| c.len() > 3)
        .collect();
    assert!(big.is_empty(), "import cycles: {big:#?}");
}

#[test]
fn no_file_over_800_lines() {
    let long: Vec<(String, usize)> = sources()
        .into_iter()
        .map(|(f, t)| (f, t.lines().count()))
        .filter(|(_, n)| *n > 800)
        .collect();
    assert!(long.is_empty(), "files over 800 lines: {long:?}");
}

#[test]
fn dependencies_point_one_way() {
    let files = sources();
    let edges = edges(&files);
    let layer = |f: &str| {
        f.split('/')
            .next()
            .unwrap_or(f)
            .trim_end_matches(".rs")
            .to_string()
    };
    // Helpers controllers may share: not controllers themselves.
    let shared = [
        "controllers/inputs.rs",
        "controllers/network/layers.rs",
        "controllers/network/sources.rs",
    ];
    let mut wrong = Vec::new();
    for (from, tos) in &edges {
        for to in tos {
            let (lf, lt) = (layer(from), layer(to));
            let bad = match lf.as_str() {
                "controllers" => {
                    matches!(lt.as_str(), "api" | "boot" | "node" | "main")
                        || (lt == "controllers"
                            && !to.ends_with("/mod.rs")
                            && !from.ends_with("/mod.rs")
                            && !from.ends_with("controllers/mod.rs")
                            && !shared.contains(&to.as_str()))
                }
                "services" | "sys" => {
                    matches!(
                        lt.as_str(),
                        "api" | "boot" | "node" | "main" | "controllers"
                    ) || (lf == "sys" && lt == "services")
                }
                _ => false,
            };
            if bad {
                wrong.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies against the layering: {wrong:#?}"
    );
}
