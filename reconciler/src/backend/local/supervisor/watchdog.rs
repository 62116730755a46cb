//! The watchdog: the process `cairn supervise --state DIR` runs, which runs the daemon
//! ([`super::run_daemon`]) as its child, restarts it when it dies, and keeps the
//! routers' listening sockets open meanwhile, so that serving survives the daemon.
//!
//! Flow: the watchdog takes `supervisor.lock`, then for each daemon it starts makes a
//! Unix `SOCK_SEQPACKET` pair, sends the daemon (through it, with `SCM_RIGHTS`) the lock
//! and every listening socket it keeps, and starts `cairn supervise --state DIR
//! --watchdog-fd N` with the other end as descriptor N. The daemon serves its routers on
//! those sockets (a router whose socket was not handed over binds a new one) and sends
//! each socket it binds back (`keep`), and says when a router closes (`forget`, answered
//! once the watchdog's copy is closed, so a closed router's port is free when the daemon
//! says so) and when it answers on its own socket (`serving`).
//!
//! Guarantees:
//! - A router's port stays bound while the daemon is down: the watchdog holds a copy of
//!   the socket, so connections that arrive meanwhile wait in the kernel's backlog and are
//!   answered by the next daemon (only requests the dead daemon had already accepted
//!   fail). A daemon that dies after it served is started again at once, or after a delay
//!   doubling from 1 s to 30 s when it died again within 10 s of its start.
//! - The lock is shared by both processes (one open file description), so no second
//!   supervisor takes the folder while the daemon restarts, nor while either one lives.
//! - A daemon that exits 0 (shutdown, SIGTERM, SIGINT) is not restarted and the watchdog
//!   exits too; the first daemon failing before it served is not restarted either: the
//!   watchdog exits 1, so [`super::ensure_running`] reports the daemon's log.
//! - SIGTERM or SIGINT to the watchdog is passed to the daemon (whose replicas keep
//!   serving), SIGKILL after 15 s; then the watchdog exits 0.
//! - The daemon starts with the watchdog's [`ChildEnv`], nothing else.
//!
//! Caveats: at most [`MAX_LISTENERS`] sockets are handed over (more endpoints are bound
//! again by the next daemon, refusing connections for a moment). A watchdog killed with
//! SIGKILL leaves its daemon serving but unwatched (and holding the lock) until it exits.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::daemon::{stop_signals, Shared};
use super::lock::take_lock;
use super::process::{describe_exit, signal_process};
use super::state::create_state_dir;
use super::{Error, Event, Result};
use crate::backend::local::child_env::ChildEnv;
use crate::backend::local::router;

/// The most listening sockets handed to a new daemon (the kernel passes at most 253
/// descriptors in one message; one is the lock).
pub const MAX_LISTENERS: usize = 200;

/// The largest message on the link.
const MAX_PACKET: usize = 64 * 1024;
/// A daemon that ran this long is restarted at once when it dies.
const STABLE_AFTER: Duration = Duration::from_secs(10);
const RESTART_FIRST: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(30);
/// How long a daemon asked to stop may take before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// The messages on the link, one JSON object per packet.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Message {
    /// Watchdog → daemon, first: the packet's descriptors are the lock, then one
    /// listening socket per entry, in order.
    Handover { listeners: Vec<Kept> },
    /// Daemon → watchdog: it answers on its socket.
    Serving,
    /// Daemon → watchdog: keep the packet's descriptor, the endpoint's router's socket,
    /// instead of any kept before for that endpoint.
    Keep {
        endpoint: String,
        listen: SocketAddr,
    },
    /// Daemon → watchdog: the endpoint's router on `listen` is closed.
    Forget {
        endpoint: String,
        listen: SocketAddr,
    },
    /// Watchdog → daemon, the answer to each `forget`: its copy is closed (and every
    /// `keep` sent before is in force), so the port is free unless the daemon holds it.
    Forgotten,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Kept {
    endpoint: String,
    listen: SocketAddr,
}

/// The sockets the watchdog keeps: endpoint → (listen address, socket).
type Keeping = Arc<Mutex<BTreeMap<String, (SocketAddr, OwnedFd)>>>;

/// Runs the watchdog for `state_dir`: starts `program supervise --state DIR
/// --watchdog-fd N` with `env`, and again when it dies, until it exits 0 or the watchdog
/// gets SIGTERM or SIGINT. Fails with [`Error::AlreadyRunning`] when another supervisor
/// holds the folder, and with [`Error::DaemonFailed`] when a daemon exits before it
/// served.
pub async fn run_watchdog(
    state_dir: &Path,
    program: &Path,
    env: &ChildEnv,
    events: impl Fn(&Event) + Send + Sync + 'static,
) -> Result<()> {
    let dir = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    create_state_dir(&dir)?;
    let lock = take_lock(&dir).await?;
    let (mut terminate, mut interrupt) = stop_signals()?;
    let keeping: Keeping = Arc::default();
    let mut quick_deaths = 0u32;
    let mut ever_served = false;
    loop {
        let (mine, theirs) = seqpacket_pair().map_err(handover)?;
        send_handover(&mine, &lock, &keeping)?;
        let mut child = spawn_daemon(&dir, program, env, &theirs)?;
        drop(theirs);
        let served = Arc::new(AtomicBool::new(false));
        let reader = tokio::task::spawn_blocking({
            let (keeping, served) = (keeping.clone(), served.clone());
            move || read_daemon(&mine, &keeping, &served)
        });
        let started = Instant::now();
        let pid = child.id().unwrap_or(0);
        let status = tokio::select! {
            status = child.wait() => status,
            _ = terminate.recv() => return stop_daemon(child, pid).await,
            _ = interrupt.recv() => return stop_daemon(child, pid).await,
        };
        // What the daemon sent before it died is read to the end first.
        let _ = reader.await;
        let how = match &status {
            Ok(status) if status.success() => return Ok(()),
            Ok(status) => describe_exit(*status),
            Err(e) => format!("exited (status unknown: {e})"),
        };
        ever_served |= served.load(Ordering::SeqCst);
        if !ever_served {
            return Err(Error::DaemonFailed { how });
        }
        let delay = if started.elapsed() >= STABLE_AFTER {
            quick_deaths = 0;
            Duration::ZERO
        } else {
            quick_deaths = quick_deaths.saturating_add(1);
            match quick_deaths {
                1 => Duration::ZERO,
                n => RESTART_FIRST
                    .saturating_mul(1 << (n - 2).min(5))
                    .min(RESTART_MAX),
            }
        };
        events(&Event::DaemonRestarting { pid, how, delay });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
        }
    }
}

fn handover(error: std::io::Error) -> Error {
    Error::Handover {
        reason: error.to_string(),
    }
}

fn spawn_daemon(
    dir: &Path,
    program: &Path,
    env: &ChildEnv,
    link: &OwnedFd,
) -> Result<tokio::process::Child> {
    let fd = link.as_raw_fd();
    let mut command = tokio::process::Command::new(program);
    env.apply_tokio(&mut command);
    command
        .arg("supervise")
        .arg("--state")
        .arg(dir)
        .arg("--watchdog-fd")
        .arg(fd.to_string())
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(false);
    // SAFETY: `fcntl` and `setsid` are async-signal-safe and touch no memory. The daemon
    // inherits its end of the link (open for as long as `link` lives), and leads a
    // session of its own, like a daemon `ensure_running` starts: no signal sent to the
    // watchdog's group reaches it.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 || libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().map_err(|source| Error::SpawnChild {
        program: program.to_path_buf(),
        source,
    })
}

/// SIGTERM to the daemon, SIGKILL after [`STOP_GRACE`]; the watchdog then exits 0.
async fn stop_daemon(mut child: tokio::process::Child, pid: u32) -> Result<()> {
    signal_process(pid, libc::SIGTERM);
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    Ok(())
}

fn send_handover(link: &OwnedFd, lock: &File, keeping: &Keeping) -> Result<()> {
    let keeping = keeping.lock().unwrap_or_else(PoisonError::into_inner);
    let kept: Vec<(&String, &(SocketAddr, OwnedFd))> = keeping.iter().take(MAX_LISTENERS).collect();
    let message = Message::Handover {
        listeners: kept
            .iter()
            .map(|(endpoint, (listen, _))| Kept {
                endpoint: (*endpoint).clone(),
                listen: *listen,
            })
            .collect(),
    };
    let mut fds = vec![lock.as_fd()];
    fds.extend(kept.iter().map(|(_, (_, fd))| fd.as_fd()));
    send_message(link.as_fd(), &message, &fds).map_err(handover)
}

/// Follows what the daemon says until it closes its end.
fn read_daemon(link: &OwnedFd, keeping: &Keeping, served: &AtomicBool) {
    while let Ok(Some((bytes, mut fds))) = recv_packet(link.as_fd()) {
        let Ok(message) = serde_json::from_slice::<Message>(&bytes) else {
            continue;
        };
        let mut keeping = keeping.lock().unwrap_or_else(PoisonError::into_inner);
        match message {
            Message::Serving => served.store(true, Ordering::SeqCst),
            Message::Keep { endpoint, listen } if fds.len() == 1 => {
                if let Some(fd) = fds.pop() {
                    // The socket kept before, if any, closes as it drops.
                    keeping.insert(endpoint, (listen, fd));
                }
            }
            Message::Forget { endpoint, listen } => {
                if keeping.get(&endpoint).is_some_and(|(at, _)| *at == listen) {
                    keeping.remove(&endpoint);
                }
                drop(keeping);
                let _ = send_message(link.as_fd(), &Message::Forgotten, &[]);
            }
            _ => {}
        }
    }
}

/// What the watchdog handed a new daemon.
pub(super) struct Handover {
    pub(super) lock: File,
    /// Endpoint → (listen address, listening socket).
    pub(super) listeners: BTreeMap<String, (SocketAddr, std::net::TcpListener)>,
}

/// The daemon's end of the link to its watchdog.
#[derive(Debug)]
pub struct WatchdogLink {
    socket: Mutex<OwnedFd>,
}

impl WatchdogLink {
    /// Takes descriptor `fd`, which the watchdog passed as `--watchdog-fd`: it must be an
    /// open Unix `SOCK_SEQPACKET` socket. Call it once; the link then owns the descriptor
    /// (made close-on-exec again, so no replica inherits it).
    pub fn inherited(fd: RawFd) -> Result<WatchdogLink> {
        let refuse = |reason: &str| Error::Handover {
            reason: format!("descriptor {fd} {reason}"),
        };
        if fd < 0 {
            return Err(refuse("is not a descriptor"));
        }
        let mut kind: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `kind` and `len` are valid out-pointers of the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TYPE,
                (&mut kind as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 || kind != libc::SOCK_SEQPACKET {
            return Err(refuse(
                "is not the watchdog's link (a SOCK_SEQPACKET socket)",
            ));
        }
        // SAFETY: `fd` is an open socket (checked above) that the watchdog gave this
        // process for this link alone; nothing else in the process owns it.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: plain `fcntl` on a descriptor `socket` owns.
        if unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
            return Err(handover(std::io::Error::last_os_error()));
        }
        let timeout = libc::timeval {
            tv_sec: 10,
            tv_usec: 0,
        };
        // SAFETY: `timeout` is a valid `timeval` of the size given. A handover that never
        // comes then fails instead of hanging the daemon.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Ok(WatchdogLink {
            socket: Mutex::new(socket),
        })
    }

    /// Reads the handover: the lock, then the listening sockets.
    pub(super) fn receive_handover(&self) -> Result<Handover> {
        let socket = self.socket.lock().unwrap_or_else(PoisonError::into_inner);
        let (bytes, fds) = recv_packet(socket.as_fd())
            .map_err(handover)?
            .ok_or_else(|| Error::Handover {
                reason: "the watchdog closed the link before the handover".into(),
            })?;
        let Ok(Message::Handover { listeners }) = serde_json::from_slice(&bytes) else {
            return Err(Error::Handover {
                reason: "the first message was not the handover".into(),
            });
        };
        let mut fds = fds.into_iter();
        let lock = File::from(fds.next().ok_or_else(|| Error::Handover {
            reason: "the handover holds no lock".into(),
        })?);
        let listeners = listeners
            .into_iter()
            .zip(fds)
            .map(|(kept, fd)| {
                (
                    kept.endpoint,
                    (kept.listen, std::net::TcpListener::from(fd)),
                )
            })
            .collect();
        Ok(Handover { lock, listeners })
    }

    pub(super) fn serving(&self) -> std::io::Result<()> {
        self.send(&Message::Serving, &[])
    }

    fn send(&self, message: &Message, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        let socket = self.socket.lock().unwrap_or_else(PoisonError::into_inner);
        send_message(socket.as_fd(), message, fds)
    }

    /// Sends `forget` and waits (10 s at most) for the watchdog's answer, so that the
    /// port is closed when this returns.
    fn forget(&self, message: &Message) -> std::io::Result<()> {
        let socket = self.socket.lock().unwrap_or_else(PoisonError::into_inner);
        send_message(socket.as_fd(), message, &[])?;
        loop {
            let Some((bytes, _)) = recv_packet(socket.as_fd())? else {
                return Err(std::io::Error::other("the watchdog closed the link"));
            };
            if matches!(serde_json::from_slice(&bytes), Ok(Message::Forgotten)) {
                return Ok(());
            }
        }
    }
}

impl Shared {
    /// The listening socket the watchdog handed over for `endpoint`, if it is on
    /// `listen`; one on another address is closed and forgotten.
    pub(super) fn take_inherited(
        &self,
        endpoint: &str,
        listen: SocketAddr,
    ) -> Option<std::net::TcpListener> {
        let (at, listener) = self
            .inherited
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(endpoint)?;
        if at == listen {
            return Some(listener);
        }
        self.forget_listener(endpoint, at);
        None
    }

    /// Hands a copy of a newly bound router's socket to the watchdog.
    pub(super) fn keep_listener(
        &self,
        endpoint: &str,
        listen: SocketAddr,
        router: &router::Router,
    ) {
        let Some(link) = &self.watchdog else {
            return;
        };
        let message = Message::Keep {
            endpoint: endpoint.to_string(),
            listen,
        };
        let sent = router
            .listener_copy()
            .and_then(|copy| link.send(&message, &[copy.as_fd()]));
        if let Err(e) = sent {
            self.event(Event::HandoverFailed {
                message: format!("{endpoint} on {listen}: {e}"),
            });
        }
    }

    /// Tells the watchdog to close its copy of the endpoint's socket on `listen`, and
    /// waits until it did.
    pub(super) fn forget_listener(&self, endpoint: &str, listen: SocketAddr) {
        let Some(link) = &self.watchdog else {
            return;
        };
        let message = Message::Forget {
            endpoint: endpoint.to_string(),
            listen,
        };
        if let Err(e) = link.forget(&message) {
            self.event(Event::HandoverFailed {
                message: format!("{endpoint} on {listen} (closing): {e}"),
            });
        }
    }

    /// Closes the handed-over sockets no recorded route took.
    pub(super) fn forget_unclaimed(&self) {
        let unclaimed = std::mem::take(
            &mut *self
                .inherited
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (endpoint, (listen, _)) in unclaimed {
            self.forget_listener(&endpoint, listen);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Packets with descriptors (`SCM_RIGHTS`).

fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [libc::c_int; 2] = [-1, -1];
    // SAFETY: `fds` is a valid out-array of two descriptors.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `socketpair` returned two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn send_message(
    socket: BorrowedFd<'_>,
    message: &Message,
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    send_packet(socket, &bytes, fds)
}

/// Room for `count` descriptors in a control message, in `u64`s (so it is aligned).
fn control_words(count: usize) -> usize {
    let data = u32::try_from(count * std::mem::size_of::<RawFd>()).unwrap_or(u32::MAX);
    // SAFETY: `CMSG_SPACE` only computes a size.
    let space = unsafe { libc::CMSG_SPACE(data) } as usize;
    space.div_ceil(std::mem::size_of::<u64>())
}

fn send_packet(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    if bytes.len() > MAX_PACKET || fds.len() > MAX_LISTENERS + 1 {
        return Err(std::io::Error::other("message too large"));
    }
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut control = vec![0u64; control_words(fds.len())];
    // SAFETY: an all-zero `msghdr` is valid (no name, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let data = fds.len() * std::mem::size_of::<RawFd>();
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = (control.len() * std::mem::size_of::<u64>()) as _;
        // SAFETY: `msg_control` points to `msg_controllen` zeroed, aligned bytes, room
        // for one header and `fds.len()` descriptors (`CMSG_SPACE`), so the first header
        // and its data lie inside it.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(data as u32) as _;
            let out = libc::CMSG_DATA(header).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                out.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    loop {
        // SAFETY: `msg` points to live buffers (`iov`, `control`) for the whole call.
        let rc = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if rc >= 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// One packet and the descriptors it carried (close-on-exec); `None` at the end.
fn recv_packet(socket: BorrowedFd<'_>) -> std::io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut bytes = vec![0u8; MAX_PACKET];
    let mut iov = libc::iovec {
        iov_base: bytes.as_mut_ptr().cast(),
        iov_len: bytes.len(),
    };
    let mut control = vec![0u64; control_words(MAX_LISTENERS + 1)];
    // SAFETY: an all-zero `msghdr` is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = (control.len() * std::mem::size_of::<u64>()) as _;
    let received = loop {
        // SAFETY: `msg` points to live, writable buffers of the lengths it gives.
        let rc = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if rc >= 0 {
            break rc as usize;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `msg_control` with `msg_controllen` bytes of well-formed
    // headers; each SCM_RIGHTS header's data holds descriptors now owned by this process.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let start = libc::CMSG_DATA(header).cast::<RawFd>();
                for i in 0..data / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(start.add(i).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    if received == 0 && fds.is_empty() {
        return Ok(None);
    }
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(std::io::Error::other("a message was cut short"));
    }
    bytes.truncate(received);
    Ok(Some((bytes, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_travel_with_their_message() {
        let (a, b) = seqpacket_pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let message = Message::Keep {
            endpoint: "risk-api".into(),
            listen: addr,
        };
        send_message(a.as_fd(), &message, &[listener.as_fd()]).unwrap();
        drop(listener);
        let (bytes, mut fds) = recv_packet(b.as_fd()).unwrap().unwrap();
        assert_eq!(fds.len(), 1);
        let Ok(Message::Keep { endpoint, listen }) = serde_json::from_slice(&bytes) else {
            panic!("not a keep: {}", String::from_utf8_lossy(&bytes));
        };
        assert_eq!((endpoint.as_str(), listen), ("risk-api", addr));
        // The received copy still listens: a connection waits in its backlog.
        let received = std::net::TcpListener::from(fds.pop().unwrap());
        let _client = std::net::TcpStream::connect(addr).unwrap();
        received.accept().unwrap();
        drop(a);
        assert!(recv_packet(b.as_fd()).unwrap().is_none());
    }

    #[test]
    fn the_handover_refuses_what_is_not_a_link() {
        let file = tempfile::tempfile().unwrap();
        let error = WatchdogLink::inherited(file.as_raw_fd()).unwrap_err();
        assert!(
            error.to_string().contains("is not the watchdog's link"),
            "{error}"
        );
        assert!(WatchdogLink::inherited(-1).is_err());
    }
}
