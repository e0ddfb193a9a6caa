//! Resources: a pointer `(namespace, type, id)`, versioned metadata and a typed spec.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{json, Value};

/// Where a resource lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pointer {
    pub namespace: Arc<str>,
    pub ty: Arc<str>,
    pub id: String,
}

impl Pointer {
    pub fn new(namespace: &str, ty: &str, id: &str) -> Pointer {
        Pointer {
            namespace: namespace.into(),
            ty: ty.into(),
            id: id.into(),
        }
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({}/{})", self.ty, self.namespace, self.id)
    }
}

/// Lifecycle phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    #[default]
    Running,
    TearingDown,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::TearingDown => "tearingDown",
        }
    }
}

/// Resource metadata. `version` is bumped by the state on every change.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub namespace: Arc<str>,
    pub ty: Arc<str>,
    pub id: String,
    pub version: u64,
    pub owner: Arc<str>,
    pub phase: Phase,
    pub created: SystemTime,
    pub updated: SystemTime,
    pub finalizers: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl Metadata {
    pub fn new(namespace: &str, ty: &str, id: &str) -> Metadata {
        Metadata {
            namespace: namespace.into(),
            ty: ty.into(),
            id: id.into(),
            version: 0,
            owner: "".into(),
            phase: Phase::Running,
            created: SystemTime::UNIX_EPOCH,
            updated: SystemTime::UNIX_EPOCH,
            finalizers: Vec::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    pub fn pointer(&self) -> Pointer {
        Pointer {
            namespace: self.namespace.clone(),
            ty: self.ty.clone(),
            id: self.id.clone(),
        }
    }

    pub fn to_value(&self) -> Value {
        let mut m = json!({
            "namespace": &*self.namespace,
            "type": &*self.ty,
            "id": self.id,
            "version": self.version,
            "owner": &*self.owner,
            "phase": self.phase.as_str(),
            "created": rfc3339(self.created),
            "updated": rfc3339(self.updated),
        });
        if !self.labels.is_empty() {
            m["labels"] = json!(self.labels);
        }
        if !self.annotations.is_empty() {
            m["annotations"] = json!(self.annotations);
        }
        if !self.finalizers.is_empty() {
            m["finalizers"] = json!(self.finalizers);
        }
        m
    }
}

fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A resource's spec: any serializable value; compared to skip no-op updates.
pub trait Spec: Any + Send + Sync + fmt::Debug {
    fn to_value(&self) -> Value;
    fn as_any(&self) -> &dyn Any;
    fn spec_eq(&self, other: &dyn Spec) -> bool;
}

impl<T: Serialize + fmt::Debug + PartialEq + Send + Sync + 'static> Spec for T {
    fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn spec_eq(&self, other: &dyn Spec) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }
}

/// A resource: metadata and a shared, immutable spec.
#[derive(Debug, Clone)]
pub struct Resource {
    pub metadata: Metadata,
    pub spec: Arc<dyn Spec>,
}

impl Resource {
    pub fn new(namespace: &str, ty: &str, id: &str, spec: impl Spec) -> Resource {
        Resource {
            metadata: Metadata::new(namespace, ty, id),
            spec: Arc::new(spec),
        }
    }

    pub fn pointer(&self) -> Pointer {
        self.metadata.pointer()
    }

    /// The spec as its concrete type.
    pub fn spec<T: 'static>(&self) -> Option<&T> {
        self.spec.as_any().downcast_ref::<T>()
    }

    /// A copy with another spec (same metadata, to be written back).
    pub fn with_spec(&self, spec: impl Spec) -> Resource {
        Resource {
            metadata: self.metadata.clone(),
            spec: Arc::new(spec),
        }
    }

    /// `{metadata, spec}` as one value (for YAML and JSON output).
    pub fn to_value(&self) -> Value {
        json!({"metadata": self.metadata.to_value(), "spec": self.spec.to_value()})
    }

    pub fn to_yaml(&self) -> String {
        machinery::yaml::to_string(&self.to_value())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.to_value()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize)]
    struct Addr {
        address: String,
    }

    #[test]
    fn typed_spec_and_serialization() {
        let r = Resource::new(
            "network",
            "AddressStatuses.net.talos.dev",
            "eth0/10.0.0.1/24",
            Addr {
                address: "10.0.0.1/24".into(),
            },
        );
        assert_eq!(r.spec::<Addr>().unwrap().address, "10.0.0.1/24");
        assert!(r.spec::<String>().is_none());
        let y = r.to_yaml();
        assert!(y.contains("    id: eth0/10.0.0.1/24\n"), "{y}");
        assert!(y.contains("spec:\n    address: 10.0.0.1/24\n"), "{y}");
        assert!(r.to_json().contains("\"phase\": \"running\""));
        assert!(r.spec.spec_eq(&Addr {
            address: "10.0.0.1/24".into()
        }));
    }
}
