//! The store test suite (`suite.rs`), run against every store backend: the folder store
//! and the S3 store against a real S3 server (`s3s-fs`, see `tests/support/s3_server.rs`).
//!
//! Adding a backend is one line, e.g. `store_suite!(s3, s3_backend());` (the second
//! argument is a `Backend` expression, evaluated inside each async test). Each suite
//! function becomes one test per backend, `<backend>::<function>`. Behaviour only one
//! backend has is tested in `file_only` below and in `s3_only.rs`.

#[path = "../support/s3_server.rs"]
mod s3_server;

mod s3_only;
mod suite;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cairn::backend::store::{FileStore, ObjectStore};

use suite::Backend;

/// Instantiates every suite function for one backend. `$make` is an expression of type
/// `Backend`, evaluated inside the async test (so it may `.await`).
macro_rules! store_suite {
    ($backend:ident, $make:expr) => {
        store_suite!(@module $backend, $make;
            tests: [
                objects_roundtrip,
                objects_list,
                objects_delete,
                objects_invalid_keys,
                objects_if_absent,
                objects_if_match_put,
                objects_if_match_delete,
                objects_large_file,
                objects_put_file_checked,
                dataset_markers,
                run_records,
                model_records,
                state_compare_and_swap,
                journal_order,
                lock_conflict,
                lock_renew_unlock,
                lock_force_unlock,
                lock_expired_takeover,
                lock_extreme_lease,
                lock_damaged,
                journal_damaged,
                verify_damage,
                objects_conditional_races,
                lock_race_fresh,
                journal_order_within_a_second,
                objects_get_is_consistent,
                lock_race_takeover,
                objects_files_are_copies,
                objects_prefix_is_not_an_object,
            ],
            // Known bugs would go here, each with the reason it is ignored.
            ignored: [
            ]
        );
    };
    (@module $backend:ident, $make:expr;
        tests: [$($test:ident),* $(,)?],
        ignored: [$($bug:ident = $why:literal),* $(,)?]
    ) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $test() {
                    let backend: Backend = $make;
                    suite::run(suite::$test, &backend).await;
                    drop(backend);
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread")]
                #[ignore = $why]
                async fn $bug() {
                    let backend: Backend = $make;
                    suite::run(suite::$bug, &backend).await;
                    drop(backend);
                }
            )*
        }
    };
}

/// The folder store: every fresh store is a new folder under one temporary folder.
fn file_backend() -> Backend {
    let dir = tempfile::tempdir().expect("temporary folder");
    let root = dir.path().to_path_buf();
    let next = AtomicUsize::new(0);
    Backend::new(dir, move || {
        let path = root.join(format!("store-{}", next.fetch_add(1, Ordering::Relaxed)));
        async move { Arc::new(FileStore::new(path)) as Arc<dyn ObjectStore> }
    })
}

store_suite!(file, file_backend());

/// The S3 store against its own `s3s-fs` server, behind the front that makes its
/// conditional writes atomic as S3's are (see `tests/support/s3_server.rs`): every fresh
/// store is a new prefix of the server's bucket.
fn s3_backend() -> Backend {
    let server = s3_server::S3Server::start_serialized();
    let next = AtomicUsize::new(0);
    let stores = server.options();
    let make = move || {
        let prefix = format!("store-{}", next.fetch_add(1, Ordering::Relaxed));
        let store = cairn::backend::store::S3Store::new(
            &format!("s3://{}/{prefix}", s3_server::BUCKET),
            &stores,
        )
        .expect("store URL")
        .with_credentials(s3_server::ACCESS_KEY, s3_server::SECRET_KEY, None);
        async move { Arc::new(store) as Arc<dyn ObjectStore> }
    };
    Backend::new(server, make)
}

store_suite!(s3, s3_backend());

/// Behaviour only the folder store has: its compare-and-swap guard files.
mod file_only {
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;
    use cairn::backend::store::{Condition, Error, FileStore, ObjectStore, Store};

    /// Leaves `<key>.cas` as a process killed inside a compare-and-swap would, `age` ago.
    fn plant_guard(root: &std::path::Path, key: &str, age: Duration) {
        let guard = root.join(format!("{key}.cas"));
        let file = std::fs::File::create(&guard).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_fresh_guard_blocks_and_a_stale_guard_is_ignored_by_put() {
        let dir = tempfile::tempdir().unwrap();
        let objects = FileStore::new(dir.path());
        let v1 = objects
            .put("k", Bytes::from_static(b"1"), Condition::None)
            .await
            .unwrap();
        plant_guard(dir.path(), "k", Duration::from_secs(1));
        assert!(matches!(
            objects
                .put(
                    "k",
                    Bytes::from_static(b"2"),
                    Condition::IfMatch(v1.etag.clone())
                )
                .await,
            Err(Error::PreconditionFailed { .. })
        ));
        // Guards never show up as objects.
        let keys: Vec<String> = objects
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, ["k"]);

        plant_guard(dir.path(), "k", Duration::from_secs(120));
        objects
            .put("k", Bytes::from_static(b"2"), Condition::IfMatch(v1.etag))
            .await
            .unwrap();
        assert!(
            !dir.path().join("k.cas").exists(),
            "the guard is cleaned up"
        );
    }

    /// A guard left by a killed process is ignored after `STALE_GUARD` (30 s) by
    /// conditional delete too (used by `unlock` and `cairn unlock`).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_stale_guard_is_ignored_by_conditional_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(std::sync::Arc::new(FileStore::new(dir.path())));
        let guard = store
            .try_lock("dead@host", "cairn apply", Duration::from_secs(60))
            .await
            .unwrap();
        plant_guard(dir.path(), ".cairn/lock", Duration::from_secs(120));
        store.force_unlock(&guard.info.id).await.unwrap();
        assert!(store.lock_info().await.unwrap().is_none());
    }
}
