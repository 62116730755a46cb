//! Serving that survives: the daemon killed under a steady load (its watchdog restarts
//! it and keeps the router's port), a revision left with no ready replica, a stopped
//! replica (live readiness), `cairn supervise --stop` with no daemon left, the
//! environment of the daemon and its replicas, and the systemd unit.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::backend::local::supervisor::{self, ReplicaState, ReplicaStatus, SupervisorClient};

use crate::routing::{eventually, free_addr, route, send};
use crate::{cairn, gone, kill, pids, runtime, wait_gone, Fixture};

/// Polls the status until `check` holds, `within` at most.
#[track_caller]
fn wait_long(
    fixture: &Fixture,
    what: &str,
    within: Duration,
    check: impl Fn(&[ReplicaStatus]) -> bool,
) -> Vec<ReplicaStatus> {
    let deadline = Instant::now() + within;
    loop {
        let status = fixture.status();
        if check(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "waited {within:?} for {what}; status: {status:#?}\nsupervisor log:\n{}",
            fixture.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One request on a connection of its own; its status, or why there was none.
fn try_predict(addr: SocketAddr) -> Result<u16, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    agent
        .post(format!("http://{addr}/v1/predict"))
        .header("content-type", "application/json")
        .send(r#"{"rows": [{"age": 30, "income": 50000, "utilization": 0.3}]}"#)
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

#[test]
fn requests_keep_being_answered_while_the_daemon_is_killed_and_restarted() {
    let fixture = Fixture::start();
    fixture.apply(&[fixture.spec("blue", "v1", 2)]).unwrap();
    let listen = free_addr();
    fixture
        .route(&route(listen, &[("blue", "blue", "v1")], &[("blue", 100)]))
        .unwrap();
    let before = fixture.status();
    let watchdog = fixture.watchdog_pid().unwrap();
    let old = fixture.daemon_pid();
    assert_ne!(old, watchdog);

    // About 25 requests a second, each on a new connection, until told to stop.
    let done = Arc::new(AtomicBool::new(false));
    let load = std::thread::spawn({
        let done = done.clone();
        move || {
            let (mut answered, mut failed) = (0usize, Vec::new());
            while !done.load(Ordering::SeqCst) {
                match try_predict(listen) {
                    Ok(200) => answered += 1,
                    other => failed.push(format!("{other:?}")),
                }
                std::thread::sleep(Duration::from_millis(40));
            }
            (answered, failed)
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    kill(old, libc::SIGKILL);
    wait_gone(&[old]);
    // Nobody calls `ensure_running`: the watchdog starts the next daemon.
    let new = eventually("a new daemon to answer", &fixture, || {
        fixture
            .block_on(fixture.client.ping())
            .map(|info| info.pid)
            .map_err(|e| e.to_string())
    });
    assert_ne!(new, old);
    std::thread::sleep(Duration::from_secs(2));
    done.store(true, Ordering::SeqCst);
    let (answered, failed) = load.join().unwrap();
    eprintln!(
        "the daemon killed under load: {answered} answered, {} failed {failed:?}",
        failed.len()
    );
    // The port never closed: a failure can only be a request the dead daemon held.
    assert!(
        !failed.iter().any(|f| f.contains("refused")),
        "the router's port closed: {failed:?}"
    );

    assert!(
        failed.len() <= 5,
        "{} of {} requests failed: {failed:?}\nsupervisor log:\n{}",
        failed.len(),
        answered + failed.len(),
        fixture.daemon_log()
    );
    assert!(answered >= 50, "only {answered} requests answered");
    assert_eq!(fixture.watchdog_pid(), Some(watchdog));
    assert_eq!(pids(&fixture.status()), pids(&before), "replicas adopted");
    assert!(fixture.the_route().serving);
    let log = fixture.daemon_log();
    assert!(
        log.contains(&format!(
            "watchdog: daemon pid {old} was killed by signal 9"
        )),
        "{log}"
    );
}

#[test]
fn a_revision_with_no_ready_replica_is_restarted_without_a_growing_delay() {
    let fixture = Fixture::start();
    let mut pid = fixture.apply(&[fixture.spec("blue", "v1", 1)]).unwrap()[0]
        .pid
        .unwrap();
    // Each kill leaves the revision with no ready replica. With a growing backoff the
    // sixth restart would wait 16 s.
    for round in 1..=6u32 {
        kill(pid, libc::SIGKILL);
        wait_gone(&[pid]);
        let status = fixture.wait_status(&format!("restart {round}"), |s| {
            s.len() == 1 && s[0].state == ReplicaState::Ready && s[0].pid.is_some_and(|p| p != pid)
        });
        assert_eq!(status[0].restarts, round);
        pid = status[0].pid.unwrap();
    }
    let log = fixture.daemon_log();
    assert_eq!(log.matches("restarting in 500ms").count(), 6, "{log}");
    assert!(!log.contains("restarting in 1s"), "{log}");
}

#[test]
fn a_stopped_replica_is_not_ready_nor_routed_to_until_it_answers_again() {
    let fixture = Fixture::start();
    let applied = fixture.apply(&[fixture.spec("blue", "v1", 2)]).unwrap();
    let listen = free_addr();
    fixture
        .route(&route(listen, &[("blue", "blue", "v1")], &[("blue", 100)]))
        .unwrap();
    let frozen = applied[0].pid.unwrap();

    kill(frozen, libc::SIGSTOP);
    let status = wait_long(
        &fixture,
        "the stopped replica to be not ready",
        Duration::from_secs(30),
        |s| s.len() == 2 && matches!(s[0].state, ReplicaState::NotReady { .. }),
    );
    assert_eq!(status[1].state, ReplicaState::Ready, "{status:#?}");
    let backend = fixture.the_route().backends["blue"].clone();
    assert_eq!((backend.ready_replicas, backend.replicas), (1, 2));
    assert!(!fixture
        .block_on(fixture.client.ready(crate::ENDPOINT, "blue"))
        .unwrap());
    // Only the replica that answers gets requests: none waits on the stopped one.
    for _ in 0..10 {
        let answer = send(listen, &[]);
        assert_eq!(answer.status, 200);
    }

    kill(frozen, libc::SIGCONT);
    let status = wait_long(
        &fixture,
        "the replica to be ready again",
        Duration::from_secs(30),
        |s| s.len() == 2 && s.iter().all(|r| r.state == ReplicaState::Ready),
    );
    assert_eq!(pids(&status), pids(&applied), "not restarted for it");
    assert_eq!(fixture.the_route().backends["blue"].ready_replicas, 2);
    let log = fixture.daemon_log();
    assert!(log.contains(&format!("not ready (pid {frozen}")), "{log}");
}

#[test]
fn stop_stops_every_recorded_replica_when_no_daemon_runs() {
    let fixture = Fixture::start();
    fixture
        .apply(&[
            fixture.spec("blue", "v1", 2),
            fixture.spec("green", "v2", 1),
        ])
        .unwrap();
    fixture.apply(&[fixture.spec("blue", "v3", 1)]).unwrap();
    let replicas = pids(&fixture.status());
    assert_eq!(replicas.len(), 4);

    fixture.kill_supervisor();
    assert!(replicas.iter().all(|p| !gone(*p)), "they outlive it");
    let stop = || {
        Command::new(cairn())
            .args(["supervise", "--stop", "--state"])
            .arg(fixture.state_dir())
            .output()
            .unwrap()
    };
    let out = stop();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Stopped 4 replica(s) its state recorded"),
        "{stdout}"
    );
    wait_gone(&replicas);
    assert_eq!(fixture.state_json()["deployments"], serde_json::json!([]));

    // Nothing is left for a second run, nor for a new daemon to restart.
    let out = stop();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("No supervisor runs"), "{stdout}");
    fixture.ensure_running();
    assert!(fixture.status().is_empty());
}

/// The variables of a live process.
fn environ(pid: u32) -> Vec<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    bytes
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[track_caller]
fn assert_clean(what: &str, pid: u32, planted: &[&str]) {
    let vars = environ(pid);
    for value in planted {
        assert!(
            !vars.iter().any(|v| v.contains(value)),
            "{what} (pid {pid}) has {value:?}: {vars:#?}"
        );
    }
    assert!(vars.iter().any(|v| v.starts_with("PATH=")), "{vars:#?}");
}

/// Shuts a supervisor down when dropped.
struct Shutdown(SupervisorClient);

impl Drop for Shutdown {
    fn drop(&mut self) {
        let _ = runtime().block_on(self.0.shutdown());
    }
}

#[test]
fn the_daemon_and_its_replicas_get_only_the_allowed_environment() {
    // Started by `ensure_running` from this process, whose environment cargo filled.
    let fixture = Fixture::start();
    let cargo = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it for tests");
    let cargo = format!("CARGO_MANIFEST_DIR={cargo}");
    let mut spec = fixture.spec("blue", "v1", 2);
    spec.env.insert("DECLARED".into(), "yes".into());
    let replicas = fixture.apply(&[spec]).unwrap();
    assert_clean("the watchdog", fixture.watchdog_pid().unwrap(), &[&cargo]);
    assert_clean("the daemon", fixture.daemon_pid(), &[&cargo]);
    for pid in pids(&replicas) {
        assert_clean("a replica", pid, &[&cargo]);
        let vars = environ(pid);
        assert!(vars.contains(&"DECLARED=yes".to_string()), "{vars:#?}");
        assert!(
            vars.iter().any(|v| v.starts_with("CAIRN_PORT=")),
            "{vars:#?}"
        );
    }

    // `cairn supervise` started by hand (or by a CI job) holding credentials.
    let planted = [
        "ghp_plantedGitHubToken0123456789",
        "planted/AwsSecret/0123456789",
    ];
    let state = fixture.tmp.path().join("by-hand");
    let mut watchdog = Command::new(cairn())
        .args(["supervise", "--state"])
        .arg(&state)
        .env("GITHUB_TOKEN", planted[0])
        .env("AWS_SECRET_ACCESS_KEY", planted[1])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = Shutdown(SupervisorClient::new(&state).unwrap());
    let daemon = eventually("the supervisor to answer", &fixture, || {
        fixture
            .block_on(client.0.ping())
            .map(|i| i.pid)
            .map_err(|e| e.to_string())
    });
    let replicas = fixture
        .block_on(client.0.apply(&[fixture.spec("green", "v2", 2)]))
        .unwrap();
    assert_clean("the daemon", daemon, &planted);
    for pid in pids(&replicas) {
        assert_clean("a replica", pid, &planted);
    }
    drop(client);
    assert!(watchdog.wait().unwrap().success());
}

#[test]
fn the_systemd_unit_runs_the_supervisor_of_the_folder() {
    let out = Command::new(cairn())
        .args([
            "supervise",
            "--print-systemd-unit",
            "--state",
            "/srv/risk team/100%/.cairn/serving",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = String::from_utf8(out.stdout).unwrap();
    let program = std::fs::canonicalize(cairn()).unwrap();
    let unit = unit.replace(program.to_str().unwrap(), "[CAIRN]");
    insta::assert_snapshot!(unit);
}

#[test]
fn a_daemon_that_cannot_start_is_reported_not_restarted() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join(supervisor::STATE_FILE), "{not json").unwrap();
    let rt = runtime();
    let error = rt
        .block_on(supervisor::ensure_running(
            &state,
            cairn(),
            &crate::child_env(),
        ))
        .unwrap_err();
    assert!(
        matches!(error, supervisor::Error::DaemonExited { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("move it away"), "{message}");
    // The watchdog gave up: nothing holds the folder any more.
    assert!(crate::processes_mentioning(&state.to_string_lossy()).is_empty());
}
