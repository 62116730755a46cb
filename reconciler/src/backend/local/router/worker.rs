//! The router's workers, shared-nothing as nginx's are: each is an OS thread with a
//! single-threaded runtime that accepts on its own copy of the listening socket, serves
//! the connections it accepted and forwards their requests over its own keep-alive
//! connections to the replicas ([`Pool`]). A request is read, forwarded and answered on
//! one thread: no lock, no task handed to another thread, no cross-thread wake-up. What
//! workers share is read-mostly: the routing table (re-read only when its generation
//! changes) and the counters (relaxed atomics).

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::pool::Pool;
use super::proxy::proxy;
use super::table::Table;
use super::upstream::Shared;

/// Idle keep-alive connections a worker keeps per replica.
const MAX_IDLE_PER_REPLICA: usize = 256;

/// A client that sends nothing for this long after connecting (or between requests'
/// headers) is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What one worker's requests share: the router's state, this thread's pool, and this
/// thread's copy of the routing table.
pub(super) struct Worker {
    pub(super) shared: Arc<Shared>,
    pub(super) pool: Rc<Pool>,
    table: RefCell<(u64, Arc<Table>)>,
}

impl Worker {
    /// The routing table in force: this thread's copy, taken again when a route change
    /// made a new one (one atomic load per request otherwise).
    pub(super) fn table(&self) -> Arc<Table> {
        let generation = self.shared.generation.load(Ordering::Acquire);
        let mut cached = self.table.borrow_mut();
        if cached.0 != generation {
            let fresh = self.shared.table();
            // Replicas no longer routed to lose their idle connections.
            self.pool.retain(|addr| {
                fresh
                    .deployments
                    .values()
                    .any(|d| d.replicas.iter().any(|r| r.addr == *addr))
            });
            *cached = (generation, fresh);
        }
        cached.1.clone()
    }
}

/// Runs one worker on this thread until `stop` turns true, then lets the requests in
/// flight finish. Returns an error only when the runtime cannot start or the listener
/// cannot be registered.
pub(super) fn run(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::from_std(listener)?;
        let worker = Rc::new(Worker {
            pool: Pool::new(shared.options.connect_timeout, MAX_IDLE_PER_REPLICA),
            table: RefCell::new((shared.generation.load(Ordering::Acquire), shared.table())),
            shared,
        });
        let mut connections = JoinSet::new();
        let mut stopping = stop.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn_local(serve(stream, peer, worker.clone(), stop.clone()));
                    }
                    // Out of descriptors, or a connection reset before it was accepted:
                    // the listener is fine; wait a little so as not to spin.
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                _ = stopping.wait_for(|stop| *stop) => break,
            }
        }
        // This copy of the listening socket closes; connections finish what they have.
        drop(listener);
        while connections.join_next().await.is_some() {}
        Ok(())
    })
}

/// Serves one client connection: HTTP/1.1, kept alive, until the client closes it or the
/// router stops (then the request in flight, if any, is answered first).
async fn serve(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    worker: Rc<Worker>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| {
        let worker = worker.clone();
        async move { Ok::<_, Infallible>(proxy(&worker, peer, request).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stop.wait_for(|stop| *stop) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
