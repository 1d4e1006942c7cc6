//! A TCP link that a test can cut and heal: a proxy on a loopback port that forwards every
//! connection to one target. Cut, it behaves as a network partition does, not as a closed port:
//! connections stay open and new ones are accepted, but no byte gets through in either
//! direction, so the ends find out only by their own timeouts. Healed, it forwards again; a
//! connection that lived through a cut is closed at its next byte (bytes were lost in it), and
//! the ends reconnect.
//!
//! Plain threads rather than tasks, so that a link outlives the runtime of any one test step.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

struct State {
    cut: AtomicBool,
    /// Counts cuts: a connection opened before the latest cut began carries stale bytes.
    cuts: AtomicU64,
    stop: AtomicBool,
}

/// Stops forwarding when dropped.
pub struct Link {
    addr: SocketAddr,
    state: Arc<State>,
}

impl Link {
    /// A link that listens on `listener` and forwards to `target`.
    pub fn forward(listener: TcpListener, target: SocketAddr) -> io::Result<Link> {
        let addr = listener.local_addr()?;
        let state =
            Arc::new(State { cut: AtomicBool::new(false), cuts: AtomicU64::new(0), stop: AtomicBool::new(false) });
        listener.set_nonblocking(true)?;
        let accepting = Arc::clone(&state);
        std::thread::spawn(move || accept(&listener, target, &accepting));
        Ok(Link { addr, state })
    }

    /// Where the link listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn cut(&self) {
        self.state.cuts.fetch_add(1, Ordering::SeqCst);
        self.state.cut.store(true, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
    }
}

fn accept(listener: &TcpListener, target: SocketAddr, state: &Arc<State>) {
    while !state.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((inbound, _)) => {
                let opened_after = state.cuts.load(Ordering::SeqCst);
                // A connection accepted while cut gets nowhere: the target is not dialled.
                let outbound = if state.cut.load(Ordering::SeqCst) { None } else { TcpStream::connect(target).ok() };
                let Some(outbound) = outbound else {
                    let state = Arc::clone(state);
                    std::thread::spawn(move || swallow(inbound, &state));
                    continue;
                };
                let (Ok(inbound_copy), Ok(outbound_copy)) = (inbound.try_clone(), outbound.try_clone()) else {
                    continue;
                };
                let forth = Arc::clone(state);
                std::thread::spawn(move || pump(inbound, outbound, &forth, opened_after));
                let back = Arc::clone(state);
                std::thread::spawn(move || pump(outbound_copy, inbound_copy, &back, opened_after));
            }
            // Nothing to accept yet (the listener does not block, so that a stop is seen), or a
            // failed accept: look again shortly.
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Copies `from` to `to` while the link is healed and the connection has lived through no cut;
/// drops what it reads while cut; closes both ends otherwise.
fn pump(mut from: TcpStream, mut to: TcpStream, state: &State, opened_after: u64) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buffer = [0; 16 * 1024];
    while !state.stop.load(Ordering::SeqCst) {
        let read = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        if state.cut.load(Ordering::SeqCst) {
            continue;
        }
        if state.cuts.load(Ordering::SeqCst) != opened_after || to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Holds a connection accepted while cut, reading and dropping its bytes, until it closes, the
/// link stops, or the link heals (then it closes it: its bytes are lost).
fn swallow(mut inbound: TcpStream, state: &State) {
    let _ = inbound.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buffer = [0; 16 * 1024];
    while !state.stop.load(Ordering::SeqCst) && state.cut.load(Ordering::SeqCst) {
        match inbound.read(&mut buffer) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = inbound.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut reader = stream.try_clone().unwrap();
                    let mut writer = stream;
                    let _ = io::copy(&mut reader, &mut writer);
                });
            }
        });
        addr
    }

    fn link_to(target: SocketAddr) -> Link {
        Link::forward(TcpListener::bind("127.0.0.1:0").unwrap(), target).unwrap()
    }

    fn echoes(stream: &mut TcpStream, byte: u8) -> bool {
        stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut answer = [0; 1];
        stream.write_all(&[byte]).is_ok() && stream.read_exact(&mut answer).is_ok() && answer[0] == byte
    }

    #[test]
    fn a_cut_link_is_silent_and_a_healed_one_forwards_new_connections() {
        let link = link_to(echo_server());
        let mut before = TcpStream::connect(link.addr()).unwrap();
        assert!(echoes(&mut before, 1));
        link.cut();
        assert!(!echoes(&mut before, 2), "a byte crossed a cut link");
        let mut during = TcpStream::connect(link.addr()).expect("a cut link still accepts");
        assert!(!echoes(&mut during, 3), "a connection made while cut got through");
        link.heal();
        let mut after = TcpStream::connect(link.addr()).unwrap();
        assert!(echoes(&mut after, 4));
        // The connection that lived through the cut lost bytes: it is closed, not resumed.
        assert!(!echoes(&mut before, 5));
    }
}
