//! Listing a store's job runs (`runs/<job>/<run-id>/_run.json`), newest first, with
//! their metrics: what `cairn runs` shows.

use super::{Result, RunRecord, Store};

impl Store {
    /// Every recorded run, of one job or of all, newest first (by when it finished,
    /// then by run id).
    pub async fn runs(&self, job: Option<&str>) -> Result<Vec<RunRecord>> {
        let prefix = match job {
            Some(job) => format!("runs/{job}/"),
            None => "runs/".to_string(),
        };
        let mut out: Vec<RunRecord> = self.markers(&prefix, "/_run.json").await?;
        out.sort_by(|a, b| {
            b.finished_at
                .cmp(&a.finished_at)
                .then(b.run_id.cmp(&a.run_id))
        });
        Ok(out)
    }
}
