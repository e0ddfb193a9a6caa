//! `patch(A, diff(A, B)) == B`: on the upstream configdiff fixture and on random configs.

mod common;

use machinery::config::{Shapes, Ty};
use machinery::configdiff::diff;
use machinery::patch::{apply, Patch};
use machinery::{Config, Document};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};

fn round_trip(a: &Config, b: &Config) -> Config {
    let text = diff(a, b);
    if text.is_empty() {
        return a.clone();
    }
    let patch = Patch::parse(&text).unwrap_or_else(|e| panic!("diff does not load: {e}\n{text}"));
    apply(a.clone(), &[patch]).unwrap_or_else(|e| panic!("diff does not apply: {e}\n{text}"))
}

#[test]
fn configdiff_fixture() {
    let Some(d) = common::dir() else { return };
    let d = d.join("config/configdiff");
    let a = Config::load(d.join("original.yaml")).unwrap();
    let b = Config::load(d.join("modified.yaml")).unwrap();
    let got = round_trip(&a, &b);
    assert_eq!(got.encode(), b.encode_canonical());
    assert_eq!(
        common::read(&d.join("modified.yaml")),
        got.encode(),
        "re-encodes byte-equal to the modified file"
    );
}

const WORDS: [&str; 6] = ["a", "eth0", "10.0.0.1/24", "x.y", "", "b"];

fn random_value(rng: &mut StdRng, ty: &Ty, depth: u32) -> Value {
    match ty {
        Ty::String => Value::from(WORDS[rng.gen_range(0..WORDS.len())]),
        Ty::Bool => Value::from(rng.gen_bool(0.5)),
        Ty::Int | Ty::Octal => Value::from(rng.gen_range(0..4)),
        Ty::Float => Value::from(rng.gen_range(0..4) as f64 / 2.0),
        Ty::Any => match rng.gen_range(0..3) {
            0 => Value::from(WORDS[rng.gen_range(0..WORDS.len())]),
            1 => Value::Array((0..rng.gen_range(0..3)).map(Value::from).collect()),
            _ => {
                let mut m = Map::new();
                for k in ["p", "q"] {
                    if rng.gen_bool(0.5) {
                        m.insert(k.into(), Value::from(rng.gen_range(0..3)));
                    }
                }
                Value::Object(m)
            }
        },
        Ty::List(inner) => {
            let n = if depth > 3 { 0 } else { rng.gen_range(0..3) };
            Value::Array(
                (0..n)
                    .map(|_| random_value(rng, inner, depth + 1))
                    .collect(),
            )
        }
        Ty::Map(inner) => {
            let mut m = Map::new();
            for k in ["k1", "k2", "k3"] {
                if rng.gen_bool(0.4) {
                    m.insert(k.into(), random_value(rng, inner, depth + 1));
                }
            }
            Value::Object(m)
        }
        Ty::Struct(name) => {
            let mut m = Map::new();
            let p = 0.5 / (depth as f64 + 1.0);
            for f in Shapes::get().fields(name) {
                if depth == 0 && f.name == "version" {
                    m.insert("version".into(), "v1alpha1".into());
                } else if rng.gen_bool(p) {
                    m.insert(f.name.clone(), random_value(rng, &f.ty, depth + 1));
                }
            }
            Value::Object(m)
        }
    }
}

fn random_config(seed: u64) -> Config {
    let mut rng = StdRng::seed_from_u64(seed);
    let ty = Ty::Struct("v1alpha1.Config".into());
    let mut docs = vec![Document::from_value(random_value(&mut rng, &ty, 0)).unwrap()];
    for (i, kind) in ["LinkConfig", "DummyLinkConfig"].iter().enumerate() {
        if rng.gen_bool(0.5) {
            let name = Shapes::get().kinds[*kind].clone();
            let mut v = random_value(&mut rng, &Ty::Struct(name), 1);
            v["apiVersion"] = "v1alpha1".into();
            v["kind"] = (*kind).into();
            v["name"] = format!("l{i}").into();
            docs.push(Document::from_value(v).unwrap());
        }
    }
    Config::from_documents(docs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn patch_of_diff_gives_b(sa in any::<u64>(), sb in any::<u64>()) {
        let a = random_config(sa);
        let b = random_config(sb);
        let got = round_trip(&a, &b);
        prop_assert_eq!(got.encode(), b.encode());
    }

    #[test]
    fn diff_of_equal_configs_is_empty(s in any::<u64>()) {
        let a = random_config(s);
        prop_assert_eq!(diff(&a, &a), "");
    }
}
