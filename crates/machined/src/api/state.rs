//! The COSI State service: Get, List and Watch of the node's resources. Everyone may read;
//! sensitive types need os:admin.

use std::pin::Pin;
use std::sync::Arc;

use api::cosi::label_term::Operation;
use api::cosi::state_server::State as StateApi;
use api::cosi::{
    self as pb, Event, EventType, GetRequest, GetResponse, ListRequest, ListResponse, WatchRequest,
    WatchResponse,
};
use futures::Stream;
use resources::{EventKind, LabelQuery, Op, Pointer, Resource, WatchKindOptions, Watcher};
use tonic::{Request, Response, Status};

use super::auth::Roles;
use crate::node::Node;

pub struct StateService {
    pub node: Arc<Node>,
}

fn timestamp(t: std::time::SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// A resource as the API carries it: metadata, and the spec as YAML.
pub fn to_proto(r: &Resource) -> pb::Resource {
    let m = &r.metadata;
    pb::Resource {
        metadata: Some(pb::Metadata {
            namespace: m.namespace.to_string(),
            r#type: m.ty.to_string(),
            id: m.id.clone(),
            version: m.version.to_string(),
            owner: m.owner.to_string(),
            phase: m.phase.as_str().into(),
            created: Some(timestamp(m.created)),
            updated: Some(timestamp(m.updated)),
            finalizers: m.finalizers.clone(),
            labels: m.labels.clone().into_iter().collect(),
            annotations: m.annotations.clone().into_iter().collect(),
        }),
        spec: Some(pb::Spec {
            proto_spec: Vec::new(),
            yaml_spec: machinery::yaml::to_string(&r.spec.to_value()),
        }),
    }
}

fn label_query(queries: &[pb::LabelQuery]) -> Result<LabelQuery, Status> {
    let mut q = LabelQuery::all();
    for term in queries.iter().flat_map(|lq| &lq.terms) {
        let first = || term.value.first().cloned().unwrap_or_default();
        let number = || {
            first()
                .parse::<i64>()
                .map_err(|_| Status::invalid_argument(format!("label {}: not a number", term.key)))
        };
        let (op, invert) = match Operation::try_from(term.op).unwrap_or(Operation::Exists) {
            Operation::Exists => (Op::Exists, term.invert),
            Operation::NotExists => (Op::Exists, !term.invert),
            Operation::Equal => (Op::Equal(first()), term.invert),
            Operation::In => (Op::In(term.value.clone()), term.invert),
            Operation::Lt => (Op::Lt(first()), term.invert),
            Operation::Lte => (Op::Lte(first()), term.invert),
            Operation::LtNumeric => (Op::LtNumeric(number()?), term.invert),
            Operation::LteNumeric => (Op::LteNumeric(number()?), term.invert),
        };
        q = if invert {
            q.not(&term.key, op)
        } else {
            q.term(&term.key, op)
        };
    }
    Ok(q)
}

impl StateService {
    /// Sensitive types (secrets, the machine config) are for os:admin only.
    fn check_read<T>(&self, req: &Request<T>, ty: &str) -> Result<(), Status> {
        let sensitive = self
            .node
            .registry
            .definition(ty)
            .is_some_and(|d| d.is_sensitive());
        let admin = req.extensions().get::<Roles>().is_some_and(Roles::is_admin);
        if sensitive && !admin {
            return Err(Status::permission_denied(format!(
                "resource type {ty} is sensitive: os:admin only"
            )));
        }
        Ok(())
    }
}

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn event_type(k: EventKind) -> EventType {
    match k {
        EventKind::Created => EventType::Created,
        EventKind::Updated => EventType::Updated,
        EventKind::Destroyed => EventType::Destroyed,
        EventKind::Bootstrapped => EventType::Bootstrapped,
        EventKind::Errored => EventType::Errored,
    }
}

fn watch_stream(w: Watcher) -> EventStream<WatchResponse> {
    Box::pin(futures::stream::unfold(w, |mut w| async move {
        let ev = w.next().await?;
        let e = Event {
            resource: ev.resource.as_deref().map(to_proto),
            event_type: event_type(ev.kind) as i32,
            old: ev.old.as_deref().map(to_proto),
            error: ev.error.clone(),
            bookmark: Some(ev.bookmark.to_be_bytes().to_vec()),
        };
        Some((Ok(WatchResponse { event: vec![e] }), w))
    }))
}

#[tonic::async_trait]
impl StateApi for StateService {
    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.check_read(&req, &req.get_ref().r#type)?;
        let r = req.into_inner();
        let res = self
            .node
            .state
            .get(&Pointer::new(&r.namespace, &r.r#type, &r.id))
            .map_err(|e| Status::not_found(e.to_string()))?;
        Ok(Response::new(GetResponse {
            resource: Some(to_proto(&res)),
        }))
    }

    type ListStream = EventStream<ListResponse>;

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<Self::ListStream>, Status> {
        self.check_read(&req, &req.get_ref().r#type)?;
        let r = req.into_inner();
        let opts = r.options.unwrap_or_default();
        if opts.id_query.as_ref().is_some_and(|q| !q.regexp.is_empty()) {
            return Err(Status::unimplemented("id queries are not supported"));
        }
        let query = label_query(&opts.label_query)?;
        let items: Vec<Result<ListResponse, Status>> = self
            .node
            .state
            .list(&r.namespace, &r.r#type, &query)
            .iter()
            .map(|res| {
                Ok(ListResponse {
                    resource: Some(to_proto(res)),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(items))))
    }

    type WatchStream = EventStream<WatchResponse>;

    async fn watch(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.check_read(&req, &req.get_ref().r#type)?;
        let r = req.into_inner();
        let opts = r.options.unwrap_or_default();
        let watcher = match r.id {
            Some(id) if !id.is_empty() => {
                self.node
                    .state
                    .watch(&Pointer::new(&r.namespace, &r.r#type, &id))
            }
            _ => {
                let since = opts.start_from_bookmark.as_ref().and_then(|b| {
                    <[u8; 8]>::try_from(b.as_slice())
                        .ok()
                        .map(u64::from_be_bytes)
                });
                self.node
                    .state
                    .watch_kind(
                        &r.namespace,
                        &r.r#type,
                        WatchKindOptions {
                            bootstrap: opts.bootstrap_contents,
                            tail: (opts.tail_events > 0).then_some(opts.tail_events as usize),
                            since,
                            labels: Some(label_query(&opts.label_query)?),
                            buffer: None,
                        },
                    )
                    .map_err(|e| Status::invalid_argument(e.to_string()))?
            }
        };
        Ok(Response::new(watch_stream(watcher)))
    }
}
