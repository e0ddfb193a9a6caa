//! network.*MergeController: specs merged across layers.

use std::collections::BTreeMap;

use resources::{Controller, ControllerError, Input, LabelQuery, Output, ReconcileContext};

use crate::controllers::network::layers::{layer_rank, Layered};
use types::{NETWORK_CONFIG_NS, NETWORK_NS};

/// Merges a spec type from `network-config` into `network`: the highest layer wins.
pub struct MergeController<S> {
    name: &'static str,
    _spec: std::marker::PhantomData<fn() -> S>,
}

impl<S> MergeController<S> {
    pub fn new(name: &'static str) -> MergeController<S> {
        MergeController {
            name,
            _spec: std::marker::PhantomData,
        }
    }
}

#[async_trait::async_trait]
impl<S: Layered> Controller for MergeController<S> {
    fn name(&self) -> &str {
        self.name
    }
    fn inputs(&self) -> Vec<Input> {
        vec![Input::of_in::<S>(NETWORK_CONFIG_NS)]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_in::<S>(NETWORK_NS)]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let mut merged: BTreeMap<String, S> = BTreeMap::new();
        let mut specs = Vec::new();
        for r in ctx.list(NETWORK_CONFIG_NS, S::TYPE, &LabelQuery::all())? {
            let Some(spec) = r.spec::<S>() else { continue };
            specs.push(spec.clone());
        }
        // Lowest layer first, each higher one merged over it.
        specs.sort_by_key(|s| layer_rank(s.layer()));
        for spec in specs {
            match merged.entry(spec.merged_id()) {
                std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().merge(&spec),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(spec);
                }
            }
        }
        for (id, spec) in merged {
            ctx.put_in::<S>(NETWORK_NS, &id, spec)?;
        }
        Ok(())
    }
}
