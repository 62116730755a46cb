//! Replicas from start to stop: serving, surviving the client, restarts after a crash,
//! re-adoption by a new daemon, stop and shutdown.

use cairn::backend::local::supervisor::{self, Error, ReplicaState, SupervisorClient};

use crate::{
    all_ready, assert_serving, cmdline, gone, kill, of, pids, runtime, stat_fields, wait_gone,
    Fixture, ENDPOINT,
};

#[test]
fn replicas_serve_and_outlive_the_client() {
    let fixture = Fixture::start();
    let spec = fixture.spec("blue", "v1", 2);

    // Apply from a client and a runtime of their own, then drop both, as `cairn apply`
    // exiting would.
    let applied = {
        let rt = runtime();
        let client = rt
            .block_on(supervisor::ensure_running(
                &fixture.state_dir(),
                crate::cairn(),
                &crate::child_env(),
            ))
            .unwrap();
        rt.block_on(client.apply(std::slice::from_ref(&spec)))
            .unwrap()
    };
    assert_eq!(applied.len(), 2);
    assert_eq!(applied.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 1]);
    assert_ne!(applied[0].addr, applied[1].addr);
    assert_serving(&applied, "blue", "v1");

    // A new client sees the same processes, still serving.
    let client = SupervisorClient::new(&fixture.state_dir()).unwrap();
    let status = fixture.block_on(client.status()).unwrap();
    assert_eq!(pids(&status), pids(&applied));
    assert_serving(&status, "blue", "v1");
    for replica in &status {
        assert_eq!(replica.restarts, 0);
        // Each replica leads its own process group, so stopping it reaches its children.
        let pid = replica.pid.unwrap();
        assert_eq!(stat_fields(pid).unwrap()[2], pid.to_string());
        let log = std::fs::read_to_string(&replica.log).unwrap();
        assert!(log.contains("listening on http://"), "{log}");
    }
    // The daemon leads its own session: no terminal or caller's signal reaches it.
    let daemon = fixture.daemon_pid();
    assert_eq!(stat_fields(daemon).unwrap()[3], daemon.to_string());
    assert!(cmdline(daemon).contains("supervise"));

    // The state on disk names both processes.
    let state = fixture.state_json();
    let recorded: Vec<u64> = state["deployments"][0]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(
        recorded,
        pids(&status)
            .iter()
            .map(|p| u64::from(*p))
            .collect::<Vec<_>>()
    );

    // Applying the same spec again changes nothing.
    let again = fixture.apply(&[spec]).unwrap();
    assert_eq!(pids(&again), pids(&status));
}

#[test]
fn a_killed_replica_is_restarted() {
    let fixture = Fixture::start();
    let before = fixture.apply(&[fixture.spec("blue", "v1", 2)]).unwrap();
    let (victim, bystander) = (before[0].clone(), before[1].clone());

    kill(victim.pid.unwrap(), libc::SIGKILL);
    let after = fixture.wait_status("replica 0 to be restarted", |s| {
        s.len() == 2
            && s[0].state == ReplicaState::Ready
            && s[0].pid.is_some()
            && s[0].pid != victim.pid
    });
    assert_eq!(after[0].restarts, 1, "{after:#?}");
    // Its port was free again, so it keeps its address.
    assert_eq!(after[0].addr, victim.addr);
    assert_eq!(after[1].pid, bystander.pid);
    assert_eq!(after[1].restarts, 0);
    assert_serving(&after, "blue", "v1");

    let log = fixture.daemon_log();
    assert!(log.contains("was killed by signal 9 (SIGKILL)"), "{log}");
    assert!(log.contains("restarting in 500ms"), "{log}");
    // The replica's log holds both starts.
    let replica_log = std::fs::read_to_string(&after[0].log).unwrap();
    assert_eq!(
        replica_log.matches("cairn supervise: starting").count(),
        2,
        "{replica_log}"
    );
}

#[test]
fn a_killed_daemon_is_replaced_by_one_that_adopts_the_replicas() {
    let fixture = Fixture::start();
    let before = fixture.apply(&[fixture.spec("blue", "v1", 2)]).unwrap();
    // The watchdog too, or it would start the next daemon itself.
    let old = fixture.kill_supervisor();
    // (The socket may take a moment to refuse: a killed process's threads outlive its
    // main one briefly.)
    let orphaned = fixture.block_on(fixture.client.status());
    assert!(orphaned.is_err(), "{orphaned:?}");
    // Nobody supervises them now, yet they serve.
    assert_serving(&before, "blue", "v1");

    let client = fixture.ensure_running();
    let new = fixture.block_on(client.ping()).unwrap().pid;
    assert_ne!(new, old);
    let adopted = fixture.status();
    assert_eq!(pids(&adopted), pids(&before), "{adopted:#?}");
    assert!(all_ready(&adopted), "{adopted:#?}");
    assert!(adopted.iter().all(|r| r.restarts == 0));
    assert_serving(&adopted, "blue", "v1");
    assert!(fixture.daemon_log().contains("adopted pid"));

    // The new daemon watches what it adopted: a crash is noticed and restarted.
    kill(before[1].pid.unwrap(), libc::SIGKILL);
    let after = fixture.wait_status("the adopted replica 1 to be restarted", |s| {
        s.len() == 2 && s[1].state == ReplicaState::Ready && s[1].pid != before[1].pid
    });
    assert_eq!(after[1].restarts, 1);
    assert_eq!(after[0].pid, before[0].pid);
    assert_serving(&after, "blue", "v1");

    // And stops what it adopted.
    let stopped = fixture
        .block_on(fixture.client.stop(ENDPOINT, "blue", Some("v1")))
        .unwrap();
    assert_eq!(stopped.len(), 2);
    wait_gone(&pids(&after));
    assert!(fixture.status().is_empty());
}

#[test]
fn stop_and_shutdown_leave_no_process() {
    let fixture = Fixture::start();
    let blue = fixture.apply(&[fixture.spec("blue", "v1", 2)]).unwrap();
    let green = fixture.apply(&[fixture.spec("green", "v1", 1)]).unwrap();

    // Stopping one deployment (every revision) leaves the other alone.
    let stopped = fixture
        .block_on(fixture.client.stop(ENDPOINT, "blue", None))
        .unwrap();
    assert_eq!(pids(&stopped), pids(&blue));
    assert!(
        pids(&blue).iter().all(|p| gone(*p)),
        "stop returns once they exit"
    );
    let status = fixture.status();
    assert_eq!(pids(&status), pids(&green));
    assert_serving(&status, "green", "v1");
    // Stopping what does not run is not an error.
    let none = fixture
        .block_on(fixture.client.stop(ENDPOINT, "blue", Some("v9")))
        .unwrap();
    assert!(none.is_empty());

    let daemon = fixture.daemon_pid();
    let stopped = fixture.block_on(fixture.client.shutdown()).unwrap();
    assert_eq!(pids(&stopped), pids(&green));
    wait_gone(&[daemon]);
    assert!(pids(&green).iter().all(|p| gone(*p)));
    assert!(!fixture.state_dir().join(supervisor::SOCKET_FILE).exists());
    assert!(matches!(
        fixture.block_on(fixture.client.status()),
        Err(Error::Connect { .. })
    ));
    assert_eq!(fixture.state_json()["deployments"], serde_json::json!([]));
    let log = fixture.daemon_log();
    assert!(log.contains("exiting (shutdown requested)"), "{log}");
}

#[test]
fn blue_green_revisions_run_side_by_side_until_one_is_stopped() {
    let fixture = Fixture::start();
    let v1 = fixture.apply(&[fixture.spec("blue", "v1", 1)]).unwrap();
    // A new revision of the same deployment starts beside the old one.
    let v2 = fixture.apply(&[fixture.spec("blue", "v2", 2)]).unwrap();
    assert_eq!(v2.len(), 2);
    let status = fixture.status();
    assert_eq!(pids(&of(&status, "v1")), pids(&v1));
    assert_serving(&of(&status, "v1"), "blue", "v1");
    assert_serving(&of(&status, "v2"), "blue", "v2");

    // Scaling down stops the highest indexes; scaling up adds them.
    let one = fixture.apply(&[fixture.spec("blue", "v2", 1)]).unwrap();
    assert_eq!(pids(&one), pids(&v2[..1]));
    wait_gone(&pids(&v2[1..]));
    let three = fixture.apply(&[fixture.spec("blue", "v2", 3)]).unwrap();
    assert_eq!(three.len(), 3);
    assert_eq!(three[0].pid, v2[0].pid);
    assert_serving(&three, "blue", "v2");

    fixture
        .block_on(fixture.client.stop(ENDPOINT, "blue", Some("v1")))
        .unwrap();
    wait_gone(&pids(&v1));
    let status = fixture.status();
    assert!(of(&status, "v1").is_empty());
    assert_eq!(of(&status, "v2").len(), 3);
}
