//! Resource definitions and namespaces, themselves resources in the `meta` namespace, and the
//! resolution of a user's type name (`rd`, `addresses`, `AddressStatus`, …) to a type.

use serde::Serialize;

use crate::resource::{Pointer, Resource};
use crate::state::{Error, Result, State};
use crate::LabelQuery;

pub const META_NAMESPACE: &str = "meta";
pub const RESOURCE_DEFINITION_TYPE: &str = "ResourceDefinitions.meta.cosi.dev";
pub const NAMESPACE_TYPE: &str = "Namespaces.meta.cosi.dev";
const META_OWNER: &str = "meta";

/// A print column for table output: a header and a JSONPath into the spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrintColumn {
    pub name: String,
    #[serde(rename = "jsonPath")]
    pub json_path: String,
}

/// The spec of a ResourceDefinition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Definition {
    #[serde(rename = "type")]
    pub ty: String,
    pub display_type: String,
    pub default_namespace: String,
    pub aliases: Vec<String>,
    pub all_aliases: Vec<String>,
    pub print_columns: Vec<PrintColumn>,
    pub sensitivity: String,
}

impl Definition {
    /// A definition with the display type and aliases filled in the COSI way.
    pub fn new(ty: &str, default_namespace: &str, explicit_aliases: &[&str]) -> Definition {
        let (aliases, all_aliases) = fill_aliases(ty, explicit_aliases);
        Definition {
            ty: ty.into(),
            display_type: display_type(ty),
            default_namespace: default_namespace.into(),
            aliases,
            all_aliases,
            print_columns: Vec::new(),
            sensitivity: String::new(),
        }
    }

    /// Keep only the explicit aliases (the type opts out of automatic aliases).
    pub fn without_automatic_aliases(mut self, explicit: &[&str]) -> Definition {
        (self.aliases, self.all_aliases) = explicit_aliases(explicit);
        self
    }

    pub fn column(mut self, name: &str, json_path: &str) -> Definition {
        self.print_columns.push(PrintColumn {
            name: name.into(),
            json_path: json_path.into(),
        });
        self
    }

    pub fn sensitive(mut self) -> Definition {
        self.sensitivity = "sensitive".into();
        self
    }

    pub fn is_sensitive(&self) -> bool {
        self.sensitivity == "sensitive"
    }

    /// The resource id of the definition: the type, lower-cased.
    pub fn id(&self) -> String {
        self.ty.to_lowercase()
    }
}

/// The spec of a namespace resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceSpec {
    pub description: String,
}

fn name_part(ty: &str) -> &str {
    ty.split('.').next().unwrap_or(ty)
}

/// The singular form of a plural CamelCase type name (`AddressStatuses` → `AddressStatus`),
/// with the pluralizer's known quirks (`DNSResolveCaches` → `DNSResolveCach`).
pub fn display_type(ty: &str) -> String {
    let name = name_part(ty);
    for (plural, singular) in [
        ("statuses", "status"),
        ("sses", "ss"),
        ("ies", "y"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("xes", "x"),
        ("uses", "us"),
    ] {
        let lower = name.to_lowercase();
        if lower.ends_with(plural) {
            let stem = &name[..name.len() - plural.len()];
            let tail = &name[name.len() - plural.len()..];
            let keep_case = |s: &str| {
                if tail.starts_with(|c: char| c.is_uppercase()) {
                    let mut c = s.chars();
                    c.next()
                        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                        .unwrap_or_default()
                } else {
                    s.to_string()
                }
            };
            return format!("{stem}{}", keep_case(singular));
        }
    }
    name.strip_suffix('s').unwrap_or(name).to_string()
}

/// `(aliases after fill, all aliases)` as COSI computes them.
pub fn fill_aliases(ty: &str, explicit: &[&str]) -> (Vec<String>, Vec<String>) {
    let name = name_part(ty);
    let mut aliases: Vec<String> = explicit.iter().map(|s| s.to_string()).collect();
    aliases.push(display_type(ty).to_lowercase());
    let upper: String = name.chars().filter(|c| c.is_uppercase()).collect();
    if upper.chars().count() > 1 {
        aliases.push(upper.to_lowercase());
        if !upper.ends_with('S') {
            aliases.push(format!("{}s", upper.to_lowercase()));
        }
    }
    let mut all = vec![name.to_lowercase()];
    let parts: Vec<&str> = ty.split('.').collect();
    for i in 2..parts.len() {
        all.push(parts[..i].join(".").to_lowercase());
    }
    all.extend(aliases.iter().cloned());
    (aliases, all)
}

/// A definition that keeps exactly the aliases given (no automatic ones, no type-derived ones),
/// as for types that opt out of the automatic aliases.
pub fn explicit_aliases(explicit: &[&str]) -> (Vec<String>, Vec<String>) {
    let aliases: Vec<String> = explicit.iter().map(|s| s.to_string()).collect();
    (aliases.clone(), aliases)
}

/// Definitions and namespaces registered in a state's `meta` namespace.
#[derive(Clone)]
pub struct Registry {
    state: State,
}

impl Registry {
    /// A registry over `state`, with the meta types and namespace registered.
    pub fn new(state: State) -> Result<Registry> {
        let r = Registry { state };
        r.register_namespace(
            META_NAMESPACE,
            "Metadata namespace: resource and namespace definitions.",
        )?;
        r.register(
            Definition::new(RESOURCE_DEFINITION_TYPE, META_NAMESPACE, &["api-resources"])
                .column("Aliases", "{.aliases[:]}"),
        )?;
        r.register(Definition::new(NAMESPACE_TYPE, META_NAMESPACE, &["ns"]))?;
        Ok(r)
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn register(&self, def: Definition) -> Result<()> {
        let id = def.id();
        let mut res = Resource::new(META_NAMESPACE, RESOURCE_DEFINITION_TYPE, &id, def);
        res.metadata.owner = META_OWNER.into();
        match self.state.create(res) {
            Ok(_) | Err(Error::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn register_namespace(&self, name: &str, description: &str) -> Result<()> {
        let mut res = Resource::new(
            META_NAMESPACE,
            NAMESPACE_TYPE,
            name,
            NamespaceSpec {
                description: description.into(),
            },
        );
        res.metadata.owner = META_OWNER.into();
        match self.state.create(res) {
            Ok(_) | Err(Error::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn definitions(&self) -> Vec<Definition> {
        self.state
            .list(META_NAMESPACE, RESOURCE_DEFINITION_TYPE, &LabelQuery::all())
            .iter()
            .filter_map(|r| r.spec::<Definition>().cloned())
            .collect()
    }

    pub fn definition(&self, ty: &str) -> Option<Definition> {
        let ptr = Pointer::new(META_NAMESPACE, RESOURCE_DEFINITION_TYPE, &ty.to_lowercase());
        self.state
            .get(&ptr)
            .ok()
            .and_then(|r| r.spec::<Definition>().cloned())
    }

    /// Resolve what a user typed, case-insensitively, against every definition's id and
    /// aliases. Exactly one match is required.
    pub fn resolve(&self, name: &str) -> Result<Definition> {
        let wanted = name.to_lowercase();
        let matches: Vec<Definition> = self
            .definitions()
            .into_iter()
            .filter(|d| d.id() == wanted || d.all_aliases.contains(&wanted))
            .collect();
        match matches.len() {
            1 => Ok(matches.into_iter().next().expect("one")),
            0 => Err(Error::Denied(format!(
                "resource \"{name}\" is not registered"
            ))),
            _ => Err(Error::Denied(format!(
                "resource type \"{name}\" is ambiguous: {:?}",
                matches.iter().map(|d| d.ty.clone()).collect::<Vec<_>>()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_types_resolve() {
        let r = Registry::new(State::new()).unwrap();
        for name in [
            "rd",
            "rds",
            "resourcedefinition",
            "ResourceDefinitions",
            "api-resources",
            "resourcedefinitions.meta",
        ] {
            assert_eq!(
                r.resolve(name).unwrap().ty,
                RESOURCE_DEFINITION_TYPE,
                "{name}"
            );
        }
        assert_eq!(r.resolve("namespaces").unwrap().ty, NAMESPACE_TYPE);
        r.register(Definition::new(
            "AddressStatuses.net.talos.dev",
            "network",
            &["address", "addresses"],
        ))
        .unwrap();
        for name in [
            "addresses",
            "address",
            "AddressStatus",
            "as",
            "addressstatuses.net.talos.dev",
        ] {
            assert_eq!(
                r.resolve(name).unwrap().ty,
                "AddressStatuses.net.talos.dev",
                "{name}"
            );
        }
        r.register(Definition::new(
            "NetworkStatuses.net.talos.dev",
            "network",
            &[],
        ))
        .unwrap();
        let e = r.resolve("ns").unwrap_err().to_string();
        assert!(e.contains("is ambiguous"), "{e}");
        assert!(r
            .resolve("nope")
            .unwrap_err()
            .to_string()
            .contains("is not registered"));
        let ns: Vec<_> = r
            .state()
            .list(META_NAMESPACE, NAMESPACE_TYPE, &LabelQuery::all())
            .iter()
            .map(|n| n.metadata.id.clone())
            .collect();
        assert_eq!(ns, ["meta"]);
    }
}
