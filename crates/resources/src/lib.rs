//! The resource and controller runtime (the COSI model): every piece of node state is a
//! resource in a namespaced, versioned, watchable state; every piece of behaviour is a
//! controller that reads its declared inputs and writes the outputs it owns.

mod controller;
mod definition;
mod graph;
mod query;
mod resource;
mod state;
mod typed;
mod watch;

pub use controller::{
    Controller, ControllerError, ControllerInfo, ControllerStats, Input, InputKind, Output,
    OutputKind, ReconcileContext, Runtime, RuntimeError, RuntimeHandle,
};
pub use definition::{
    display_type, explicit_aliases, fill_aliases, Definition, NamespaceSpec, Registry,
    NAMESPACE_TYPE, RESOURCE_DEFINITION_TYPE,
};
pub use graph::dependency_dot;
pub use query::{LabelQuery, Op, Term};
pub use resource::{Metadata, Phase, Pointer, Resource, Spec};
pub use state::{Error, Result, State, WatchKindOptions, HISTORY};
pub use typed::ResourceType;
pub use watch::{Event, EventKind, Watcher, DEFAULT_WATCH_BUFFER, OVERRUN};
