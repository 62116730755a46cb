//! Readiness: one GET of a replica's health path ([`probe`]), and the check of a running
//! replica every second ([`watch_health`]) that takes it off its routes after failures
//! in a row and back once it answers. There is no liveness probe: nothing here restarts
//! a replica.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::daemon::Shared;
use super::{Event, ReplicaId, ReplicaState};

/// Checks a running replica's health path every
/// [`health_every`](super::DaemonOptions::health_every), for as long as the caller polls
/// it: after [`health_failures`](super::DaemonOptions::health_failures) failures in a row
/// a ready replica turns [`ReplicaState::NotReady`] (and its router stops sending it
/// requests); one answer makes it ready again. Never completes.
pub(super) async fn watch_health(
    shared: &Shared,
    id: &ReplicaId,
    pid: u32,
    addr: SocketAddr,
    path: &str,
) -> std::convert::Infallible {
    let options = &shared.options;
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(options.health_every).await;
        if probe(addr, path, options.health_timeout).await {
            failures = 0;
            let mut back = false;
            shared.update(id, |o| {
                if matches!(o.state, ReplicaState::NotReady { .. }) {
                    o.state = ReplicaState::Ready;
                    back = true;
                }
            });
            if back {
                shared.event(Event::Ready {
                    replica: id.clone(),
                    pid,
                    addr,
                });
            }
            continue;
        }
        failures = failures.saturating_add(1);
        if failures != options.health_failures.max(1) {
            continue;
        }
        let reason = format!(
            "`{path}` on {addr} did not answer 200 within {} {failures} times in a row",
            humantime::format_duration(options.health_timeout)
        );
        let mut turned = false;
        shared.update(id, |o| {
            if o.state == ReplicaState::Ready {
                o.state = ReplicaState::NotReady {
                    reason: reason.clone(),
                };
                turned = true;
            }
        });
        if turned {
            shared.event(Event::NotReady {
                replica: id.clone(),
                pid,
                reason,
            });
        }
    }
}

/// One GET of `path`; whether it answered 200 within `timeout`.
pub(super) async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = Vec::with_capacity(64);
        let mut chunk = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < 1024 {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        let mut parts = line.split_whitespace();
        let version = parts.next()?;
        Some(version.starts_with("HTTP/") && parts.next()? == "200")
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

/// Probes until a 200 or `within` passed.
pub(super) async fn probe_until(addr: SocketAddr, path: &str, within: Duration) -> bool {
    let started = Instant::now();
    loop {
        if probe(addr, path, Duration::from_millis(500)).await {
            return true;
        }
        if started.elapsed() >= within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
