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
///
/// socket2 lets us create the socket ourselves and set options *before* `bind` —
/// exercise 8 will need that (IP_PKTINFO). Tokio needs the socket non-blocking.
pub fn bind(local: SocketAddr) -> io::Result<UdpSocket> {
    // The address family (IPv4 or IPv6) follows the address we bind to.
    let socket = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
    // Tokio drives the socket with epoll: every call must return at once.
    socket.set_nonblocking(true)?;
    socket.bind(&local.into())?;
    UdpSocket::from_std(socket.into())
}

/// The echo server: receive datagrams forever; for each one, report it to
/// `on_datagram(source, payload)` — the server's log — then send the same bytes back
/// to the source.
pub async fn run_echo_server(
    socket: UdpSocket,
    mut on_datagram: impl FnMut(SocketAddr, &[u8]),
) -> io::Result<()> {
    // One buffer as large as the largest datagram: a smaller one would truncate.
    let mut buffer = vec![0u8; MAX_PAYLOAD];
    loop {
        // recv_from tells us who sent the datagram: the only way to know where to answer.
        let (len, source) = socket.recv_from(&mut buffer).await?;
        on_datagram(source, &buffer[..len]);
        // The answer goes back from this same socket, so its source is our address.
        socket.send_to(&buffer[..len], source).await?;
    }
}

/// The client: send `payload` from `local` (use port [`CLIENT_PORT`] to play the story's
/// client, or port 0 for any) to `server`, then wait at most `timeout` for one datagram.
pub async fn ask(
    local: SocketAddr,
    server: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> io::Result<Outcome> {
    let socket = bind(local)?;
    socket.send_to(payload, server).await?;
    let started = Instant::now();
    let mut buffer = vec![0u8; MAX_PAYLOAD];
    // `timeout` turns "wait forever" into "wait this long": Err(Elapsed) means no reply.
    match tokio::time::timeout(timeout, socket.recv_from(&mut buffer)).await {
        Ok(Ok((len, from))) => Ok(Outcome::Reply {
            from,
            payload: buffer[..len].to_vec(),
        }),
        Ok(Err(error)) => Err(error),
        Err(_elapsed) => Ok(Outcome::NoReply {
            waited: started.elapsed(),
        }),
    }
}
