//! # Exercise 1 — a UDP echo server and client
//!
//! In the story, a client sends one UDP datagram to a server; the server logs it and
//! answers; the answer never arrives. Before we can lose a datagram we need the two
//! programs that exchange it: a server that echoes every datagram back to its sender
//! and logs where it came from, and a client that sends one datagram from a chosen
//! port and waits, for a bounded time, for the answer.
//!
//! UDP has no connection: every datagram travels alone, carrying its source and
//! destination address and port. "No answer" is therefore not an error the kernel
//! reports to the client — the client can only stop waiting. That is why [`ask`]
//! returns [`Outcome::NoReply`] as an ordinary result, not an error.
//!
//! Fill in the three functions marked `TODO`, then run `cargo xtask check 1`.
//! Stuck? `cargo xtask hint 1`, and chapter 1 of the book.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

/// The largest payload a UDP datagram over IPv4 can carry:
/// 65535 (IPv4 total length) − 20 (IPv4 header) − 8 (UDP header).
pub const MAX_PAYLOAD: usize = 65_507;

/// The fixed source port of the story's client.
pub const CLIENT_PORT: u16 = 34_320;

/// What the client got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A datagram arrived on the client's socket: who sent it and what it said.
    Reply { from: SocketAddr, payload: Vec<u8> },
    /// Nothing arrived before the timeout.
    NoReply { waited: Duration },
}

/// Open a UDP socket bound to `local`, ready for Tokio.
pub fn bind(local: SocketAddr) -> io::Result<UdpSocket> {
    // TODO: create the socket with socket2 (`Socket::new`: the domain follows `local`,
    // `Domain::for_address`), make it non-blocking (Tokio requires it), bind it to
    // `local`, and hand it to Tokio with `UdpSocket::from_std(socket.into())`.
    todo!()
}

/// The echo server: receive datagrams forever; for each one, report it to
/// `on_datagram(source, payload)` — the server's log — then send the same bytes back
/// to the source.
pub async fn run_echo_server(
    socket: UdpSocket,
    mut on_datagram: impl FnMut(SocketAddr, &[u8]),
) -> io::Result<()> {
    // TODO: loop { recv_from; call on_datagram; send_to the source }.
    // Size the buffer for the largest datagram (MAX_PAYLOAD), or big ones get cut.
    todo!()
}

/// The client: send `payload` from `local` (use port [`CLIENT_PORT`] to play the story's
/// client, or port 0 for any) to `server`, then wait at most `timeout` for one datagram.
pub async fn ask(
    local: SocketAddr,
    server: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> io::Result<Outcome> {
    // TODO: bind a socket to `local` (use your `bind`), send `payload` to `server`,
    // then wait for one datagram with `tokio::time::timeout(timeout, …)`.
    // A reply is Outcome::Reply { from, payload }; an elapsed timeout is
    // Ok(Outcome::NoReply { waited }) — measure `waited` with Instant::now().
    todo!()
}
