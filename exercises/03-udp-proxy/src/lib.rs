//! # Exercise 3 — Docker's NAT and the userland UDP proxy
//!
//! `docker run -p 4000:4000/udp` makes a container reachable on the host's port 4000 in
//! two ways at once (Docker 20.10, `userland-proxy` on, as by default):
//!
//! 1. **NAT rules** in the kernel. In the `nat` table, packets addressed to one of the
//!    host's own addresses go through the `DOCKER` chain, which rewrites the
//!    destination of port 4000 to the container (DNAT) — but only for packets that do
//!    *not* come from the docker bridge (`! -i br-…`). Containers' packets leaving for
//!    the outside get the host's address as source (MASQUERADE). Conntrack remembers
//!    each rewrite and undoes it on the answers.
//! 2. **docker-proxy**, a user-space relay listening on `0.0.0.0:4000`. Whatever the
//!    NAT rules leave alone and is addressed to the host's port 4000 reaches it: it
//!    relays each datagram to the container from a socket of its own, and sends the
//!    container's answers back to the client from its listening socket.
//!
//! In the story the client's datagram arrives *from the bridge* (dind2 sits on it), so
//! the DNAT rule skips it and the proxy takes it. The proxy's answer leaves its
//! listening socket, bound to `0.0.0.0`: it has no address of its own, so the kernel
//! picks one by route — 172.18.0.1, the bridge's address — not the 192.168.0.239 the
//! client wrote to. dind2's conntrack cannot match that answer to the client's flow,
//! and the datagram dies.
//!
//! Write [`docker_nat_rules`] and [`run_udp_proxy`], then run `cargo xtask check 3`:
//! the check builds the story's world with your rules and your proxy and shows the
//! datagram getting lost — then swaps in Docker's own docker-proxy 20.10 to show that
//! yours fails in exactly the same way.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;

use tokio::net::UdpSocket;

/// A published port: `docker run -p HOST_PORT:PORT/PROTOCOL` for a container at
/// `container`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    /// `"udp"` or `"tcp"`.
    pub protocol: &'static str,
    pub host_port: u16,
    pub container: SocketAddrV4,
}

/// The `iptables-restore` input Docker 20.10 would load for a docker network on bridge
/// `bridge` with subnet `subnet`, publishing `published` ports.
///
/// The format is that of `iptables-save`: a `*table` line, chain declarations
/// (`:CHAIN POLICY [0:0]`), `-A CHAIN …` rules, and `COMMIT` for each table.
pub fn docker_nat_rules(bridge: &str, subnet: &str, published: &[Publish]) -> String {
    // TODO: the `nat` table, with a DOCKER chain:
    //   PREROUTING: packets whose destination is LOCAL (`-m addrtype --dst-type LOCAL`)
    //     jump to DOCKER; OUTPUT too (except for 127.0.0.0/8).
    //   POSTROUTING: MASQUERADE the subnet's packets leaving through another interface.
    //   DOCKER: RETURN for packets coming in from the bridge (`-i bridge`); then, for
    //     each published port, DNAT `! -i bridge -p PROTO --dport HOST_PORT` to the
    //     container's address and port.
    // TODO: the `filter` table: FORWARD policy DROP; ACCEPT what goes to the bridge and
    //   is ESTABLISHED/RELATED; from the bridge to anywhere; and, in a DOCKER chain
    //   jumped to from FORWARD for `-o bridge`, new packets to each published container
    //   port. (Without them, the DNATed datagram is dropped in FORWARD.)
    todo!()
}

/// A docker-proxy-like UDP relay: take datagrams on `listener` (bound to 0.0.0.0:4000
/// by the caller) and relay them to `backend`, one upstream socket per client; relay
/// every answer back to its client **from the listening socket** — as docker-proxy
/// 20.10 does, bug included.
pub async fn run_udp_proxy(listener: UdpSocket, backend: SocketAddr) -> io::Result<()> {
    // TODO: share the listener (Arc) with the tasks that send answers back.
    // TODO: keep a HashMap from client address to its upstream socket. For a client
    //   seen for the first time: bind a socket to 0.0.0.0:0, connect it to `backend`,
    //   and tokio::spawn a task that loops: upstream.recv → listener.send_to(client).
    // TODO: loop: listener.recv_from → the client's upstream socket → send.
    todo!()
}
