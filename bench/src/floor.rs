//! W4's floor: the least any server can do to tell N subscribers of one channel a message, so
//! that W4's figures can be read against what the machine allows rather than against Redis alone.
//!
//! It speaks just enough of Redis's pub/sub for W4's Redis recipe (`fanout --target redis`):
//! PING, SUBSCRIBE, PUBSUB NUMSUB and PUBLISH, for one channel whatever its name. PUBLISH renders
//! the message once and hands it to each subscriber's socket with one non-blocking `send(2)` in
//! a tight loop on one thread: no per-subscriber bookkeeping, buffers, tasks woken or journal.
//! What is left of a subscriber's cost is the kernel's loopback send (which, on loopback, also
//! delivers the bytes to the receiving socket and wakes its reader), charged to this process.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};

use crate::Res;

type Subscribers = Arc<Mutex<HashMap<u64, Arc<TcpStream>>>>;

pub async fn serve(port: u16) -> Res<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let subscribers = Subscribers::default();
    let mut next_id = 0;
    loop {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        next_id += 1;
        tokio::spawn(connection(next_id, Arc::new(socket), Arc::clone(&subscribers)));
    }
}

async fn connection(id: u64, socket: Arc<TcpStream>, subscribers: Subscribers) {
    let _ = answer_requests(id, &socket, &subscribers).await;
    if let Ok(mut subscribers) = subscribers.lock() {
        subscribers.remove(&id);
    }
}

async fn answer_requests(id: u64, socket: &Arc<TcpStream>, subscribers: &Subscribers) -> io::Result<()> {
    let mut input = Vec::with_capacity(512);
    loop {
        while let Some((args, used)) = parse(&input) {
            let reply = execute(id, socket, subscribers, &args);
            input.drain(..used);
            write_all(socket, &reply).await?;
        }
        // Through `&TcpStream`: the same socket sits in the subscribers' table for PUBLISH.
        socket.readable().await?;
        match socket.try_read_buf(&mut input) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
}

fn execute(id: u64, socket: &Arc<TcpStream>, subscribers: &Subscribers, args: &[&[u8]]) -> Vec<u8> {
    let command = args.first().map(|name| name.to_ascii_uppercase()).unwrap_or_default();
    let mut subscribers = match subscribers.lock() {
        Ok(subscribers) => subscribers,
        Err(poisoned) => poisoned.into_inner(),
    };
    match (&command[..], args.len()) {
        (b"PING", 1) => b"+PONG\r\n".to_vec(),
        (b"SUBSCRIBE", 2) => {
            subscribers.insert(id, Arc::clone(socket));
            [&b"*3\r\n$9\r\nsubscribe\r\n"[..], &bulk(args[1]), b":1\r\n"].concat()
        }
        (b"PUBSUB", 3) if args[1].eq_ignore_ascii_case(b"NUMSUB") => {
            [&b"*2\r\n"[..], &bulk(args[2]), format!(":{}\r\n", subscribers.len()).as_bytes()].concat()
        }
        (b"PUBLISH", 3) => {
            let message = [&b"*3\r\n$7\r\nmessage\r\n"[..], &bulk(args[1]), &bulk(args[2])].concat();
            let told =
                subscribers.values().filter(|subscriber| subscriber.try_write(&message).ok() == Some(message.len()));
            format!(":{}\r\n", told.count()).into_bytes()
        }
        _ => b"-ERR the fan-out floor knows PING, SUBSCRIBE, PUBSUB NUMSUB and PUBLISH only\r\n".to_vec(),
    }
}

fn bulk(bytes: &[u8]) -> Vec<u8> {
    [format!("${}\r\n", bytes.len()).as_bytes(), bytes, b"\r\n"].concat()
}

async fn write_all(socket: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        socket.writable().await?;
        match socket.try_write(bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// One request (an array of bulk strings, as clients send them) from the front of `input`, and
/// how many bytes it took; None until it is all there.
fn parse(input: &[u8]) -> Option<(Vec<&[u8]>, usize)> {
    let mut at = 0;
    let count: usize = number(line(input, &mut at)?.strip_prefix(b"*")?)?;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        let len: usize = number(line(input, &mut at)?.strip_prefix(b"$")?)?;
        let arg = input.get(at..at + len)?;
        if input.get(at + len..at + len + 2)? != b"\r\n" {
            return None;
        }
        args.push(arg);
        at += len + 2;
    }
    Some((args, at))
}

fn line<'a>(input: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let rest = input.get(*at..)?;
    let end = rest.windows(2).position(|pair| pair == b"\r\n")?;
    *at += end + 2;
    Some(&rest[..end])
}

fn number(digits: &[u8]) -> Option<usize> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_whole_requests_only() {
        let request = b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nk\r\n$4\r\ndone\r\n";
        let (args, used) = parse(request).expect("a whole request");
        assert_eq!(args, [&b"PUBLISH"[..], b"k", b"done"]);
        assert_eq!(used, request.len());
        for cut in 0..request.len() {
            assert!(parse(&request[..cut]).is_none(), "cut at {cut}");
        }
    }
}
