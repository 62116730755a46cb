//! How a model version's metrics compare with the version serving now, in one line for
//! plans and PR comments: `auc 0.812 → 0.846, loss 0.41 → 0.38`. The metrics shown are
//! those the quality gates name, then the usual headline ones, at most [`SHOWN`].

use serde_json::Value;

/// The most metrics one line shows.
pub const SHOWN: usize = 4;

/// Metrics shown when both versions record them, after those the gates name.
pub const HEADLINE: [&str; 8] = [
    "auc",
    "accuracy",
    "f1",
    "precision",
    "recall",
    "loss",
    "rmse",
    "mae",
];

/// `auc 0.812 → 0.846, …` for the metrics both `candidate` and `serving` record as
/// numbers (`first` before the headline ones), or `None` when they share none.
pub fn describe(candidate: &Value, serving: &Value, first: &[&str]) -> Option<String> {
    let number = |metrics: &Value, name: &str| metrics.get(name).and_then(Value::as_f64);
    let mut names: Vec<&str> = Vec::new();
    for name in first.iter().copied().chain(HEADLINE) {
        if names.len() == SHOWN {
            break;
        }
        if !names.contains(&name)
            && number(candidate, name).is_some()
            && number(serving, name).is_some()
        {
            names.push(name);
        }
    }
    let shown: Vec<String> = names
        .iter()
        .map(|name| {
            format!(
                "{name} {} → {}",
                short(number(serving, name).unwrap_or_default()),
                short(number(candidate, name).unwrap_or_default())
            )
        })
        .collect();
    (!shown.is_empty()).then(|| shown.join(", "))
}

/// Three decimals, trailing zeros dropped: `0.812`, `0.5`, `12`.
fn short(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() || text == "-" {
        "0".to_string()
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn gated_metrics_first_then_headline_ones_both_record() {
        let candidate = json!({"auc": 0.8461, "loss": 0.38, "rows": 400, "custom": 2.0});
        let serving = json!({"auc": 0.812, "loss": 0.41, "rows": 380, "custom": 1.5});
        assert_eq!(
            describe(&candidate, &serving, &["custom"]).as_deref(),
            Some("custom 1.5 → 2, auc 0.812 → 0.846, loss 0.41 → 0.38")
        );
        assert_eq!(
            describe(&json!({"auc": 0.9}), &json!({"loss": 1}), &[]),
            None
        );
        assert_eq!(describe(&json!({}), &Value::Null, &[]), None);
    }
}
