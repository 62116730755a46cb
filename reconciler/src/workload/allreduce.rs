//! Summing a vector across the processes of a data-parallel group over TCP: what
//! `cairn train` does with each epoch's gradient when it runs as one rank of several.
//!
//! The group is a star. Rank 0 listens on the master address and waits for every other
//! rank to connect ([`Peers::join`]); each other rank connects to it, retrying until a
//! deadline. A [`Peers::sum`] is a reduce and a broadcast: every other rank sends its
//! vector to rank 0, rank 0 adds them to its own **in rank order** (0, 1, …, N−1, so the
//! result is the same on every run with the same group size) and sends the sum back to
//! each. Every rank then holds bit-identical sums, and a trainer that applies the same
//! update to them keeps bit-identical weights on every rank.
//!
//! The wire format is little-endian: a handshake (a magic, the sender's rank, the group
//! size and a caller-chosen fingerprint of what it trains, answered by rank 0 with the
//! magic and an accept byte), then per sum a frame of `step: u64`, `len: u32` and `len`
//! `f64`s each way. A rank that sends another group size, fingerprint, step or length
//! is an error on both sides, not a wrong model.
//!
//! Guarantees: nothing waits forever. Joining is bounded by [`GroupOptions::timeout`]
//! (a missing rank is named); each read during training by the same timeout; a peer
//! that dies closes its socket (the kernel does that even on `SIGKILL`), so the ranks
//! that talk to it get an error at once, and rank 0 failing closes every other rank's
//! connection in turn. This is plain TCP on the CPU: no NCCL, no GPU-to-GPU transfer.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The first bytes of a handshake, so a stray connection is refused, not summed.
const MAGIC: &[u8; 8] = b"CAIRNAR1";

/// How long a joining rank waits between tries to reach rank 0.
const RETRY: Duration = Duration::from_millis(50);

/// This process's place in a data-parallel group: what the distributed-training
/// contract's variables (`WORLD_SIZE`, `RANK`, `MASTER_ADDR`, `MASTER_PORT`) say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOptions {
    /// The number of processes, at least 2 (one process needs no group).
    pub world_size: u32,
    /// This process's index, 0 to `world_size − 1`; 0 is the master.
    pub rank: u32,
    /// Where rank 0 listens, as the others reach it.
    pub master_addr: String,
    pub master_port: u16,
    /// How long joining may take, and how long one read may wait during training.
    pub timeout: Duration,
}

/// Errors of joining a group and summing across it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rank {rank} is outside the group of {world_size} (ranks are 0 to {})", world_size.saturating_sub(1))]
    BadRank { rank: u32, world_size: u32 },
    #[error("cannot resolve the master address `{addr}`")]
    Resolve {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("rank 0 cannot listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "rank(s) {} did not connect to {addr} within {} s",
        join_ranks(missing),
        timeout.as_secs_f64()
    )]
    Missing {
        missing: Vec<u32>,
        addr: String,
        timeout: Duration,
    },
    #[error("rank {rank} could not reach rank 0 at {addr} within {} s", timeout.as_secs_f64())]
    Unreachable {
        rank: u32,
        addr: String,
        timeout: Duration,
        #[source]
        source: std::io::Error,
    },
    #[error("rank {rank} was refused by the process at {addr}: {reason}")]
    Refused {
        rank: u32,
        addr: String,
        reason: String,
    },
    #[error(
        "rank {peer} trains something else than rank 0 (another group size, data or \
         options); every rank must run the same command on the same data"
    )]
    Mismatch { peer: u32 },
    #[error("lost rank {peer} at step {step}")]
    Lost {
        peer: u32,
        step: u64,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "rank {peer} sent step {found} with {found_len} value(s); expected step {step} with {len}"
    )]
    OutOfStep {
        peer: u32,
        step: u64,
        len: usize,
        found: u64,
        found_len: usize,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn join_ranks(ranks: &[u32]) -> String {
    ranks
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A joined group, as one rank holds it.
#[derive(Debug)]
pub struct Peers {
    rank: u32,
    timeout: Duration,
    links: Links,
    step: u64,
}

#[derive(Debug)]
enum Links {
    /// Rank 0: a connection to each other rank, by rank (index 0 is rank 1).
    Master(Vec<TcpStream>),
    /// Any other rank: its connection to rank 0.
    Worker(TcpStream),
}

impl Peers {
    /// Joins the group: rank 0 listens and waits for the others, the others connect to
    /// it. `fingerprint` sums up what this rank trains (its options and data shape);
    /// every rank must give the same one.
    pub fn join(group: &GroupOptions, fingerprint: u64) -> Result<Peers> {
        if group.rank >= group.world_size {
            return Err(Error::BadRank {
                rank: group.rank,
                world_size: group.world_size,
            });
        }
        let addr = format!("{}:{}", group.master_addr, group.master_port);
        let links = if group.rank == 0 {
            Links::Master(accept_all(group, &addr, fingerprint)?)
        } else {
            Links::Worker(connect(group, &addr, fingerprint)?)
        };
        Ok(Peers {
            rank: group.rank,
            timeout: group.timeout,
            links,
            step: 0,
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// Replaces `values` with their sum over every rank of the group, added in rank
    /// order on rank 0; every rank must call it with a vector of the same length.
    pub fn sum(&mut self, values: &mut [f64]) -> Result<()> {
        let step = self.step;
        self.step += 1;
        match &mut self.links {
            Links::Master(workers) => {
                let mut frame = Vec::new();
                let mut received = vec![0.0; values.len()];
                for (i, stream) in workers.iter_mut().enumerate() {
                    let peer = i as u32 + 1;
                    let lost = |source| Error::Lost { peer, step, source };
                    let (found, found_len) = read_header(stream).map_err(lost)?;
                    if (found, found_len) != (step, values.len()) {
                        return Err(Error::OutOfStep {
                            peer,
                            step,
                            len: values.len(),
                            found,
                            found_len,
                        });
                    }
                    read_values(stream, &mut frame, &mut received).map_err(lost)?;
                    for (sum, v) in values.iter_mut().zip(&received) {
                        *sum += v;
                    }
                }
                encode(step, values, &mut frame);
                for (i, stream) in workers.iter_mut().enumerate() {
                    stream.write_all(&frame).map_err(|source| Error::Lost {
                        peer: i as u32 + 1,
                        step,
                        source,
                    })?;
                }
                Ok(())
            }
            Links::Worker(stream) => {
                let lost = |source| Error::Lost {
                    peer: 0,
                    step,
                    source,
                };
                let mut frame = Vec::new();
                encode(step, values, &mut frame);
                stream.write_all(&frame).map_err(lost)?;
                let (found, found_len) = read_header(stream).map_err(lost)?;
                if (found, found_len) != (step, values.len()) {
                    return Err(Error::OutOfStep {
                        peer: 0,
                        step,
                        len: values.len(),
                        found,
                        found_len,
                    });
                }
                let mut sums = vec![0.0; values.len()];
                read_values(stream, &mut frame, &mut sums).map_err(lost)?;
                values.copy_from_slice(&sums);
                Ok(())
            }
        }
    }

    /// How long one read may wait.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Rank 0: listens on `addr` and accepts every other rank before `group.timeout`.
fn accept_all(group: &GroupOptions, addr: &str, fingerprint: u64) -> Result<Vec<TcpStream>> {
    let listen = listen_addr(&group.master_addr, group.master_port, addr)?;
    let listener = TcpListener::bind(listen).map_err(|source| Error::Listen {
        addr: addr.to_string(),
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| Error::Listen {
            addr: addr.to_string(),
            source,
        })?;
    let deadline = Instant::now() + group.timeout;
    let mut workers: Vec<Option<TcpStream>> = (1..group.world_size).map(|_| None).collect();
    while workers.iter().any(Option::is_none) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Error::Missing {
                missing: (1..group.world_size)
                    .filter(|r| workers[*r as usize - 1].is_none())
                    .collect(),
                addr: addr.to_string(),
                timeout: group.timeout,
            });
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                std::thread::sleep(RETRY.min(remaining));
                continue;
            }
            Err(source) => {
                return Err(Error::Listen {
                    addr: addr.to_string(),
                    source,
                })
            }
        };
        // A connection that is not a rank of this group (or is too slow to say so) is
        // dropped; the wait goes on for the real one.
        let Ok(Some((rank, world, theirs))) = read_hello(&stream, remaining) else {
            continue;
        };
        let slot = rank
            .checked_sub(1)
            .and_then(|i| workers.get_mut(i as usize));
        let accepted = world == group.world_size && theirs == fingerprint;
        match slot {
            Some(slot @ None) if accepted => {
                let mut stream = stream;
                if answer(&mut stream, true).is_ok() {
                    stream.set_read_timeout(Some(group.timeout)).ok();
                    stream.set_nodelay(true).ok();
                    *slot = Some(stream);
                }
            }
            _ => {
                let mut stream = stream;
                let _ = answer(&mut stream, false);
                if rank >= 1 && rank < group.world_size && !accepted {
                    return Err(Error::Mismatch { peer: rank });
                }
            }
        }
    }
    Ok(workers.into_iter().flatten().collect())
}

/// Where rank 0 binds: the master address when it is an IP address, else every
/// interface (a host name such as a Kubernetes pod's DNS name may not resolve to this
/// process's own address until its record is published).
fn listen_addr(host: &str, port: u16, addr: &str) -> Result<SocketAddr> {
    match host.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, port)),
        Err(_) if host.is_empty() => Err(Error::Resolve {
            addr: addr.to_string(),
            source: std::io::Error::new(ErrorKind::InvalidInput, "the address is empty"),
        }),
        Err(_) => Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)),
    }
}

/// Any other rank: connects to rank 0, retrying until `group.timeout`.
fn connect(group: &GroupOptions, addr: &str, fingerprint: u64) -> Result<TcpStream> {
    let deadline = Instant::now() + group.timeout;
    let unreachable = |source| Error::Unreachable {
        rank: group.rank,
        addr: addr.to_string(),
        timeout: group.timeout,
        source,
    };
    let mut last = std::io::Error::new(ErrorKind::TimedOut, "no attempt finished in time");
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(unreachable(last));
        }
        match try_connect(group, addr, fingerprint, remaining) {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(reason)) => {
                return Err(Error::Refused {
                    rank: group.rank,
                    addr: addr.to_string(),
                    reason,
                })
            }
            Err(e) => last = e,
        }
        std::thread::sleep(RETRY.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// One try: `Err` to retry (nothing listens yet), `Ok(Err(reason))` when rank 0
/// answered and refused.
fn try_connect(
    group: &GroupOptions,
    addr: &str,
    fingerprint: u64,
    remaining: Duration,
) -> std::io::Result<Result<TcpStream, String>> {
    // Resolved on every try: a host name may only start resolving once rank 0 runs.
    let target = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(ErrorKind::NotFound, "the name has no address"))?;
    let mut stream = TcpStream::connect_timeout(&target, remaining)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(remaining))?;
    let mut hello = Vec::with_capacity(24);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&group.rank.to_le_bytes());
    hello.extend_from_slice(&group.world_size.to_le_bytes());
    hello.extend_from_slice(&fingerprint.to_le_bytes());
    stream.write_all(&hello)?;
    let mut reply = [0u8; 9];
    stream.read_exact(&mut reply)?;
    if &reply[..8] != MAGIC {
        return Ok(Err("it is not rank 0 of a `cairn train` group".into()));
    }
    if reply[8] != 1 {
        return Ok(Err(
            "another rank already holds this rank, or this rank trains something else \
             (another group size, data or options)"
                .into(),
        ));
    }
    stream.set_read_timeout(Some(group.timeout))?;
    Ok(Ok(stream))
}

/// Reads a handshake: `Some((rank, world_size, fingerprint))`, or `None` for bytes that
/// are not one.
fn read_hello(stream: &TcpStream, remaining: Duration) -> std::io::Result<Option<(u32, u32, u64)>> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(remaining.max(Duration::from_millis(1))))?;
    let mut hello = [0u8; 24];
    (&*stream).read_exact(&mut hello)?;
    if &hello[..8] != MAGIC {
        return Ok(None);
    }
    let u32_at = |i: usize| u32::from_le_bytes(hello[i..i + 4].try_into().expect("4 bytes"));
    let fingerprint = u64::from_le_bytes(hello[16..24].try_into().expect("8 bytes"));
    Ok(Some((u32_at(8), u32_at(12), fingerprint)))
}

fn answer(stream: &mut TcpStream, accepted: bool) -> std::io::Result<()> {
    let mut reply = [0u8; 9];
    reply[..8].copy_from_slice(MAGIC);
    reply[8] = u8::from(accepted);
    stream.write_all(&reply)
}

/// `step`, `len` and the values, little-endian, into `frame`.
fn encode(step: u64, values: &[f64], frame: &mut Vec<u8>) {
    frame.clear();
    frame.extend_from_slice(&step.to_le_bytes());
    frame.extend_from_slice(&(values.len() as u32).to_le_bytes());
    for v in values {
        frame.extend_from_slice(&v.to_le_bytes());
    }
}

fn read_header(stream: &mut TcpStream) -> std::io::Result<(u64, usize)> {
    let mut header = [0u8; 12];
    stream.read_exact(&mut header)?;
    let step = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(header[8..].try_into().expect("4 bytes"));
    Ok((step, len as usize))
}

fn read_values(stream: &mut TcpStream, buf: &mut Vec<u8>, out: &mut [f64]) -> std::io::Result<()> {
    buf.resize(out.len() * 8, 0);
    stream.read_exact(buf)?;
    for (v, bytes) in out.iter_mut().zip(buf.chunks_exact(8)) {
        *v = f64::from_le_bytes(bytes.try_into().expect("8 bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn group(world_size: u32, rank: u32, port: u16, timeout_ms: u64) -> GroupOptions {
        GroupOptions {
            world_size,
            rank,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    /// Runs `world` ranks as threads; rank r contributes `[r, 10·r]` twice.
    #[test]
    fn every_rank_gets_the_sum_in_rank_order() {
        let port = free_port();
        let handles: Vec<_> = (0..4)
            .map(|rank| {
                std::thread::spawn(move || {
                    let mut peers = Peers::join(&group(4, rank, port, 10_000), 7).unwrap();
                    let mut sums = Vec::new();
                    for _ in 0..2 {
                        let mut v = [rank as f64, 10.0 * rank as f64];
                        peers.sum(&mut v).unwrap();
                        sums.push(v);
                    }
                    sums
                })
            })
            .collect();
        for handle in handles {
            assert_eq!(handle.join().unwrap(), [[6.0, 60.0], [6.0, 60.0]]);
        }
    }

    #[test]
    fn a_missing_rank_is_named() {
        let port = free_port();
        let worker = std::thread::spawn(move || Peers::join(&group(3, 1, port, 5_000), 1));
        let started = Instant::now();
        let err = Peers::join(&group(3, 0, port, 500), 1).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            err.to_string(),
            format!("rank(s) 2 did not connect to 127.0.0.1:{port} within 0.5 s")
        );
        // Rank 0 gave up: the rank that had joined loses it at its first sum, or never
        // got its answer.
        if let Ok(mut peers) = worker.join().unwrap() {
            assert!(matches!(
                peers.sum(&mut [1.0]),
                Err(Error::Lost { peer: 0, .. })
            ));
        }
    }

    #[test]
    fn no_master_is_a_bounded_error() {
        let port = free_port();
        let started = Instant::now();
        let err = Peers::join(&group(2, 1, port, 300), 1).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(
            err.to_string().starts_with(&format!(
                "rank 1 could not reach rank 0 at 127.0.0.1:{port} within"
            )),
            "{err}"
        );
    }

    #[test]
    fn another_fingerprint_is_refused() {
        let port = free_port();
        let worker = std::thread::spawn(move || Peers::join(&group(2, 1, port, 5_000), 2));
        let err = Peers::join(&group(2, 0, port, 5_000), 1).unwrap_err();
        assert!(matches!(err, Error::Mismatch { peer: 1 }), "{err:?}");
        let err = worker.join().unwrap().unwrap_err();
        assert!(matches!(err, Error::Refused { rank: 1, .. }), "{err:?}");
    }

    #[test]
    fn a_peer_that_leaves_is_an_error_not_a_hang() {
        let port = free_port();
        let worker = std::thread::spawn(move || {
            let peers = Peers::join(&group(2, 1, port, 5_000), 1).unwrap();
            drop(peers);
        });
        let mut master = Peers::join(&group(2, 0, port, 5_000), 1).unwrap();
        worker.join().unwrap();
        let err = master.sum(&mut [1.0, 2.0]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Lost {
                    peer: 1,
                    step: 0,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_bad_rank_is_refused_before_any_connection() {
        let err = Peers::join(&group(2, 2, 1, 100), 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rank 2 is outside the group of 2 (ranks are 0 to 1)"
        );
    }
}
