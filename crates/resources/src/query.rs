//! Label queries: every term must match.

use std::collections::BTreeMap;

/// How a term compares a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The label is present.
    Exists,
    /// The label equals the value.
    Equal(String),
    /// The label equals one of the values.
    In(Vec<String>),
    /// The label sorts before the value (as text).
    Lt(String),
    /// The label sorts before or equal to the value (as text).
    Lte(String),
    /// The label is a number below the value.
    LtNumeric(i64),
    /// The label is a number below or equal to the value.
    LteNumeric(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub key: String,
    pub op: Op,
    /// Negates the term.
    pub invert: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelQuery {
    pub terms: Vec<Term>,
}

impl LabelQuery {
    pub fn all() -> LabelQuery {
        LabelQuery::default()
    }

    pub fn term(mut self, key: &str, op: Op) -> LabelQuery {
        self.terms.push(Term {
            key: key.into(),
            op,
            invert: false,
        });
        self
    }

    pub fn not(mut self, key: &str, op: Op) -> LabelQuery {
        self.terms.push(Term {
            key: key.into(),
            op,
            invert: true,
        });
        self
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.terms.iter().all(|t| t.matches(labels))
    }
}

impl Term {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        let hit = match (&self.op, v) {
            (_, None) => false,
            (Op::Exists, Some(_)) => true,
            (Op::Equal(x), Some(v)) => v == x,
            (Op::In(xs), Some(v)) => xs.contains(v),
            (Op::Lt(x), Some(v)) => v < x,
            (Op::Lte(x), Some(v)) => v <= x,
            (Op::LtNumeric(x), Some(v)) => v.parse::<i64>().is_ok_and(|n| n < *x),
            (Op::LteNumeric(x), Some(v)) => v.parse::<i64>().is_ok_and(|n| n <= *x),
        };
        hit != self.invert
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn terms() {
        let l = labels(&[("role", "cp"), ("n", "10"), ("s", "b")]);
        assert!(LabelQuery::all().matches(&l));
        assert!(LabelQuery::all().term("role", Op::Exists).matches(&l));
        assert!(!LabelQuery::all().term("zone", Op::Exists).matches(&l));
        assert!(LabelQuery::all().not("zone", Op::Exists).matches(&l));
        assert!(LabelQuery::all()
            .term("role", Op::Equal("cp".into()))
            .matches(&l));
        assert!(LabelQuery::all()
            .term("role", Op::In(vec!["w".into(), "cp".into()]))
            .matches(&l));
        assert!(LabelQuery::all().term("s", Op::Lt("c".into())).matches(&l));
        assert!(LabelQuery::all().term("s", Op::Lte("b".into())).matches(&l));
        assert!(
            LabelQuery::all().term("n", Op::Lt("9".into())).matches(&l),
            "as text, 10 < 9"
        );
        assert!(
            !LabelQuery::all().term("n", Op::LtNumeric(9)).matches(&l),
            "as numbers, it is not"
        );
        assert!(LabelQuery::all().term("n", Op::LtNumeric(11)).matches(&l));
        assert!(LabelQuery::all().term("n", Op::LteNumeric(10)).matches(&l));
        assert!(
            !LabelQuery::all().term("s", Op::LtNumeric(100)).matches(&l),
            "not a number"
        );
        assert!(LabelQuery::all()
            .not("role", Op::Equal("w".into()))
            .matches(&l));
    }
}
