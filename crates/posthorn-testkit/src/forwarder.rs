//! A TCP forwarder to put between a program and a peer (PostgreSQL, say)
//! and cut the line on demand: [`TcpForwarder::stop`] drops every
//! connection through it and refuses new ones (nothing listens on its
//! port), [`TcpForwarder::start`] listens again on the same address. What
//! a lost database looks like to the program, without touching the
//! database (which other tests share).
//!
//! Plain threads and blocking sockets, so it works from any test, async or
//! not.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Forwards connections from [`Self::addr`] to a target; see the module.
/// Dropping it stops it.
pub struct TcpForwarder {
    addr: SocketAddr,
    target: SocketAddr,
    state: Arc<Mutex<State>>,
    acceptor: Option<JoinHandle<()>>,
}

/// What the acceptor and [`TcpForwarder::stop`] share.
#[derive(Default)]
struct State {
    /// Set by `stop`: the acceptor ends at its next connection, and a
    /// connection it accepted meanwhile is dropped, not forwarded.
    stopping: bool,
    /// Both sockets of every forwarded connection, for `stop` to cut.
    open: Vec<TcpStream>,
}

impl TcpForwarder {
    /// Listens on a free loopback port and forwards each connection to
    /// `target`.
    pub fn start_to(target: SocketAddr) -> TcpForwarder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port for the forwarder");
        let addr = listener.local_addr().expect("the forwarder's address");
        let mut forwarder = TcpForwarder {
            addr,
            target,
            state: Arc::default(),
            acceptor: None,
        };
        forwarder.accept_on(listener);
        forwarder
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it forwards now.
    pub fn is_running(&self) -> bool {
        self.acceptor.is_some()
    }

    /// Cuts every connection through it (both ends see them closed) and
    /// closes its port, so that new connections are refused, until
    /// [`Self::start`]. Does nothing when stopped already.
    pub fn stop(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        self.lock().stopping = true;
        // The acceptor blocks in accept(): a connection of our own wakes
        // it, it sees `stopping` and ends, closing the listener.
        let _ = TcpStream::connect(self.addr);
        acceptor.join().expect("the forwarder's acceptor panicked");
        for stream in std::mem::take(&mut self.lock().open) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Listens on the same address again (after [`Self::stop`]). Does
    /// nothing when running.
    pub fn start(&mut self) {
        if self.acceptor.is_some() {
            return;
        }
        // std sets SO_REUSEADDR on Unix, so the port binds again at once
        // although connections cut by `stop` may linger in TIME_WAIT.
        let listener = TcpListener::bind(self.addr)
            .unwrap_or_else(|e| panic!("the forwarder cannot listen on {} again: {e}", self.addr));
        self.lock().stopping = false;
        self.accept_on(listener);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn accept_on(&mut self, listener: TcpListener) {
        let (state, target) = (self.state.clone(), self.target);
        self.acceptor = Some(std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if state.lock().unwrap_or_else(|e| e.into_inner()).stopping {
                    return;
                }
                // The target refusing is passed on as a closed connection.
                let Ok(upstream) = TcpStream::connect(target) else {
                    continue;
                };
                forward(&state, client, upstream);
            }
        }));
    }
}

impl Drop for TcpForwarder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies both ways between `client` and `upstream` on two threads, the
/// sockets registered for `stop` to cut (unless it has begun: then the
/// connection is dropped here).
fn forward(state: &Mutex<State>, client: TcpStream, upstream: TcpStream) {
    let clones = (|| {
        Some([
            client.try_clone().ok()?,
            upstream.try_clone().ok()?,
            client.try_clone().ok()?,
            upstream.try_clone().ok()?,
        ])
    })();
    let Some(
        [
            client_for_stop,
            upstream_for_stop,
            client_writer,
            upstream_writer,
        ],
    ) = clones
    else {
        return;
    };
    {
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        if state.stopping {
            return;
        }
        state.open.push(client_for_stop);
        state.open.push(upstream_for_stop);
    }
    std::thread::spawn(move || pipe(client, upstream_writer));
    std::thread::spawn(move || pipe(upstream, client_writer));
}

/// Copies `from` into `to` until either side ends, then closes both
/// sockets, so that the other direction ends too.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server, to forward to.
    fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = stream;
                    let _ = std::io::copy(&mut reader, &mut writer);
                });
            }
        });
        addr
    }

    fn round_trip(stream: &mut TcpStream, text: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(text)?;
        let mut back = vec![0u8; text.len()];
        stream.read_exact(&mut back)?;
        Ok(back)
    }

    #[test]
    fn forwards_cuts_refuses_and_forwards_again() {
        let mut forwarder = TcpForwarder::start_to(echo());
        let mut before = TcpStream::connect(forwarder.addr()).unwrap();
        assert_eq!(round_trip(&mut before, b"hello").unwrap(), b"hello");

        forwarder.stop();
        assert!(!forwarder.is_running());
        // The open connection is cut: reading ends (or fails), never hangs.
        let mut rest = Vec::new();
        let cut = before.read_to_end(&mut rest);
        assert!(cut.is_err() || rest.is_empty(), "{cut:?} {rest:?}");
        let refused = TcpStream::connect(forwarder.addr()).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

        forwarder.start();
        let mut after = TcpStream::connect(forwarder.addr()).unwrap();
        assert_eq!(round_trip(&mut after, b"again").unwrap(), b"again");
    }
}
