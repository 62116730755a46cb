//! Jobs with `instances = N` on the local target, as a user runs them: `cairn apply` on a
//! Git repository whose job is a small rendezvous program (Python). Each rank reads the
//! distributed-training contract's variables; rank 0 listens on `MASTER_ADDR:MASTER_PORT`
//! and sums one value from every rank, the others connect and send theirs.

use std::time::Duration;

use crate::support::{manifests, toml_string, Job, Root};

/// The rendezvous: `python3 -c RENDEZVOUS <output folder> <failing rank> <marker>`.
/// Rank `r` contributes `r + 1`; rank 0 checks the sum and writes it, with what the
/// contract told it, to its output. The failing rank (−1: none) exits 3 at once, or,
/// with a marker path, only while that file does not exist (it creates it).
const RENDEZVOUS: &str = r#"
import os, socket, sys, time
out, failing, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
if rank == failing and (marker == "-" or not os.path.exists(marker)):
    if marker != "-":
        open(marker, "w").close()
    print(f"rank {rank} gives up", file=sys.stderr, flush=True)
    sys.exit(3)
open(os.path.join(out, "rank.txt"), "w").write(str(rank))
if rank == 0:
    server = socket.create_server((addr, port))
    server.settimeout(60)
    total = 1
    for _ in range(world - 1):
        conn, _ = server.accept()
        total += int(conn.recv(64).decode())
        conn.close()
    assert total == world * (world + 1) // 2, total
    env = {k: os.environ[k] for k in ["WORLD_SIZE", "RANK", "NODE_RANK", "PET_NNODES",
           "PET_NODE_RANK", "PET_NPROC_PER_NODE", "PET_MASTER_ADDR", "CUDA_VISIBLE_DEVICES"]}
    open(os.path.join(out, "sum.txt"), "w").write(f"{total} {sorted(env.items())}")
else:
    deadline = time.time() + 60
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)
    conn.sendall(str(rank + 1).encode())
    conn.close()
print(f"rank {rank} of {world} done", flush=True)
"#;

/// A root whose `job.train` runs [`RENDEZVOUS`] as `instances` ranks; rank `failing`
/// exits 3 (`once`: on the first attempt only).
fn rendezvous_root(instances: u32, failing: i32, once: bool, retries: u32) -> Root {
    let root = manifests(&Job::default());
    let marker = match once {
        true => root.scratch().join("failed-once").display().to_string(),
        false => "-".to_string(),
    };
    root.write(
        "risk/train.toml",
        &format!(
            "[job.train]\n\
             compute = \"compute.here\"\n\
             command = [\"python3\", \"-c\", {}, \"{{{{ outputs.model }}}}\", \"{failing}\", {}]\n\
             inputs = {{ loans = \"dataset.loans\" }}\n\
             outputs = {{ model = \"model.scorer\" }}\n\
             gpus = 0\n\
             instances = {instances}\n\
             retries = {retries}\n\
             timeout = \"2m\"\n\
             \n\
             [model.scorer]\nfrom_job = \"job.train\"\nformat = \"custom\"\n",
            toml_string(RENDEZVOUS),
            toml_string(&marker),
        ),
    );
    root.git_commit_all("a distributed job");
    root
}

fn run_record(root: &Root) -> serde_json::Value {
    let runs = root.store_keys("runs/train");
    let key = runs
        .iter()
        .find(|k| k.ends_with("/_run.json"))
        .unwrap_or_else(|| panic!("no run record: {runs:?}"));
    root.store_json(key)
}

fn logs(run: &serde_json::Value) -> Vec<String> {
    run["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().rsplit('/').next().unwrap().to_string())
        .collect()
}

/// Three ranks meet on the port Cairn chose; rank 0's output is the stored model, and
/// the other ranks' outputs (their own `rank.txt`) are not.
#[test]
fn three_ranks_rendezvous_and_rank_0_is_stored() {
    let root = rendezvous_root(3, -1, false, 0);
    let apply = root.cairn(&["apply", "ROOT", "--auto-approve"]);
    apply.ok();
    let model = root.committed("models", "scorer");
    assert_eq!(model.len(), 1, "{}", apply.both());
    let stored = root.store().join("models/scorer").join(&model[0]);
    let sum = std::fs::read_to_string(stored.join("sum.txt")).unwrap();
    assert_eq!(
        sum,
        "6 [('CUDA_VISIBLE_DEVICES', ''), ('NODE_RANK', '0'), ('PET_MASTER_ADDR', \
         '127.0.0.1'), ('PET_NNODES', '3'), ('PET_NODE_RANK', '0'), ('PET_NPROC_PER_NODE', \
         '1'), ('RANK', '0'), ('WORLD_SIZE', '3')]"
    );
    assert_eq!(
        std::fs::read_to_string(stored.join("rank.txt")).unwrap(),
        "0"
    );
    let run = run_record(&root);
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["attempts"], 1);
    assert_eq!(
        logs(&run),
        [
            "attempt-1.rank-0.log",
            "attempt-1.rank-1.log",
            "attempt-1.rank-2.log"
        ]
    );
    for rank in 0..3 {
        let key = run["logs"][rank].as_str().unwrap();
        let text = std::fs::read_to_string(root.store().join(key)).unwrap();
        assert_eq!(text, format!("rank {rank} of 3 done\n"), "{key}");
    }
    root.cairn(&["plan", "ROOT", "--detailed-exitcode"]).ok();
}

/// Rank 2 exits 3 at once while rank 0 waits for it: the group is stopped at once (not
/// after rank 0's own 60 s wait), apply exits 1 naming the rank, its code and its log,
/// and no model version is stored.
#[test]
fn a_rank_that_exits_early_fails_the_group_cleanly() {
    let root = rendezvous_root(3, 2, false, 0);
    let apply = root.cairn(&["apply", "ROOT", "--auto-approve"]);
    apply.code(1);
    assert!(
        apply.took < Duration::from_secs(30),
        "the group was stopped at once: {:?}",
        apply.took
    );
    assert!(
        apply.stderr.contains(
            "✗ risk/job.train: rank 2 of 3 exited with code 3 (attempt 1 of 1); the other \
             ranks were stopped; last lines of its log:\nrank 2 gives up"
        ),
        "{}",
        apply.both()
    );
    assert!(root.committed("models", "scorer").is_empty());
    let run = run_record(&root);
    assert_eq!(run["status"], "failed");
    assert_eq!(run["exit_code"], 3);
    assert!(root.state().get("risk/job.train").is_none());
    // Nothing of the group is left running in the (removed) run folder.
    assert!(
        !root.path().join(".cairn/work/runs/train").exists()
            || std::fs::read_dir(root.path().join(".cairn/work/runs/train"))
                .unwrap()
                .next()
                .is_none()
    );
}

/// `retries` re-runs the whole group: rank 1 fails the first attempt, the second
/// succeeds with every rank, on a new port.
#[test]
fn a_retry_reruns_the_whole_group() {
    let root = rendezvous_root(3, 1, true, 1);
    let apply = root.cairn(&["apply", "ROOT", "--auto-approve"]);
    apply.ok();
    assert!(apply.stderr.contains("attempt 2 of 2"), "{}", apply.both());
    let run = run_record(&root);
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["attempts"], 2);
    let logs = logs(&run);
    assert_eq!(logs.len(), 6, "{logs:?}");
    assert_eq!(logs[1], "attempt-1.rank-1.log");
    let first =
        std::fs::read_to_string(root.store().join(run["logs"][1].as_str().unwrap())).unwrap();
    assert_eq!(first, "rank 1 gives up\n");
    assert_eq!(root.committed("models", "scorer").len(), 1);
}
