//! Requests captured for input-drift monitoring where the capture is not on this
//! machine (an endpoint's pods on Kubernetes): files of capture lines
//! ([`crate::workload::capture`]) under `captures/<endpoint>/<source>/<unix ms>-<n>.jsonl`,
//! one source per writer (a pod), each keeping its own files under its share of the
//! endpoint's `max_capture` (the oldest go first). [`upload_captures`] is the writer;
//! [`Store::captured_requests`] what `cairn drift` reads.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{check_key, Condition, Error, Result, Store};
use crate::workload::capture::{body_of, unix_ms};

/// The largest capture file a writer uploads: files are read whole.
pub const MAX_FILE_BYTES: u64 = 4 << 20;
/// The smallest.
const MIN_FILE_BYTES: u64 = 64 << 10;

/// Where one writer's capture files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureUpload {
    /// The endpoint's name.
    pub endpoint: String,
    /// The writer: a pod's name.
    pub source: String,
    /// The most this writer's files take in the store.
    pub max_bytes: u64,
    /// How long captured lines wait before they are uploaded (unless a file fills).
    pub flush: Duration,
}

impl CaptureUpload {
    fn prefix(&self) -> String {
        format!("captures/{}/{}/", self.endpoint, self.source)
    }

    /// The size at which a file is uploaded without waiting for `flush`.
    fn file_bytes(&self) -> u64 {
        (self.max_bytes / 8).clamp(MIN_FILE_BYTES, MAX_FILE_BYTES)
    }
}

/// What a writer did, for its log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadStats {
    pub files: u64,
    pub lines: u64,
    /// Uploads that failed (their lines are dropped: a capture is a sample).
    pub failed: u64,
}

impl Store {
    /// Uploads file `seq` (the writer's count, so two in one millisecond differ) of
    /// capture lines for `upload`, then removes that writer's oldest files while they
    /// take more than its `max_bytes`.
    pub async fn put_capture(&self, upload: &CaptureUpload, seq: u64, lines: Bytes) -> Result<()> {
        let prefix = upload.prefix();
        let key = format!("{prefix}{:013}-{seq:08}.jsonl", unix_ms());
        if !check_key(&key) {
            return Err(Error::InvalidKey(key));
        }
        self.objects.put(&key, lines, Condition::None).await?;
        let mut files = self.objects.list(&prefix).await?;
        files.sort_by(|a, b| a.key.cmp(&b.key));
        let mut total: u64 = files.iter().map(|f| f.size).sum();
        for file in files {
            if total <= upload.max_bytes || file.key == key {
                break;
            }
            self.objects.delete(&file.key, Condition::None).await?;
            total = total.saturating_sub(file.size);
        }
        Ok(())
    }

    /// The request bodies captured for `endpoint` by every writer, oldest first, at most
    /// the newest `limit`.
    pub async fn captured_requests(
        &self,
        endpoint: &str,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>> {
        let mut files = self.objects.list(&format!("captures/{endpoint}/")).await?;
        // By the time in the file's name, newest first, across writers.
        files.retain(|f| f.key.ends_with(".jsonl"));
        files.sort_by(|a, b| file_name(&b.key).cmp(file_name(&a.key)));
        let mut newest_first: Vec<Vec<serde_json::Value>> = Vec::new();
        let mut count = 0;
        for file in files {
            if count >= limit {
                break;
            }
            let Some((body, _)) = self.objects.get(&file.key).await? else {
                continue;
            };
            let text = String::from_utf8_lossy(&body);
            let bodies: Vec<serde_json::Value> = text.lines().filter_map(body_of).collect();
            count += bodies.len();
            newest_first.push(bodies);
        }
        let mut out: Vec<serde_json::Value> = newest_first.into_iter().rev().flatten().collect();
        let extra = out.len().saturating_sub(limit);
        out.drain(..extra);
        Ok(out)
    }
}

fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Uploads the capture lines `queue` brings, in files of at most the upload's file size
/// and at least every `flush`, until the queue closes (the last lines are uploaded
/// then). `on_error` hears each failed upload.
pub async fn upload_captures(
    store: Store,
    upload: CaptureUpload,
    mut queue: mpsc::Receiver<String>,
    on_error: impl Fn(&Error),
) -> UploadStats {
    let mut stats = UploadStats::default();
    let mut pending = String::new();
    let mut lines = 0u64;
    let file_bytes = upload.file_bytes() as usize;
    let mut tick = tokio::time::interval(upload.flush);
    tick.tick().await;
    loop {
        let closed = tokio::select! {
            line = queue.recv() => match line {
                Some(line) => {
                    pending.push_str(&line);
                    lines += 1;
                    if pending.len() < file_bytes {
                        continue;
                    }
                    false
                }
                None => true,
            },
            _ = tick.tick() => false,
        };
        if !pending.is_empty() {
            let body = Bytes::from(std::mem::take(&mut pending));
            match store
                .put_capture(&upload, stats.files + stats.failed, body)
                .await
            {
                Ok(()) => {
                    stats.files += 1;
                    stats.lines += lines;
                }
                Err(e) => {
                    stats.failed += 1;
                    on_error(&e);
                }
            }
            lines = 0;
        }
        if closed {
            return stats;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::capture::line;

    #[tokio::test]
    async fn writers_stay_under_their_share_and_readers_get_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("file://{}", dir.path().display()), dir.path()).unwrap();
        let upload = CaptureUpload {
            endpoint: "api".into(),
            source: "api-blue-0".into(),
            max_bytes: 1 << 20,
            flush: Duration::from_millis(20),
        };
        let (send, receive) = mpsc::channel(16);
        let writer = tokio::spawn(upload_captures(
            store.clone(),
            upload.clone(),
            receive,
            |_| {},
        ));
        let pad = "7".repeat(900);
        for i in 0..3000 {
            let body = format!(r#"{{"rows": [{{"i": {i}, "pad": "{pad}"}}]}}"#);
            send.send(line("blue", body.as_bytes()).unwrap())
                .await
                .unwrap();
        }
        drop(send);
        let stats = writer.await.unwrap();
        assert_eq!(stats.lines, 3000);
        assert_eq!(stats.failed, 0);
        let stored: u64 = store
            .objects()
            .list("captures/api/api-blue-0/")
            .await
            .unwrap()
            .iter()
            .map(|f| f.size)
            .sum();
        assert!(stored <= upload.max_bytes, "{stored}");
        let bodies = store.captured_requests("api", 10).await.unwrap();
        let seen: Vec<u64> = bodies
            .iter()
            .map(|b| b["rows"][0]["i"].as_u64().unwrap())
            .collect();
        assert_eq!(seen, (2990..3000).collect::<Vec<u64>>());
        assert!(store
            .captured_requests("other", 10)
            .await
            .unwrap()
            .is_empty());
    }
}
