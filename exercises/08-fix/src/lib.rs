//! # Exercise 8 — The fix
//!
//! The answer was lost because the proxy forgot which address the client wrote to. Its
//! listening socket is bound to `0.0.0.0:4000`: it receives datagrams for *every* address
//! of the host, and when it answers with `send_to`, the kernel picks the source address
//! by route — 172.18.0.1 towards the bridge — instead of the 192.168.0.239 the client
//! talked to. dind2's conntrack waits for an answer from 192.168.0.239:4000, does not
//! recognise the one from 172.18.0.1:4000, and the kernel drops it (NO_SOCKET).
//!
//! Two ways out, both real:
//!
//! 1. **Remember the address, and answer from it** — how Docker fixed docker-proxy
//!    (moby/moby#48571, shipped in Docker 28). The socket option `IP_PKTINFO` makes the
//!    kernel attach a control message to every datagram `recvmsg` returns: an
//!    `in_pktinfo` whose `ipi_addr` is the destination address the datagram carried.
//!    The proxy keeps it with the flow, and sends every answer with `sendmsg` and an
//!    `in_pktinfo` control message of its own, whose `ipi_spec_dst` tells the kernel
//!    which source address to use. Same socket, same port, right address.
//!    ([`run_fixed_udp_proxy`])
//! 2. **No proxy at all** — Docker's `userland-proxy: false`. The published port is
//!    DNATed in the kernel for traffic from the bridge too (no `! -i br-…` exception),
//!    and the "hairpin" (a datagram from the bridge network DNATed straight back onto
//!    the bridge) is MASQUERADEd, so that the container's answer comes back through the
//!    host's IP layer, where conntrack undoes both rewrites: the answer leaves the host
//!    as 192.168.0.239:4000 → 172.18.0.3:34320. ([`hairpin_nat_rules`])
//!
//! Write both, then run `cargo xtask check 8`: the checks rebuild the story's world with
//! each of your fixes and read, from the kernel, whether the client's answer came home.
//!
//! The tools, all in `nix` (`nix::sys::socket`) and tokio:
//! - `setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)` — switch `IP_PKTINFO` on.
//! - `recvmsg::<SockaddrIn>(fd, &mut [IoSliceMut], Some(&mut cmsg_space!(libc::in_pktinfo)),
//!   MsgFlags::empty())` — a datagram, its sender (`.address`), its control messages
//!   (`.cmsgs()?`, look for `ControlMessageOwned::Ipv4PacketInfo(info)`).
//! - `sendmsg(fd, &[IoSlice], &[ControlMessage::Ipv4PacketInfo(&info)], MsgFlags::empty(),
//!   Some(&SockaddrIn::from(client)))` — an answer with a chosen source address.
//! - tokio has no `recvmsg`, but `UdpSocket::async_io(Interest::READABLE, || …)` waits
//!   until the socket is ready, then runs your closure, which makes the system call
//!   itself (nix's `EAGAIN` becomes `WouldBlock`, and tokio waits again). (`AsyncFd`
//!   does the same for any file descriptor.)
//! - `libc::in_addr.s_addr` is in network byte order: `u32::from_be` to read it,
//!   `u32::to_be` to write it.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use nix::cmsg_space;
use nix::libc;
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrIn,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// A published port: `docker run -p HOST_PORT:PORT/PROTOCOL` for a container at
/// `container` (the same as in exercise 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    /// `"udp"` or `"tcp"`.
    pub protocol: &'static str,
    pub host_port: u16,
    pub container: SocketAddrV4,
}

/// The `iptables-restore` input Docker would load for a docker network on bridge `bridge`
/// with subnet `subnet`, publishing `published` ports, with `userland-proxy: false`:
/// exercise 3's rules, with the published ports DNATed whichever interface the packet
/// came in on, and the hairpin MASQUERADEd.
pub fn hairpin_nat_rules(bridge: &str, subnet: &str, published: &[Publish]) -> String {
    // TODO: start from your `docker_nat_rules` of exercise 3 (same format, same chains).
    // TODO: the `nat` table: remove the exception for the bridge (`-A DOCKER -i bridge
    //   -j RETURN`), and DNAT each published port whatever interface the packet came in
    //   on (no `! -i bridge`).
    // TODO: MASQUERADE the hairpin: a packet from the subnet, DNATed (`-m conntrack
    //   --ctstate DNAT`), leaving through the bridge (`-o bridge`). Then the container
    //   answers the host, and the host's conntrack undoes both rewrites.
    // TODO: the `filter` table as in exercise 3: the hairpin goes in and out through the
    //   bridge, which `-A FORWARD -i bridge -o bridge -j ACCEPT` lets through.
    todo!()
}

/// The fixed docker-proxy-like UDP relay: like exercise 3's, but every answer leaves
/// with the address the client wrote to as its source.
///
/// `listener` is bound to 0.0.0.0:4000 by the caller; `backend` is the container.
pub async fn run_fixed_udp_proxy(listener: UdpSocket, backend: SocketAddr) -> io::Result<()> {
    // TODO: switch IP_PKTINFO on for `listener`, then share it (Arc) with the tasks
    //   that send answers back.
    // TODO: loop: receive with recvmsg (inside listener.async_io) to learn, with each
    //   datagram, its client and the address it was sent to (`ipi_addr`).
    // TODO: one upstream socket per flow, as in exercise 3 (bound to 0.0.0.0:0,
    //   connected to `backend`); its task copies every answer back to the client with
    //   sendmsg (inside listener.async_io) and an in_pktinfo whose `ipi_spec_dst` is
    //   the address the client wrote to.
    todo!()
}
