//! What every bench shares. `cargo bench --bench X` runs a bench for its figures;
//! `cargo test` runs every bench too (their `[[bench]]` tables say `test = true`), as a
//! smoke test: tiny sizes, no peers (terraform, nginx, the AWS CLI), a few rounds, so a
//! bench that a policy, a template or a CLI change broke fails the tests instead of
//! rotting. A smoke run asserts only that the bench ran to its end and printed figures,
//! never a time.
#![allow(dead_code)]

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

pub mod cpu;

static PRINTED: AtomicUsize = AtomicUsize::new(0);

/// Whether this is a smoke run: `cargo bench` passes `--bench`, `cargo test` does not.
pub fn smoke() -> bool {
    !std::env::args().skip(1).any(|a| a == "--bench")
}

/// The knob `name` from the environment when set (in either mode), else `full` for a
/// real run and `tiny` for a smoke run.
pub fn knob<T: FromStr>(name: &str, full: T, tiny: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a valid number")),
        Err(_) if smoke() => tiny,
        Err(_) => full,
    }
}

/// Whether to leave the peer `what` out: always in a smoke run (said once).
pub fn skip_peer(what: &str) -> bool {
    if smoke() {
        println!("(smoke run: {what} not measured)");
    }
    smoke()
}

/// Counts one line of figures; see [`figure!`].
pub fn count() {
    PRINTED.fetch_add(1, Ordering::Relaxed);
}

/// Ends the bench: a smoke run that printed no figures fails.
pub fn finish() {
    if smoke() {
        let printed = PRINTED.load(Ordering::Relaxed);
        assert!(printed > 0, "the bench printed no figures");
        println!("smoke run done: {printed} lines of figures (tiny sizes, not measurements)");
    }
}

/// `println!`, counted as a line of figures.
macro_rules! figure {
    ($($arg:tt)*) => {{
        println!($($arg)*);
        crate::support::count();
    }};
}
