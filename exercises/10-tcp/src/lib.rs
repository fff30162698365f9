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
//!
//! Write [`run_tcp_echo_server`], [`tcp_ask`] and [`run_tcp_relay`], then run
//! `cargo xtask check 10`. Predict first: will the TCP client in dind2 get its echo
//! through the very proxy path that loses the UDP answer?

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
    // TODO: loop: listener.accept(); for each connection, tokio::spawn a task that
    //   copies everything it reads back to the client (stream.split() gives a reader
    //   and a writer; tokio::io::copy copies until end of stream), then shuts down the
    //   writing side so the client's read sees the end.
    todo!()
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
    // TODO: a TcpSocket (new_v4 for a V4 `local`), set_reuseaddr(true) so that the
    //   fixed port can be bound again while an old connection sits in TIME_WAIT,
    //   bind(local), connect(server).
    // TODO: write_all(payload), then shutdown() — your FIN tells the server you are
    //   done — and read_to_end the echo.
    // TODO: wrap the whole exchange in tokio::time::timeout; when it elapses, return an
    //   io::Error of kind TimedOut.
    todo!()
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
    // TODO: loop: listener.accept(); call on_accept(&client) with the accepted stream.
    // TODO: tokio::spawn a task per connection: TcpStream::connect(backend), then copy
    //   both ways until both sides are done: tokio::io::copy_bidirectional(&mut client,
    //   &mut upstream) passes each side's FIN on to the other.
    todo!()
}
