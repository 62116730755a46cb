//! What a capture of requests is made of, wherever it is taken (the local router, the
//! pod proxy on Kubernetes): one in every `every` requests is kept ([`Sampler`]), as one
//! JSON line `{"t": <unix ms>, "deployment": …, "body": …}` ([`line`]). Only bodies
//! are kept, never headers (so never the `Authorization` key); a body that is not JSON
//! is skipped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Picks one in every `every` requests (the first, then every `every`-th).
#[derive(Debug)]
pub struct Sampler {
    every: u64,
    seen: AtomicU64,
}

impl Sampler {
    pub fn new(every: u32) -> Sampler {
        Sampler {
            every: u64::from(every.max(1)),
            seen: AtomicU64::new(0),
        }
    }

    /// Whether this request is one to keep.
    pub fn take(&self) -> bool {
        self.seen
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(self.every)
    }

    /// Requests offered so far.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The capture line of a request `deployment` answered, newline included; `None` when
/// the body is not JSON.
pub fn line(deployment: &str, body: &[u8]) -> Option<String> {
    let parsed = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    let mut line = serde_json::json!({
        "t": unix_ms(),
        "deployment": deployment,
        "body": parsed,
    })
    .to_string();
    line.push('\n');
    Some(line)
}

/// The request body of one capture line (`None` for a line that is not one).
pub fn body_of(line: &str) -> Option<serde_json::Value> {
    let mut record = serde_json::from_str::<serde_json::Value>(line).ok()?;
    record.get_mut("body").map(serde_json::Value::take)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_one_in_every_and_keeps_bodies_only() {
        let sampler = Sampler::new(3);
        let taken: Vec<bool> = (0..7).map(|_| sampler.take()).collect();
        assert_eq!(taken, [true, false, false, true, false, false, true]);
        assert_eq!(sampler.seen(), 7);
        let l = line("blue", br#"{"rows": [{"x": 1}]}"#).unwrap();
        assert!(l.ends_with('\n'));
        assert_eq!(body_of(&l).unwrap()["rows"][0]["x"], 1);
        assert!(line("blue", b"not json").is_none());
        assert!(body_of("{}").is_none());
    }
}
