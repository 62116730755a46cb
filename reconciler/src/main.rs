//! The `cairn` command line. All terminal I/O and exit codes live in [`cli`].

mod cli;

/// mimalloc: planning builds many small values; it allocates them faster than the
/// system allocator and returns memory with fewer page faults.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
