//! # Exercise 10 — Homework 2: does TCP have the same problem?
//!
//! The article's second question. Docker publishes TCP ports the same way as UDP ones:
//! the same NAT rules (DNAT, except for packets from the bridge), and the same
//! `docker-proxy` on the host's port 4000 for whatever the rules leave alone. So a TCP
//! client in dind2 that connects to `192.168.0.239:4000` goes through the userland
//! proxy too. Does its answer get lost?
//!
//! You write the three programs of that experiment — a TCP echo server, a TCP client,
//! and a docker-proxy-like TCP relay — and the check runs them in the story's world
//! (Docker 20.10's rules, the buggy UDP proxy still there) and reads the kernel's
//! answer: did the client get its echo; what is the local address of the socket the
//! relay accepted; did dind2 drop anything.
//!
//! The relay is the interesting part. A TCP listener bound to `0.0.0.0:4000` does not
//! answer clients itself: `accept()` hands out a **new socket per connection**, and the
//! kernel gives that socket both ends of the connection — the client's address *and the
//! local address the client connected to*. Every segment sent on it carries that
//! 4-tuple. There is no `send_to` with a source left for the kernel to pick.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The TCP echo server: accept connections on `listener` forever; on each, send back
/// every byte received, and close the connection once the client has closed its side.
///
/// Each connection gets a task of its own, so a slow client does not hold up the others.
pub async fn run_tcp_echo_server(listener: TcpListener) -> io::Result<()> {
    loop {
        let (mut stream, _client) = listener.accept().await?;
        tokio::spawn(async move {
            let (mut from_client, mut to_client) = stream.split();
            // `copy` reads until the client's FIN (end of stream) and writes it all back…
            tokio::io::copy(&mut from_client, &mut to_client).await?;
            // …then our FIN: "nothing more from me" — the client's read sees the end.
            to_client.shutdown().await
        });
    }
}

/// The TCP client: connect from `local` (port 0 for any) to `server`, send `payload`,
/// close the sending side, and return everything the server sent back before closing
/// its own. The whole exchange must take at most `timeout`.
///
/// Unlike UDP, "no answer" is not a normal outcome here: TCP tells the client when the
/// other side refuses (`ConnectionRefused`) or resets the connection. Only silence is a
/// timeout, reported as an error of kind `TimedOut`.
pub async fn tcp_ask(
    local: SocketAddr,
    server: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    let exchange = async {
        let socket = match local {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // A closed connection keeps its port in TIME_WAIT for a minute: allow binding
        // the same fixed port again, as the story's client does every time it runs.
        socket.set_reuseaddr(true)?;
        socket.bind(local)?;
        let mut stream = socket.connect(server).await?;
        stream.write_all(payload).await?;
        // Our FIN: the echo server's `copy` ends, it sends the rest back and closes.
        stream.shutdown().await?;
        let mut echo = Vec::with_capacity(payload.len());
        stream.read_to_end(&mut echo).await?;
        Ok(echo)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_elapsed) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no complete echo from {server} within {timeout:?}"),
        )),
    }
}

/// A docker-proxy-like TCP relay: accept connections on `listener` (bound to
/// `0.0.0.0:4000` by the caller); for each, call `on_accept` with the accepted socket,
/// connect to `backend`, and copy bytes both ways until both sides have closed.
///
/// `on_accept` lets the caller look at the accepted socket (the check asks the kernel
/// for its local address with `local_addr()`, which is `getsockname`).
pub async fn run_tcp_relay(
    listener: TcpListener,
    backend: SocketAddr,
    mut on_accept: impl FnMut(&TcpStream),
) -> io::Result<()> {
    loop {
        // A new socket for this one connection. Its local address is the address the
        // client connected to — 192.168.0.239:4000 in the story — not the listener's
        // 0.0.0.0: the kernel filled it in from the client's SYN.
        let (mut client, _client_address) = listener.accept().await?;
        on_accept(&client);
        tokio::spawn(async move {
            // The upstream connection, from a port of the kernel's choosing, like the
            // UDP proxy's upstream socket. If the backend is unreachable, dropping
            // `client` closes the client's connection: it learns at once.
            let mut upstream = TcpStream::connect(backend).await?;
            // Both directions at once; when one side sends FIN, pass the FIN on
            // (shutdown the other side's write) and keep copying the other direction
            // until it ends too — what docker-proxy's two io.Copy goroutines do.
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
            Ok::<(), io::Error>(())
        });
    }
}
