//! Ports held without listening. A port found by binding to port 0 and dropping the listener
//! is free for anyone until it is bound again: a parallel test (or the daemon) may take it
//! meanwhile. A [`HeldPort`] keeps it bound but not listening, so connections to it are
//! refused, as to a closed port, while no other socket can take it.

use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Socket, Type};

/// A port bound on 127.0.0.1, refusing connections until [`listen`](HeldPort::listen).
pub struct HeldPort {
    socket: Socket,
    addr: SocketAddr,
}

impl HeldPort {
    /// A free port of 127.0.0.1.
    pub fn new() -> HeldPort {
        HeldPort::at("127.0.0.1:0".parse().unwrap()).expect("hold a free port")
    }

    /// Holds `addr` (a port a closed listener left: its old connections may still linger in
    /// TIME_WAIT, which `SO_REUSEADDR` lets the bind pass, as a listener's would).
    pub fn at(addr: SocketAddr) -> std::io::Result<HeldPort> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        let addr = socket
            .local_addr()?
            .as_socket()
            .expect("an IP socket has an IP address");
        Ok(HeldPort { socket, addr })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts listening on the held port.
    pub fn listen(self) -> TcpListener {
        self.socket.listen(1024).expect("listen on the held port");
        self.socket.into()
    }
}
