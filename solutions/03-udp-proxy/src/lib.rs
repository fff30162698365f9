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
pub fn docker_nat_rules(bridge: &str, subnet: &str, published: &[Publish]) -> String {
    let mut nat = vec![
        // Only packets for one of this machine's own addresses go to DOCKER.
        "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER".to_string(),
        "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER".to_string(),
        // Containers' traffic leaving the bridge network looks like the host's own.
        format!("-A POSTROUTING -s {subnet} ! -o {bridge} -j MASQUERADE"),
        // Packets from the bridge itself are never DNATed: the proxy handles those.
        format!("-A DOCKER -i {bridge} -j RETURN"),
    ];
    let mut filter = vec![
        format!("-A FORWARD -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
        format!("-A FORWARD -o {bridge} -j DOCKER"),
        format!("-A FORWARD -i {bridge} ! -o {bridge} -j ACCEPT"),
        format!("-A FORWARD -i {bridge} -o {bridge} -j ACCEPT"),
    ];
    for p in published {
        let (ip, port) = (p.container.ip(), p.container.port());
        // The published port: rewrite the destination to the container…
        nat.push(format!(
            "-A DOCKER ! -i {bridge} -p {} -m {} --dport {} -j DNAT --to-destination {ip}:{port}",
            p.protocol, p.protocol, p.host_port
        ));
        // …and let the rewritten packet through the forward filter.
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

/// A docker-proxy-like UDP relay: take datagrams on `listener` (bound to 0.0.0.0:4000
/// by the caller) and relay them to `backend`, one upstream socket per client; relay
/// every answer back to its client **from the listening socket** — as docker-proxy
/// 20.10 does, bug included.
pub async fn run_udp_proxy(listener: UdpSocket, backend: SocketAddr) -> io::Result<()> {
    let listener = Arc::new(listener);
    // One upstream socket per client ("flow"), so that answers can be told apart.
    let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buffer = vec![0u8; 65_507];
    loop {
        let (len, client) = listener.recv_from(&mut buffer).await?;
        let upstream = match flows.get(&client) {
            Some(upstream) => upstream.clone(),
            None => {
                // A new flow: a socket on any port, talking to the backend only.
                let upstream = Arc::new(UdpSocket::bind("0.0.0.0:0").await?);
                upstream.connect(backend).await?;
                tokio::spawn(relay_answers(upstream.clone(), listener.clone(), client));
                flows.insert(client, upstream.clone());
                upstream
            }
        };
        upstream.send(&buffer[..len]).await?;
    }
}

/// Copy every answer of the backend back to `client`. The bug is on the last line:
/// `listener` is bound to 0.0.0.0, so the answer's source address is chosen by route,
/// not the address the client's datagram was sent to. (docker-proxy also closes a flow
/// after 90 s without traffic; the course's relay keeps it for the process's life.)
async fn relay_answers(
    upstream: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
) -> io::Result<()> {
    let mut buffer = vec![0u8; 65_507];
    loop {
        let len = upstream.recv(&mut buffer).await?;
        listener.send_to(&buffer[..len], client).await?;
    }
}
