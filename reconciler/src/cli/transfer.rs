//! `cairn fetch` and `cairn upload`: what a training pod on Kubernetes runs around the
//! job's own container. `fetch` downloads an input version into a folder; `upload`
//! stores the job's output folders as model or dataset versions named after the run,
//! with their lineage. The store comes from `CAIRN_STORE*` (the Job template sets them), its
//! credentials from the usual AWS chain (`aws.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use cairn::artifacts::{self, Lineage, VersionKind, VersionRef};
use cairn::backend::store::{Store, StoreOptions};

use super::{CommandError, ErrorKind, Outcome, Output};

/// The workspace store, as the Job template passes it.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// The workspace store URL (`s3://bucket/prefix` or `file:///path`).
    #[arg(long, env = "CAIRN_STORE", value_name = "URL")]
    store: Option<String>,

    /// An S3-compatible server's URL.
    #[arg(long, env = "CAIRN_STORE_ENDPOINT", value_name = "URL")]
    store_endpoint: Option<String>,

    /// The S3 region.
    #[arg(long, env = "CAIRN_STORE_REGION", value_name = "REGION")]
    store_region: Option<String>,

    /// Path-style S3 addressing.
    #[arg(long, env = "CAIRN_STORE_PATH_STYLE", value_name = "BOOL")]
    store_path_style: Option<bool>,
}

impl StoreArgs {
    pub(super) fn open(&self) -> Result<Store, CommandError> {
        let Some(url) = &self.store else {
            return Err(CommandError::user("no workspace store was given").hint_opt(Some(
                "pass `--store s3://bucket/prefix` or set CAIRN_STORE (the pod templates set it)"
                    .into(),
            )));
        };
        let options = StoreOptions {
            endpoint: self.store_endpoint.clone(),
            region: self.store_region.clone(),
            path_style: self.store_path_style,
            aws: Some(std::sync::Arc::new(super::aws::DefaultChain::from_env())),
        };
        let base = std::env::current_dir()
            .map_err(|e| CommandError::internal(format!("cannot read the current folder: {e}")))?;
        Store::open_with(url, &base, &options).map_err(|e| CommandError::store(&e))
    }
}

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// The version to download: `dataset.<name>@<version>` or `model.<name>@<version>`.
    #[arg(value_name = "REFERENCE")]
    reference: String,

    /// The folder to download into (emptied first).
    #[arg(long, value_name = "DIR")]
    to: PathBuf,

    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, clap::Args)]
pub struct UploadArgs {
    /// What to store: `model.<name>@<version>=<folder>` or
    /// `dataset.<name>@<version>=<folder>`, once per output.
    #[arg(value_name = "OUTPUT@VERSION=DIR", required = true)]
    outputs: Vec<String>,

    /// The job that produced the outputs (`workspace/job.name`), for the lineage.
    #[arg(long, value_name = "ADDRESS")]
    job: Option<String>,

    /// The run that produced them.
    #[arg(long, value_name = "RUN_ID")]
    run: Option<String>,

    /// An input the run read: `<name>=<dataset or model reference>`; repeatable.
    #[arg(long = "input", value_name = "NAME=REFERENCE")]
    inputs: Vec<String>,

    /// A model's format: `<model name>=<format>`; repeatable. Default `custom`.
    #[arg(long = "format", value_name = "MODEL=FORMAT")]
    formats: Vec<String>,

    /// The Git commit the job was planned at, for the lineage.
    #[arg(long, env = "CAIRN_COMMIT", value_name = "SHA")]
    commit: Option<String>,

    #[command(flatten)]
    store: StoreArgs,
}

fn bad(what: &str, text: &str, hint: &str) -> CommandError {
    CommandError::user(format!("`{text}` is not a valid {what}")).hint_opt(Some(hint.into()))
}

fn artifact_error(e: &artifacts::Error) -> CommandError {
    let kind = match e {
        artifacts::Error::BadReference(..) | artifacts::Error::EmptyOutput { .. } => {
            ErrorKind::User
        }
        artifacts::Error::Store(source) => super::store_kind(source),
        _ => ErrorKind::Target,
    };
    CommandError::from_error(kind, e).hint_opt(e.hint())
}

pub fn fetch(args: FetchArgs, _output: Output) -> Result<Outcome, CommandError> {
    VersionRef::parse(&args.reference).map_err(|e| artifact_error(&e))?;
    let store = args.store.open()?;
    let runtime = super::runtime()?;
    let fetched = runtime
        .block_on(artifacts::fetch(&store, &args.reference, &args.to))
        .map_err(|e| artifact_error(&e))?;
    eprintln!(
        "fetched {} ({} file{}, {}) into {}",
        args.reference,
        fetched.files,
        if fetched.files == 1 { "" } else { "s" },
        cairn::plan::human_bytes(fetched.bytes),
        args.to.display()
    );
    Ok(Outcome::Success)
}

pub fn upload(args: UploadArgs, _output: Output) -> Result<Outcome, CommandError> {
    let mut outputs = Vec::new();
    for text in &args.outputs {
        let hint = "outputs look like `model.<name>@<version>=<folder>` or `dataset.<name>@<version>=<folder>`";
        let (reference, folder) = text
            .split_once('=')
            .ok_or_else(|| bad("output", text, hint))?;
        let parsed = VersionRef::parse(reference).map_err(|_| bad("output", text, hint))?;
        outputs.push((parsed, PathBuf::from(folder)));
    }
    let mut inputs = BTreeMap::new();
    for text in &args.inputs {
        let hint = "inputs look like `<name>=dataset.<name>@<version>`";
        let (name, reference) = text
            .split_once('=')
            .ok_or_else(|| bad("input", text, hint))?;
        VersionRef::parse(reference).map_err(|_| bad("input", text, hint))?;
        inputs.insert(name.to_string(), reference.to_string());
    }
    let mut formats = BTreeMap::new();
    for text in &args.formats {
        let (model, format) = text
            .split_once('=')
            .ok_or_else(|| bad("format", text, "formats look like `<model>=onnx`"))?;
        formats.insert(model.to_string(), format.to_string());
    }
    let job = args.job.as_deref().map(|a| {
        a.rsplit_once("job.")
            .map_or(a, |(_, name)| name)
            .to_string()
    });
    let metrics = artifacts::read_metrics(outputs.iter().map(|(_, dir)| dir.as_path()));
    let store = args.store.open()?;
    let runtime = super::runtime()?;
    for (reference, folder) in &outputs {
        let lineage = Lineage {
            job: job.clone(),
            run_id: args.run.clone(),
            inputs: inputs.clone(),
            commit: args.commit.clone(),
            metrics: metrics.clone(),
        };
        let format = match reference.kind {
            VersionKind::Model => formats
                .get(&reference.name)
                .map_or("custom", String::as_str),
            VersionKind::Dataset => "custom",
        };
        let files = runtime
            .block_on(artifacts::store_output(
                &store,
                &reference.to_string(),
                format,
                folder,
                lineage,
            ))
            .map_err(|e| artifact_error(&e))?;
        eprintln!(
            "stored {reference} ({files} file{})",
            if files == 1 { "" } else { "s" }
        );
    }
    Ok(Outcome::Success)
}
