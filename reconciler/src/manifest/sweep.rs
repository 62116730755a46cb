//! `[job.<name>.sweep]`: a hyperparameter search. Every combination of the `params`
//! values is a trial, a run of the job with `{{ params.<name> }}` (and
//! `CAIRN_PARAM_<NAME>`) set to its values; `pick` (`max(auc)`, `min(loss)`) chooses the
//! trial whose outputs become the job's.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::model::SpannedStr;

/// The most trials one sweep may have.
pub const MAX_TRIALS: usize = 64;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Parameter name → the values to try.
    pub params: Spanned<BTreeMap<Spanned<String>, Spanned<Vec<ParamValue>>>>,
    /// `max(<metric>)` or `min(<metric>)`, of each trial's `metrics.json`.
    pub pick: SpannedStr,
    /// Trials run at once (1 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<Spanned<u32>>,
}

/// One value of a parameter, as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    Integer(i64),
    Float(f64),
    Text(String),
    Bool(bool),
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Integer(v) => write!(f, "{v}"),
            ParamValue::Float(v) => write!(f, "{v}"),
            ParamValue::Text(v) => f.write_str(v),
            ParamValue::Bool(v) => write!(f, "{v}"),
        }
    }
}

impl SweepSpec {
    /// How many trials the params make (saturating).
    pub fn trial_count(&self) -> usize {
        self.params
            .get_ref()
            .values()
            .map(|v| v.get_ref().len())
            .fold(1usize, usize::saturating_mul)
    }

    /// Every combination, the first parameter (by name) varying slowest; values as text.
    pub fn trials(&self) -> Vec<BTreeMap<String, String>> {
        let mut trials = vec![BTreeMap::new()];
        for (name, values) in self.params.get_ref() {
            trials = trials
                .into_iter()
                .flat_map(|t| {
                    values.get_ref().iter().map(move |v| {
                        let mut t = t.clone();
                        t.insert(name.get_ref().clone(), v.to_string());
                        t
                    })
                })
                .collect();
        }
        trials
    }

    pub fn parallel(&self) -> u32 {
        self.parallel.as_ref().map_or(1, |p| *p.get_ref())
    }
}

/// The run id of trial `i` (from 0) of sweep run `run_id`.
pub fn trial_id(run_id: &str, i: usize) -> String {
    format!("{run_id}-t{i}")
}

/// The characters a trial's id adds to its sweep's run id when the sweep has `trials`.
pub fn trial_suffix_len(trials: usize) -> usize {
    trial_id("", trials.saturating_sub(1)).len()
}

/// `max(auc)` or `min(loss)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pick {
    pub metric: String,
    pub highest: bool,
}

impl Pick {
    pub fn parse(text: &str) -> Option<Pick> {
        let text = text.trim();
        let (highest, rest) = if let Some(rest) = text.strip_prefix("max(") {
            (true, rest)
        } else {
            (false, text.strip_prefix("min(")?)
        };
        let metric = rest.strip_suffix(')')?.trim();
        let valid = !metric.is_empty()
            && metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'));
        valid.then(|| Pick {
            metric: metric.to_string(),
            highest,
        })
    }

    /// Whether `a` is better than `b`.
    pub fn better(&self, a: f64, b: f64) -> bool {
        if self.highest {
            a > b
        } else {
            a < b
        }
    }
}

impl fmt::Display for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let which = if self.highest { "max" } else { "min" };
        write!(f, "{which}({})", self.metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trials_are_every_combination_and_picks_parse() {
        let spec: SweepSpec = toml::from_str(
            "params = { lr = [0.1, 0.03], l2 = [0, 0.001], opt = [\"sgd\"] }\npick = \"max(auc)\"\n",
        )
        .unwrap();
        assert_eq!(spec.trial_count(), 4);
        let trials = spec.trials();
        assert_eq!(trials.len(), 4);
        assert_eq!(trials[0]["l2"], "0");
        assert_eq!(trials[1]["l2"], "0");
        assert_eq!(trials[1]["lr"], "0.03");
        assert_eq!(trials[3]["l2"], "0.001");
        assert!(trials.iter().all(|t| t["opt"] == "sgd"));
        assert_eq!(
            Pick::parse("min( loss )"),
            Some(Pick {
                metric: "loss".into(),
                highest: false
            })
        );
        assert_eq!(Pick::parse("best(auc)"), None);
        assert_eq!(trial_id("r", 3), "r-t3");
        assert_eq!(trial_suffix_len(10), "-t9".len());
        assert_eq!(trial_suffix_len(11), "-t10".len());
        assert_eq!(Pick::parse("max()"), None);
    }
}
