//! Processes, through `/proc` and signals: a replica's [`Running`] process (a child, or
//! adopted from a previous daemon), whether a recorded pid is still that process, and
//! signals to a process group or one process, never to a pid that may have been reused
//! and never `kill(-1)`.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::loopback;

/// A replica's process: a child of this daemon, or adopted from a previous one.
#[derive(Debug)]
pub(super) struct Running {
    pub(super) pid: u32,
    pub(super) start_ticks: Option<u64>,
    pub(super) port: u16,
    /// `None` when adopted: not our child, so watched through `/proc`.
    pub(super) child: Option<tokio::process::Child>,
    pub(super) log: PathBuf,
    /// Where this start's output begins in the log.
    pub(super) log_offset: u64,
}

impl Running {
    /// Where the replica listens.
    pub(super) fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    /// Whether the process has exited. A child is not reaped here, so its pid, and the
    /// group id it names, stay reserved until [`Running::reap`].
    pub(super) fn has_exited(&self) -> bool {
        match self.child {
            Some(_) => child_exited(self.pid),
            None => !is_alive(self.pid, self.start_ticks),
        }
    }

    /// After the leader exited: kills what its group still holds, reaps the leader, and
    /// says how it ended.
    pub(super) async fn reap(&mut self) -> String {
        let group_reserved = match self.child {
            Some(_) => true,
            // An adopted zombie still reserves its pid; once another reaper took it, the
            // pid may name someone else's group.
            None => proc_stat(self.pid).is_some_and(|s| Some(s.start_ticks) == self.start_ticks),
        };
        if group_reserved {
            signal_group(self.pid, libc::SIGKILL);
        }
        match self.child.take() {
            Some(mut child) => match child.wait().await {
                Ok(status) => describe_exit(status),
                Err(e) => format!("exited (status unknown: {e})"),
            },
            None => "exited (adopted, so its exit status is unknown)".to_string(),
        }
    }

    /// Waits (polling every `poll`) until the process exits, then reaps it.
    pub(super) async fn exited(&mut self, poll: Duration) -> String {
        while !self.has_exited() {
            tokio::time::sleep(poll).await;
        }
        self.reap().await
    }

    /// SIGTERM to the group, SIGKILL after `grace`; returns how it ended.
    pub(super) async fn terminate(&mut self, grace: Duration, poll: Duration) -> String {
        if !self.has_exited() {
            signal_group(self.pid, libc::SIGTERM);
            let deadline = Instant::now() + grace;
            while !self.has_exited() && Instant::now() < deadline {
                tokio::time::sleep(poll.min(Duration::from_millis(20))).await;
            }
            if !self.has_exited() {
                signal_group(self.pid, libc::SIGKILL);
                let deadline = Instant::now() + Duration::from_secs(5);
                while !self.has_exited() && Instant::now() < deadline {
                    tokio::time::sleep(poll.min(Duration::from_millis(20))).await;
                }
            }
        }
        self.reap().await
    }
}

/// Whether our child `pid` has exited, without reaping it.
fn child_exited(pid: u32) -> bool {
    let id = libc::id_t::from(pid);
    loop {
        // SAFETY: an all-zero `siginfo_t` is a valid value for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid out-pointer; WNOWAIT leaves the child unreaped.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                id,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            // SAFETY: waitid succeeded; `si_pid` is 0 when the child has not exited.
            return unsafe { info.si_pid() } != 0;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // ECHILD: already reaped, so gone.
            return true;
        }
    }
}

/// Sends `signal` to the process group `pgid` (a replica leads its own group).
fn signal_group(pgid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    // `pgid > 1` guarantees this is never `kill(-1)` (every process) or `kill(0)` (our
    // own group).
    if pgid <= 1 {
        return;
    }
    // SAFETY: plain system call; a negative pid names a process group.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Sends `signal` to the one process `pid` (> 1), e.g. a watchdog.
pub(super) fn signal_process(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 1 {
        return;
    }
    // SAFETY: plain system call on one process, by a pid > 1.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// The fields of `/proc/PID/stat` the supervisor reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProcStat {
    pub(super) state: char,
    pub(super) pgrp: i64,
    pub(super) start_ticks: u64,
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // `PID (COMM) STATE PPID PGRP ...`: COMM may hold spaces and parentheses, so fields
    // are counted from the last `)`. STATE is field 3, PGRP 5, STARTTIME 22.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// Reads `/proc/PID/stat`; `None` once the process is gone.
pub(super) fn proc_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `pid` is still the process recorded: running (not a zombie), started at
/// `start_ticks`, leading its own group.
pub(super) fn is_alive(pid: u32, start_ticks: Option<u64>) -> bool {
    proc_stat(pid).is_some_and(|s| {
        !matches!(s.state, 'Z' | 'X' | 'x')
            && Some(s.start_ticks) == start_ticks
            && s.pgrp == i64::from(pid)
    })
}

/// How a process ended, in words: `exited with code 1`, `was killed by signal 9 (SIGKILL)`.
pub(super) fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(signal) => {
            let name = match signal {
                libc::SIGHUP => " (SIGHUP)",
                libc::SIGINT => " (SIGINT)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGTERM => " (SIGTERM)",
                _ => "",
            };
            format!("was killed by signal {signal}{name}")
        }
        None => "exited".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "4242 (my (odd) server) S 1 4242 4242 0 -1 4194560 226 0 0 0 1 0 0 0 20 0 \
                    3 0 987654 12345678 900 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 \
                    3 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                state: 'S',
                pgrp: 4242,
                start_ticks: 987654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 0"), None);
    }

    #[test]
    fn this_process_is_alive_only_with_its_start_time() {
        let me = std::process::id();
        let stat = proc_stat(me).unwrap();
        // The test harness is not a group leader; compare with the group it does lead.
        assert_eq!(
            is_alive(me, Some(stat.start_ticks)),
            stat.pgrp == i64::from(me)
        );
        assert!(!is_alive(me, Some(stat.start_ticks + 1)));
        assert!(!is_alive(me, None));
    }
}
