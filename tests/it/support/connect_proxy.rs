//! A tiny HTTP proxy on 127.0.0.1 that counts what it carried: `CONNECT` tunnels (how HTTPS goes
//! through `HTTPS_PROXY`) and plain-HTTP forwards (`GET http://host/...`, how `HTTP_PROXY` is
//! used; the connection is then piped to that host as is — origin servers accept the
//! absolute-form request target — so one connection serves one target). It only reaches
//! loopback targets (anything else gets 403), so a test can never reach beyond the machine
//! through it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Default)]
struct Counters {
    tunnels: AtomicUsize,
    forwards: AtomicUsize,
    refused: AtomicUsize,
    stop: AtomicBool,
    targets: Mutex<Vec<String>>,
}

/// A running proxy; dropping it stops accepting (open tunnels end with their connections).
pub struct ConnectProxy {
    addr: SocketAddr,
    counters: Arc<Counters>,
}

impl ConnectProxy {
    pub fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        thread::Builder::new()
            .name("connect-proxy".into())
            .spawn(move || {
                while !c.stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let c = c.clone();
                            thread::spawn(move || handle(stream, &c));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
            .expect("spawn proxy thread");
        ConnectProxy { addr, counters }
    }

    /// `http://127.0.0.1:PORT`, the value for `HTTPS_PROXY`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Tunnels opened so far.
    pub fn tunnels(&self) -> usize {
        self.counters.tunnels.load(Ordering::SeqCst)
    }

    /// Plain-HTTP proxy connections forwarded so far.
    pub fn forwards(&self) -> usize {
        self.counters.forwards.load(Ordering::SeqCst)
    }

    /// Requests refused (not CONNECT nor `http://`, or a target off loopback).
    pub fn refused(&self) -> usize {
        self.counters.refused.load(Ordering::SeqCst)
    }

    /// The `host:port` of every CONNECT, in order.
    pub fn targets(&self) -> Vec<String> {
        self.counters.targets.lock().unwrap().clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.counters.stop.store(true, Ordering::SeqCst);
    }
}

fn handle(mut client: TcpStream, c: &Counters) {
    let _ = client.set_nonblocking(false);
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) if head.len() < 16 * 1024 => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let first = text.lines().next().unwrap_or("");
    let parts: Vec<&str> = first.split_whitespace().collect();
    let [method, target, _version] = parts.as_slice() else {
        return;
    };
    let forward = target
        .strip_prefix("http://")
        .map(|rest| rest.split('/').next().unwrap_or(""));
    if *method != "CONNECT" && forward.is_none() {
        c.refused.fetch_add(1, Ordering::SeqCst);
        let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        return;
    }
    let authority = forward.unwrap_or(target);
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        c.refused.fetch_add(1, Ordering::SeqCst);
        let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        return;
    }
    c.targets.lock().unwrap().push(authority.to_owned());
    let Ok(mut upstream) = TcpStream::connect(authority) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        return;
    };
    if forward.is_some() {
        c.forwards.fetch_add(1, Ordering::SeqCst);
        if upstream.write_all(&head).is_err() {
            return;
        }
    } else {
        c.tunnels.fetch_add(1, Ordering::SeqCst);
        if client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
    let _ = client.set_read_timeout(None);
    let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let t = thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut upstream);
        let _ = upstream.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut u2, &mut client);
    let _ = client.shutdown(Shutdown::Write);
    let _ = t.join();
}
