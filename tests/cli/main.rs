//! The command line's contract with scripts and CI, on the real `cairn` binary: exit
//! codes (`exit_codes`: usage errors are 64, never 0 or 2, while `--help` and
//! `--version` are 0 and changes are 2), shell completions (`completions`) and what the
//! markdown plan says it planned (`plan_header`).

#[path = "../support/mod.rs"]
mod support;

mod completions;
mod exit_codes;
mod plan_header;
