//! The article's two homework questions, answered from real runs in a fresh copy of the
//! story's world (the buggy one: Docker 20.10's NAT rules and userland proxy).
//!
//! 1. Why do machines on the host's LAN get their answers? The story's client, run from
//!    `peer`: what it heard, the host's conntrack entry for its flow, and how many
//!    datagrams the host's UDP sockets — the proxy's — received meanwhile (the kernel's
//!    `Udp InDatagrams` counter of `host`).
//! 2. Does TCP have the same problem? The course's TCP client in `client`, through the
//!    course's TCP relay in `host`: the echo, and the accepted socket's local address as
//!    the kernel reports it (`getsockname`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use story::proc_net;
use story::{Outcome, Story};

use super::{compact, step};
use crate::style::{bold, dim, green, red};

const TIMEOUT: Duration = Duration::from_secs(2);

/// Print both answers, as steps `first_step` and `first_step + 1`. Fails if the kernel
/// did not answer as the article says (a LAN peer is answered and the proxy sees
/// nothing; TCP gets its echo on a socket whose local address is 192.168.0.239:4000).
pub fn run(first_step: u32) -> Result<()> {
    let started = Instant::now();
    let mut story = Story::reference(false).context("building the world for the homework")?;
    let published: SocketAddr = format!("{}:{}", story::HOST_LAN, story::PORT).parse()?;

    step(
        first_step,
        "Homework 1: a machine on the host's LAN (peer, 192.168.0.10) sends to 192.168.0.239:4000",
    );
    let before = proc_net::snmp(&story.world, "host")?;
    let outcome = story.ask_from("peer", published, b"hello from the LAN", TIMEOUT)?;
    let after = proc_net::snmp(&story.world, "host")?;
    let proxy_received = after.delta(&before, "Udp.InDatagrams");
    let answered_from = match &outcome {
        Outcome::Reply { from, .. } => {
            println!("  [peer] {} from {from}", green("reply"));
            Some(*from)
        }
        Outcome::NoReply { waited } => {
            println!("  [peer] {} after {waited:.1?}", red("no reply"));
            None
        }
    };
    let host_table = story.world.conntrack("host")?;
    let dnat_entry = host_table
        .lines()
        .find(|l| l.contains("src=192.168.0.10 dst=192.168.0.239 sport=34320 dport=4000"));
    match dnat_entry {
        Some(entry) => println!("  [host conntrack] {}", compact(entry)),
        None => println!("  [host conntrack] no entry for the peer's flow"),
    }
    println!("  [host] datagrams received by its UDP sockets (the proxy's): {proxy_received}");
    let dnated = dnat_entry.is_some_and(|e| e.contains("src=172.18.0.2 dst=192.168.0.10"));
    if answered_from != Some(published) || !dnated || proxy_received != 0 {
        bail!("homework 1 did not come out as in the article (answer from {answered_from:?}, DNAT entry: {dnated}, proxy received {proxy_received})");
    }
    println!(
        "\n  {}",
        bold(&format!(
            "A LAN peer gets its answer from {published}; the proxy saw 0 datagrams. The peer's datagram came in on\n  \
             the LAN, so Docker's DNAT rule (`! -i br-dind`) sent it to dind1, and conntrack turned the answer's\n  \
             source back into {published}."
        ))
    );

    step(
        first_step + 1,
        "Homework 2: TCP through the same proxy (the client in dind2 connects to 192.168.0.239:4000)",
    );
    let accepted = story.start_reference_tcp(true)?;
    let echo = story.tcp_client_ask(published, b"hello over TCP", TIMEOUT)?;
    println!(
        "  [client] {} {:?}",
        green("echo received:"),
        String::from_utf8_lossy(&echo)
    );
    let accepted = accepted
        .recv_timeout(TIMEOUT)
        .context("the TCP relay reported no accepted connection")?;
    if echo != b"hello over TCP" || accepted.local != published {
        bail!("homework 2 did not come out as in the article (echo {echo:?}, accepted socket's local address {})", accepted.local);
    }
    println!(
        "\n  {}",
        bold(&format!(
            "TCP through the same proxy: echo received; the accepted socket's local address is {}.\n  \
             accept() gives each connection a socket bound to the address the client connected to, so every\n  \
             answer leaves from it: TCP cannot make the UDP proxy's mistake.",
            accepted.local
        ))
    );
    println!(
        "  {}",
        dim(&format!(
            "(both homeworks in a fresh world: {:.0?})",
            started.elapsed()
        ))
    );
    Ok(())
}
