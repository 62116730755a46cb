//! Bounds on values the types allow but nothing can run: replicas, instances, retries,
//! ports, the rollout's `step_wait` and latency gate, and environment variables and
//! command arguments that can't reach a process (a NUL byte, `=` in a name). Durations
//! are bounded where they are parsed ([`crate::manifest::units::MAX_DURATION`]).
//!
//! Each check reports where the value is written. Fields the model keeps without a span
//! (`env` tables, `retries`, `step_wait`) are found in the file's text again, only when
//! a check fails ([`crate::manifest::locate`]).

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use super::Resource;
use crate::diagnostics::{Diagnostic, Location};
use crate::manifest::locate::{key_span, value_span};
use crate::manifest::{EndpointSpec, JobSpec, RolloutSpec};

/// The most replicas one deployment may ask for.
pub const MAX_REPLICAS: u32 = 1_000;
/// The most instances (processes or pods) one distributed job may ask for.
pub const MAX_INSTANCES: u32 = 1_000;
/// The most times a failed job is retried.
pub const MAX_RETRIES: u32 = 100;
/// The shortest `step_wait`: a shorter hold lets gates judge too few requests (none at
/// `0s`) to mean anything. `steps = [100]` with `step_wait = "0s"` is the one exception:
/// it switches at once, as an endpoint without a rollout table does.
pub const MIN_STEP_WAIT: Duration = Duration::from_secs(5);
/// The largest `max_p99_ms` (10 minutes): a gate above it can't fail.
pub const MAX_P99_MS: u64 = 600_000;
/// The largest `min_requests`: a step must be able to reach it.
pub const MAX_MIN_REQUESTS: u64 = 1_000_000;

/// Where a resource is written: its file, that file's text, and its key path.
pub(super) struct Place<'a> {
    pub resource: &'a Resource,
    pub text: &'a str,
}

impl Place<'_> {
    fn loc(&self, span: Range<usize>) -> Location {
        Location::new(&self.resource.file, self.text, span)
    }

    /// The key path of a field of this resource: `["job", "<name>", …rest]`.
    fn path<'p>(&'p self, rest: &[&'p str]) -> Vec<&'p str> {
        let mut path = vec![
            self.resource.address.kind.as_str(),
            self.resource.address.name.as_str(),
        ];
        path.extend_from_slice(rest);
        path
    }

    /// The span of a key of this resource, or of the resource's name if not found.
    fn key(&self, rest: &[&str]) -> Range<usize> {
        key_span(self.text, &self.path(rest)).unwrap_or_else(|| self.resource.name_span.clone())
    }

    fn value(&self, rest: &[&str], fallback: Range<usize>) -> Range<usize> {
        value_span(self.text, &self.path(rest)).unwrap_or(fallback)
    }
}

fn too_many(what: &str, value: u32, max: u32, help: &str) -> Diagnostic {
    Diagnostic::error(
        "over-limit",
        format!("{what} = {value} is over the limit of {max}"),
    )
    .help(help.to_string())
}

/// Checks a job's numbers, command and environment.
pub(super) fn job(place: &Place<'_>, spec: &JobSpec) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if let Some(instances) = &spec.instances {
        let n = *instances.get_ref();
        if n > MAX_INSTANCES {
            out.push(
                too_many("instances", n, MAX_INSTANCES, "a distributed job starts one process (or pod) per instance; use fewer, larger instances")
                    .at(place.loc(instances.span())),
            );
        }
    }
    if spec.retries > MAX_RETRIES {
        let span = place.value(&["retries"], place.resource.name_span.clone());
        out.push(
            too_many("retries", spec.retries, MAX_RETRIES, "a job that failed that often won't succeed by retrying; fix it, or retry a few times")
                .at(place.loc(span)),
        );
    }
    if let Some(command) = &spec.command {
        command_nul(place, command.get_ref(), &mut out);
    }
    env(place, &spec.env, &["env"], &mut out);
    out
}

/// Checks an endpoint's port, deployments and rollout.
pub(super) fn endpoint(place: &Place<'_>, spec: &EndpointSpec) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if let Some(port) = &spec.port {
        if *port.get_ref() == 0 {
            out.push(
                Diagnostic::error(
                    "invalid-port",
                    "port 0 is not a port an endpoint can listen on",
                )
                .at(place.loc(port.span()))
                .label(
                    "0 asks the system for any free port, so no client would know where to connect",
                )
                .help("choose a port from 1 to 65535, e.g. `port = 8080`"),
            );
        }
    }
    for (name, deployment) in &spec.deployments {
        let d = deployment.get_ref();
        if let Some(replicas) = &d.replicas {
            let n = replicas.get_ref().most();
            if n > MAX_REPLICAS {
                out.push(
                    too_many(
                        "replicas",
                        n,
                        MAX_REPLICAS,
                        "each replica is a serving process (or pod); ask for fewer",
                    )
                    .at(place.loc(replicas.span())),
                );
            }
        }
        if let Some(command) = &d.command {
            command_nul(place, command.get_ref(), &mut out);
        }
        env(
            place,
            &d.env,
            &["deployments", name.get_ref().as_str(), "env"],
            &mut out,
        );
    }
    if let Some(rollout) = &spec.rollout {
        self::rollout(place, rollout.get_ref(), rollout.span(), &mut out);
    }
    out
}

/// A command argument with a NUL byte can't reach a program.
fn command_nul(place: &Place<'_>, command: &[toml::Spanned<String>], out: &mut Vec<Diagnostic>) {
    for arg in command {
        if arg.get_ref().contains('\0') {
            out.push(
                Diagnostic::error(
                    "nul-byte",
                    "a command argument holds a NUL byte (`\\u0000`)",
                )
                .at(place.loc(arg.span()))
                .label("no program can receive this argument")
                .help("remove the `\\u0000` from the argument"),
            );
        }
    }
}

fn rollout(place: &Place<'_>, spec: &RolloutSpec, span: Range<usize>, out: &mut Vec<Diagnostic>) {
    if let Some(wait) = spec.step_wait {
        let wait = wait.as_std();
        let switch_at_once = wait.is_zero() && spec.steps.get_ref().as_slice() == [100];
        if wait < MIN_STEP_WAIT && !switch_at_once {
            let at = place.value(&["rollout", "step_wait"], span.clone());
            out.push(
                Diagnostic::error(
                    "step-wait-too-short",
                    format!(
                        "step_wait of {} is shorter than the {}s floor",
                        humantime::format_duration(wait),
                        MIN_STEP_WAIT.as_secs()
                    ),
                )
                .at(place.loc(at))
                .label("the gates would judge too few requests to mean anything (none at 0s)")
                .help(format!(
                    "hold each step at least `{}s`, e.g. `step_wait = \"30s\"`; to switch at once without gates, write `steps = [100]` and `step_wait = \"0s\"`",
                    MIN_STEP_WAIT.as_secs()
                )),
            );
        }
    }
    if let Some(min) = &spec.min_requests {
        let v = *min.get_ref();
        if v > MAX_MIN_REQUESTS {
            out.push(
                Diagnostic::error(
                    "over-limit",
                    format!("min_requests = {v} is over the limit of {MAX_MIN_REQUESTS}"),
                )
                .at(place.loc(min.span()))
                .help("the requests a gated step must see before it is judged, e.g. `min_requests = 20`"),
            );
        }
    }
    if let Some(p99) = &spec.max_p99_ms {
        let v = *p99.get_ref();
        if v > MAX_P99_MS {
            out.push(
                Diagnostic::error(
                    "over-limit",
                    format!("max_p99_ms = {v} is over the limit of {MAX_P99_MS} (10 minutes)"),
                )
                .at(place.loc(p99.span()))
                .help("the p99 latency gate in milliseconds, e.g. `max_p99_ms = 250`; remove it to roll out without a latency gate"),
            );
        }
    }
}

/// Checks environment variable names and values: what `execve` can't pass (a NUL byte
/// anywhere, `=` in a name) or a shell can't name (an empty name).
fn env(place: &Place<'_>, env: &BTreeMap<String, String>, at: &[&str], out: &mut Vec<Diagnostic>) {
    for (key, value) in env {
        let mut key_path = at.to_vec();
        key_path.push(key);
        let problem = if key.is_empty() {
            Some("an environment variable name is empty")
        } else if key.contains('\0') {
            Some("an environment variable name holds a NUL byte (`\\u0000`)")
        } else if key.contains('=') {
            Some("an environment variable name holds `=`")
        } else {
            None
        };
        if let Some(problem) = problem {
            out.push(
                Diagnostic::error("invalid-env", problem)
                    .at(place.loc(place.key(&key_path)))
                    .label("a process environment holds `NAME=value` entries, so this name can't be passed")
                    .help("use letters, digits and `_`, e.g. `LOG_LEVEL = \"info\"`"),
            );
        }
        if value.contains('\0') {
            let span = place.value(&key_path, place.key(&key_path));
            out.push(
                Diagnostic::error(
                    "nul-byte",
                    format!(
                        "the value of `{}` holds a NUL byte (`\\u0000`)",
                        key.escape_debug()
                    ),
                )
                .at(place.loc(span))
                .label("an environment variable's value ends at the first NUL byte")
                .help("remove the `\\u0000` from the value"),
            );
        }
    }
}
