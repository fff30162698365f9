//! # Exercise 9 — Homework 1: why do machines on the host's LAN get their answers?
//!
//! The article ends with two questions for the reader. The first: the client inside
//! dind2 never hears the server, yet any other machine on the host's LAN
//! (`192.168.0.x`) that sends the same datagram to `192.168.0.239:4000` gets its answer.
//! Why?
//!
//! Do not argue it — measure it. You write the experiment: the story's client, run from
//! `peer` (192.168.0.10, the LAN machine of the story's world), and a look at what the
//! host's kernel remembers about that flow. The check runs your experiment in the
//! story's world — Docker 20.10's NAT rules and the buggy userland proxy, exactly the
//! world where the client in dind2 loses its answer — and reads three facts from the
//! kernel: what the peer received and from where, the host's conntrack entry for the
//! flow, and how many datagrams the userland proxy received.
//!
//! Write [`ask`], [`find_flow`] and [`lan_peer_experiment`], then run
//! `cargo xtask check 9`. Before you run it: predict the three facts. Which address
//! will the peer's answer come from? Which rule handles the peer's datagram in the
//! host? How many datagrams will the proxy see?

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Context;
use netlab::World;

/// The machine on the host's LAN, in the story's world.
pub const PEER_ADDRESS: &str = "192.168.0.10";
/// Where every client of the story sends: the host's LAN address, the published port.
pub const PUBLISHED: &str = "192.168.0.239:4000";
/// The story's client port; the peer uses it too, so its flow is easy to recognise.
pub const CLIENT_PORT: u16 = 34_320;

/// What a client heard after sending its datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// A datagram came back: who sent it (as the client's socket sees it) and what it said.
    Answer { from: SocketAddr, payload: Vec<u8> },
    /// Nothing came back within the time the client was willing to wait.
    Nothing { waited: Duration },
}

/// What the experiment observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// What the peer's client heard.
    pub heard: Heard,
    /// The host's conntrack entry for the peer's flow — the line of
    /// `/proc/net/nf_conntrack` (read inside `host`) whose original direction is
    /// `192.168.0.10:34320 → 192.168.0.239:4000` — or `None` if the host tracked no
    /// such flow.
    pub host_flow: Option<String>,
}

/// A UDP client, blocking: bind to `local`, send `payload` to `server`, and wait at most
/// `timeout` for one datagram.
///
/// The same client as exercise 1's, written with the standard library alone: a read
/// timeout on the socket replaces Tokio's `timeout`. When it expires, `recv_from` fails
/// with `WouldBlock` (or `TimedOut`): that is not an error, it is [`Heard::Nothing`].
pub fn ask(
    local: SocketAddr,
    server: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> io::Result<Heard> {
    // TODO: bind a std::net::UdpSocket to `local`, give it a read timeout of `timeout`
    //   (set_read_timeout), and send `payload` to `server` with send_to.
    // TODO: recv_from into a buffer big enough for any datagram (65507 bytes):
    //   Ok((len, from)) is Heard::Answer; an error of kind WouldBlock or TimedOut means
    //   the timeout expired: Heard::Nothing with the time you waited. Any other error
    //   is an error.
    todo!()
}

/// The line of a conntrack table (the text of `/proc/net/nf_conntrack`) that tracks the
/// flow whose **original** direction is `from → to`, if there is one.
///
/// Each line holds two tuples, each written `src=… dst=… sport=… dport=…`: the first
/// four `key=value` fields are the original direction (what the first packet looked
/// like when it arrived), the next four the reply direction (what an answer must look
/// like). Only the first ones are compared: a line whose *reply* tuple happens to read
/// `from → to` is another flow.
pub fn find_flow(table: &str, from: SocketAddr, to: SocketAddr) -> Option<&str> {
    // TODO: for each line, collect its `key=value` words. The FIRST src, dst, sport and
    //   dport of a line are its original tuple; return the first line whose original
    //   tuple is from.ip(), to.ip(), from.port(), to.port().
    todo!()
}

/// The experiment: in `world` (the story's, running), the story's client sends
/// `payload` from `peer` — `0.0.0.0:34320` there — to `192.168.0.239:4000` and waits at
/// most `timeout`; then the host's conntrack table is read, and the peer's flow found
/// in it.
pub fn lan_peer_experiment(
    world: &World,
    payload: &[u8],
    timeout: Duration,
) -> anyhow::Result<Observation> {
    // TODO: run `ask` inside peer: world.node("peer")?.run(|| ask(...)) runs a closure
    //   on a thread inside peer's network namespace. Send from 0.0.0.0:CLIENT_PORT to
    //   PUBLISHED.
    // TODO: read the host's conntrack table (world.conntrack("host")) and find the
    //   peer's flow in it: from PEER_ADDRESS:CLIENT_PORT to PUBLISHED.
    todo!()
}
