//! Finds where a key or a value is written in a manifest, by its path of keys.
//!
//! The model ([`super::model`]) keeps the place of the values most checks point at; a
//! few fields (`env` tables, `retries`, the rollout's durations) are plain values. When
//! a check finds one of those wrong, it asks here for the place, so the finding still
//! names a file, line and column. The file is parsed again only then, which is rare.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Returns the span of the last key of `path` (`["job", "train", "env", "A=B"]`).
pub fn key_span(text: &str, path: &[&str]) -> Option<Range<usize>> {
    find(text, path).map(|(key, _)| key)
}

/// Returns the span of the value at `path`.
pub fn value_span(text: &str, path: &[&str]) -> Option<Range<usize>> {
    find(text, path).map(|(_, value)| value)
}

fn find(text: &str, path: &[&str]) -> Option<(Range<usize>, Range<usize>)> {
    let (last, parents) = path.split_last()?;
    let root = DeTable::parse(text).ok()?;
    let mut table: &DeTable<'_> = root.get_ref();
    for key in parents {
        let (_, value) = entry(table, key)?;
        let DeValue::Table(inner) = value.get_ref() else {
            return None;
        };
        table = inner;
    }
    let (key, value) = entry(table, last)?;
    Some((key.span(), value.span()))
}

type Entry<'t, 'i> = (
    &'t Spanned<std::borrow::Cow<'i, str>>,
    &'t Spanned<DeValue<'i>>,
);

fn entry<'t, 'i>(table: &'t DeTable<'i>, key: &str) -> Option<Entry<'t, 'i>> {
    table.iter().find(|(k, _)| k.get_ref().as_ref() == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_values_in_every_table_form() {
        let text = "[job.train]\nenv = { \"A=B\" = \"1\" }\nretries = 9\n\n[endpoint.api.deployments.blue.env]\nX = \"y\"\n";
        let key = key_span(text, &["job", "train", "env", "A=B"]).unwrap();
        assert_eq!(&text[key], "\"A=B\"");
        let value = value_span(text, &["job", "train", "retries"]).unwrap();
        assert_eq!(&text[value], "9");
        let value = value_span(
            text,
            &["endpoint", "api", "deployments", "blue", "env", "X"],
        );
        assert_eq!(&text[value.unwrap()], "\"y\"");
        assert_eq!(key_span(text, &["job", "train", "nope"]), None);
        assert_eq!(key_span("not toml = = =", &["a"]), None);
    }
}
