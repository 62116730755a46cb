//! Request capture for input-drift monitoring: one in every [`Capture::every`] weighted
//! request's body is handed (without blocking the request: a full queue drops the copy)
//! to a writer thread that appends it, as one capture line ([`crate::workload::capture`]),
//! to `capture-<unix ms>.jsonl` files in [`Capture::dir`]. Files rotate
//! at an eighth of [`Capture::max_bytes`] and the oldest are removed while the folder
//! holds more, so a capture never fills the disk. Only bodies are kept, never headers:
//! the `Authorization` key is not captured. A body that is not JSON is skipped.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::workload::capture::{self, unix_ms, Sampler};

/// Captured bodies waiting for the writer; past this, copies are dropped.
const QUEUE: usize = 256;
/// The smallest file a capture rotates at.
const MIN_FILE_BYTES: u64 = 64 << 10;

/// What to capture and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capture {
    /// One in this many weighted requests is captured (1: every one).
    pub every: u32,
    pub dir: PathBuf,
    /// The most the folder holds.
    pub max_bytes: u64,
}

/// The running capture of one router.
#[derive(Debug)]
pub(super) struct Capturer {
    pub(super) config: Capture,
    sampler: Sampler,
    queue: SyncSender<(String, Bytes)>,
}

impl Capturer {
    /// Starts the writer thread; it ends when the capturer is dropped.
    pub(super) fn start(config: Capture) -> Capturer {
        let (queue, received) = sync_channel(QUEUE);
        let writer = config.clone();
        let _ = std::thread::Builder::new()
            .name("cairn-capture".into())
            .spawn(move || write_all(&writer, &received));
        Capturer {
            sampler: Sampler::new(config.every),
            config,
            queue,
        }
    }

    /// Offers a request's body; kept when it is the one in `every`.
    pub(super) fn offer(&self, deployment: &str, body: &Bytes) {
        if self.sampler.take() {
            let _ = self.queue.try_send((deployment.to_string(), body.clone()));
        }
    }
}

fn write_all(config: &Capture, received: &Receiver<(String, Bytes)>) {
    if fs::create_dir_all(&config.dir).is_err() {
        return;
    }
    let rotate_at = (config.max_bytes / 8).max(MIN_FILE_BYTES);
    let mut current: Option<(File, u64)> = None;
    while let Ok((deployment, body)) = received.recv() {
        let Some(line) = capture::line(&deployment, &body) else {
            continue;
        };
        if current
            .as_ref()
            .is_none_or(|(_, written)| *written + line.len() as u64 > rotate_at)
        {
            let path = config.dir.join(format!("capture-{}.jsonl", unix_ms()));
            current = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
                .map(|f| (f, 0));
            prune(&config.dir, config.max_bytes.saturating_sub(rotate_at));
        }
        if let Some((file, written)) = &mut current {
            if file.write_all(line.as_bytes()).is_ok() {
                *written += line.len() as u64;
            }
        }
    }
}

/// Removes the oldest capture files while the folder holds more than `keep` bytes.
fn prune(dir: &Path, keep: u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(String, u64)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let size = e.metadata().ok()?.len();
            (name.starts_with("capture-") && name.ends_with(".jsonl")).then_some((name, size))
        })
        .collect();
    // `capture-<unix ms>.jsonl`: by time, oldest first.
    files.sort_by_key(|(name, _)| {
        name.trim_start_matches("capture-")
            .trim_end_matches(".jsonl")
            .parse::<u64>()
            .unwrap_or(0)
    });
    let mut total: u64 = files.iter().map(|(_, size)| size).sum();
    for (name, size) in files {
        if total <= keep {
            break;
        }
        if fs::remove_file(dir.join(&name)).is_ok() {
            total -= size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_in_every_n_json_bodies_is_written_and_the_folder_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let config = Capture {
            every: 2,
            dir: dir.path().join("c"),
            max_bytes: 256 << 10,
        };
        let capturer = Capturer::start(config.clone());
        let body = Bytes::from(format!(r#"{{"rows": [{{"x": "{}"}}]}}"#, "7".repeat(400)));
        for _ in 0..4000 {
            capturer.offer("blue", &body);
            if capturer.sampler.seen().is_multiple_of(64) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        capturer.offer("blue", &Bytes::from_static(b"not json"));
        drop(capturer);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut total = 0;
        let mut lines = 0;
        for e in fs::read_dir(&config.dir).unwrap().flatten() {
            let text = fs::read_to_string(e.path()).unwrap();
            total += text.len() as u64;
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["deployment"], "blue");
                lines += 1;
            }
        }
        assert!(lines > 0 && lines <= 2000, "{lines}");
        assert!(total <= config.max_bytes, "{total}");
    }
}
