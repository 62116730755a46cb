//! The `cairn` command line. All terminal I/O and exit codes live in [`cli`].

mod cli;

fn main() -> std::process::ExitCode {
    // Die quietly on a closed pipe (`cairn plan | head`), like other Unix tools, instead
    // of panicking on the failed write.
    #[cfg(unix)]
    // SAFETY: restores the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    cli::main()
}
