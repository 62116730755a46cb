//! The store test suite: one async function per behaviour, written against the
//! [`ObjectStore`] trait and the [`Store`] domain layer only, so it runs unchanged against
//! every backend. `main.rs` instantiates it once per backend.
//!
//! Each function takes what it needs as its argument ([`Fixture`]): a fresh
//! `Arc<dyn ObjectStore>`, a fresh [`Store`], or the [`Backend`] itself when it needs
//! several fresh stores (the races run a few rounds, each on an empty store).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn::backend::store::{
    Condition, DatasetVersion, Error, FileEntry, JournalOutcome, JournalRecord, LockInfo,
    ModelRecord, ObjectStore, RunRecord, RunStatus, State, StateEntry, Store, VersionedState,
};
use cairn::Kind;

/// Makes empty stores of one backend. Cloning shares the backend. Whatever must outlive
/// the stores (a temporary folder, a server process) is kept alive by the backend, which
/// the test holds until it ends.
#[derive(Clone)]
pub struct Backend {
    inner: Arc<Inner>,
}

type MakeStore =
    dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn ObjectStore>> + Send>> + Send + Sync;

struct Inner {
    make: Box<MakeStore>,
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl Backend {
    pub fn new<F, Fut>(keep: impl std::any::Any + Send + Sync, make: F) -> Backend
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Arc<dyn ObjectStore>> + Send + 'static,
    {
        Backend {
            inner: Arc::new(Inner {
                make: Box::new(move || Box::pin(make())),
                _keep: Box::new(keep),
            }),
        }
    }

    /// Returns a new, empty store.
    pub async fn fresh(&self) -> Arc<dyn ObjectStore> {
        (self.inner.make)().await
    }
}

/// What a suite function can take as its argument.
pub trait Fixture: Sized {
    fn make(backend: &Backend) -> impl Future<Output = Self>;
}

impl Fixture for Arc<dyn ObjectStore> {
    async fn make(backend: &Backend) -> Self {
        backend.fresh().await
    }
}

impl Fixture for Store {
    async fn make(backend: &Backend) -> Self {
        Store::new(backend.fresh().await)
    }
}

impl Fixture for Backend {
    async fn make(backend: &Backend) -> Self {
        backend.clone()
    }
}

/// Runs one suite function with the fixture it asks for.
pub async fn run<T: Fixture, Fut: Future<Output = ()>>(
    test: impl FnOnce(T) -> Fut,
    backend: &Backend,
) {
    test(T::make(backend).await).await;
}

// ---- helpers --------------------------------------------------------------------------

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn text(objects: &dyn ObjectStore, key: &str) -> Option<String> {
    objects
        .get(key)
        .await
        .unwrap()
        .map(|(bytes, _)| String::from_utf8(bytes.to_vec()).unwrap())
}

async fn keys(objects: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    objects
        .list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect()
}

fn assert_precondition_failed<T: std::fmt::Debug>(result: Result<T, Error>, what: &str) {
    match result {
        Err(Error::PreconditionFailed { .. }) => {}
        other => panic!("{what}: expected PreconditionFailed, got {other:?}"),
    }
}

/// Bytes that don't repeat with a short period, so a shifted or truncated copy differs.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn file_entry(key: &str, path: &str, body: &[u8]) -> FileEntry {
    use sha2::Digest;
    FileEntry {
        path: path.to_string(),
        size: body.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(body)),
        key: key.to_string(),
    }
}

fn dataset_version(
    name: &str,
    version: &str,
    created_at: &str,
    files: Vec<FileEntry>,
) -> DatasetVersion {
    DatasetVersion {
        dataset: name.to_string(),
        version: version.to_string(),
        total_bytes: files.iter().map(|f| f.size).sum(),
        files,
        created_at: created_at.to_string(),
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        produced_by: None,
    }
}

fn journal_record(id: &str, started_at: &str, revision: Option<&str>) -> JournalRecord {
    JournalRecord {
        id: id.to_string(),
        workspace: "credit-risk".into(),
        started_at: started_at.to_string(),
        finished_at: started_at.to_string(),
        duration_ms: 1200,
        revision: revision.map(str::to_string),
        user: "ci@runner".into(),
        plan_hash: "4c0806d0dc03".into(),
        success: true,
        outcomes: vec![JournalOutcome {
            address: "credit-risk/dataset.loans".into(),
            action: "create".into(),
            status: "succeeded".into(),
            duration_ms: 40,
            message: None,
            events: Vec::new(),
        }],
    }
}

const LEASE: Duration = Duration::from_secs(60);

// ---- objects --------------------------------------------------------------------------

/// put, get, head and overwrite; missing keys read as `None`.
pub async fn objects_roundtrip(objects: Arc<dyn ObjectStore>) {
    assert!(objects.get("a/b.txt").await.unwrap().is_none());
    assert!(objects.head("a/b.txt").await.unwrap().is_none());

    let put = objects
        .put("a/b.txt", Bytes::from_static(b"hello"), Condition::None)
        .await
        .unwrap();
    assert_eq!(put.key, "a/b.txt");
    assert_eq!(put.size, 5);
    assert!(!put.etag.is_empty());

    let (body, meta) = objects.get("a/b.txt").await.unwrap().unwrap();
    assert_eq!(&body[..], b"hello");
    assert_eq!(meta, put);
    assert_eq!(objects.head("a/b.txt").await.unwrap(), Some(put.clone()));

    // An overwrite with the same length still gets a new etag.
    let again = objects
        .put("a/b.txt", Bytes::from_static(b"HELLO"), Condition::None)
        .await
        .unwrap();
    assert_ne!(again.etag, put.etag, "a rewrite must change the etag");
    assert_eq!(text(&*objects, "a/b.txt").await.as_deref(), Some("HELLO"));

    // An empty object is an object.
    objects
        .put("empty", Bytes::new(), Condition::None)
        .await
        .unwrap();
    let (body, meta) = objects.get("empty").await.unwrap().unwrap();
    assert!(body.is_empty());
    assert_eq!(meta.size, 0);

    assert!(objects.url().contains("://"), "url: {}", objects.url());
}

/// A key that is only a prefix of other keys ("a" of "a/b.txt") is not an object, and
/// an object is not a prefix: reading the one or listing under the other finds nothing,
/// as on S3. (`ObjectStore::get` promises `None` when there is no such key, and `list`
/// every object under the prefix.)
pub async fn objects_prefix_is_not_an_object(objects: Arc<dyn ObjectStore>) {
    objects
        .put("a/b.txt", Bytes::from_static(b"hello"), Condition::None)
        .await
        .unwrap();
    assert!(objects.head("a").await.unwrap().is_none());
    assert!(objects.get("a").await.unwrap().is_none(), "get of a prefix");
    assert!(
        keys(&*objects, "a/b.txt/").await.is_empty(),
        "list under an object"
    );
    assert!(keys(&*objects, "a/b.txt/more").await.is_empty());
}

/// list: prefix filtering as a string prefix (not a folder), sorted by key, nested keys.
pub async fn objects_list(objects: Arc<dyn ObjectStore>) {
    let all = [
        "z",
        "a/ba.txt",
        "a/b/d/e/f",
        "ab.txt",
        "a/b.txt",
        "a/b/c.txt",
        "datasets/loans2/v/_version.json",
        "datasets/loans/v/_version.json",
    ];
    for (i, key) in all.iter().enumerate() {
        objects
            .put(key, Bytes::from(vec![b'x'; i + 1]), Condition::None)
            .await
            .unwrap();
    }
    let mut sorted = all.map(str::to_string).to_vec();
    sorted.sort();
    assert_eq!(keys(&*objects, "").await, sorted);
    assert_eq!(
        keys(&*objects, "a/b").await,
        ["a/b.txt", "a/b/c.txt", "a/b/d/e/f", "a/ba.txt"]
    );
    assert_eq!(keys(&*objects, "a/b/").await, ["a/b/c.txt", "a/b/d/e/f"]);
    assert_eq!(
        keys(&*objects, "a").await,
        ["a/b.txt", "a/b/c.txt", "a/b/d/e/f", "a/ba.txt", "ab.txt"]
    );
    assert_eq!(keys(&*objects, "a/b/d/e/f").await, ["a/b/d/e/f"]);
    assert_eq!(
        keys(&*objects, "datasets/loans/").await,
        ["datasets/loans/v/_version.json"]
    );
    assert!(keys(&*objects, "nothing/").await.is_empty());

    // Sizes and etags in a listing are the objects'.
    let listed = objects.list("a/b/c").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        Some(listed[0].clone()),
        objects.head("a/b/c.txt").await.unwrap()
    );
    assert_eq!(listed[0].size, 6);
}

/// delete removes; deleting a missing key is fine.
pub async fn objects_delete(objects: Arc<dyn ObjectStore>) {
    objects
        .put("d/one", Bytes::from_static(b"1"), Condition::None)
        .await
        .unwrap();
    objects
        .put("d/two", Bytes::from_static(b"2"), Condition::None)
        .await
        .unwrap();
    objects.delete("d/one", Condition::None).await.unwrap();
    assert!(objects.get("d/one").await.unwrap().is_none());
    assert_eq!(keys(&*objects, "d/").await, ["d/two"]);
    objects.delete("d/one", Condition::None).await.unwrap();
    objects.delete("never/was", Condition::None).await.unwrap();
    assert_eq!(text(&*objects, "d/two").await.as_deref(), Some("2"));
}

/// Keys that could escape the store or are ambiguous are refused by every operation.
pub async fn objects_invalid_keys(objects: Arc<dyn ObjectStore>) {
    let scratch = tempfile::tempdir().unwrap();
    let source = scratch.path().join("source");
    std::fs::write(&source, b"x").unwrap();
    let dest = scratch.path().join("dest");
    for key in [
        "../x", "/abs", "a//b", "a/../b", "./a", "a/./b", "a/", "", "a\\b",
    ] {
        let invalid = |what: &str, result: Result<(), Error>| match result {
            Err(Error::InvalidKey(k)) => assert_eq!(k, key, "{what}"),
            other => panic!("{what} `{key}`: expected InvalidKey, got {other:?}"),
        };
        invalid("get", objects.get(key).await.map(|_| ()));
        invalid("head", objects.head(key).await.map(|_| ()));
        invalid(
            "put",
            objects
                .put(key, Bytes::from_static(b"x"), Condition::None)
                .await
                .map(|_| ()),
        );
        invalid(
            "put IfAbsent",
            objects
                .put(key, Bytes::from_static(b"x"), Condition::IfAbsent)
                .await
                .map(|_| ()),
        );
        invalid("put_file", objects.put_file(key, &source).await.map(|_| ()));
        invalid("get_file", objects.get_file(key, &dest).await);
        invalid("delete", objects.delete(key, Condition::None).await);
    }
    assert!(!dest.exists());
    assert!(!scratch.path().join("x").exists());
    assert!(
        keys(&*objects, "").await.is_empty(),
        "nothing may be written"
    );
}

/// `IfAbsent` creates once; the second put fails and leaves the first object.
pub async fn objects_if_absent(objects: Arc<dyn ObjectStore>) {
    let first = objects
        .put("once", Bytes::from_static(b"first"), Condition::IfAbsent)
        .await
        .unwrap();
    assert_precondition_failed(
        objects
            .put("once", Bytes::from_static(b"second"), Condition::IfAbsent)
            .await,
        "second IfAbsent put",
    );
    let (body, meta) = objects.get("once").await.unwrap().unwrap();
    assert_eq!(&body[..], b"first");
    assert_eq!(meta.etag, first.etag);
    // After a delete the key is absent again.
    objects.delete("once", Condition::None).await.unwrap();
    objects
        .put("once", Bytes::from_static(b"third"), Condition::IfAbsent)
        .await
        .unwrap();
    assert_eq!(text(&*objects, "once").await.as_deref(), Some("third"));
    // The failed attempt left nothing visible beside the object.
    assert_eq!(keys(&*objects, "").await, ["once"]);
}

/// `IfMatch` on put: the current etag wins, a stale one fails, a missing object fails.
pub async fn objects_if_match_put(objects: Arc<dyn ObjectStore>) {
    let v1 = objects
        .put("cas", Bytes::from_static(b"v1"), Condition::None)
        .await
        .unwrap();
    let v2 = objects
        .put(
            "cas",
            Bytes::from_static(b"v2"),
            Condition::IfMatch(v1.etag.clone()),
        )
        .await
        .unwrap();
    assert_ne!(v1.etag, v2.etag);
    assert_precondition_failed(
        objects
            .put(
                "cas",
                Bytes::from_static(b"v3"),
                Condition::IfMatch(v1.etag.clone()),
            )
            .await,
        "put with a stale etag",
    );
    assert_eq!(text(&*objects, "cas").await.as_deref(), Some("v2"));
    assert_precondition_failed(
        objects
            .put(
                "missing",
                Bytes::from_static(b"x"),
                Condition::IfMatch(v2.etag.clone()),
            )
            .await,
        "IfMatch put of a missing key",
    );
    assert!(objects.head("missing").await.unwrap().is_none());
    let v3 = objects
        .put(
            "cas",
            Bytes::from_static(b"v3"),
            Condition::IfMatch(v2.etag.clone()),
        )
        .await
        .unwrap();
    assert_eq!(objects.head("cas").await.unwrap().unwrap().etag, v3.etag);
    assert_eq!(keys(&*objects, "").await, ["cas"]);
}

/// `IfMatch` on delete: a stale etag leaves the object, the current one removes it.
pub async fn objects_if_match_delete(objects: Arc<dyn ObjectStore>) {
    let v1 = objects
        .put("cas", Bytes::from_static(b"v1"), Condition::None)
        .await
        .unwrap();
    let v2 = objects
        .put("cas", Bytes::from_static(b"v2"), Condition::None)
        .await
        .unwrap();
    assert_precondition_failed(
        objects
            .delete("cas", Condition::IfMatch(v1.etag.clone()))
            .await,
        "delete with a stale etag",
    );
    assert_eq!(text(&*objects, "cas").await.as_deref(), Some("v2"));
    objects
        .delete("cas", Condition::IfMatch(v2.etag.clone()))
        .await
        .unwrap();
    assert!(objects.head("cas").await.unwrap().is_none());
    assert_precondition_failed(
        objects
            .delete("cas", Condition::IfMatch(v2.etag.clone()))
            .await,
        "IfMatch delete of a missing key",
    );
    assert!(keys(&*objects, "").await.is_empty());
}

/// put_file / get_file move a multi-megabyte file byte for byte.
pub async fn objects_large_file(objects: Arc<dyn ObjectStore>) {
    let scratch = tempfile::tempdir().unwrap();
    let source = scratch.path().join("big.bin");
    let body = pseudo_random(5 * 1024 * 1024 + 123, 7);
    std::fs::write(&source, &body).unwrap();

    let meta = objects.put_file("blobs/big.bin", &source).await.unwrap();
    assert_eq!(meta.size, body.len() as u64);
    assert_eq!(objects.head("blobs/big.bin").await.unwrap(), Some(meta));

    let dest = scratch.path().join("out/nested/big.bin");
    objects.get_file("blobs/big.bin", &dest).await.unwrap();
    assert!(std::fs::read(&dest).unwrap() == body, "get_file differs");
    let (bytes, _) = objects.get("blobs/big.bin").await.unwrap().unwrap();
    assert!(bytes[..] == body[..], "get differs");

    // get_file replaces what is at the destination.
    std::fs::write(&dest, b"old contents, longer than nothing").unwrap();
    objects
        .put("blobs/small", Bytes::from_static(b"small"), Condition::None)
        .await
        .unwrap();
    objects.get_file("blobs/small", &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"small");
    assert_eq!(keys(&*objects, "").await, ["blobs/big.bin", "blobs/small"]);
}

/// put_file_checked stores a file whose bytes have the SHA-256 given, one `PUT` or a
/// multipart upload on S3; given another hash, it stores nothing and says the content
/// does not match. (Dataset uploads give the hash the plan computed: a file rewritten
/// since must not land under the version that hash named.)
pub async fn objects_put_file_checked(objects: Arc<dyn ObjectStore>) {
    use sha2::{Digest, Sha256};
    let scratch = tempfile::tempdir().unwrap();
    let large = 2 * cairn::backend::store::PART_SIZE as usize + 4321;
    for (name, len) in [("small.bin", 70_000), ("large.bin", large)] {
        let source = scratch.path().join(name);
        let body = pseudo_random(len, len as u64);
        std::fs::write(&source, &body).unwrap();
        let sha256 = hex::encode(Sha256::digest(&body));

        let key = format!("checked/{name}");
        let meta = objects
            .put_file_checked(&key, &source, &sha256)
            .await
            .unwrap();
        assert_eq!(meta.size, len as u64);
        let (bytes, _) = objects.get(&key).await.unwrap().unwrap();
        assert!(bytes[..] == body[..], "{name} differs");

        // The file changed after it was hashed: nothing is stored.
        let other = format!("changed/{name}");
        let stale = hex::encode(Sha256::digest(b"what the file held when it was hashed"));
        match objects.put_file_checked(&other, &source, &stale).await {
            Err(Error::ContentMismatch {
                key, path, sha256, ..
            }) => {
                assert_eq!(key, other);
                assert_eq!(path, source.display().to_string());
                assert_eq!(sha256, stale);
            }
            other => panic!("{name} with a stale hash: {other:?}"),
        }
        assert!(objects.head(&other).await.unwrap().is_none());
    }
    assert_eq!(
        keys(&*objects, "").await,
        ["checked/large.bin", "checked/small.bin"]
    );
}

/// A stored object is a copy: changing the local file it came from, or the local file it
/// was fetched into, in place must not change the stored bytes. (Dataset versions are
/// uploaded with `put_file` straight from the user's working tree, and job inputs are
/// fetched with `get_file` into a folder the job may write to.)
pub async fn objects_files_are_copies(objects: Arc<dyn ObjectStore>) {
    let scratch = tempfile::tempdir().unwrap();
    let source = scratch.path().join("loans.csv");
    std::fs::write(&source, b"id,y\n1,0\n").unwrap();
    objects
        .put_file("datasets/loans/v1/loans.csv", &source)
        .await
        .unwrap();

    // Rewrite the source in place (same inode), as `std::fs::write` or an editor does.
    std::fs::write(&source, b"id,y\n1,1\n").unwrap();
    assert_eq!(
        text(&*objects, "datasets/loans/v1/loans.csv")
            .await
            .as_deref(),
        Some("id,y\n1,0\n"),
        "editing the uploaded file changed the stored object"
    );

    let fetched = scratch.path().join("inputs/loans.csv");
    objects
        .get_file("datasets/loans/v1/loans.csv", &fetched)
        .await
        .unwrap();
    append(&fetched, b"2,1\n");
    assert_eq!(
        text(&*objects, "datasets/loans/v1/loans.csv")
            .await
            .as_deref(),
        Some("id,y\n1,0\n"),
        "appending to the fetched file changed the stored object"
    );
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

// ---- datasets, runs, models ----------------------------------------------------------

/// A dataset version is visible only once `_version.json` is committed; files without a
/// marker are not a version.
pub async fn dataset_markers(store: Store) {
    let objects = store.objects().clone();
    let a = b"id,y\n1,0\n".to_vec();
    let b = b"id,y\n2,1\n".to_vec();
    let key_a = Store::dataset_file_key("loans", "v1", "part/a.csv");
    let key_b = Store::dataset_file_key("loans", "v1", "b.csv");
    assert_eq!(key_a, "datasets/loans/v1/part/a.csv");
    objects
        .put(&key_a, a.clone().into(), Condition::None)
        .await
        .unwrap();
    objects
        .put(&key_b, b.clone().into(), Condition::None)
        .await
        .unwrap();

    // Uploaded, not committed: invisible.
    assert!(store.dataset_versions("loans").await.unwrap().is_empty());
    assert!(!store.has_dataset_version("loans", "v1").await.unwrap());
    assert!(store
        .dataset_version("loans", "v1")
        .await
        .unwrap()
        .is_none());

    let v1 = dataset_version(
        "loans",
        "v1",
        "2025-01-01T00:00:00Z",
        vec![
            file_entry(&key_b, "b.csv", &b),
            file_entry(&key_a, "part/a.csv", &a),
        ],
    );
    store.commit_dataset_version(&v1).await.unwrap();
    assert!(store.has_dataset_version("loans", "v1").await.unwrap());
    assert_eq!(
        store.dataset_version("loans", "v1").await.unwrap(),
        Some(v1.clone())
    );
    assert_eq!(
        store.dataset_versions("loans").await.unwrap(),
        vec![v1.clone()]
    );
    assert!(objects
        .head("datasets/loans/v1/_version.json")
        .await
        .unwrap()
        .is_some());

    // A second version half uploaded: still only v1. It may reuse v1's file by key.
    let c = b"id,y\n3,0\n".to_vec();
    let key_c = Store::dataset_file_key("loans", "v2", "c.csv");
    objects
        .put(&key_c, c.clone().into(), Condition::None)
        .await
        .unwrap();
    assert_eq!(
        store.dataset_versions("loans").await.unwrap(),
        vec![v1.clone()]
    );
    assert!(!store.has_dataset_version("loans", "v2").await.unwrap());

    // Another dataset whose name shares the prefix is not mixed in.
    let other = dataset_version("loans2", "w1", "2024-01-01T00:00:00Z", Vec::new());
    store.commit_dataset_version(&other).await.unwrap();
    assert_eq!(
        store.dataset_versions("loans").await.unwrap(),
        vec![v1.clone()]
    );
    assert_eq!(store.dataset_versions("loans2").await.unwrap(), [other]);
    assert!(store.dataset_versions("loan").await.unwrap().is_empty());

    // Committed: listed, oldest first (by creation time, not by name).
    let v2 = dataset_version(
        "loans",
        "0-older-name",
        "2025-02-01T00:00:00Z",
        vec![
            file_entry(&key_a, "part/a.csv", &a),
            file_entry(&key_c, "c.csv", &c),
        ],
    );
    store.commit_dataset_version(&v2).await.unwrap();
    assert_eq!(
        store.dataset_versions("loans").await.unwrap(),
        [v1, v2.clone()]
    );

    // The files a version lists are where it says, with the hashes it says.
    for f in &v2.files {
        let (bytes, meta) = objects.get(&f.key).await.unwrap().unwrap();
        assert_eq!(meta.size, f.size);
        assert_eq!(file_entry(&f.key, &f.path, &bytes).sha256, f.sha256);
    }
}

/// Run records round-trip through `_run.json`.
pub async fn run_records(store: Store) {
    assert!(store
        .run("train-risk", "be28c2442beb")
        .await
        .unwrap()
        .is_none());
    let record = RunRecord {
        job: "train-risk".into(),
        run_id: "be28c2442beb".into(),
        status: RunStatus::Failed,
        attempts: 3,
        started_at: "2025-01-01T00:00:00Z".into(),
        finished_at: "2025-01-01T00:00:09Z".into(),
        duration_ms: 9000,
        exit_code: Some(3),
        inputs: BTreeMap::from([("loans".into(), "dataset.loans@8ad8a481ac6c".into())]),
        outputs: BTreeMap::new(),
        metrics: Some(serde_json::json!({"auc": 0.5, "nested": {"n": [1, 2]}})),
        logs: vec![
            Store::run_log_key("train-risk", "be28c2442beb", 1),
            Store::run_log_key("train-risk", "be28c2442beb", 2),
        ],
        error: Some("exited with code 3 (attempt 3 of 3)".into()),
        commit: None,
        trials: Vec::new(),
    };
    assert_eq!(record.logs[1], "runs/train-risk/be28c2442beb/attempt-2.log");
    store.put_run(&record).await.unwrap();
    assert_eq!(
        store.run("train-risk", "be28c2442beb").await.unwrap(),
        Some(record.clone())
    );
    assert!(store
        .objects()
        .head("runs/train-risk/be28c2442beb/_run.json")
        .await
        .unwrap()
        .is_some());

    // A retry that succeeds replaces the record.
    let succeeded = RunRecord {
        status: RunStatus::Succeeded,
        exit_code: Some(0),
        error: None,
        attempts: 1,
        outputs: BTreeMap::from([("model".into(), "model.risk-scorer@be28c2442beb".into())]),
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        ..record
    };
    store.put_run(&succeeded).await.unwrap();
    assert_eq!(
        store.run("train-risk", "be28c2442beb").await.unwrap(),
        Some(succeeded)
    );
    assert!(store.run("train-risk", "other").await.unwrap().is_none());
    assert!(store
        .run("other-job", "be28c2442beb")
        .await
        .unwrap()
        .is_none());
}

/// Model versions round-trip through `_model.json`, with their lineage.
pub async fn model_records(store: Store) {
    assert!(!store
        .has_model_version("risk-scorer", "a573c776eb28")
        .await
        .unwrap());
    let key = Store::model_file_key("risk-scorer", "a573c776eb28", "model.safetensors");
    assert_eq!(key, "models/risk-scorer/a573c776eb28/model.safetensors");
    store
        .objects()
        .put(&key, Bytes::from_static(b"weights"), Condition::None)
        .await
        .unwrap();
    // Files without the marker are not a version.
    assert!(!store
        .has_model_version("risk-scorer", "a573c776eb28")
        .await
        .unwrap());
    assert!(store
        .model_version("risk-scorer", "a573c776eb28")
        .await
        .unwrap()
        .is_none());

    let record = ModelRecord {
        model: "risk-scorer".into(),
        version: "a573c776eb28".into(),
        format: "safetensors".into(),
        job: Some("train-risk".into()),
        run_id: Some("a573c776eb28".into()),
        inputs: BTreeMap::from([("loans".into(), "dataset.loans@1e6e451da2aa".into())]),
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        metrics: Some(serde_json::json!({"auc": 0.91})),
        files: vec![file_entry(&key, "model.safetensors", b"weights")],
        created_at: "2025-01-01T00:00:00Z".into(),
        trials: Vec::new(),
    };
    store.commit_model_version(&record).await.unwrap();
    assert!(store
        .has_model_version("risk-scorer", "a573c776eb28")
        .await
        .unwrap());
    assert_eq!(
        store
            .model_version("risk-scorer", "a573c776eb28")
            .await
            .unwrap(),
        Some(record.clone())
    );

    // An imported model has no job lineage; optional fields stay absent.
    let imported = ModelRecord {
        model: "baseline".into(),
        version: "0f0f0f0f0f0f".into(),
        job: None,
        run_id: None,
        inputs: BTreeMap::new(),
        commit: None,
        metrics: None,
        files: Vec::new(),
        ..record
    };
    store.commit_model_version(&imported).await.unwrap();
    assert_eq!(
        store
            .model_version("baseline", "0f0f0f0f0f0f")
            .await
            .unwrap(),
        Some(imported)
    );
}

// ---- state and journal ----------------------------------------------------------------

/// Saving the state is a compare-and-swap: a writer holding a stale etag fails.
pub async fn state_compare_and_swap(store: Store) {
    let empty = store.state().await.unwrap();
    assert!(empty.etag.is_none());
    assert_eq!(empty.state, State::default());

    let mut mine = empty.clone();
    mine.state.resources.insert(
        "credit-risk/dataset.loans".into(),
        StateEntry {
            kind: Kind::Dataset,
            value: serde_json::json!({"version": "8ad8a481ac6c"}),
            revision: None,
            applied_at: "2025-01-01T00:00:00Z".into(),
        },
    );
    store.save_state(&mut mine).await.unwrap();
    assert_eq!(mine.state.serial, 1);
    assert_eq!(mine.state.format_version, 1);
    assert!(mine.etag.is_some());

    let read = store.state().await.unwrap();
    assert_eq!(read.state, mine.state);
    assert_eq!(read.etag, mine.etag);

    // A second writer that started from nothing may not create over it.
    let mut late_creator = empty;
    assert_precondition_failed(
        store.save_state(&mut late_creator).await,
        "create over a state",
    );

    // Two writers read the same state; the first save wins, the second is stale.
    let mut a = store.state().await.unwrap();
    let mut b = store.state().await.unwrap();
    a.state.resources.clear();
    store.save_state(&mut a).await.unwrap();
    assert_eq!(a.state.serial, 2);
    b.state.resources.insert(
        "credit-risk/job.train-risk".into(),
        StateEntry {
            kind: Kind::Job,
            value: serde_json::json!({"run_id": "x"}),
            revision: Some("abc".into()),
            applied_at: "2025-01-01T00:00:01Z".into(),
        },
    );
    assert_precondition_failed(store.save_state(&mut b).await, "save with a stale etag");
    let now = store.state().await.unwrap();
    assert_eq!(now.state, a.state, "the failed save must not have written");
    assert!(now.state.resources.is_empty());

    // The winner can go on saving with the etag it got back.
    let mut a2: VersionedState = a.clone();
    store.save_state(&mut a2).await.unwrap();
    store.save_state(&mut a2).await.unwrap();
    assert_eq!(store.state().await.unwrap().state.serial, 4);
}

/// The journal lists records oldest first; a record is written once.
pub async fn journal_order(store: Store) {
    assert!(store.journal().await.unwrap().records.is_empty());
    let records = [
        journal_record("bbbb0001", "2025-01-01T09:00:00Z", None),
        journal_record("aaaa0002", "2025-01-01T10:00:00Z", Some("0123456789abcdef")),
        journal_record("0000zzzz", "2025-01-02T08:30:00Z", Some("fedcba98")),
    ];
    // Appended out of order on purpose: the listing orders by time, not by arrival.
    let mut written = Vec::new();
    for i in [1, 0, 2] {
        written.push(store.append_journal(&records[i]).await.unwrap());
    }
    assert_eq!(store.journal().await.unwrap().records, records);
    for key in &written {
        assert!(key.starts_with(".cairn/journal/"), "{key}");
    }
    assert!(written[0].contains("0123456"), "{}", written[0]);
    assert!(written[1].contains("worktree"), "{}", written[1]);

    assert_precondition_failed(
        store.append_journal(&records[0]).await,
        "appending the same record twice",
    );
    assert_eq!(store.journal().await.unwrap().records.len(), 3);
}

/// Applies that start within the same second are listed in the order they started:
/// timestamps carry milliseconds, and keys sort by them before the random id.
pub async fn journal_order_within_a_second(store: Store) {
    let ids: Vec<String> = (0..8)
        .map(|i| format!("{:08x}", 0xffff_fff0u32 - i * 0x1111_1111))
        .collect();
    // Append out of order: the listing must follow the start times, not the appends.
    for i in [3usize, 0, 7, 1, 5, 2, 6, 4] {
        let started = format!("2025-01-01T09:00:00.{:03}Z", i * 10);
        store
            .append_journal(&journal_record(&ids[i], &started, None))
            .await
            .unwrap();
    }
    let listed: Vec<String> = store
        .journal()
        .await
        .unwrap()
        .records
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, ids);
}

// ---- lock -----------------------------------------------------------------------------

/// A held lock refuses a second taker, naming the holder, command and lock id.
pub async fn lock_conflict(store: Store) {
    assert!(store.lock_info().await.unwrap().is_none());
    let guard = store
        .try_lock("alice@build-1", "cairn apply", LEASE)
        .await
        .unwrap();
    assert_eq!(guard.info.holder, "alice@build-1");
    assert_eq!(guard.info.command, "cairn apply");
    assert_eq!(guard.info.pid, std::process::id());
    assert!(guard.info.expires_at >= unix_now() + LEASE.as_secs() - 1);
    assert!(!guard.info.id.is_empty());

    let (info, expired) = store.lock_info().await.unwrap().unwrap();
    assert_eq!(info, guard.info);
    assert!(!expired);

    let err = store
        .try_lock("bob@laptop", "cairn apply --auto-approve", LEASE)
        .await
        .unwrap_err();
    match &err {
        Error::Locked {
            id,
            holder,
            command,
            started_at,
            store: url,
        } => {
            assert_eq!(id, &guard.info.id);
            assert_eq!(holder, "alice@build-1");
            assert_eq!(command, "cairn apply");
            assert_eq!(started_at, &guard.info.started_at);
            assert_eq!(url, &store.url());
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("alice@build-1"), "{message}");
    assert!(message.contains(&guard.info.id), "{message}");
    assert!(message.contains("cairn apply"), "{message}");
    // The refused taker changed nothing.
    assert_eq!(store.lock_info().await.unwrap().unwrap().0, guard.info);
}

/// renew extends the lease and moves the etag on; unlock releases; a guard whose etag is
/// stale can neither renew nor unlock.
pub async fn lock_renew_unlock(store: Store) {
    let mut guard = store
        .try_lock("alice@build-1", "cairn apply", LEASE)
        .await
        .unwrap();
    let before = guard.clone();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    store.renew_lock(&mut guard).await.unwrap();
    assert_eq!(guard.info.id, before.info.id);
    assert!(
        guard.info.expires_at > before.info.expires_at,
        "renew must extend the lease"
    );
    let (info, expired) = store.lock_info().await.unwrap().unwrap();
    assert_eq!(info, guard.info);
    assert!(!expired);

    // The copy taken before the renewal is stale now.
    let mut stale = before;
    assert_precondition_failed(
        store.renew_lock(&mut stale).await,
        "renew with a stale guard",
    );
    assert_precondition_failed(store.unlock(stale).await, "unlock with a stale guard");
    assert!(
        store.lock_info().await.unwrap().is_some(),
        "a stale unlock must not release"
    );

    store.unlock(guard).await.unwrap();
    assert!(store.lock_info().await.unwrap().is_none());
    // Free again.
    let guard = store
        .try_lock("bob@laptop", "cairn apply", LEASE)
        .await
        .unwrap();
    assert_eq!(
        store.lock_info().await.unwrap().unwrap().0.holder,
        "bob@laptop"
    );
    store.unlock(guard).await.unwrap();
}

/// force_unlock removes the lock only when the id matches.
pub async fn lock_force_unlock(store: Store) {
    match store.force_unlock("nothing-held").await {
        Err(Error::NoSuchLock { id, .. }) => assert_eq!(id, "nothing-held"),
        other => panic!("expected NoSuchLock, got {other:?}"),
    }
    let guard = store
        .try_lock("alice@build-1", "cairn apply", LEASE)
        .await
        .unwrap();
    match store.force_unlock("0000wrong000").await {
        Err(Error::NoSuchLock { id, .. }) => assert_eq!(id, "0000wrong000"),
        other => panic!("expected NoSuchLock, got {other:?}"),
    }
    assert_eq!(store.lock_info().await.unwrap().unwrap().0, guard.info);

    let released = store.force_unlock(&guard.info.id).await.unwrap();
    assert_eq!(released, guard.info);
    assert!(store.lock_info().await.unwrap().is_none());
    assert!(matches!(
        store.force_unlock(&guard.info.id).await,
        Err(Error::NoSuchLock { .. })
    ));
}

/// A lease that ran out is taken over; the old holder has lost it.
pub async fn lock_expired_takeover(store: Store) {
    let mut old = store
        .try_lock("dead@build-1", "cairn apply", Duration::from_secs(1))
        .await
        .unwrap();
    assert!(matches!(
        store.try_lock("bob@laptop", "cairn apply", LEASE).await,
        Err(Error::Locked { .. })
    ));
    // Expiry is in whole seconds: a 1 s lease has surely run out after 2.2 s.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (info, expired) = store.lock_info().await.unwrap().unwrap();
    assert_eq!(info.id, old.info.id);
    assert!(expired, "the lease should have run out: {info:?}");

    let new = store
        .try_lock("bob@laptop", "cairn apply", LEASE)
        .await
        .unwrap();
    assert_ne!(new.info.id, old.info.id);
    let (info, expired) = store.lock_info().await.unwrap().unwrap();
    assert_eq!(info, new.info);
    assert!(!expired);

    // The old holder can't renew or release the new holder's lock.
    assert_precondition_failed(store.renew_lock(&mut old).await, "renew after a takeover");
    assert_precondition_failed(store.unlock(old.clone()).await, "unlock after a takeover");
    assert!(matches!(
        store.force_unlock(&old.info.id).await,
        Err(Error::NoSuchLock { .. })
    ));
    assert_eq!(store.lock_info().await.unwrap().unwrap().0, new.info);
}

// ---- races ----------------------------------------------------------------------------

/// Concurrent conditional writes of one key: exactly one `IfAbsent` create and exactly
/// one `IfMatch` swap from the same etag win; the object is the winner's.
pub async fn objects_conditional_races(backend: Backend) {
    for round in 0..5 {
        let objects = backend.fresh().await;
        for condition in ["absent", "match"] {
            let expected = match condition {
                "absent" => Condition::IfAbsent,
                _ => {
                    let meta = objects
                        .put("race", Bytes::from_static(b"start"), Condition::None)
                        .await
                        .unwrap();
                    Condition::IfMatch(meta.etag)
                }
            };
            let n = 12;
            let barrier = Arc::new(tokio::sync::Barrier::new(n));
            let tasks: Vec<_> = (0..n)
                .map(|i| {
                    let objects = objects.clone();
                    let barrier = barrier.clone();
                    let condition = expected.clone();
                    tokio::spawn(async move {
                        barrier.wait().await;
                        let body = Bytes::from(format!("writer {i}"));
                        (i, objects.put("race", body, condition).await)
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for task in tasks {
                match task.await.unwrap() {
                    (i, Ok(meta)) => winners.push((i, meta)),
                    (_, Err(Error::PreconditionFailed { .. })) => {}
                    (_, Err(e)) => panic!("round {round} {condition}: {e:?}"),
                }
            }
            assert_eq!(winners.len(), 1, "round {round} {condition}: {winners:?}");
            let (i, meta) = &winners[0];
            let (body, now) = objects.get("race").await.unwrap().unwrap();
            assert_eq!(&body[..], format!("writer {i}").as_bytes());
            assert_eq!(&now, meta);
        }
        assert_eq!(keys(&*objects, "").await, ["race"], "no leftovers");
    }
}

/// `get` returns the bytes and the metadata of one and the same version of an object,
/// even while it is being rewritten. Compare-and-swap depends on it: a reader that got
/// old bytes with the new etag would swap over a write it never saw.
pub async fn objects_get_is_consistent(objects: Arc<dyn ObjectStore>) {
    objects
        .put("hot", Bytes::from_static(b"0"), Condition::None)
        .await
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let objects = objects.clone();
            tokio::spawn(async move {
                for i in 0..150usize {
                    // Every version has its own length, so a mixed-up answer shows.
                    let body = vec![b'a' + w as u8; 1 + (i * 3 + w) % 97];
                    objects
                        .put("hot", body.into(), Condition::None)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let objects = objects.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut mixed = 0;
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (body, meta) = objects.get("hot").await.unwrap().unwrap();
                    reads += 1;
                    if meta.size != body.len() as u64 {
                        mixed += 1;
                    }
                }
                (reads, mixed)
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = (0, 0);
    for r in readers {
        let (reads, mixed) = r.await.unwrap();
        total = (total.0 + reads, total.1 + mixed);
    }
    assert_eq!(
        total.1, 0,
        "{} of {} reads paired an object's bytes with another version's metadata",
        total.1, total.0
    );
}

/// Starts `n` `try_lock`s at the same moment; returns how many won and the errors.
async fn race(store: &Store, n: usize, prefix: &str) -> (Vec<LockInfo>, Vec<Error>) {
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = store.clone();
            let barrier = barrier.clone();
            let holder = format!("{prefix}-{i}@host");
            tokio::spawn(async move {
                barrier.wait().await;
                store.try_lock(&holder, "cairn apply", LEASE).await
            })
        })
        .collect();
    let mut won = Vec::new();
    let mut lost = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(guard) => won.push(guard.info),
            Err(e) => lost.push(e),
        }
    }
    (won, lost)
}

/// 16 concurrent `try_lock`s on a fresh store: exactly one wins, the others are told who.
pub async fn lock_race_fresh(backend: Backend) {
    for round in 0..5 {
        let store = Store::new(backend.fresh().await);
        let (won, lost) = race(&store, 16, "racer").await;
        assert_eq!(
            won.len(),
            1,
            "round {round}: {} winners: {won:?}",
            won.len()
        );
        assert_eq!(lost.len(), 15);
        for e in &lost {
            match e {
                Error::Locked { id, holder, .. } => {
                    assert_eq!(id, &won[0].id, "round {round}");
                    assert_eq!(holder, &won[0].holder, "round {round}");
                }
                other => panic!("round {round}: a loser got {other:?}"),
            }
        }
        assert_eq!(store.lock_info().await.unwrap().unwrap().0, won[0]);
    }
}

/// 8 concurrent takeovers of one expired lease: exactly one wins.
pub async fn lock_race_takeover(backend: Backend) {
    for round in 0..20 {
        let store = Store::new(backend.fresh().await);
        if round == 0 {
            // A lease that really ran out.
            store
                .try_lock("dead@host", "cairn apply", Duration::from_secs(1))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(2200)).await;
        } else {
            // The same, without the wait: a lock written by an apply that died long ago.
            let dead = LockInfo {
                id: format!("dead{round:08}"),
                holder: "dead@host".into(),
                command: "cairn apply".into(),
                pid: 1,
                started_at: "2025-01-01T00:00:00Z".into(),
                heartbeat_at: "2025-01-01T00:00:00Z".into(),
                expires_at: unix_now() - 30,
            };
            store
                .objects()
                .put(
                    ".cairn/lock",
                    serde_json::to_vec(&dead).unwrap().into(),
                    Condition::None,
                )
                .await
                .unwrap();
        }
        assert!(
            store.lock_info().await.unwrap().unwrap().1,
            "round {round}: not expired"
        );
        let (won, lost) = race(&store, 8, "taker").await;
        assert_eq!(
            won.len(),
            1,
            "round {round}: {} winners: {won:?}",
            won.len()
        );
        for e in &lost {
            assert!(
                matches!(e, Error::Locked { .. } | Error::PreconditionFailed { .. }),
                "round {round}: a loser got {e:?}"
            );
        }
        let (info, expired) = store.lock_info().await.unwrap().unwrap();
        assert_eq!(info, won[0], "round {round}");
        assert!(!expired);
    }
}

/// A lease of `Duration::MAX` is cut to 24 h: it can't wrap around into the past, so a
/// second taker is refused (it used to take the lock over at once).
pub async fn lock_extreme_lease(store: Store) {
    let guard = store
        .try_lock("alice@build-1", "cairn apply", Duration::MAX)
        .await
        .unwrap();
    let now = unix_now();
    let max = cairn::backend::store::MAX_LOCK_LEASE.as_secs();
    assert!(
        guard.info.expires_at > now && guard.info.expires_at <= now + max + 1,
        "{:?}",
        guard.info
    );
    let (_, expired) = store.lock_info().await.unwrap().unwrap();
    assert!(!expired);
    assert!(matches!(
        store
            .try_lock("bob@laptop", "cairn apply", Duration::MAX)
            .await,
        Err(Error::Locked { .. })
    ));
    let mut guard = guard;
    store.renew_lock(&mut guard).await.unwrap();
    assert!(guard.info.expires_at <= unix_now() + max + 1);
    store.unlock(guard).await.unwrap();
}

/// A lock file that is not a lock record: taking the lock says so, with the hint to
/// break it; `break_lock` removes it (and a live lock, for `unlock --force`).
pub async fn lock_damaged(store: Store) {
    assert_eq!(store.break_lock().await.unwrap(), None);
    store
        .objects()
        .put(
            ".cairn/lock",
            Bytes::from_static(b"\0garbage"),
            Condition::None,
        )
        .await
        .unwrap();
    let err = store
        .try_lock("alice@build-1", "cairn apply", LEASE)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { key, .. } if key == ".cairn/lock"),
        "{err:?}"
    );
    assert!(err.hint().unwrap().contains("cairn unlock --force"));
    assert!(matches!(
        store.lock_info().await,
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(
        store.break_lock().await.unwrap(),
        Some(cairn::backend::store::BrokenLock::Damaged { size: 8 })
    );
    let guard = store
        .try_lock("alice@build-1", "cairn apply", LEASE)
        .await
        .unwrap();
    assert_eq!(
        store.break_lock().await.unwrap(),
        Some(cairn::backend::store::BrokenLock::Held(guard.info.clone()))
    );
    assert!(store.lock_info().await.unwrap().is_none());
}

/// A damaged journal record is named; the others are still read, in order.
pub async fn journal_damaged(store: Store) {
    for (id, at) in [
        ("aaaa0001", "2025-01-01T09:00:00.000Z"),
        ("aaaa0002", "2025-01-01T09:00:02.000Z"),
    ] {
        store
            .append_journal(&journal_record(id, at, None))
            .await
            .unwrap();
    }
    let damaged_key = ".cairn/journal/20250101T090001000Z-worktree-bad.json";
    store
        .objects()
        .put(
            damaged_key,
            Bytes::from_static(b"{\"id\": "),
            Condition::None,
        )
        .await
        .unwrap();
    let journal = store.journal().await.unwrap();
    let ids: Vec<&str> = journal.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["aaaa0001", "aaaa0002"]);
    assert_eq!(journal.damaged.len(), 1);
    assert_eq!(journal.damaged[0].key, damaged_key);
    assert!(!journal.damaged[0].reason.is_empty());
}

/// `verify` reads every version's files: a changed byte, a missing file, another size
/// and a damaged marker are each reported; a file shared by two versions is read once
/// and reported for both.
pub async fn verify_damage(store: Store) {
    let scratch = tempfile::tempdir().unwrap();
    let objects = store.objects().clone();
    let a = b"id,y\n1,0\n".to_vec();
    let b = b"id,y\n2,1\n".to_vec();
    let c = b"id,y\n3,1\n".to_vec();
    let key_a = Store::dataset_file_key("loans", "v1", "a.csv");
    let key_b = Store::dataset_file_key("loans", "v1", "b.csv");
    let key_c = Store::dataset_file_key("loans", "v2", "c.csv");
    for (key, body) in [(&key_a, &a), (&key_b, &b), (&key_c, &c)] {
        objects
            .put(key, body.clone().into(), Condition::None)
            .await
            .unwrap();
    }
    let v1 = dataset_version(
        "loans",
        "v1",
        "2025-01-01T00:00:00Z",
        vec![
            file_entry(&key_a, "a.csv", &a),
            file_entry(&key_b, "b.csv", &b),
        ],
    );
    // v2 shares a.csv with v1.
    let v2 = dataset_version(
        "loans",
        "v2",
        "2025-01-02T00:00:00Z",
        vec![
            file_entry(&key_a, "a.csv", &a),
            file_entry(&key_c, "c.csv", &c),
        ],
    );
    store.commit_dataset_version(&v1).await.unwrap();
    store.commit_dataset_version(&v2).await.unwrap();
    let report = store.verify(scratch.path()).await.unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!((report.versions, report.objects), (2, 3));

    // Same size, one byte changed; one file gone; one of another size; one bad marker.
    let mut changed = a.clone();
    changed[5] = b'9';
    objects
        .put(&key_a, changed.into(), Condition::None)
        .await
        .unwrap();
    objects.delete(&key_b, Condition::None).await.unwrap();
    objects
        .put(&key_c, Bytes::from_static(b"short"), Condition::None)
        .await
        .unwrap();
    objects
        .put(
            "datasets/other/v9/_version.json",
            Bytes::from_static(b"[1,"),
            Condition::None,
        )
        .await
        .unwrap();
    let report = store.verify(scratch.path()).await.unwrap();
    use cairn::backend::store::verify::Problem;
    let found: Vec<(String, String, &'static str)> = report
        .damaged
        .iter()
        .map(|d| {
            let kind = match d.problem {
                Problem::Missing => "missing",
                Problem::Size { .. } => "size",
                Problem::Hash { .. } => "hash",
                Problem::Record { .. } => "record",
            };
            (d.version.clone(), d.path.clone(), kind)
        })
        .collect();
    assert_eq!(
        found,
        [
            ("dataset.loans@v1".to_string(), "a.csv".to_string(), "hash"),
            (
                "dataset.loans@v1".to_string(),
                "b.csv".to_string(),
                "missing"
            ),
            ("dataset.loans@v2".to_string(), "a.csv".to_string(), "hash"),
            ("dataset.loans@v2".to_string(), "c.csv".to_string(), "size"),
            (
                "datasets/other/v9/_version.json".to_string(),
                String::new(),
                "record"
            ),
        ]
    );
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
}
