//! Resource types as Rust types. A spec struct that implements [`ResourceType`] names its
//! resource type, default namespace, aliases, print columns and sensitivity, so reads, writes
//! and a controller's declared inputs and outputs are checked by the compiler rather than
//! matched on strings at run time.

use std::sync::Arc;

use crate::controller::{Input, InputKind, Output, ReconcileContext};
use crate::definition::Definition;
use crate::query::LabelQuery;
use crate::resource::{Pointer, Resource, Spec};
use crate::state::{Error, State};

/// A resource type: its spec is `Self`.
pub trait ResourceType: Spec + Clone {
    /// The type name (`AddressStatuses.net.talos.dev`).
    const TYPE: &'static str;
    /// The namespace resources of the type live in unless told otherwise.
    const NAMESPACE: &'static str;
    /// Aliases beyond the automatic ones (`talosctl get <alias>`).
    const ALIASES: &'static [&'static str] = &[];
    /// Print columns: header and JSONPath into the spec.
    const COLUMNS: &'static [(&'static str, &'static str)] = &[];
    /// Specs hold secrets (readable by os:admin only).
    const SENSITIVE: bool = false;
    /// Whether aliases are derived from the type name as well (COSI's default).
    const AUTOMATIC_ALIASES: bool = true;

    /// The definition registered for the type.
    fn definition() -> Definition {
        let mut d = Definition::new(Self::TYPE, Self::NAMESPACE, Self::ALIASES);
        if !Self::AUTOMATIC_ALIASES {
            d = d.without_automatic_aliases(Self::ALIASES);
        }
        for (name, path) in Self::COLUMNS {
            d = d.column(name, path);
        }
        if Self::SENSITIVE {
            d = d.sensitive();
        }
        d
    }

    /// The pointer to resource `id` in the default namespace.
    fn pointer(id: &str) -> Pointer {
        Pointer::new(Self::NAMESPACE, Self::TYPE, id)
    }

    /// A new resource of the type in the default namespace.
    fn resource(id: &str, spec: Self) -> Resource {
        Resource::new(Self::NAMESPACE, Self::TYPE, id, spec)
    }
}

impl Input {
    /// A weak input on every resource of type `T` in its default namespace.
    pub fn of<T: ResourceType>() -> Input {
        Input::new(T::NAMESPACE, T::TYPE, InputKind::Weak)
    }

    /// A weak input on every resource of type `T` in namespace `ns`.
    pub fn of_in<T: ResourceType>(ns: &str) -> Input {
        Input::new(ns, T::TYPE, InputKind::Weak)
    }
}

impl Output {
    /// The exclusive output of type `T` in its default namespace.
    pub fn exclusive_of<T: ResourceType>() -> Output {
        Output::exclusive(T::NAMESPACE, T::TYPE)
    }

    /// A shared output of type `T` in its default namespace.
    pub fn shared_of<T: ResourceType>() -> Output {
        Output::shared(T::NAMESPACE, T::TYPE)
    }

    /// The exclusive output of type `T` in namespace `ns`.
    pub fn exclusive_in<T: ResourceType>(ns: &str) -> Output {
        Output::exclusive(ns, T::TYPE)
    }

    /// A shared output of type `T` in namespace `ns`.
    pub fn shared_in<T: ResourceType>(ns: &str) -> Output {
        Output::shared(ns, T::TYPE)
    }
}

fn spec_of<T: ResourceType>(r: &Resource) -> Option<T> {
    r.spec::<T>().cloned()
}

impl State {
    /// The spec of resource `id` of type `T` (default namespace), if it exists.
    pub fn spec_of<T: ResourceType>(&self, id: &str) -> Option<T> {
        self.get(&T::pointer(id)).ok().as_deref().and_then(spec_of)
    }

    /// Every resource of type `T` in its default namespace: (id, spec).
    pub fn specs_of<T: ResourceType>(&self) -> Vec<(String, T)> {
        self.list(T::NAMESPACE, T::TYPE, &LabelQuery::all())
            .iter()
            .filter_map(|r| Some((r.metadata.id.clone(), spec_of(r)?)))
            .collect()
    }
}

impl ReconcileContext {
    /// The spec of input `id` of type `T` (default namespace), if it exists.
    pub fn spec_of<T: ResourceType>(&self, id: &str) -> Result<Option<T>, Error> {
        Ok(self.get(&T::pointer(id))?.as_deref().and_then(spec_of))
    }

    /// Every readable resource of type `T` in its default namespace: (id, spec).
    pub fn specs_of<T: ResourceType>(&self) -> Result<Vec<(String, T)>, Error> {
        self.specs_in::<T>(T::NAMESPACE)
    }

    /// Every readable resource of type `T` in namespace `ns`: (id, spec).
    pub fn specs_in<T: ResourceType>(&self, ns: &str) -> Result<Vec<(String, T)>, Error> {
        Ok(self
            .list(ns, T::TYPE, &LabelQuery::all())?
            .iter()
            .filter_map(|r| Some((r.metadata.id.clone(), spec_of(r)?)))
            .collect())
    }

    /// Write output `id` of type `T` (default namespace); an unchanged spec writes nothing.
    pub fn put<T: ResourceType>(&mut self, id: &str, spec: T) -> Result<Arc<Resource>, Error> {
        self.modify(T::NAMESPACE, T::TYPE, id, |_| spec)
    }

    /// Write output `id` of type `T` in namespace `ns`; an unchanged spec writes nothing.
    pub fn put_in<T: ResourceType>(
        &mut self,
        ns: &str,
        id: &str,
        spec: T,
    ) -> Result<Arc<Resource>, Error> {
        self.modify(ns, T::TYPE, id, |_| spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Debug, Clone, PartialEq, Serialize)]
    struct Greeting {
        text: String,
    }

    impl ResourceType for Greeting {
        const TYPE: &'static str = "Greetings.test.talos.dev";
        const NAMESPACE: &'static str = "test";
        const ALIASES: &'static [&'static str] = &["hello"];
        const COLUMNS: &'static [(&'static str, &'static str)] = &[("Text", "{.text}")];
    }

    #[test]
    fn typed_reads_and_definition() {
        let state = State::new();
        state
            .create(Greeting::resource("a", Greeting { text: "hi".into() }))
            .unwrap();
        assert_eq!(state.spec_of::<Greeting>("a").unwrap().text, "hi");
        assert!(state.spec_of::<Greeting>("b").is_none());
        assert_eq!(state.specs_of::<Greeting>().len(), 1);
        let d = Greeting::definition();
        assert_eq!(d.default_namespace, "test");
        assert!(
            d.all_aliases.iter().any(|a| a == "hello"),
            "{:?}",
            d.all_aliases
        );
        assert_eq!(d.print_columns[0].json_path, "{.text}");
        assert_eq!(Input::of::<Greeting>().ty, Greeting::TYPE);
        assert_eq!(Output::exclusive_of::<Greeting>().namespace, "test");
    }
}
