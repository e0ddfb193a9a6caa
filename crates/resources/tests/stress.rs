//! Eight controllers chained through resources converge after 10,000 random input changes,
//! with no lost or duplicated final outputs.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use resources::{
    Controller, ControllerError, Input, LabelQuery, Output, Pointer, ReconcileContext, Resource,
    Runtime, State,
};

const NS: &str = "stress";

struct Stage {
    name: String,
    from: String,
    to: String,
}

#[async_trait::async_trait]
impl Controller for Stage {
    fn name(&self) -> &str {
        &self.name
    }
    fn inputs(&self) -> Vec<Input> {
        vec![Input::weak(NS, &self.from)]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive(NS, &self.to)]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        for r in ctx.list(NS, &self.from, &LabelQuery::all())? {
            let v = *r.spec::<u64>().expect("u64 spec");
            ctx.modify(NS, &self.to, &r.metadata.id, |_| v + 1)?;
        }
        Ok(())
    }
}

fn stage_type(i: usize) -> String {
    format!("Stage{i}s.stress.dev")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_chained_controllers_converge() {
    let state = State::new();
    let mut rt = Runtime::new(state.clone());
    for i in 1..=8 {
        rt.register(Stage {
            name: format!("stage{i}"),
            from: stage_type(i - 1),
            to: stage_type(i),
        })
        .unwrap();
    }
    let _h = rt.start();

    let mut rng = StdRng::seed_from_u64(7);
    let mut model: BTreeMap<String, u64> = BTreeMap::new();
    let input_ty = stage_type(0);
    for step in 0..10_000u64 {
        let id = format!("r{}", rng.gen_range(0..64));
        let ptr = Pointer::new(NS, &input_ty, &id);
        if model.contains_key(&id) && rng.gen_bool(0.2) {
            state.destroy(&ptr, "user").unwrap();
            model.remove(&id);
        } else if let Ok(cur) = state.get(&ptr) {
            state.update(cur.with_spec(step)).unwrap();
            model.insert(id, step);
        } else {
            let mut r = Resource::new(NS, &input_ty, &id, step);
            r.metadata.owner = "user".into();
            state.create(r).unwrap();
            model.insert(id, step);
        }
        if step % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }

    let want: Vec<(String, u64)> = model.iter().map(|(k, v)| (k.clone(), v + 8)).collect();
    let last = stage_type(8);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got: Vec<(String, u64)> = state
            .list(NS, &last, &LabelQuery::all())
            .iter()
            .map(|r| (r.metadata.id.clone(), *r.spec::<u64>().unwrap()))
            .collect();
        if got == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no convergence: {} of {} outputs",
            got.len(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every stage holds exactly the live ids, once each.
    for i in 1..=8 {
        let ids: Vec<String> = state
            .list(NS, &stage_type(i), &LabelQuery::all())
            .iter()
            .map(|r| r.metadata.id.clone())
            .collect();
        assert_eq!(ids, model.keys().cloned().collect::<Vec<_>>(), "stage {i}");
    }
}
