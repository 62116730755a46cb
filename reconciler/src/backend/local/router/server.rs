//! Starting a router: [`bind`] or [`bind_listener`] take the port and check the routes,
//! and [`Router::run`] serves until its shutdown future completes.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};

use super::handle::Handle;
use super::table::Table;
use super::upstream::Shared;
use super::worker;
use super::{Error, Result, RouterOptions};

/// Checks the routes and binds `options.listen`. Nothing is served until [`Router::run`].
pub async fn bind(options: RouterOptions) -> Result<Router> {
    // Checked before the port is taken, so bad routes leave the port free.
    Table::build(options.routes.clone(), None, &mut BTreeMap::new())?;
    let addr = options.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    serve_on(listener, options)
}

/// Checks the routes and takes `listener`, a socket already listening (one a previous
/// supervisor daemon bound, kept open across its restart); `options.listen` is only
/// what errors name. Connections waiting in its backlog are answered once it runs.
pub fn bind_listener(listener: std::net::TcpListener, options: RouterOptions) -> Result<Router> {
    let addr = options.listen;
    let bind_error = |source| Error::Bind { addr, source };
    listener.set_nonblocking(true).map_err(bind_error)?;
    serve_on(
        TcpListener::from_std(listener).map_err(bind_error)?,
        options,
    )
}

fn serve_on(listener: TcpListener, options: RouterOptions) -> Result<Router> {
    let mut counters = BTreeMap::new();
    let table = Table::build(options.routes.clone(), None, &mut counters)?;
    let addr = options.listen;
    let bind_error = |source| Error::Bind { addr, source };
    let local_addr = listener.local_addr().map_err(bind_error)?;

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(options.connect_timeout));
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let shared = Arc::new(Shared {
        local_addr,
        table: RwLock::new(Arc::new(table)),
        generation: AtomicU64::new(0),
        counters: Mutex::new(counters),
        client,
        mirror_slots: Arc::new(Semaphore::new(
            options.max_mirror_in_flight.min(Semaphore::MAX_PERMITS),
        )),
        epoch: Instant::now(),
        options,
    });
    Ok(Router {
        listener,
        handle: Handle { shared },
    })
}

/// A bound router, not yet answering.
#[derive(Debug)]
pub struct Router {
    listener: TcpListener,
    handle: Handle,
}

impl Router {
    /// The address actually bound (the chosen port when [`RouterOptions::listen`] had 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.shared.local_addr
    }

    /// Returns a handle that changes routes and reads counters, also while running.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// A second descriptor of the listening socket (close-on-exec): while any copy is
    /// open the port stays bound and new connections wait in its backlog.
    pub fn listener_copy(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd as _;
        self.listener.as_fd().try_clone_to_owned()
    }

    /// Proxies requests until `shutdown` completes, on [`RouterOptions::workers`]
    /// threads of its own; then the listener closes and requests in flight finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Router { listener, handle } = self;
        let shared = handle.shared;
        let addr = shared.local_addr;
        let serve_error = |source| Error::Serve { addr, source };
        let listener = listener.into_std().map_err(serve_error)?;
        let (stop, stopped) = watch::channel(false);
        let mut workers = Vec::new();
        for index in 0..shared.options.workers.max(1) {
            let copy = listener.try_clone().map_err(serve_error)?;
            let (shared, stopped) = (shared.clone(), stopped.clone());
            let (done, finished) = oneshot::channel();
            std::thread::Builder::new()
                .name(format!("router-{index}"))
                .spawn(move || {
                    let _ = done.send(worker::run(copy, shared, stopped));
                })
                .map_err(serve_error)?;
            workers.push(finished);
        }
        // The workers hold the copies that accept.
        drop(listener);

        let mut failed = None;
        tokio::select! {
            () = shutdown => {}
            (result, _, _) = futures::future::select_all(workers.iter_mut()) => {
                failed = Some(match result {
                    Ok(Err(error)) => error,
                    _ => std::io::Error::other("a router worker stopped"),
                });
            }
        }
        let _ = stop.send(true);
        for finished in workers {
            let _ = finished.await;
        }
        match failed {
            Some(source) => Err(Error::Serve { addr, source }),
            None => Ok(()),
        }
    }
}
