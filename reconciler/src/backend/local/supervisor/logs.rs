//! The replicas' logs: where each one's stdout and stderr go
//! (`logs/<endpoint>/<deployment>/<revision>/replica-N.log` in the state folder, appended
//! across restarts), and the tail quoted when a start fails.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use super::{ReplicaId, LOGS_DIR};

/// Log lines quoted when a replica (or the daemon) fails to start.
pub(super) const LOG_TAIL_LINES: usize = 12;

/// Where a replica's stdout and stderr go, in the state folder `dir`.
pub(super) fn replica_log(dir: &Path, id: &ReplicaId) -> PathBuf {
    dir.join(LOGS_DIR)
        .join(&id.key.endpoint)
        .join(&id.key.deployment)
        .join(&id.key.revision)
        .join(format!("replica-{}.log", id.index))
}

/// The last `lines` non-empty lines of `path` written after `offset` (at most 64 KiB).
pub(super) fn log_tail(path: &Path, offset: u64, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = offset.max(len.saturating_sub(64 * 1024));
    if file.seek(SeekFrom::Start(from)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let kept: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

/// Whether a log tail says the replica's port was taken (it is then tried on another).
pub(super) fn mentions_port_in_use(log: &str) -> bool {
    let log = log.to_ascii_lowercase();
    log.contains("address already in use") || log.contains("address in use")
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn log_tails_skip_blank_lines_and_earlier_starts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replica-0.log");
        std::fs::write(&path, "old run\n").unwrap();
        let offset = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"one\n\ntwo\nthree\n")
            .unwrap();
        assert_eq!(log_tail(&path, offset, 2), "two\nthree");
        assert_eq!(log_tail(&path, offset, 10), "one\ntwo\nthree");
        assert_eq!(log_tail(&dir.path().join("none"), 0, 3), "");
        assert!(mentions_port_in_use(
            "error: cannot listen on 127.0.0.1:1: Address already in use (os error 98)"
        ));
    }
}
