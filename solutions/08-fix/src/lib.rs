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
    let mut nat = vec![
        // Only packets for one of this machine's own addresses go to DOCKER.
        "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER".to_string(),
        "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER".to_string(),
        // Containers' traffic leaving the bridge network looks like the host's own.
        format!("-A POSTROUTING -s {subnet} ! -o {bridge} -j MASQUERADE"),
        // The hairpin: a container's packet DNATed back onto its own bridge. Without
        // this, the container's answer would go straight across the bridge to the
        // sender, never seeing the host's conntrack — unless the bridge happens to pass
        // bridged frames through iptables (`bridge-nf-call-iptables`), which depends on
        // the machine. Masqueraded, the answer is addressed to the host, which undoes
        // both rewrites on its way back.
        format!("-A POSTROUTING -s {subnet} -o {bridge} -m conntrack --ctstate DNAT -j MASQUERADE"),
        // No `-A DOCKER -i {bridge} -j RETURN` here: that exception is what left the
        // story's datagram to the proxy.
    ];
    let mut filter = vec![
        format!("-A FORWARD -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
        format!("-A FORWARD -o {bridge} -j DOCKER"),
        format!("-A FORWARD -i {bridge} ! -o {bridge} -j ACCEPT"),
        // The hairpin is forwarded from the bridge to the bridge: accepted here.
        format!("-A FORWARD -i {bridge} -o {bridge} -j ACCEPT"),
    ];
    for p in published {
        let (ip, port) = (p.container.ip(), p.container.port());
        // The published port, rewritten to the container — from anywhere, the bridge
        // included.
        nat.push(format!(
            "-A DOCKER -p {} -m {} --dport {} -j DNAT --to-destination {ip}:{port}",
            p.protocol, p.protocol, p.host_port
        ));
        filter.push(format!(
            "-A DOCKER -d {ip}/32 ! -i {bridge} -o {bridge} -p {} -m {} --dport {port} -j ACCEPT",
            p.protocol, p.protocol
        ));
    }
    format!(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n{}\nCOMMIT\n\
         *filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n{}\nCOMMIT\n",
        nat.join("\n"),
        filter.join("\n")
    )
}

/// The fixed docker-proxy-like UDP relay: like exercise 3's, but every answer leaves
/// with the address the client wrote to as its source.
///
/// `listener` is bound to 0.0.0.0:4000 by the caller; `backend` is the container.
pub async fn run_fixed_udp_proxy(listener: UdpSocket, backend: SocketAddr) -> io::Result<()> {
    // Ask the kernel to tell us, with every datagram, the address it was sent to.
    setsockopt(&listener, sockopt::Ipv4PacketInfo, &true)?;
    let listener = Arc::new(listener);
    // One upstream socket per flow: a client, and the host address it talked to.
    let mut flows: HashMap<(SocketAddrV4, Ipv4Addr), Arc<UdpSocket>> = HashMap::new();
    let mut buffer = vec![0u8; 65_507];
    loop {
        let (len, client, local) = recv_with_destination(&listener, &mut buffer).await?;
        let upstream = match flows.get(&(client, local)) {
            Some(upstream) => upstream.clone(),
            None => {
                let upstream = Arc::new(UdpSocket::bind("0.0.0.0:0").await?);
                upstream.connect(backend).await?;
                tokio::spawn(relay_answers(
                    upstream.clone(),
                    listener.clone(),
                    client,
                    local,
                ));
                flows.insert((client, local), upstream.clone());
                upstream
            }
        };
        upstream.send(&buffer[..len]).await?;
    }
}

/// Copy every answer of the backend back to `client`, from `local` — the address the
/// client's datagram was sent to.
async fn relay_answers(
    upstream: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    client: SocketAddrV4,
    local: Ipv4Addr,
) -> io::Result<()> {
    let mut buffer = vec![0u8; 65_507];
    loop {
        let len = upstream.recv(&mut buffer).await?;
        send_from(&listener, &buffer[..len], client, local).await?;
    }
}

/// `recvmsg` on a socket with `IP_PKTINFO` set: the datagram's length, its sender, and
/// the destination address it carried (`ipi_addr` of the `in_pktinfo` control message).
///
/// Tokio has no `recvmsg`, but lets us make the system call ourselves: `async_io` waits
/// until the socket is readable and calls the closure; if the closure reports
/// `WouldBlock` (nix's `EAGAIN` converts to it), tokio waits again.
async fn recv_with_destination(
    socket: &UdpSocket,
    buffer: &mut [u8],
) -> io::Result<(usize, SocketAddrV4, Ipv4Addr)> {
    socket
        .async_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(buffer)];
            // Room for exactly one control message carrying an `in_pktinfo`.
            let mut control = cmsg_space!(libc::in_pktinfo);
            let message = recvmsg::<SockaddrIn>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut control),
                MsgFlags::empty(),
            )?;
            let sender = message
                .address
                .map(SocketAddrV4::from)
                .ok_or_else(|| io::Error::other("recvmsg returned no sender address"))?;
            let destination = message
                .cmsgs()?
                .find_map(|cmsg| match cmsg {
                    ControlMessageOwned::Ipv4PacketInfo(info) => {
                        // `s_addr` is in network byte order, as on the wire.
                        Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)))
                    }
                    _ => None,
                })
                .ok_or_else(|| {
                    io::Error::other("no IP_PKTINFO control message: is the option set?")
                })?;
            Ok((message.bytes, sender, destination))
        })
        .await
}

/// `sendmsg` `payload` to `to` with an `in_pktinfo` control message whose
/// `ipi_spec_dst` is `from`: the kernel uses it as the datagram's source address (and
/// routes as if the socket were bound to it; `ipi_ifindex` 0 lets the route pick the
/// interface).
async fn send_from(
    socket: &UdpSocket,
    payload: &[u8],
    to: SocketAddrV4,
    from: Ipv4Addr,
) -> io::Result<usize> {
    let info = libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(from).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let to = SockaddrIn::from(to);
    socket
        .async_io(Interest::WRITABLE, || {
            Ok(sendmsg(
                socket.as_raw_fd(),
                &[IoSlice::new(payload)],
                &[ControlMessage::Ipv4PacketInfo(&info)],
                MsgFlags::empty(),
                Some(&to),
            )?)
        })
        .await
}
