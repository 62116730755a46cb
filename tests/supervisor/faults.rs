//! Faults: each is a clear error, leaves what served before serving, and nothing
//! half-applied.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use cairn::backend::local::supervisor::{self, DeploymentSpec, Error, PORT_PLACEHOLDER};

use crate::{
    assert_serving, cairn, gone, of, pids, processes_mentioning, runtime, wait_gone, Fixture,
    ENDPOINT,
};

/// A spec running a shell script; `$0` in the script is the replica's port.
fn script(deployment: &str, revision: &str, script: String) -> DeploymentSpec {
    DeploymentSpec::new(
        ENDPOINT,
        deployment,
        revision,
        vec![
            "/bin/sh".into(),
            "-c".into(),
            script,
            PORT_PLACEHOLDER.into(),
        ],
    )
}

#[test]
fn a_model_that_fails_to_load_leaves_the_old_revision_serving() {
    let fixture = Fixture::start();
    let v1 = fixture.apply(&[fixture.spec("blue", "v1", 2)]).unwrap();
    let bad = fixture.corrupt_model("v2");

    let error = fixture.apply(&[fixture.spec("blue", "v2", 2)]).unwrap_err();
    let Error::StartFailed { failures } = &error else {
        panic!("not a start failure: {error:?}");
    };
    assert_eq!(failures.len(), 2);
    let message = error.to_string();
    for expected in [
        "2 replica(s) failed to start",
        "what ran before keeps serving",
        "risk-api/blue@v2 replica 0: exited with code 1 before it was ready",
        "risk-api/blue@v2 replica 1: exited with code 1 before it was ready",
        "cannot load the model",
        "replica-0.log",
    ] {
        assert!(
            message.contains(expected),
            "{expected:?} not in:\n{message}"
        );
    }

    // The old revision serves on, untouched; nothing of the new one runs or is recorded.
    let status = fixture.status();
    assert_eq!(pids(&status), pids(&v1));
    assert_serving(&status, "blue", "v1");
    assert!(processes_mentioning(bad.to_str().unwrap()).is_empty());
    let state = fixture.state_json();
    assert_eq!(state["deployments"].as_array().unwrap().len(), 1);

    // An apply that is good in part is undone as a whole.
    let error = fixture
        .apply(&[
            fixture.spec("green", "v3", 1),
            fixture.spec("blue", "v2", 1),
        ])
        .unwrap_err();
    assert!(matches!(&error, Error::StartFailed { failures } if failures.len() == 1));
    let status = fixture.status();
    assert_eq!(pids(&status), pids(&v1), "green@v3 was stopped again");
    assert!(processes_mentioning(fixture.model("v3").to_str().unwrap()).is_empty());
}

#[test]
fn a_replica_that_never_gets_ready_is_stopped_with_its_group() {
    let fixture = Fixture::start();
    let grandchild = fixture.tmp.path().join("grandchild");
    let mut spec = script(
        "blue",
        "v1",
        format!(
            "sleep 30 & echo $! > '{}'; echo waiting on port $0; wait",
            grandchild.display()
        ),
    );
    spec.ready_timeout = Duration::from_secs(1);

    let started = Instant::now();
    let error = fixture.apply(&[spec]).unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(error.contains("not ready after 1s"), "{error}");
    assert!(error.contains("`/healthz` on 127.0.0.1:"), "{error}");
    assert!(error.contains("| waiting on port"), "{error}");
    // SIGTERM went to the whole group: the shell's own child is gone too.
    let sleeper: u32 = std::fs::read_to_string(&grandchild)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_gone(&[sleeper]);
    assert!(fixture.status().is_empty());
}

#[test]
fn a_port_taken_at_start_is_retried_on_another() {
    let fixture = Fixture::start();
    let marker = fixture.tmp.path().join("failed-once");
    let serve = format!(
        "exec '{}' serve --model '{}' --listen 127.0.0.1:$0 --name blue --model-version v1",
        cairn().display(),
        fixture.model("v1").display()
    );
    // The first start fails as a server does when another program took its port.
    let spec = script(
        "blue",
        "v1",
        format!(
            "if [ ! -e '{m}' ]; then touch '{m}'; \
             echo \"error: cannot listen on 127.0.0.1:$0: Address already in use (os error 98)\" >&2; \
             exit 1; fi; {serve}",
            m = marker.display()
        ),
    );

    let applied = fixture.apply(&[spec]).unwrap();
    assert_eq!(applied[0].restarts, 0, "a retry at start is not a restart");
    assert_serving(&applied, "blue", "v1");
    let log = std::fs::read_to_string(&applied[0].log).unwrap();
    let ports: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("on 127.0.0.1:").nth(1)?.split(' ').next())
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert!(ports.len() >= 2, "{log}");
    assert_ne!(ports[0], ports[1], "the retry picks another port:\n{log}");
}

#[test]
fn a_daemon_killed_mid_apply_leaves_nothing_half_applied() {
    let fixture = Fixture::start();
    let v1 = fixture.apply(&[fixture.spec("blue", "v1", 1)]).unwrap();
    let pid_file = fixture.tmp.path().join("slow.pid");
    let mut slow = script(
        "green",
        "v2",
        format!("echo $$ > '{}'; exec sleep 30", pid_file.display()),
    );
    slow.ready_timeout = Duration::from_secs(30);

    // Apply from another thread; the daemon dies while the replica is starting.
    let state_dir = fixture.state_dir();
    let applying = std::thread::spawn(move || {
        let rt = runtime();
        let client = supervisor::SupervisorClient::new(&state_dir).unwrap();
        rt.block_on(client.apply(&[slow]))
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let slow_pid = loop {
        let recorded = fixture.state_json()["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["spec"]["deployment"] == "green")
            .flat_map(|d| d["replicas"].as_array().cloned().unwrap_or_default())
            .find_map(|r| r["pid"].as_u64());
        if let Some(pid) = recorded {
            break u32::try_from(pid).unwrap();
        }
        assert!(Instant::now() < deadline, "the slow replica never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    // The watchdog too, or the next daemon could tear the replica down before it is seen.
    fixture.kill_supervisor();
    let result = applying.join().unwrap();
    assert!(result.is_err(), "{result:?}");
    assert!(
        !gone(slow_pid),
        "a killed daemon leaves its processes running"
    );

    // The next daemon tears the unconfirmed replica down and keeps the confirmed one.
    fixture.ensure_running();
    wait_gone(&[slow_pid]);
    let status = fixture.status();
    assert_eq!(pids(&status), pids(&v1));
    assert!(of(&status, "v2").is_empty());
    assert_serving(&status, "blue", "v1");
    assert!(
        fixture
            .daemon_log()
            .contains("left over from an apply that never completed"),
        "{}",
        fixture.daemon_log()
    );
}

#[test]
fn invalid_and_conflicting_requests_are_refused() {
    let fixture = Fixture::start();
    let v1 = fixture.apply(&[fixture.spec("blue", "v1", 1)]).unwrap();

    // Checked by the client before sending...
    let error = fixture
        .apply(&[fixture.spec("Blue/../x", "v1", 1)])
        .unwrap_err();
    assert!(matches!(error, Error::InvalidSpec { .. }), "{error:?}");
    assert!(error.to_string().contains("deployment name"), "{error}");
    // ...and by the daemon, whatever a client sends.
    let answer = raw(&fixture, "hello\n");
    assert!(answer.contains(r#""result":"error""#), "{answer}");
    assert!(answer.contains("not a request"), "{answer}");
    let answer = raw(
        &fixture,
        r#"{"op":"apply","deployments":[{"endpoint":"../x","deployment":"d","revision":"r","command":["x","{{ port }}"]}]}
"#,
    );
    assert!(answer.contains(r#""kind":"invalid""#), "{answer}");
    assert!(answer.contains("endpoint name"), "{answer}");

    // The same revision with another command or environment is a conflict.
    let mut changed = fixture.spec("blue", "v1", 1);
    changed.env.insert("X".into(), "1".into());
    let error = fixture.apply(&[changed]).unwrap_err();
    assert!(matches!(error, Error::Conflict { .. }), "{error:?}");
    assert!(
        error.to_string().contains("the environment differs"),
        "{error}"
    );
    // Twice in one apply.
    let twice = fixture.spec("green", "v1", 1);
    let error = fixture.apply(&[twice.clone(), twice]).unwrap_err();
    assert!(error.to_string().contains("listed twice"), "{error}");

    // None of it disturbed what runs.
    let status = fixture.status();
    assert_eq!(pids(&status), pids(&v1));
    assert_serving(&status, "blue", "v1");
}

/// Sends `request` as is and returns the answer line.
fn raw(fixture: &Fixture, request: &str) -> String {
    let mut stream =
        UnixStream::connect(fixture.state_dir().join(supervisor::SOCKET_FILE)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}
