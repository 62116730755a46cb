//! `supervisor.lock`: the `flock` the watchdog and its daemon hold for their whole lives,
//! so one supervisor serves a state folder; it names its holder (pid and start time) for
//! [`super::stop_without_daemon`].

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use super::process::proc_stat;
use super::{Error, Result, LOCK_FILE};

/// How long a starting daemon waits for the lock a previous one is releasing.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Takes `supervisor.lock` (waiting [`LOCK_WAIT`] at most) and writes the holder's pid and
/// start time in it.
pub(super) async fn take_lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| Error::Lock {
            path: path.clone(),
            source,
        })?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: `flock` on a descriptor owned by `file`, which outlives the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            // For people looking, and for `stop_without_daemon`: who holds it.
            let me = std::process::id();
            let ticks = proc_stat(me).map_or(0, |s| s.start_ticks);
            let _ = file.set_len(0);
            let _ = writeln!(file, "{me} {ticks}");
            return Ok(file);
        }
        let error = std::io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => {}
            _ => {
                return Err(Error::Lock {
                    path,
                    source: error,
                })
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::AlreadyRunning {
                state_dir: dir.to_path_buf(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The pid and start time `supervisor.lock` names.
pub(super) fn lock_holder(dir: &Path) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(dir.join(LOCK_FILE)).ok()?;
    let mut fields = text.split_whitespace();
    let pid = fields.next()?.parse().ok()?;
    let ticks = fields.next()?.parse().ok()?;
    (pid > 1).then_some((pid, ticks))
}
