//! The `cairn` command line. All terminal I/O and exit codes live in [`cli`].

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
