//! A small checker of the Prometheus text exposition format (0.0.4), strict enough to catch
//! what a scraper would reject or misread:
//!
//! - every line is `# HELP name text`, `# TYPE name type`, another `#` comment, a sample
//!   `name{label="value",...} number [timestamp]`, or empty;
//! - metric and label names are valid, label values are quoted with `\\`, `\"`, `\n` escapes
//!   only, values parse as floats (`+Inf`, `-Inf`, `NaN` included);
//! - `HELP` and `TYPE` appear at most once per family, `TYPE` before its samples, and a
//!   family's samples are contiguous; no series appears twice;
//! - a histogram's `_bucket` series have increasing `le` bounds ending at `+Inf` with
//!   non-decreasing counts, the `+Inf` count equals `_count`, and `_sum` is present.

use std::collections::{BTreeMap, BTreeSet};

/// The parsed samples: series (`name` or `name{a="x",b="y"}`, labels as written) → value.
pub type Samples = BTreeMap<String, f64>;

/// Labels in the order written, values unescaped.
type Labels = Vec<(String, String)>;

/// What a histogram family has shown so far.
#[derive(Default)]
struct Histogram {
    /// `(le, cumulative count)` in order.
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    has_sum: bool,
}

/// Checks `text` and returns its samples, or the first problem with its line number.
pub fn parse(text: &str) -> Result<Samples, String> {
    let mut samples = Samples::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps = BTreeSet::new();
    // Families whose samples have been seen, and the family of the last sample.
    let mut finished = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut histograms: BTreeMap<String, Histogram> = BTreeMap::new();

    for (i, line) in text.lines().enumerate() {
        let at = |message: String| format!("line {}: {message}: {line:?}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), _) => {
                    check_metric_name(name).map_err(at)?;
                    if !helps.insert(name.to_string()) {
                        return Err(at(format!("second HELP for `{name}`")));
                    }
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    check_metric_name(name).map_err(at)?;
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type `{kind}`")));
                    }
                    if finished.contains(name)
                        || current.as_deref() == Some(name)
                        || types.contains_key(name)
                    {
                        return Err(at(format!("TYPE for `{name}` after its samples or twice")));
                    }
                    types.insert(name.to_string(), kind.to_string());
                }
                (Some("HELP" | "TYPE"), ..) => return Err(at("incomplete HELP/TYPE".into())),
                _ => {}
            }
            continue;
        }

        let (name, labels, rest) = split_sample(line).map_err(at)?;
        check_metric_name(name).map_err(at)?;
        let mut fields = rest.split(' ');
        let value = fields.next().ok_or_else(|| at("no value".into()))?;
        let value = parse_value(value).map_err(at)?;
        if let Some(timestamp) = fields.next() {
            timestamp
                .parse::<i64>()
                .map_err(|_| at(format!("bad timestamp `{timestamp}`")))?;
        }
        if fields.next().is_some() {
            return Err(at("text after the timestamp".into()));
        }

        let family = family_of(name, &types);
        if current.as_deref() != Some(family.as_str()) {
            if finished.contains(&family) {
                return Err(at(format!("samples of `{family}` are not contiguous")));
            }
            if let Some(previous) = current.replace(family.clone()) {
                finished.insert(previous);
            }
        }
        let series = if labels.is_empty() {
            name.to_string()
        } else {
            format!(
                "{name}{{{}}}",
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        if samples.insert(series.clone(), value).is_some() {
            return Err(at(format!("series `{series}` appears twice")));
        }

        if types.get(&family).map(String::as_str) == Some("histogram") {
            let entry = histograms.entry(family.clone()).or_default();
            let suffix = &name[family.len()..];
            match suffix {
                "_bucket" => {
                    let le = labels
                        .iter()
                        .find(|(k, _)| k == "le")
                        .ok_or_else(|| at("a bucket without `le`".into()))?;
                    let le = parse_value(&le.1).map_err(at)?;
                    if let Some(&(last_le, last_count)) = entry.buckets.last() {
                        if le <= last_le || value < last_count {
                            return Err(at("buckets must increase in `le` and count".into()));
                        }
                    }
                    entry.buckets.push((le, value));
                }
                "_count" => entry.count = Some(value),
                "_sum" => entry.has_sum = true,
                _ => return Err(at(format!("`{name}` in histogram `{family}`"))),
            }
        }
    }

    for (family, histogram) in &histograms {
        let Some(&(le, inf_count)) = histogram.buckets.last() else {
            return Err(format!("histogram `{family}` has no buckets"));
        };
        if le != f64::INFINITY {
            return Err(format!("histogram `{family}` has no `+Inf` bucket"));
        }
        if histogram.count != Some(inf_count) {
            return Err(format!(
                "histogram `{family}`: _count {:?} ≠ +Inf bucket {inf_count}",
                histogram.count
            ));
        }
        if !histogram.has_sum {
            return Err(format!("histogram `{family}` has no _sum"));
        }
    }
    Ok(samples)
}

/// The family a sample belongs to: itself, or a histogram/summary it is a part of.
fn family_of(name: &str, types: &BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            ) {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

/// Splits `name{labels} rest` into the name, the unescaped labels and the rest.
fn split_sample(line: &str) -> Result<(&str, Labels, &str), String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "a sample without a value".to_string())?;
    let name = &line[..name_end];
    if line.as_bytes()[name_end] == b' ' {
        return Ok((name, Vec::new(), &line[name_end + 1..]));
    }
    let mut labels = Vec::new();
    let mut chars = line[name_end + 1..].char_indices().peekable();
    loop {
        // A label name up to `=`, or the closing brace.
        let mut label = String::new();
        let mut closed = None;
        for (i, c) in chars.by_ref() {
            match c {
                '=' => break,
                '}' if label.is_empty() => {
                    closed = Some(i);
                    break;
                }
                c => label.push(c),
            }
        }
        if let Some(i) = closed {
            let rest = &line[name_end + 1 + i + 1..];
            let rest = rest
                .strip_prefix(' ')
                .ok_or_else(|| "no space before the value".to_string())?;
            return Ok((name, labels, rest));
        }
        check_label_name(&label)?;
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label `{label}`: the value is not quoted"));
        }
        let mut value = String::new();
        loop {
            match chars.next().map(|(_, c)| c) {
                Some('"') => break,
                Some('\\') => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => return Err(format!("bad escape `\\{other:?}` in `{label}`")),
                },
                Some('\n') | None => return Err(format!("unterminated value of `{label}`")),
                Some(c) => value.push(c),
            }
        }
        if labels.iter().any(|(l, _)| *l == label) {
            return Err(format!("label `{label}` twice"));
        }
        labels.push((label, value));
        match chars.peek().map(|&(_, c)| c) {
            Some(',') => {
                chars.next();
            }
            Some('}') => {}
            _ => return Err("expected `,` or `}` after a label".into()),
        }
    }
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if text
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            text.parse()
                .map_err(|_| format!("`{text}` is not a number"))
        }
        _ => Err(format!("`{text}` is not a number")),
    }
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let ok = name.chars().enumerate().all(|(i, c)| {
        c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
    });
    if name.is_empty() || !ok {
        return Err(format!("`{name}` is not a metric name"));
    }
    Ok(())
}

fn check_label_name(name: &str) -> Result<(), String> {
    let ok = name
        .chars()
        .enumerate()
        .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()));
    if name.is_empty() || !ok || name.starts_with("__") {
        return Err(format!("`{name}` is not a label name"));
    }
    Ok(())
}

#[test]
fn the_checker_rejects_what_scrapers_reject() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{code=\"200\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n\
                g{x=\"q\\\"\\\\\\n\"} -1.5e3 1700000000000\n";
    let samples = parse(good).unwrap();
    assert_eq!(samples["a_total{code=\"200\"}"], 3.0);
    assert_eq!(samples["g{x=\"q\"\\\n\"}"], -1500.0);
    for bad in [
        "a 1 2 3",
        "a{b=c} 1",
        "a{b=\"c\"}1",
        "a{b=\"c\\t\"} 1",
        "1a 1",
        "a x",
        "a 1\nb 1\na 2",
        "a 1\na 1",
        "# TYPE a counter\n# TYPE a gauge",
        "a 1\n# TYPE a counter",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\nh_count 1",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 0\nh_count 1",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1",
    ] {
        assert!(parse(bad).is_err(), "accepted: {bad}");
    }
}
