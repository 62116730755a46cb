//! `cairn policy`: run the policies' unit tests, or show what the policies say about the
//! manifests without planning.

use std::path::PathBuf;

use cairn::policy::{Input, Origin, Policies, TestResult};
use owo_colors::OwoColorize;

use super::{context, CommandError, ErrorKind, Format, Outcome, Output, SourceArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the policies' unit tests: every `test_*` rule (in `*_test.rego` files) of
    /// Cairn's shipped policies and of the repository's `policies/` folder, or only
    /// those in FOLDER. A test passes when it evaluates to true. Exits 1 when one fails.
    Test(TestArgs),
    /// Evaluate the policies against the manifests (no store, no plan: `input.plan` is
    /// null) and show their deny and warn messages. Exits 1 on a deny.
    Eval(EvalArgs),
}

#[derive(Debug, clap::Args)]
struct TestArgs {
    /// A folder of `.rego` (and `.json` data) files whose tests to run; the shipped
    /// policies are loaded beside them, and a file with a shipped file's name replaces
    /// it. Default: the shipped policies and `policies/` under the manifests root.
    #[arg(value_name = "FOLDER")]
    folder: Option<PathBuf>,

    /// The manifests root whose `policies/` folder holds the repository's policies
    /// (when no FOLDER is given). Defaults to `manifests` when that folder exists, else
    /// the current folder.
    #[arg(long, value_name = "PATH")]
    root: Option<PathBuf>,

    /// Read the repository's policies as of this Git revision.
    #[arg(long, value_name = "REV", conflicts_with = "folder")]
    rev: Option<String>,
}

#[derive(Debug, clap::Args)]
struct EvalArgs {
    #[command(flatten)]
    source: SourceArgs,

    /// Print the input document the rules see instead of evaluating.
    #[arg(long)]
    input: bool,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn run(args: Args, output: Output) -> Result<Outcome, CommandError> {
    match args.command {
        Command::Test(args) => test(args, output),
        Command::Eval(args) => eval(args, output),
    }
}

pub fn policy_error(e: &cairn::policy::Error) -> CommandError {
    CommandError::from_error(ErrorKind::User, e).hint_opt(e.hint())
}

fn test(args: TestArgs, output: Output) -> Result<Outcome, CommandError> {
    let policies = match &args.folder {
        Some(folder) => {
            if !folder.is_dir() {
                return Err(CommandError::user(format!(
                    "{} is not a folder of policies",
                    folder.display()
                ))
                .hint_opt(Some(
                    "pass the folder holding the `.rego` files, e.g. `cairn policy test manifests/policies`".into(),
                )));
            }
            Policies::shipped().with_folder(folder)
        }
        None => {
            let source = SourceArgs {
                path: args.root.clone(),
                rev: args.rev.clone(),
            };
            Policies::from_snapshot(&source.load()?)
        }
    }
    .map_err(|e| policy_error(&e))?;
    // With a folder, only its tests run; the shipped policies are there for them to use.
    let only_folder = args.folder.is_some();
    let outcomes = policies
        .test(|f| !only_folder || f.origin == Origin::Repository)
        .map_err(|e| policy_error(&e))?;
    if outcomes.is_empty() {
        return Err(CommandError::user("no policy tests found").hint_opt(Some(
            "tests are rules named `test_…` (conventionally in `*_test.rego` files) that evaluate to true".into(),
        )));
    }
    let paint = |text: &str, ok: bool| match (output.color_stdout, ok) {
        (false, _) => text.to_string(),
        (true, true) => text.green().to_string(),
        (true, false) => text.red().bold().to_string(),
    };
    let (mut passed, mut failed) = (0, 0);
    for o in &outcomes {
        let place = format!("{}:{}", o.policy, o.line);
        match &o.result {
            TestResult::Passed => {
                passed += 1;
                println!("{} {} ({place})", paint("PASS", true), o.rule);
            }
            TestResult::Failed => {
                failed += 1;
                println!("{} {} ({place})", paint("FAIL", false), o.rule);
            }
            TestResult::Error(e) => {
                failed += 1;
                println!("{} {} ({place}): {e}", paint("ERROR", false), o.rule);
            }
        }
    }
    let line = format!(
        "{} test{}: {passed} passed, {failed} failed.",
        outcomes.len(),
        if outcomes.len() == 1 { "" } else { "s" }
    );
    println!("{}", paint(&line, failed == 0));
    Ok(if failed == 0 {
        Outcome::Success
    } else {
        Outcome::Failed(ErrorKind::User)
    })
}

fn eval(args: EvalArgs, output: Output) -> Result<Outcome, CommandError> {
    let loaded = context::load(&args.source, output)?;
    let input = Input::new(&loaded.desired, None);
    if args.input {
        println!("{}", input.to_json());
        return Ok(Outcome::Success);
    }
    let report = Policies::from_snapshot(&loaded.snapshot)
        .and_then(|p| p.evaluate(&input))
        .map_err(|e| policy_error(&e))?;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("reports serialize")
        ),
        Format::Text => {
            let text = cairn::view::policy_text(&report, output.color_stdout);
            if text.is_empty() {
                println!(
                    "No policy findings: {} polic{} evaluated.",
                    report.policies.len(),
                    if report.policies.len() == 1 {
                        "y"
                    } else {
                        "ies"
                    }
                );
            } else {
                print!("{text}");
            }
        }
    }
    if report.denied() {
        return Err(denied(&report, "denied by policy"));
    }
    Ok(Outcome::Success)
}

/// The error for a denied plan (or manifests); `what` says what was refused, e.g.
/// "the plan is denied by policy".
pub fn denied(report: &cairn::policy::PolicyReport, what: &str) -> CommandError {
    let n = report.deny.len();
    CommandError::policy(format!(
        "{what}: {n} message{} above",
        if n == 1 { "" } else { "s" }
    ))
    .hint_opt(Some(
        "fix the resources they name; `cairn policy eval` re-checks without planning".into(),
    ))
}
