//! A local job's process group dies with the apply that started it.
//!
//! A job runs as the leader of its own process group (so a timeout can signal all of
//! it). Two things make sure that group does not outlive its apply, even one killed with
//! `SIGKILL`:
//!
//! - A **watchdog** ([`Watchdog::arm`]): a small process forked from the apply that joins
//!   the job's process group and blocks reading a pipe whose only writer is the apply.
//!   When the pipe closes (the job ended and the apply closed it, or the apply is gone,
//!   killed or crashed), the read returns and the watchdog kills the whole group, itself
//!   included: no grandchild outlives its job. Being in the job's group, it survives a
//!   kill of the apply's own process group, and while it lives the group's id can't be
//!   reused, so the kill never reaches another process.
//! - A **pid record** ([`record`]) in the run's folder: the next apply that runs the same
//!   run in that folder first kills a group the record names that is still running there
//!   ([`reap_leftover`]), instead of starting the same run a second time beside it. This
//!   covers what the watchdog can't: the machine's processes killed all at once.
//!
//! Linux only (the watchdog needs `fork` and the record is checked through `/proc`);
//! elsewhere jobs only get their own process group.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file in a run's folder that names the process group of the job running there.
pub const RECORD: &str = ".cairn-job.pid";

/// A forked watchdog that kills a process group unless disarmed.
#[derive(Debug)]
pub struct Watchdog {
    #[cfg(target_os = "linux")]
    pid: libc::pid_t,
    #[cfg(target_os = "linux")]
    write: libc::c_int,
}

impl Watchdog {
    /// Forks a watchdog for the process group `pgid`. `None` where none can be started
    /// (the job then still runs, and the pid record still covers it).
    #[cfg(target_os = "linux")]
    pub fn arm(pgid: u32) -> Option<Watchdog> {
        let pgid = libc::pid_t::try_from(pgid).ok().filter(|p| *p > 1)?;
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: plain system calls; `fds` has room for the two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return None;
        }
        let [read, write] = fds;
        let null = c"/dev/null";
        // SAFETY: after `fork` the child calls only async-signal-safe functions (setpgid,
        // open, dup2, syscall, read, kill, _exit) on data prepared before the fork, and
        // never returns.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe {
                libc::setpgid(0, pgid);
                let devnull = libc::open(null.as_ptr(), libc::O_RDWR);
                if devnull >= 0 {
                    for fd in 0..3 {
                        libc::dup2(devnull, fd);
                    }
                }
                // Keep only the pipe (as fd 3): another watchdog's write end, inherited
                // through this fork, must not keep this one's pipe open.
                libc::dup2(read, 3);
                if libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) != 0 {
                    for fd in 4..4096 {
                        libc::close(fd);
                    }
                }
                // Returns when the write end closes: the job ended (the apply closed it)
                // or the apply is gone. Either way nothing of the group may stay: kill
                // it. The group id can't have been reused, as this process is in it.
                let mut byte = 0u8;
                while libc::read(3, (&mut byte as *mut u8).cast(), 1) < 0
                    && *libc::__errno_location() == libc::EINTR
                {}
                libc::kill(-pgid, libc::SIGKILL);
                libc::_exit(0);
            }
        }
        // SAFETY: closing the read end this process no longer needs.
        unsafe { libc::close(read) };
        if pid < 0 {
            // SAFETY: closing the descriptor this function opened.
            unsafe { libc::close(write) };
            return None;
        }
        Some(Watchdog { pid, write })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn arm(_pgid: u32) -> Option<Watchdog> {
        None
    }

    /// Tells the watchdog the job is over: it kills what is left of the group (a
    /// grandchild the job left behind) and exits. Dropping the watchdog does the same.
    pub fn disarm(self) {}
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        // SAFETY: plain system calls on the descriptor and child this value owns (and
        // gives up here, once). Closing, not writing: a write to a watchdog already
        // killed with the group would raise SIGPIPE.
        unsafe {
            libc::close(self.write);
            let mut status = 0;
            while libc::waitpid(self.pid, &mut status, 0) < 0
                && *libc::__errno_location() == libc::EINTR
            {}
        }
    }
}

/// Writes the pid record of the job whose group is `pgid` into its run folder.
pub fn record(workdir: &Path, pgid: u32) -> std::io::Result<()> {
    std::fs::write(workdir.join(RECORD), format!("{pgid}\n"))
}

/// Removes the pid record of a job that ended.
pub fn forget(workdir: &Path) {
    let _ = std::fs::remove_file(workdir.join(RECORD));
}

/// Kills what is left of a job an earlier apply started in `workdir` (its pid record
/// names a process group with a process still working in that folder), and waits until
/// it is gone. Returns the group it killed.
pub async fn reap_leftover(workdir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(workdir.join(RECORD)).ok()?;
    let pgid: u32 = text.trim().parse().ok().filter(|p| *p > 1)?;
    let killed = if group_works_in(pgid, workdir) {
        kill_group(pgid);
        // Bounded: SIGKILL can't be ignored, so the group goes within moments.
        for _ in 0..200 {
            if !group_works_in(pgid, workdir) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Some(pgid)
    } else {
        None
    };
    forget(workdir);
    killed
}

/// Whether the job a run folder's pid record names still runs there.
pub fn running(workdir: &Path) -> bool {
    std::fs::read_to_string(workdir.join(RECORD))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .is_some_and(|pgid| group_works_in(pgid, workdir))
}

/// Whether a process of group `pgid` runs with `workdir` as its current folder: the
/// record is trusted only then, so a reused id never gets another process killed.
fn group_works_in(pgid: u32, workdir: &Path) -> bool {
    let want = std::fs::canonicalize(workdir).unwrap_or_else(|_| workdir.to_path_buf());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            return false;
        };
        process_group(pid) == Some(pgid)
            && std::fs::read_link(PathBuf::from(format!("/proc/{pid}/cwd"))).ok()
                == Some(want.clone())
    })
}

/// The process group of `pid`, from `/proc/<pid>/stat`.
fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

fn kill_group(pgid: u32) {
    #[cfg(unix)]
    if let Some(pgid) = i32::try_from(pgid).ok().filter(|p| *p > 1) {
        // SAFETY: plain system call; `pgid > 1`, so this is never `kill(-1)`.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_process_group() {
        let me = std::process::id();
        // SAFETY: plain system call.
        let pgrp = unsafe { libc::getpgrp() } as u32;
        assert_eq!(process_group(me), Some(pgrp));
    }
}
