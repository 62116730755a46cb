//! Input drift: how far the inputs an endpoint receives have moved from the data its
//! serving model was trained on, feature by feature. Numeric features get the population
//! stability index over the training data's deciles and the two-sample
//! Kolmogorov–Smirnov statistic; categorical ones (any non-number seen) get the PSI over
//! their categories.
//!
//! PSI = Σ (cᵢ − tᵢ) · ln(cᵢ / tᵢ) over bins, with tᵢ and cᵢ the training and current
//! shares of bin i (each floored at [`PSI_FLOOR`] so an empty bin counts, finitely). The
//! usual reading: < 0.1 stable, 0.1–0.2 moderate, > 0.2 a significant shift.

use std::collections::BTreeMap;

use serde::Serialize;

/// Bins of a numeric feature's PSI: the training data's deciles.
pub const NUMERIC_BINS: usize = 10;
/// The least share a bin counts with.
pub const PSI_FLOOR: f64 = 1e-4;
/// The threshold `max_psi` has when a manifest gives none.
pub const DEFAULT_MAX_PSI: f64 = 0.2;

/// One feature's values, as read: numbers, or text for a categorical feature.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Values {
    pub numbers: Vec<f64>,
    pub text: Vec<String>,
}

impl Values {
    /// Adds one cell: a finite number, or else its text.
    pub fn push(&mut self, cell: &str) {
        match cell.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => self.numbers.push(v),
            _ => self.text.push(cell.trim().to_string()),
        }
    }

    fn len(&self) -> usize {
        self.numbers.len() + self.text.len()
    }

    /// Categorical when any cell is not a number.
    fn is_categorical(&self) -> bool {
        !self.text.is_empty()
    }

    /// Every cell as text (numbers as they print).
    fn categories(&self) -> impl Iterator<Item = String> + '_ {
        self.numbers
            .iter()
            .map(|v| v.to_string())
            .chain(self.text.iter().cloned())
    }
}

/// How one feature drifted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureDrift {
    pub feature: String,
    /// `numeric` or `categorical`.
    pub kind: &'static str,
    pub psi: f64,
    /// Numeric features only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ks: Option<f64>,
    pub reference_rows: usize,
    pub current_rows: usize,
    /// Whether `psi` is above the threshold.
    pub drifted: bool,
}

/// Compares every feature the current inputs share with the reference (training) data;
/// features missing from either side are left out. Sorted by PSI, largest first.
pub fn compare(
    reference: &BTreeMap<String, Values>,
    current: &BTreeMap<String, Values>,
    max_psi: f64,
) -> Vec<FeatureDrift> {
    let mut out: Vec<FeatureDrift> = reference
        .iter()
        .filter_map(|(name, r)| {
            let c = current.get(name)?;
            if r.len() == 0 || c.len() == 0 {
                return None;
            }
            let (kind, psi, ks) = if r.is_categorical() || c.is_categorical() {
                ("categorical", categorical_psi(r, c), None)
            } else {
                (
                    "numeric",
                    numeric_psi(&r.numbers, &c.numbers),
                    Some(ks_statistic(&r.numbers, &c.numbers)),
                )
            };
            Some(FeatureDrift {
                feature: name.clone(),
                kind,
                psi,
                ks,
                reference_rows: r.len(),
                current_rows: c.len(),
                drifted: psi > max_psi,
            })
        })
        .collect();
    out.sort_by(|a, b| b.psi.total_cmp(&a.psi).then(a.feature.cmp(&b.feature)));
    out
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// PSI over the reference's deciles (fewer bins when values repeat).
pub fn numeric_psi(reference: &[f64], current: &[f64]) -> f64 {
    let r = sorted(reference);
    let mut edges: Vec<f64> = (1..NUMERIC_BINS)
        .map(|i| r[(i * r.len() / NUMERIC_BINS).min(r.len() - 1)])
        .collect();
    edges.dedup();
    let bin = |v: f64| edges.partition_point(|&e| e <= v);
    let shares = |values: &[f64]| {
        let mut counts = vec![0usize; edges.len() + 1];
        for &v in values {
            counts[bin(v)] += 1;
        }
        counts
            .into_iter()
            .map(|n| n as f64 / values.len() as f64)
            .collect::<Vec<f64>>()
    };
    psi(&shares(&r), &shares(current))
}

/// PSI over the categories either side has.
pub fn categorical_psi(reference: &Values, current: &Values) -> f64 {
    let count = |v: &Values| {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for c in v.categories() {
            *counts.entry(c).or_default() += 1;
        }
        counts
    };
    let (r, c) = (count(reference), count(current));
    let names: Vec<&String> = r.keys().chain(c.keys()).collect();
    let mut names = names;
    names.sort();
    names.dedup();
    let share = |counts: &BTreeMap<String, usize>, total: usize| {
        names
            .iter()
            .map(|n| counts.get(*n).copied().unwrap_or(0) as f64 / total as f64)
            .collect::<Vec<f64>>()
    };
    psi(&share(&r, reference.len()), &share(&c, current.len()))
}

fn psi(reference: &[f64], current: &[f64]) -> f64 {
    reference
        .iter()
        .zip(current)
        .map(|(&t, &c)| {
            let (t, c) = (t.max(PSI_FLOOR), c.max(PSI_FLOOR));
            (c - t) * (c / t).ln()
        })
        .sum()
}

/// The largest distance between the two samples' empirical distribution functions.
pub fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let (a, b) = (sorted(a), sorted(b));
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniform(n: usize, from: f64, to: f64) -> Vec<f64> {
        (0..n)
            .map(|i| from + (to - from) * (i as f64 + 0.5) / n as f64)
            .collect()
    }

    #[test]
    fn the_same_distribution_does_not_drift_and_a_shifted_one_does() {
        let reference = uniform(1000, 0.0, 1.0);
        assert!(numeric_psi(&reference, &uniform(300, 0.0, 1.0)) < 0.01);
        assert!(ks_statistic(&reference, &uniform(300, 0.0, 1.0)) < 0.01);
        let shifted = uniform(300, 0.5, 1.5);
        assert!(numeric_psi(&reference, &shifted) > 1.0);
        let ks = ks_statistic(&reference, &shifted);
        assert!((ks - 0.5).abs() < 0.01, "{ks}");
    }

    #[test]
    fn ks_of_disjoint_samples_is_one() {
        assert_eq!(ks_statistic(&[1.0, 2.0], &[3.0, 4.0]), 1.0);
        assert_eq!(ks_statistic(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
    }

    #[test]
    fn categories_compare_by_share() {
        let mut r = Values::default();
        let mut c = Values::default();
        for i in 0..100 {
            r.push(if i % 2 == 0 { "a" } else { "b" });
            c.push(if i % 10 == 0 { "b" } else { "a" });
        }
        let psi = categorical_psi(&r, &c);
        // (0.9-0.5)ln(1.8) + (0.1-0.5)ln(0.2) = 0.235 + 0.644
        assert!((psi - 0.879).abs() < 0.01, "{psi}");
        let report = compare(
            &BTreeMap::from([("x".to_string(), r.clone())]),
            &BTreeMap::from([("x".to_string(), c)]),
            DEFAULT_MAX_PSI,
        );
        assert_eq!(report.len(), 1);
        assert!(report[0].drifted);
        assert_eq!(report[0].kind, "categorical");
        let same = compare(
            &BTreeMap::from([("x".to_string(), r.clone())]),
            &BTreeMap::from([("x".to_string(), r)]),
            DEFAULT_MAX_PSI,
        );
        assert!(!same[0].drifted && same[0].psi < 1e-9, "{same:?}");
    }
}
