//! The store: where dataset versions, model versions, run records, the apply lock, the
//! journal and the workspace state live. One store per workspace.
//!
//! ```text
//! datasets/<name>/<version>/…files…   + _version.json  (written last: the commit marker)
//! models/<name>/<version>/…files…     + _model.json    (lineage)
//! runs/<job>/<run-id>/…logs…          + _run.json      (status, metrics)
//! .cairn/state.json                   what Cairn applied, per resource address
//! .cairn/lock                         lease lock (conditional put, expiry, holder)
//! .cairn/journal/<time>-<rev>-<id>.json   one record per apply
//! ```
//!
//! The layout is written once, here, over the [`ObjectStore`] trait; backends only move
//! bytes: [`FileStore`] (`file://…`, a folder) and [`S3Store`] (`s3://bucket/prefix`,
//! AWS S3 or any S3-compatible server). [`Store::open_with`] picks one from a
//! workspace's `store` URL and its `endpoint`, `region` and `path_style`.
//!
//! Guarantees, on every backend:
//! - Readers trust a version only once its marker exists, so a version whose upload was
//!   interrupted is never seen. A dataset version lists its files with their SHA-256
//!   and the key holding their bytes, which may belong to an earlier version: unchanged
//!   files are never stored twice.
//! - An object is never seen half written (rename into place; S3 makes an object visible
//!   when its `PUT` or multipart upload completes).
//! - The lock and the state are compare-and-swap writes (`IfAbsent`, `IfMatch`): of
//!   concurrent writers from the same etag, one wins and the others get
//!   [`Error::PreconditionFailed`].
//! - Errors name the store by URL (and S3 errors the bucket and endpoint), say what to
//!   check, and never contain a credential.
//!
//! Caveats: the compare-and-swap is as atomic as the backend's conditional writes (see
//! [`FileStore`] and [`S3Store`] for how each gets there and where it can't).

mod captures;
mod file;
mod object;
mod records;
mod runs;
mod s3;
pub mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use captures::{upload_captures, CaptureUpload, UploadStats};
pub use file::FileStore;
pub use object::{check_key, Condition, ObjectMeta, ObjectStore};
pub use records::{
    DatasetVersion, FileEntry, ModelRecord, ProducedBy, RunRecord, RunStatus, Trial,
};
pub use s3::{AwsChain, S3Store, FALLBACK_REGION, PARTS_IN_FLIGHT, PART_SIZE};
pub use verify::VerifyReport;

use crate::address::Kind;

/// Errors from any store backend. Messages name the store by URL, never by credential.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} `{key}` in {store} failed")]
    Io {
        op: &'static str,
        key: String,
        store: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{key}` in {store} was changed by someone else")]
    PreconditionFailed { key: String, store: String },
    #[error("`{0}` is not a valid store key")]
    InvalidKey(String),
    #[error("`{key}` in {store} is not a valid record")]
    Corrupt {
        key: String,
        store: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "unsupported store URL `{0}` (a store is `file://<folder>` or `s3://<bucket>/<prefix>`)"
    )]
    Unsupported(String),
    #[error("invalid store URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error(
        "the bucket `{bucket}` does not exist at {endpoint}; create it \
         (`aws s3 mb s3://{bucket}`) or fix `store` (and `endpoint`) in the workspace"
    )]
    NoSuchBucket { bucket: String, endpoint: String },
    #[error(
        "access denied to {op} `{key}` in bucket `{bucket}` at {endpoint}; the credentials \
         in use lack the permission (check the bucket policy and the IAM policy of the \
         user or role), or are not the ones meant for this bucket"
    )]
    AccessDenied {
        op: &'static str,
        key: String,
        bucket: String,
        endpoint: String,
    },
    #[error(
        "the credentials for {store} were refused: {reason}; check AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, and renew an expired session token"
    )]
    Credentials { store: String, reason: String },
    #[error(
        "no credentials for {store} ({endpoint} was not contacted): none in the environment \
         (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), the shared config and credentials \
         files (AWS_PROFILE), web identity (AWS_WEB_IDENTITY_TOKEN_FILE) or container \
         credentials"
    )]
    NoCredentials { store: String, endpoint: String },
    #[error("could not load credentials for {store} ({endpoint} was not contacted): {reason}")]
    CredentialsUnavailable {
        store: String,
        endpoint: String,
        reason: String,
    },
    #[error(
        "the bucket `{bucket}` is in {}, not in {signed_for}; set `region` in the \
         workspace{}",
        region.as_deref().unwrap_or("another region"),
        region.as_deref().map_or(String::new(), |r| format!(" (`region = \"{r}\"`)"))
    )]
    WrongRegion {
        bucket: String,
        /// The bucket's region, when the server said.
        region: Option<String>,
        signed_for: String,
    },
    #[error(
        "cannot reach {endpoint} (bucket `{bucket}`): {reason}; check `endpoint` in the \
         workspace and that the server is running and reachable from here"
    )]
    Unreachable {
        endpoint: String,
        bucket: String,
        reason: String,
    },
    #[error("{op} `{key}` in {store} failed: {code}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    S3 {
        op: &'static str,
        key: String,
        store: String,
        status: Option<u16>,
        code: String,
        message: String,
    },
    #[error(
        "the store at {store} is locked by {holder} ({command}, since {started_at}, lock id {id})"
    )]
    Locked {
        store: String,
        id: String,
        holder: String,
        command: String,
        started_at: String,
    },
    #[error("no lock with id `{id}` is held on {store}")]
    NoSuchLock { id: String, store: String },
    #[error(
        "`{key}` was not stored in {store}: `{path}` does not hold the bytes of SHA-256 \
         {sha256} it was hashed as (did it change since?)"
    )]
    ContentMismatch {
        key: String,
        store: String,
        path: String,
        sha256: String,
    },
    #[error("{0}")]
    Backend(String),
    #[error("a store task stopped unexpectedly")]
    Join(#[source] tokio::task::JoinError),
}

impl Error {
    fn from_join(e: tokio::task::JoinError) -> Error {
        Error::Join(e)
    }

    /// What the user can do about it, where there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Corrupt { key, .. } if key == LOCK_KEY => Some(
                "the lock file is damaged; if no apply is running, remove it with \
                 `cairn unlock --force`"
                    .into(),
            ),
            Error::Corrupt { key, .. } if key.starts_with(JOURNAL_PREFIX) => Some(format!(
                "move the damaged journal record `{key}` aside (out of `{JOURNAL_PREFIX}`); \
                 the other records are still read"
            )),
            Error::Corrupt { key, .. } if key == STATE_KEY => Some(format!(
                "the state file `{key}` is damaged: restore it from a backup or from the \
                 store's object versions; `cairn verify` checks the stored versions"
            )),
            Error::Corrupt { .. } => Some(
                "a stored record is damaged; `cairn verify` checks every stored version".into(),
            ),
            Error::CredentialsUnavailable { .. } => Some(
                "a credentials provider of the chain failed before any request was signed: \
                 export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or set AWS_PROFILE; on \
                 EC2, check the instance's role and its metadata service (a container may \
                 need a hop limit of 2); elsewhere unset AWS_EC2_METADATA_DISABLED=false"
                    .into(),
            ),
            Error::NoCredentials { .. } => Some(
                "export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or set AWS_PROFILE to a \
                 profile of ~/.aws/credentials; on an EC2 instance its role is used"
                    .into(),
            ),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Returns the current time as RFC 3339 (UTC, seconds).
/// Returns the current time as RFC 3339 (UTC, milliseconds), which sorts as text.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The longest lease a lock can have: an apply that dies holds the store at most this long
/// (unless someone runs `cairn unlock`). Longer leases are cut to it.
pub const MAX_LOCK_LEASE: Duration = Duration::from_secs(24 * 60 * 60);

/// When a lease taken now runs out, in Unix seconds: at least 1 s and at most
/// [`MAX_LOCK_LEASE`] away, so no lease can wrap around into the past.
fn lease_expiry(lease: Duration) -> u64 {
    let lease = lease.clamp(Duration::from_secs(1), MAX_LOCK_LEASE);
    unix_now().saturating_add(lease.as_secs())
}

/// `.cairn/lock`: who holds the store, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub id: String,
    pub holder: String,
    pub command: String,
    pub pid: u32,
    pub started_at: String,
    pub heartbeat_at: String,
    /// Unix seconds after which the lease may be taken over.
    pub expires_at: u64,
}

/// What [`Store::break_lock`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokenLock {
    Held(LockInfo),
    /// A lock file that is not a lock record (`size` bytes).
    Damaged {
        size: u64,
    },
}

/// A held lock. Renew it before the lease runs out; release it when done.
#[derive(Debug, Clone)]
pub struct LockGuard {
    pub info: LockInfo,
    etag: String,
    lease: Duration,
}

/// `.cairn/state.json`: what Cairn last applied for each resource of a workspace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub format_version: u32,
    /// Incremented on every write.
    pub serial: u64,
    pub resources: BTreeMap<String, StateEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateEntry {
    pub kind: Kind,
    /// The applied value, as the plan showed it (`after`).
    pub value: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub applied_at: String,
}

/// A state with the etag it was read at, for a conditional write back.
#[derive(Debug, Clone, Default)]
pub struct VersionedState {
    pub state: State,
    pub etag: Option<String>,
}

/// `.cairn/journal/…json`: one apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    pub id: String,
    pub workspace: String,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub user: String,
    pub plan_hash: String,
    pub success: bool,
    pub outcomes: Vec<JournalOutcome>,
}

/// The journal as read: its records, oldest first, and the files that weren't records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Journal {
    pub records: Vec<JournalRecord>,
    pub damaged: Vec<DamagedRecord>,
}

/// A stored record that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRecord {
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalOutcome {
    pub address: String,
    pub action: String,
    pub status: String,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What happened along the way, e.g. each rollout step with its figures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<serde_json::Value>,
}

const STATE_KEY: &str = ".cairn/state.json";
const LOCK_KEY: &str = ".cairn/lock";
const JOURNAL_PREFIX: &str = ".cairn/journal/";

/// How to reach an S3 store: a workspace's `endpoint`, `region` and `path_style`, and
/// the AWS chain for what they leave open. Ignored by folder stores.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// An S3-compatible server's URL (`http://127.0.0.1:9000`); AWS S3 when absent.
    pub endpoint: Option<String>,
    /// The region to sign for; the AWS chain's (`AWS_REGION`, profile), else
    /// [`FALLBACK_REGION`].
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`); on by default with an `endpoint`.
    pub path_style: Option<bool>,
    /// Where the region, credentials and SDK settings not given above come from (the
    /// CLI passes the standard AWS chain). `None`: nowhere; only explicit credentials
    /// ([`S3Store::with_credentials`]) sign requests.
    pub aws: Option<Arc<dyn AwsChain>>,
}

/// A workspace's store: the layout above, over any [`ObjectStore`].
#[derive(Debug, Clone)]
pub struct Store {
    objects: Arc<dyn ObjectStore>,
    /// A local copy of the state with its etag (see [`Store::with_state_cache`]).
    state_cache: Option<Arc<PathBuf>>,
}

/// What the state cache file holds.
#[derive(Serialize, Deserialize)]
struct CachedState {
    etag: String,
    state: State,
}

impl Store {
    pub fn new(objects: Arc<dyn ObjectStore>) -> Store {
        Store {
            objects,
            state_cache: None,
        }
    }

    /// Opens the store a workspace names, with default [`StoreOptions`].
    pub fn open(url: &str, base: &Path) -> Result<Store> {
        Store::open_with(url, base, &StoreOptions::default())
    }

    /// Opens the store a workspace names. `file://` paths are relative to `base` (the
    /// manifests root) unless absolute; `s3://bucket/prefix` uses `options`. Sends no
    /// request: an S3 store connects, and resolves its credentials, on first use.
    pub fn open_with(url: &str, base: &Path, options: &StoreOptions) -> Result<Store> {
        if url.starts_with("s3://") {
            return Ok(Store::new(Arc::new(S3Store::new(url, options)?)));
        }
        if let Some(path) = url.strip_prefix("file://") {
            let path = Path::new(path);
            let root = if path.is_absolute() {
                path.to_path_buf()
            } else {
                base.join(path)
            };
            // An absolute path, so the URL in a saved plan means the same from anywhere.
            let root = std::path::absolute(&root).unwrap_or(root);
            return Ok(Store::new(Arc::new(FileStore::new(root))));
        }
        Err(Error::Unsupported(url.to_string()))
    }

    pub fn url(&self) -> String {
        self.objects.url()
    }

    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }

    async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, String)>> {
        let Some((bytes, meta)) = self.objects.get(key).await? else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&bytes).map_err(|source| Error::Corrupt {
            key: key.to_string(),
            store: self.url(),
            source,
        })?;
        Ok(Some((value, meta.etag)))
    }

    async fn put_json<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        condition: Condition,
    ) -> Result<ObjectMeta> {
        // Records are small and meant to be read by people; the state can be large and is
        // read on every plan, so it is written compactly.
        let bytes = if key == STATE_KEY {
            serde_json::to_vec(value)
        } else {
            serde_json::to_vec_pretty(value)
        }
        .expect("records serialize");
        self.objects.put(key, Bytes::from(bytes), condition).await
    }

    // ---- state ----------------------------------------------------------------------

    pub async fn state(&self) -> Result<VersionedState> {
        if let Some(cache) = &self.state_cache {
            if let Some(hit) = self.cached_state(cache).await? {
                return Ok(hit);
            }
        }
        let Some((bytes, meta)) = self.objects.get(STATE_KEY).await? else {
            return Ok(VersionedState::default());
        };
        let state = serde_json::from_slice(&bytes).map_err(|source| Error::Corrupt {
            key: STATE_KEY.to_string(),
            store: self.url(),
            source,
        })?;
        self.remember_state(&meta.etag, &bytes);
        Ok(VersionedState {
            state,
            etag: Some(meta.etag),
        })
    }

    /// Keeps a local copy of the state, checked by etag with one listing instead of read
    /// again: an unchanged remote state costs no object read. For stores where a read is
    /// a network round trip with a body (S3); a missing or unreadable copy is just a miss.
    pub fn with_state_cache(mut self, path: PathBuf) -> Store {
        self.state_cache = Some(Arc::new(path));
        self
    }

    /// The cached state, if the store's copy still has the cached etag. A store without
    /// a state gives the empty state.
    async fn cached_state(&self, cache: &Path) -> Result<Option<VersionedState>> {
        let Ok(bytes) = std::fs::read(cache) else {
            return Ok(None);
        };
        let Ok(cached) = serde_json::from_slice::<CachedState>(&bytes) else {
            return Ok(None);
        };
        let listed = self.objects.list(STATE_KEY).await?;
        match listed.into_iter().find(|m| m.key == STATE_KEY) {
            None => {
                let _ = std::fs::remove_file(cache);
                Ok(Some(VersionedState::default()))
            }
            Some(meta) if meta.etag == cached.etag => Ok(Some(VersionedState {
                state: cached.state,
                etag: Some(cached.etag),
            })),
            Some(_) => Ok(None),
        }
    }

    /// Keeps `state` (the JSON the store now holds under `etag`) in the local cache.
    fn remember_state(&self, etag: &str, state: &[u8]) {
        let Some(cache) = &self.state_cache else {
            return;
        };
        // A `CachedState`, written around the bytes already made rather than from a
        // second copy of the state.
        let Ok(etag) = serde_json::to_string(etag) else {
            return;
        };
        let mut bytes = Vec::with_capacity(state.len() + etag.len() + 20);
        bytes.extend_from_slice(b"{\"etag\":");
        bytes.extend_from_slice(etag.as_bytes());
        bytes.extend_from_slice(b",\"state\":");
        bytes.extend_from_slice(state);
        bytes.push(b'}');
        if let Some(dir) = cache.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = cache.with_extension(format!("tmp-{}", std::process::id()));
        if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, cache.as_path()).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// Writes the state back if nobody changed it since it was read; updates the etag.
    pub async fn save_state(&self, versioned: &mut VersionedState) -> Result<()> {
        let bytes = Store::encode_state(versioned);
        versioned.etag = Some(self.put_state(versioned.etag.as_deref(), bytes).await?);
        Ok(())
    }

    /// The next version of `versioned` as the store keeps it (compact JSON), its serial
    /// moved on: what [`Store::put_state`] writes. Made apart from the write so that a
    /// caller holding the state under a lock serialises it there instead of copying it.
    pub fn encode_state(versioned: &mut VersionedState) -> Bytes {
        versioned.state.format_version = 1;
        versioned.state.serial += 1;
        Bytes::from(serde_json::to_vec(&versioned.state).expect("the state serializes"))
    }

    /// Writes state bytes from [`Store::encode_state`] if the store's state still has
    /// `etag` (none: if there is no state yet); returns the new etag.
    pub async fn put_state(&self, etag: Option<&str>, bytes: Bytes) -> Result<String> {
        let condition = match etag {
            Some(etag) => Condition::IfMatch(etag.to_string()),
            None => Condition::IfAbsent,
        };
        let meta = self
            .objects
            .put(STATE_KEY, bytes.clone(), condition)
            .await?;
        self.remember_state(&meta.etag, &bytes);
        Ok(meta.etag)
    }

    // ---- datasets -------------------------------------------------------------------

    fn dataset_marker(name: &str, version: &str) -> String {
        format!("datasets/{name}/{version}/_version.json")
    }

    /// Deletes every stored version of a dataset or model, or every run of a job
    /// (`cairn destroy --purge-store`); other kinds keep nothing here. Markers go
    /// first, so a version being deleted is never visible with files missing. Returns
    /// how many objects were deleted.
    pub async fn purge(&self, kind: Kind, name: &str) -> Result<usize> {
        let (prefix, marker) = match kind {
            Kind::Dataset => (format!("datasets/{name}/"), "/_version.json"),
            Kind::Model => (format!("models/{name}/"), "/_model.json"),
            Kind::Job => (format!("runs/{name}/"), "/_run.json"),
            _ => return Ok(0),
        };
        let mut keys: Vec<String> = self
            .objects
            .list(&prefix)
            .await?
            .into_iter()
            .map(|m| m.key)
            .collect();
        keys.sort_by_key(|k| !k.ends_with(marker));
        for key in &keys {
            self.objects.delete(key, Condition::None).await?;
        }
        Ok(keys.len())
    }

    /// Returns the committed version, if its marker exists.
    pub async fn dataset_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<DatasetVersion>> {
        Ok(self
            .get_json(&Self::dataset_marker(name, version))
            .await?
            .map(|(v, _)| v))
    }

    /// Returns whether the version's marker exists, without reading it.
    pub async fn has_dataset_version(&self, name: &str, version: &str) -> Result<bool> {
        Ok(self
            .objects
            .head(&Self::dataset_marker(name, version))
            .await?
            .is_some())
    }

    /// Returns every committed version of a dataset, oldest first.
    pub async fn dataset_versions(&self, name: &str) -> Result<Vec<DatasetVersion>> {
        let mut out: Vec<DatasetVersion> = self
            .markers(&format!("datasets/{name}/"), "/_version.json")
            .await?;
        out.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.version.cmp(&b.version))
        });
        Ok(out)
    }

    /// Every record under `prefix` whose key ends with `marker`.
    async fn markers<T: DeserializeOwned>(&self, prefix: &str, marker: &str) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for meta in self.objects.list(prefix).await? {
            if meta.key.ends_with(marker) {
                if let Some((v, _)) = self.get_json::<T>(&meta.key).await? {
                    out.push(v);
                }
            }
        }
        Ok(out)
    }

    /// The key a new file of a dataset version is stored at.
    pub fn dataset_file_key(name: &str, version: &str, path: &str) -> String {
        format!("datasets/{name}/{version}/{path}")
    }

    /// Commits a dataset version whose files are already stored.
    pub async fn commit_dataset_version(&self, version: &DatasetVersion) -> Result<()> {
        self.put_json(
            &Self::dataset_marker(&version.dataset, &version.version),
            version,
            Condition::None,
        )
        .await
        .map(|_| ())
    }

    // ---- runs (and `runs.rs`: listing them) ---------------------------------------
    fn run_marker(job: &str, run_id: &str) -> String {
        format!("runs/{job}/{run_id}/_run.json")
    }

    pub async fn run(&self, job: &str, run_id: &str) -> Result<Option<RunRecord>> {
        Ok(self
            .get_json(&Self::run_marker(job, run_id))
            .await?
            .map(|(v, _)| v))
    }

    pub fn run_log_key(job: &str, run_id: &str, attempt: u32) -> String {
        format!("runs/{job}/{run_id}/attempt-{attempt}.log")
    }

    /// Stores a log a target collected (not a file on this machine) under `key`.
    pub async fn put_log(&self, key: &str, text: String) -> Result<()> {
        self.objects
            .put(key, Bytes::from(text), Condition::None)
            .await
            .map(|_| ())
    }

    pub async fn put_run(&self, record: &RunRecord) -> Result<()> {
        self.put_json(
            &Self::run_marker(&record.job, &record.run_id),
            record,
            Condition::None,
        )
        .await
        .map(|_| ())
    }

    // ---- models ---------------------------------------------------------------------

    fn model_marker(name: &str, version: &str) -> String {
        format!("models/{name}/{version}/_model.json")
    }

    pub async fn model_version(&self, name: &str, version: &str) -> Result<Option<ModelRecord>> {
        Ok(self
            .get_json(&Self::model_marker(name, version))
            .await?
            .map(|(v, _)| v))
    }

    /// Returns every committed version of a model, oldest first.
    pub async fn model_versions(&self, name: &str) -> Result<Vec<ModelRecord>> {
        let mut out: Vec<ModelRecord> = self
            .markers(&format!("models/{name}/"), "/_model.json")
            .await?;
        out.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.version.cmp(&b.version))
        });
        Ok(out)
    }

    pub async fn has_model_version(&self, name: &str, version: &str) -> Result<bool> {
        Ok(self
            .objects
            .head(&Self::model_marker(name, version))
            .await?
            .is_some())
    }

    pub fn model_file_key(name: &str, version: &str, path: &str) -> String {
        format!("models/{name}/{version}/{path}")
    }

    /// Commits a model version whose files are already stored.
    pub async fn commit_model_version(&self, record: &ModelRecord) -> Result<()> {
        self.put_json(
            &Self::model_marker(&record.model, &record.version),
            record,
            Condition::None,
        )
        .await
        .map(|_| ())
    }

    // ---- lock -----------------------------------------------------------------------

    /// Returns the current lock, if any, and whether its lease has run out.
    pub async fn lock_info(&self) -> Result<Option<(LockInfo, bool)>> {
        Ok(self.get_json::<LockInfo>(LOCK_KEY).await?.map(|(info, _)| {
            let expired = info.expires_at < unix_now();
            (info, expired)
        }))
    }

    /// Takes the lock once: creates it if absent, or takes over a lease that has run out
    /// (conditional on the old lock's etag, so two takers can't both win). Fails with
    /// [`Error::Locked`] if someone holds a live lease. The lease is cut to between 1 s
    /// and [`MAX_LOCK_LEASE`].
    pub async fn try_lock(
        &self,
        holder: &str,
        command: &str,
        lease: Duration,
    ) -> Result<LockGuard> {
        let now = now_rfc3339();
        let info = LockInfo {
            id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            holder: holder.to_string(),
            command: command.to_string(),
            pid: std::process::id(),
            started_at: now.clone(),
            heartbeat_at: now,
            expires_at: lease_expiry(lease),
        };
        let condition = match self.get_json::<LockInfo>(LOCK_KEY).await? {
            None => Condition::IfAbsent,
            Some((current, etag)) if current.expires_at < unix_now() => Condition::IfMatch(etag),
            Some((current, _)) => return Err(self.locked(current)),
        };
        match self.put_json(LOCK_KEY, &info, condition).await {
            Ok(meta) => Ok(LockGuard {
                info,
                etag: meta.etag,
                lease,
            }),
            Err(Error::PreconditionFailed { .. }) => {
                match self.get_json::<LockInfo>(LOCK_KEY).await? {
                    Some((current, _)) => Err(self.locked(current)),
                    None => Err(Error::PreconditionFailed {
                        key: LOCK_KEY.into(),
                        store: self.url(),
                    }),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn locked(&self, info: LockInfo) -> Error {
        Error::Locked {
            store: self.url(),
            id: info.id,
            holder: info.holder,
            command: info.command,
            started_at: info.started_at,
        }
    }

    /// Extends the lease. Fails if the lock was taken over (the lease had run out).
    pub async fn renew_lock(&self, guard: &mut LockGuard) -> Result<()> {
        let mut info = guard.info.clone();
        info.heartbeat_at = now_rfc3339();
        info.expires_at = lease_expiry(guard.lease);
        let meta = self
            .put_json(LOCK_KEY, &info, Condition::IfMatch(guard.etag.clone()))
            .await?;
        guard.info = info;
        guard.etag = meta.etag;
        Ok(())
    }

    /// Releases a lock this process holds.
    pub async fn unlock(&self, guard: LockGuard) -> Result<()> {
        self.objects
            .delete(LOCK_KEY, Condition::IfMatch(guard.etag))
            .await
    }

    /// Removes the lock whatever it holds, a damaged record included (`cairn unlock
    /// --force`). Returns what it removed, or `None` when no lock was there. Conditional
    /// on what was read, so a lock taken in between is left alone.
    pub async fn break_lock(&self) -> Result<Option<BrokenLock>> {
        let Some((bytes, meta)) = self.objects.get(LOCK_KEY).await? else {
            return Ok(None);
        };
        self.objects
            .delete(LOCK_KEY, Condition::IfMatch(meta.etag))
            .await?;
        Ok(Some(match serde_json::from_slice::<LockInfo>(&bytes) {
            Ok(info) => BrokenLock::Held(info),
            Err(_) => BrokenLock::Damaged { size: meta.size },
        }))
    }

    /// Removes the lock with this id, whoever holds it (`cairn unlock <id>`).
    pub async fn force_unlock(&self, id: &str) -> Result<LockInfo> {
        match self.get_json::<LockInfo>(LOCK_KEY).await? {
            Some((info, etag)) if info.id == id => {
                self.objects
                    .delete(LOCK_KEY, Condition::IfMatch(etag))
                    .await?;
                Ok(info)
            }
            _ => Err(Error::NoSuchLock {
                id: id.to_string(),
                store: self.url(),
            }),
        }
    }

    // ---- journal --------------------------------------------------------------------

    pub async fn append_journal(&self, record: &JournalRecord) -> Result<String> {
        let stamp: String = record
            .started_at
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        let rev = record
            .revision
            .as_deref()
            .map_or("worktree", |r| &r[..r.len().min(7)]);
        let key = format!("{JOURNAL_PREFIX}{stamp}-{rev}-{}.json", record.id);
        self.put_json(&key, record, Condition::IfAbsent).await?;
        Ok(key)
    }

    /// Returns the journal, oldest first. A record that isn't valid JSON of a journal
    /// record is left out and named in [`Journal::damaged`]: one damaged file must not
    /// hide the others.
    pub async fn journal(&self) -> Result<Journal> {
        let mut journal = Journal::default();
        for meta in self.objects.list(JOURNAL_PREFIX).await? {
            match self.get_json::<JournalRecord>(&meta.key).await {
                Ok(Some((record, _))) => journal.records.push(record),
                Ok(None) => {}
                Err(Error::Corrupt { key, source, .. }) => journal.damaged.push(DamagedRecord {
                    key,
                    reason: source.to_string(),
                }),
                Err(e) => return Err(e),
            }
        }
        Ok(journal)
    }
}
