//! Label selectors (`metav1.LabelSelector`): `matchLabels` and
//! `matchExpressions`, all terms ANDed; an empty selector selects everything.

use std::collections::{BTreeMap, BTreeSet};

use super::ModelError;

/// Labels of a pod or namespace.
pub type Labels = BTreeMap<String, String>;

/// One `matchExpressions` operator with its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    /// The label is present and its value is one of these.
    In(BTreeSet<String>),
    /// The label is absent, or present with a value not among these.
    NotIn(BTreeSet<String>),
    /// The label is present, whatever its value.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One term of a selector: `key` tested with `op`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The test.
    pub op: Operator,
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            Operator::In(values) => value.is_some_and(|v| values.contains(v)),
            Operator::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A validated label selector. `matchLabels` entries are held as `In` terms
/// with one value, as the API server itself treats them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    /// The terms, all of which must hold.
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// The empty selector: selects everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Whether every term holds for `labels`.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Builds a selector from the API type, rejecting what the API server
    /// would reject (unknown operators, `In` without values, `Exists` with).
    pub fn from_api(
        s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> Result<Self, ModelError> {
        let mut requirements = Vec::new();
        for (k, v) in s.match_labels.iter().flatten() {
            requirements.push(Requirement {
                key: k.clone(),
                op: Operator::In(BTreeSet::from([v.clone()])),
            });
        }
        for e in s.match_expressions.iter().flatten() {
            let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
            let op = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(ModelError::invalid(format!(
                        "matchExpressions key {:?}: operator {} needs values",
                        e.key, e.operator
                    )))
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(ModelError::invalid(format!(
                        "matchExpressions key {:?}: operator {} takes no values",
                        e.key, e.operator
                    )))
                }
                "In" => Operator::In(values),
                "NotIn" => Operator::NotIn(values),
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(ModelError::invalid(format!(
                        "matchExpressions key {:?}: unknown operator {other:?} \
                         (expected In, NotIn, Exists or DoesNotExist)",
                        e.key
                    )))
                }
            };
            requirements.push(Requirement {
                key: e.key.clone(),
                op,
            });
        }
        Ok(Self { requirements })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn sel(ml: &[(&str, &str)], me: Vec<LabelSelectorRequirement>) -> Selector {
        Selector::from_api(&LabelSelector {
            match_labels: (!ml.is_empty()).then(|| labels(ml)),
            match_expressions: (!me.is_empty()).then_some(me),
        })
        .unwrap()
    }

    #[test]
    fn empty_selector_selects_everything() {
        let s = sel(&[], vec![]);
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_needs_every_pair() {
        let s = sel(&[("app", "web"), ("tier", "fe")], vec![]);
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "be")])));
    }

    #[test]
    fn each_operator() {
        let in_ = sel(&[], vec![expr("e", "In", &["a", "b"])]);
        assert!(in_.matches(&labels(&[("e", "a")])));
        assert!(!in_.matches(&labels(&[("e", "c")])));
        assert!(!in_.matches(&labels(&[])));

        let not_in = sel(&[], vec![expr("e", "NotIn", &["a"])]);
        assert!(!not_in.matches(&labels(&[("e", "a")])));
        assert!(not_in.matches(&labels(&[("e", "c")])));
        assert!(
            not_in.matches(&labels(&[])),
            "NotIn holds when the key is absent"
        );

        let exists = sel(&[], vec![expr("e", "Exists", &[])]);
        assert!(exists.matches(&labels(&[("e", "")])));
        assert!(!exists.matches(&labels(&[("f", "x")])));

        let dne = sel(&[], vec![expr("e", "DoesNotExist", &[])]);
        assert!(!dne.matches(&labels(&[("e", "")])));
        assert!(dne.matches(&labels(&[("f", "x")])));
    }

    #[test]
    fn labels_and_expressions_are_anded() {
        let s = sel(&[("app", "web")], vec![expr("env", "NotIn", &["prod"])]);
        assert!(s.matches(&labels(&[("app", "web"), ("env", "dev")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("app", "db")])));
    }

    #[test]
    fn invalid_expressions_are_rejected() {
        for (op, values, needle) in [
            ("Equals", &["a"][..], "unknown operator"),
            ("In", &[][..], "needs values"),
            ("NotIn", &[][..], "needs values"),
            ("Exists", &["a"][..], "takes no values"),
            ("DoesNotExist", &["a"][..], "takes no values"),
        ] {
            let err = Selector::from_api(&LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![expr("k", op, values)]),
            })
            .unwrap_err();
            assert!(err.to_string().contains(needle), "{op}: {err}");
        }
    }
}
