//! Progress reporting from long work (hashing, uploads, job runs, applies) to whoever
//! drives it. The library calls these hooks; the CLI turns them into progress bars on a
//! terminal and plain lines elsewhere. Every hook has an empty default.

use crate::plan::Action;

/// Receives progress. Implementations must be cheap: hooks are called from worker
/// threads while work is under way.
pub trait Events: Send + Sync {
    /// Hashing of a source folder starts; `bytes` is an upper bound of what may be read.
    fn hashing(&self, _address: &str, _files: usize, _bytes: u64) {}
    /// Some bytes were hashed or transferred for the current task.
    fn bytes(&self, _address: &str, _n: u64) {}
    /// Work on a resource starts during apply.
    fn started(&self, _address: &str, _action: Action) {}
    /// A line of news about a resource ("attempt 2 of 3", "uploading 3 files").
    fn note(&self, _address: &str, _message: &str) {}
    /// Work on a resource ended.
    fn finished(&self, _address: &str, _status: &str, _message: Option<&str>) {}
    /// The store is locked by someone else and we are waiting.
    fn waiting_for_lock(&self, _store: &str, _holder: &str) {}
}

/// Ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Events for Silent {}
