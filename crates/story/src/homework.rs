//! The story's world for the article's two homework questions: a client on the host's
//! LAN (`peer`), and TCP through the same userland proxy.
//!
//! Docker's rules publish TCP 4000 as well as UDP 4000 ([`crate::docker_networks`]),
//! and Docker runs a userland proxy for each; here is the TCP one. `lab up` starts the
//! course's TCP echo server and relay so homework 2 can be tried by hand; `repro` and
//! the checks of exercise 10 start them too (the checks with the learner's programs).

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Result;

use crate::{Story, CLIENT_PORT, DIND1, PORT};

/// What the TCP relay's `accept` returned, as the kernel reports it (`getsockname` and
/// `getpeername` of the accepted socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The local address of the accepted socket: the address the client connected to.
    pub local: SocketAddr,
    /// The client, as the relay sees it (after dind2's MASQUERADE).
    pub peer: SocketAddr,
}

impl Story {
    /// The story's client, run from another node: send `payload` from
    /// `0.0.0.0:34320` in `node` to `to` (homework 1 runs it from `peer`).
    pub fn ask_from(
        &self,
        node: &str,
        to: SocketAddr,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<crate::Outcome> {
        let local = SocketAddr::from(([0, 0, 0, 0], CLIENT_PORT));
        Ok(self
            .world
            .node(node)?
            .block_on(|| solution_udp_echo::ask(local, to, payload, timeout))?)
    }

    /// Start a TCP echo server in `server`: `echo(listener)` gets a listener bound to
    /// 0.0.0.0:4000 there.
    pub fn start_tcp_echo_server<F, Fut>(&mut self, echo: F) -> Result<()>
    where
        F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
        Fut: Future<Output = std::io::Result<()>> + 'static,
    {
        self.world
            .spawn_service("server", "tcp-echo-server", move || {
                let listener = tcp_listener();
                async move { echo(listener?).await }
            })
    }

    /// Start a TCP relay in `host`, as Docker starts docker-proxy for `-p 4000:4000/tcp`:
    /// `relay(listener, backend)` gets a listener bound to 0.0.0.0:4000 in `host`, and
    /// dind1's address as backend.
    pub fn start_tcp_relay<F, Fut>(&mut self, relay: F) -> Result<()>
    where
        F: FnOnce(tokio::net::TcpListener, SocketAddr) -> Fut + Send + 'static,
        Fut: Future<Output = std::io::Result<()>> + 'static,
    {
        let backend = SocketAddr::new(DIND1.parse()?, PORT);
        self.world.spawn_service("host", "tcp-relay", move || {
            let listener = tcp_listener();
            async move { relay(listener?, backend).await }
        })
    }

    /// The course's TCP echo server in `server` and TCP relay in `host` (exercise 10's
    /// reference answers). Each connection the relay accepts is reported on the returned
    /// channel — and, with `print_log`, printed.
    pub fn start_reference_tcp(&mut self, print_log: bool) -> Result<mpsc::Receiver<Accepted>> {
        self.start_tcp_echo_server(solution_tcp::run_tcp_echo_server)?;
        self.start_reference_tcp_relay(print_log)
    }

    /// The course's TCP relay alone, in `host` (for a world whose `server` already runs
    /// a TCP echo server). Accepted connections are reported as by
    /// [`Story::start_reference_tcp`].
    pub fn start_reference_tcp_relay(
        &mut self,
        print_log: bool,
    ) -> Result<mpsc::Receiver<Accepted>> {
        let (accepted_tx, accepted) = mpsc::channel();
        self.start_tcp_relay(move |listener, backend| {
            solution_tcp::run_tcp_relay(listener, backend, move |stream| {
                // getsockname and getpeername of the accepted socket: the kernel's answer.
                let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else {
                    return;
                };
                if print_log {
                    println!("  [tcp relay] accepted {peer}; the accepted socket's local address is {local}");
                }
                let _ = accepted_tx.send(Accepted { local, peer });
            })
        })?;
        Ok(accepted)
    }

    /// The course's TCP client (exercise 10's reference answer), run in `client` from
    /// 0.0.0.0:34320: connect to `to`, send `payload`, return the echo.
    pub fn tcp_client_ask(
        &self,
        to: SocketAddr,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let local = SocketAddr::from(([0, 0, 0, 0], CLIENT_PORT));
        Ok(self
            .world
            .node("client")?
            .block_on(|| solution_tcp::tcp_ask(local, to, payload, timeout))?)
    }
}

/// A Tokio TCP listener on 0.0.0.0:4000, in the namespace of the calling thread.
fn tcp_listener() -> std::io::Result<tokio::net::TcpListener> {
    let listener = StdTcpListener::bind(("0.0.0.0", PORT))?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}
