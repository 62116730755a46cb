//! The compute-target contract suite (`suite.rs`), run against every target: what a user
//! sees from `cairn` when jobs run, endpoints serve and roll out, resources are pruned
//! and workspaces destroyed, whatever the target. Each target brings a fixture
//! ([`fixture::TargetFixture`]): a world where its compute works, and the checks only it
//! can make (is the endpoint serving this version? is anything of it left?).
//!
//! - `local`: this machine: jobs as processes, the reference trainer (`cairn train`) and
//!   model server (`cairn serve`) behind the local supervisor and router, real HTTP
//!   requests; the folder store.
//! - `kubernetes`: the strict in-memory API server (`tests/support/kube_server/`), a
//!   kubelet played by the test (`kubelet.rs`: it runs Jobs' pods step by step with the
//!   real binary for Cairn's steps and the job's own command, honouring `backoffLimit`,
//!   `podFailurePolicy` and `activeDeadlineSeconds`, and starts serving pods), and a real S3 store
//!   (`s3s-fs`).
//!
//! Adding a target is one line, e.g. `target_suite!(nomad, NomadFixture);`, once its
//! fixture is written: each suite function becomes one test per target,
//! `<target>::<function>`.

#[path = "../support/mod.rs"]
mod support;

#[path = "../support/s3_server.rs"]
mod s3_server;

#[path = "../support/kube_server/mod.rs"]
mod kube_server;

/// The imaging test's serving pods and gateway (`pods::Pods`, `pods::gateway`).
#[path = "../imaging/pods.rs"]
#[allow(dead_code)]
mod pods;

#[path = "../support/pod_volumes.rs"]
mod pod_volumes;

mod fixture;
mod kube_fixture;
mod kube_runs;
mod kubelet;
mod local_fixture;
mod suite;

/// Instantiates every suite function for one target. `$fixture` implements
/// [`fixture::TargetFixture`].
macro_rules! target_suite {
    ($target:ident, $fixture:ty) => {
        target_suite!(@module $target, $fixture;
            tests: [
                a_job_run_succeeds,
                a_dataset_a_job_writes_feeds_the_next_job,
                a_sweep_keeps_its_best_trial,
                a_failed_job_skips_its_dependents,
                a_timed_out_job_skips_its_dependents,
                a_failed_attempt_is_retried,
                an_endpoint_with_a_key_refuses_requests_without_it,
                an_endpoint_is_created,
                an_endpoint_with_a_monitor_reports_input_drift,
                a_rollout_is_promoted,
                a_rollout_without_traffic_is_halted,
                a_rollout_is_rolled_back_on_a_failed_gate,
                a_removed_endpoint_is_pruned,
                nothing_changes_after_an_apply,
                destroy_tears_the_workspace_down,
                destroy_can_purge_the_store,
            ],
            // Known gaps would go here, each with the reason it is ignored.
            ignored: [
            ]
        );
    };
    (@module $target:ident, $fixture:ty;
        tests: [$($test:ident),* $(,)?],
        ignored: [$($gap:ident = $why:literal),* $(,)?]
    ) => {
        mod $target {
            $(
                #[test]
                fn $test() {
                    crate::suite::$test::<$fixture>();
                }
            )*
            $(
                #[test]
                #[ignore = $why]
                fn $gap() {
                    crate::suite::$gap::<$fixture>();
                }
            )*
        }
    };
}

target_suite!(local, crate::local_fixture::LocalFixture);
target_suite!(kubernetes, crate::kube_fixture::KubeFixture);
