//! `cairn logs JOB[@RUN] [PATH]`: the logs a job's run stored (`runs/<job>/<run>/`: each
//! attempt's, each rank's, and on Kubernetes the upload pod's), newest run by default,
//! printed in order; with several logs each is headed by its key on stderr. `--format
//! json` gives the run and every log's key and text.

use std::io::Write as _;

use cairn::backend::store::{RunRecord, Store};

use super::context;
use super::{CommandError, Format, Outcome, Output, ReportArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job (`train-risk`, `job.train-risk`), and optionally the run: `train-risk@6aaa0fd4e4a1`.
    #[arg(value_name = "JOB[@RUN]")]
    job: String,

    #[command(flatten)]
    report: ReportArgs,
}

pub fn run(args: Args, output: Output) -> Result<Outcome, CommandError> {
    let (job, run_id) = match args.job.split_once('@') {
        Some((job, run)) => (job, Some(run)),
        None => (args.job.as_str(), None),
    };
    let job = job.strip_prefix("job.").unwrap_or(job);
    let loaded = context::load(&args.report.source, output)?;
    let selection = context::select(&loaded, &args.report.workspaces)?;
    let rt = super::runtime()?;
    // Newest first across the selected workspaces.
    let mut found: Vec<(&String, &Store, RunRecord)> = Vec::new();
    for (workspace, store) in &selection.stores {
        let runs = rt
            .block_on(store.runs(Some(job)))
            .map_err(|e| CommandError::store(&e))?;
        found.extend(runs.into_iter().map(|r| (workspace, store, r)));
    }
    found.sort_by(|a, b| b.2.finished_at.cmp(&a.2.finished_at));
    let known: Vec<String> = found.iter().take(5).map(|f| f.2.run_id.clone()).collect();
    let chosen = match run_id {
        Some(id) => found
            .into_iter()
            .find(|f| f.2.run_id == id)
            .ok_or_else(|| {
                CommandError::user(format!("job.{job} has no recorded run `{id}`")).hint_opt(Some(
                    if known.is_empty() {
                        format!("job.{job} has no runs yet; `cairn runs` lists the recorded ones")
                    } else {
                        format!("its newest runs: {}", known.join(", "))
                    },
                ))
            })?,
        None => found.into_iter().next().ok_or_else(|| {
            CommandError::user(format!("job.{job} has no recorded runs")).hint_opt(Some(
                "a run is recorded when an apply runs the job; `cairn runs` lists them".into(),
            ))
        })?,
    };
    let (workspace, store, record) = chosen;
    // Through files in Cairn's cache: a log may be large.
    let scratch = context::local_dir(&loaded.root)
        .join("cache")
        .join(format!("logs-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)
        .map_err(|e| CommandError::internal(format!("cannot make {}: {e}", scratch.display())))?;
    let _cleanup = RemoveOnDrop(scratch.clone());
    let mut texts = Vec::new();
    for (i, key) in record.logs.iter().enumerate() {
        let path = scratch.join(format!("{i}.log"));
        rt.block_on(store.objects().get_file(key, &path))
            .map_err(|e| CommandError::store(&e))?;
        texts.push((key.clone(), path));
    }
    if args.report.format == Format::Json {
        let logs: Vec<serde_json::Value> = texts
            .iter()
            .map(|(key, path)| {
                serde_json::json!({
                    "key": key,
                    "text": String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()),
                })
            })
            .collect();
        let value = serde_json::json!({
            "workspace": workspace,
            "job": format!("job.{job}"),
            "run_id": record.run_id,
            "status": record.status,
            "logs": logs,
        });
        println!("{}", serde_json::to_string_pretty(&value).expect("JSON"));
        return Ok(Outcome::Success);
    }
    if texts.is_empty() {
        eprintln!("{workspace}/job.{job} run {} stored no logs", record.run_id);
        return Ok(Outcome::Success);
    }
    let mut stdout = std::io::stdout().lock();
    for (key, path) in &texts {
        if texts.len() > 1 {
            let _ = stdout.flush();
            eprintln!("── {key}");
        }
        let mut file = std::fs::File::open(path)
            .map_err(|e| CommandError::internal(format!("cannot read {}: {e}", path.display())))?;
        std::io::copy(&mut file, &mut stdout)
            .map_err(|e| CommandError::internal(format!("cannot write the log: {e}")))?;
    }
    Ok(Outcome::Success)
}

/// Removes a scratch folder when the command ends, however it ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
