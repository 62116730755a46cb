//! One router worker's keep-alive connections to the replicas: HTTP/1.1 connections kept
//! idle per replica address and reused, owned by one thread (no lock, no wake-up of
//! another thread). A connection goes back to the pool once its response has been read
//! to the end.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Sender = SendRequest<Full<Bytes>>;

/// Why a request got no response from a replica.
#[derive(Debug)]
pub(super) enum SendError {
    /// No connection could be made: nothing was sent, another replica may be tried.
    Connect(std::io::Error),
    /// The request was (or may have been) sent, and no response came.
    Failed(hyper::Error),
}

/// Idle connections by replica address.
#[derive(Debug)]
pub(super) struct Pool {
    idle: RefCell<HashMap<SocketAddr, Vec<Sender>>>,
    connect_timeout: Duration,
    /// Idle connections kept per replica at most; more are closed.
    max_idle: usize,
}

impl Pool {
    pub(super) fn new(connect_timeout: Duration, max_idle: usize) -> Rc<Pool> {
        Rc::new(Pool {
            idle: RefCell::new(HashMap::new()),
            connect_timeout,
            max_idle,
        })
    }

    /// Sends `request` to `addr` on an idle connection, or on a new one. A pooled
    /// connection that turns out closed before the request left is replaced by a new one
    /// (the request was not sent, so that is no retry).
    pub(super) async fn send(
        self: &Rc<Self>,
        addr: SocketAddr,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, SendError> {
        while let Some(mut sender) = self.checkout(addr) {
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.give_back_when_ready(addr, sender);
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Failed(error.into_error())),
                },
            }
        }
        let mut sender = self.connect(addr).await?;
        match sender.send_request(request).await {
            Ok(response) => {
                self.give_back_when_ready(addr, sender);
                Ok(response)
            }
            Err(error) => Err(SendError::Failed(error)),
        }
    }

    /// An idle connection to `addr` that is still open.
    fn checkout(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.borrow_mut();
        let senders = idle.get_mut(&addr)?;
        while let Some(sender) = senders.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    async fn connect(self: &Rc<Self>, addr: SocketAddr) -> Result<Sender, SendError> {
        let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| SendError::Connect(timed_out()))?
            .map_err(SendError::Connect)?;
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Connect(std::io::Error::other(e)))?;
        // Driven on this thread; it ends when the replica or the pool closes it.
        tokio::task::spawn_local(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Returns the connection to the pool once it can take the next request, that is
    /// once the response in flight has been read to the end.
    fn give_back_when_ready(self: &Rc<Self>, addr: SocketAddr, mut sender: Sender) {
        let pool = Rc::downgrade(self);
        tokio::task::spawn_local(async move {
            if sender.ready().await.is_err() {
                return;
            }
            let Some(pool) = pool.upgrade() else {
                return;
            };
            let mut idle = pool.idle.borrow_mut();
            let senders = idle.entry(addr).or_default();
            if senders.len() < pool.max_idle {
                senders.push(sender);
            }
        });
    }

    /// Closes the idle connections of replicas not in `keep`.
    pub(super) fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        self.idle.borrow_mut().retain(|addr, _| keep(addr));
    }
}
