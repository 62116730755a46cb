//! Quality gates before a rollout: an endpoint's `promote_if` conditions on the new model
//! version's metrics (its run's `metrics.json`), absolute (`auc >= 0.80`) or against the
//! version serving now (`auc >= serving.auc - 0.005`, `loss <= serving.loss`). A version
//! that fails one is registered (its lineage kept) but not rolled out: the endpoint's
//! change fails with the condition and the values, and traffic stays where it is (the
//! apply checks them: `apply/promote.rs`).

use std::fmt;

use serde_json::Value;

/// `<metric> <op> <number>` or `<metric> <op> serving.<metric> [± <number>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub metric: String,
    pub op: Op,
    pub rhs: Rhs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rhs {
    Number(f64),
    /// The serving version's metric, plus an offset.
    Serving {
        metric: String,
        offset: f64,
    },
}

impl Op {
    const ALL: [(&'static str, Op); 6] = [
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        (">", Op::Gt),
        ("<", Op::Lt),
    ];

    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Ge => a >= b,
            Op::Gt => a > b,
            Op::Le => a <= b,
            Op::Lt => a < b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }

    fn text(self) -> &'static str {
        Op::ALL
            .iter()
            .find(|(_, o)| *o == self)
            .map_or("?", |(t, _)| t)
    }
}

/// Why a condition does not parse; the text says what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn is_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'))
}

fn number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, ParseError> {
        let (at, op_text, op) = Op::ALL
            .iter()
            .filter_map(|(t, op)| text.find(t).map(|at| (at, *t, *op)))
            .min_by_key(|(at, t, _)| (*at, std::cmp::Reverse(t.len())))
            .ok_or_else(|| {
                ParseError(format!(
                    "`{text}` has no comparison (one of >=, >, <=, <, ==, !=)"
                ))
            })?;
        let metric = text[..at].trim();
        let rest = text[at + op_text.len()..].trim();
        if !is_name(metric) {
            return Err(ParseError(format!(
                "`{metric}` is not a metric name (letters, digits, `_` and `.`)"
            )));
        }
        let rhs = if let Some(serving) = rest.strip_prefix("serving.") {
            let split = serving.find(['+', '-']).filter(|i| *i > 0);
            let (name, offset) = match split {
                Some(i) => {
                    let sign = if serving[i..].starts_with('-') {
                        -1.0
                    } else {
                        1.0
                    };
                    let value = number(&serving[i + 1..]).ok_or_else(|| {
                        ParseError(format!(
                            "`{}` is not a number to add to the serving version's metric",
                            serving[i + 1..].trim()
                        ))
                    })?;
                    (serving[..i].trim(), sign * value)
                }
                None => (serving.trim(), 0.0),
            };
            if !is_name(name) {
                return Err(ParseError(format!("`serving.{name}` names no metric")));
            }
            Rhs::Serving {
                metric: name.to_string(),
                offset,
            }
        } else {
            Rhs::Number(number(rest).ok_or_else(|| {
                ParseError(format!(
                    "`{rest}` is neither a number nor `serving.<metric>` (with `+ n` or `- n`)"
                ))
            })?)
        };
        Ok(Condition {
            metric: metric.to_string(),
            op,
            rhs,
        })
    }

    /// The metric names it reads: its own, and the serving version's it compares with.
    pub fn metrics(&self) -> Vec<&str> {
        match &self.rhs {
            Rhs::Number(_) => vec![self.metric.as_str()],
            Rhs::Serving { metric, .. } => vec![self.metric.as_str(), metric.as_str()],
        }
    }

    /// Whether the candidate's metrics pass, with the values compared; `None` when it
    /// compares with a serving version there is none of (a first rollout).
    pub fn check(
        &self,
        candidate: &Value,
        serving: Option<&Value>,
    ) -> Option<Result<String, String>> {
        let value = |metrics: &Value, name: &str| metrics.get(name).and_then(Value::as_f64);
        let Some(a) = value(candidate, &self.metric) else {
            let known: Vec<&String> = candidate
                .as_object()
                .map(|m| m.keys().collect())
                .unwrap_or_default();
            return Some(Err(format!(
                "`{self}`: the new version has no metric `{}` (it has: {})",
                self.metric,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        };
        let (b, what) = match &self.rhs {
            Rhs::Number(n) => (*n, format!("{n}")),
            Rhs::Serving { metric, offset } => {
                let serving = serving?;
                let Some(s) = value(serving, metric) else {
                    return Some(Err(format!(
                        "`{self}`: the serving version has no metric `{metric}`"
                    )));
                };
                (
                    s + offset,
                    format!("serving.{metric} = {s}{}", offset_text(*offset)),
                )
            }
        };
        let shown = format!("{} = {a}, {what}", self.metric);
        Some(if self.op.holds(a, b) {
            Ok(format!("`{self}` holds ({shown})"))
        } else {
            Err(format!("`{self}` fails ({shown})"))
        })
    }
}

fn offset_text(offset: f64) -> String {
    if offset == 0.0 {
        String::new()
    } else if offset > 0.0 {
        format!(" + {offset}")
    } else {
        format!(" - {}", -offset)
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rhs {
            Rhs::Number(n) => write!(f, "{} {} {n}", self.metric, self.op.text()),
            Rhs::Serving { metric, offset } => write!(
                f,
                "{} {} serving.{metric}{}",
                self.metric,
                self.op.text(),
                offset_text(*offset)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_absolute_and_relative_conditions() {
        let c = Condition::parse("auc >= 0.80").unwrap();
        assert_eq!(
            (c.metric.as_str(), c.op, &c.rhs),
            ("auc", Op::Ge, &Rhs::Number(0.8))
        );
        let c = Condition::parse("auc >= serving.auc - 0.005").unwrap();
        assert_eq!(
            c.rhs,
            Rhs::Serving {
                metric: "auc".into(),
                offset: -0.005
            }
        );
        assert_eq!(c.to_string(), "auc >= serving.auc - 0.005");
        let c = Condition::parse("loss<=serving.loss").unwrap();
        assert_eq!(
            (c.op, c.to_string().as_str()),
            (Op::Le, "loss <= serving.loss")
        );
        assert!(Condition::parse("auc")
            .unwrap_err()
            .0
            .contains("no comparison"));
        assert!(Condition::parse("auc >= high")
            .unwrap_err()
            .0
            .contains("neither a number"));
        assert!(Condition::parse(">= 3")
            .unwrap_err()
            .0
            .contains("not a metric name"));
    }

    #[test]
    fn checks_against_the_values() {
        let c = Condition::parse("auc >= serving.auc - 0.005").unwrap();
        let new = json!({"auc": 0.80});
        assert_eq!(
            c.check(&new, Some(&json!({"auc": 0.81}))),
            Some(Err(
                "`auc >= serving.auc - 0.005` fails (auc = 0.8, serving.auc = 0.81 - 0.005)".into()
            ))
        );
        assert!(matches!(
            c.check(&new, Some(&json!({"auc": 0.804}))),
            Some(Ok(_))
        ));
        assert_eq!(c.check(&new, None), None);
        let missing = Condition::parse("f1 > 0.5")
            .unwrap()
            .check(&new, None)
            .unwrap()
            .unwrap_err();
        assert!(
            missing.contains("has no metric `f1` (it has: auc)"),
            "{missing}"
        );
    }
}
