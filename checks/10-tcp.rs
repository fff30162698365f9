//! Checks for exercise 10 — Homework 2: TCP through the same proxy.
//!
//! Each check builds the story's world as the article had it — Docker 20.10's NAT
//! rules (which publish TCP 4000 as well as UDP 4000) and the buggy UDP proxy, from the
//! course's answers to exercises 2 and 3 — and adds **your** TCP programs: your echo
//! server on 0.0.0.0:4000 in `server`, your relay on 0.0.0.0:4000 in `host` (where
//! docker-proxy would be). Your client then connects from `client`, inside dind2, to
//! 192.168.0.239:4000 — the path on which the UDP answer is lost.
//!
//! The checks read the kernel's side: the accepted socket's addresses (`getsockname`,
//! asked by the check itself on the socket your relay accepted) and the host's socket
//! table at that moment; the conntrack tables of dind1 and dind2; and dind2's counters
//! of TCP resets and ICMP "unreachable" messages it sent — what a stray segment causes.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use rstest::{fixture, rstest};
use story::proc_net::{self, tcp_state_name, SocketEntry};
use story::Story;

use crate::under_test::{run_tcp_echo_server, run_tcp_relay, tcp_ask};

netlab::sandbox!();

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// What the check saw of one connection your relay accepted, asked of the kernel from
/// inside `host` at the moment `on_accept` was called.
#[derive(Debug)]
struct AcceptedSocket {
    /// `getsockname` of the accepted socket.
    local: std::io::Result<SocketAddr>,
    /// `getpeername` of the accepted socket.
    peer: std::io::Result<SocketAddr>,
    /// host's `/proc/net/tcp` at that moment (or why it could not be read).
    host_sockets: Result<Vec<SocketEntry>, String>,
}

/// The story's world with your TCP echo server and relay running.
struct TcpStory {
    story: Story,
    accepted: mpsc::Receiver<AcceptedSocket>,
}

#[fixture]
fn tcp_story() -> TcpStory {
    netlab::require_sandbox();
    let mut story = Story::reference(false)
        .unwrap_or_else(|e| panic!("the story's world (reference NAT rules and proxy): {e:#}"));
    story
        .start_tcp_echo_server(run_tcp_echo_server)
        .unwrap_or_else(|e| panic!("your TCP echo server should start in server: {e:#}"));
    // Your services run on threads of their own: a `todo!()` in one of them panics there,
    // whenever that thread gets to it, while the check goes on to your client. So that a
    // check fails on the first unfinished piece of the path — the echo server, then the
    // relay, then the client — and not on whichever thread happened to panic first, each
    // service must answer one round trip before the next one starts.
    round_trip(&story, "dind1", at("172.17.0.2", story::PORT))
        .unwrap_or_else(|e| panic!("your TCP echo server, in server, should echo a connection from dind1 to 172.17.0.2:4000: {e}"));
    let (report, accepted) = mpsc::channel();
    story
        .start_tcp_relay(move |listener, backend| {
            run_tcp_relay(listener, backend, move |stream| {
                // This runs on your relay's thread, inside host: ask the kernel.
                let _ = report.send(AcceptedSocket {
                    local: stream.local_addr(),
                    peer: stream.peer_addr(),
                    host_sockets: proc_net::tcp_sockets_here().map_err(|e| format!("{e:#}")),
                });
            })
        })
        .unwrap_or_else(|e| panic!("your TCP relay should start in host: {e:#}"));
    round_trip(&story, "host", at("127.0.0.1", story::PORT)).unwrap_or_else(|e| {
        panic!("your TCP relay, in host, should relay a connection to 127.0.0.1:4000 to the echo server: {e}")
    });
    // That connection is not one of the checks': forget what on_accept reported of it.
    while accepted.try_recv().is_ok() {}
    TcpStory { story, accepted }
}

/// Connect from `node` to `to`, send a few bytes and read their echo (5 s at most). The
/// connection stays open while it waits: ending it early is what a check tests, later.
fn round_trip(story: &Story, node: &str, to: SocketAddr) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = story.world.node(node).map_err(|e| format!("{e:#}"))?;
    node.block_on(|| async move {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(to).await?;
            stream.write_all(b"ready?").await?;
            let mut echo = vec![0u8; 6];
            stream.read_exact(&mut echo).await?;
            Ok::<Vec<u8>, std::io::Error>(echo)
        };
        match tokio::time::timeout(Duration::from_secs(5), exchange).await {
            Ok(Ok(echo)) if echo == b"ready?" => Ok(()),
            Ok(Ok(echo)) => Err(format!(
                "sent \"ready?\", got {:?} back",
                String::from_utf8_lossy(&echo)
            )),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("no echo within 5 s".to_string()),
        }
    })
}

impl TcpStory {
    /// Your client, in `client` (inside dind2), from 0.0.0.0:34320 to 192.168.0.239:4000.
    fn ask(&self, payload: &[u8]) -> Vec<u8> {
        let to = at(story::HOST_LAN, story::PORT);
        let local = at("0.0.0.0", story::CLIENT_PORT);
        self.story
            .world
            .node("client")
            .unwrap()
            .block_on(|| tcp_ask(local, to, payload, Duration::from_secs(5)))
            .unwrap_or_else(|e| {
                panic!("your TCP client, in client, should get its echo from 192.168.0.239:4000; it failed: {e}")
            })
    }

    /// The line of a node's conntrack table for a TCP flow containing `tuple`.
    fn tcp_flow(&self, node: &str, tuple: &str) -> String {
        let table = self.story.world.conntrack(node).unwrap();
        table
            .lines()
            .find(|l| l.contains(" tcp ") && l.contains(tuple))
            .unwrap_or_else(|| {
                panic!("{node} should track the TCP flow `{tuple}`; its table:\n{table}")
            })
            .to_string()
    }
}

#[rstest]
#[timeout(netlab::time_limit(30))]
fn through_the_buggy_world_the_tcp_client_gets_its_echo(tcp_story: TcpStory) {
    let echo = tcp_story.ask(b"hello over TCP");
    assert_eq!(
        String::from_utf8_lossy(&echo),
        "hello over TCP",
        "the client should get back exactly what it sent"
    );
    // It went the proxy's way: dind1 saw a connection from the host's bridge address,
    // i.e. from your relay's upstream socket — not the client's flow DNATed by the host.
    let upstream = tcp_story.tcp_flow("dind1", "src=172.18.0.1 dst=172.18.0.2");
    assert!(
        upstream.contains("dport=4000"),
        "dind1 should see your relay connect to 172.18.0.2:4000 from 172.18.0.1:\n{upstream}"
    );
}

#[rstest]
#[timeout(netlab::time_limit(30))]
fn the_accepted_socket_s_local_address_is_192_168_0_239_4000(tcp_story: TcpStory) {
    tcp_story.ask(b"who am I talking to?");
    let accepted = tcp_story
        .accepted
        .recv_timeout(Duration::from_secs(2))
        .expect("your relay should call on_accept(&stream) for the connection it accepted");
    let (local, peer) = (
        accepted.local.as_ref().expect("getsockname"),
        accepted.peer.as_ref().expect("getpeername"),
    );
    assert_eq!(
        *local,
        at(story::HOST_LAN, story::PORT),
        "the kernel says the accepted socket's local address is {local}: it should be the address the client \
         connected to, 192.168.0.239:4000 — not the listener's 0.0.0.0, and not the bridge's 172.18.0.1"
    );
    assert_eq!(
        *peer,
        at(story::DIND2, story::CLIENT_PORT),
        "the accepted socket's peer should be the client after dind2's MASQUERADE, 172.18.0.3:34320"
    );
    // The same fact in host's socket table, read at that moment: the connection's socket
    // (ESTABLISHED — or already CLOSE_WAIT if the client's FIN arrived before `accept`).
    let client = at(story::DIND2, story::CLIENT_PORT);
    let host_sockets = accepted
        .host_sockets
        .unwrap_or_else(|e| panic!("reading host's /proc/net/tcp: {e}"));
    let connection = host_sockets
        .iter()
        .find(|s| SocketAddr::V4(s.remote) == client)
        .unwrap_or_else(|| {
            panic!(
                "host's /proc/net/tcp should list the client's connection (remote 172.18.0.3:34320); it listed: {:?}",
                host_sockets
            )
        });
    assert_eq!(
        SocketAddr::V4(connection.local),
        at(story::HOST_LAN, story::PORT),
        "in host's /proc/net/tcp, the client's connection ({}) should have the local address 192.168.0.239:4000",
        tcp_state_name(connection.state)
    );
}

#[rstest]
#[timeout(netlab::time_limit(30))]
fn no_segment_is_dropped_on_the_way_back(tcp_story: TcpStory) {
    let before = proc_net::snmp(&tcp_story.story.world, "dind2").unwrap();
    tcp_story.ask(b"anything lost?");
    let after = proc_net::snmp(&tcp_story.story.world, "dind2").unwrap();
    // A segment that matched no flow in dind2 would reach dind2's own TCP stack, find no
    // socket, and be answered with a reset — the TCP twin of the UDP answer's ICMP.
    for counter in ["Tcp.OutRsts", "Icmp.OutDestUnreachs"] {
        assert_eq!(
            after.delta(&before, counter),
            0,
            "dind2 should not have refused anything ({counter} grew by {})",
            after.delta(&before, counter)
        );
    }
    // The client's flow in dind2 saw its answers, from the address it connected to.
    let flow = tcp_story.tcp_flow(
        "dind2",
        "src=172.17.0.2 dst=192.168.0.239 sport=34320 dport=4000",
    );
    assert!(
        flow.contains("src=192.168.0.239 dst=172.18.0.3 sport=4000 dport=34320")
            && flow.contains("[ASSURED]")
            && !flow.contains("[UNREPLIED]"),
        "dind2's entry for the client's connection should be answered from 192.168.0.239:4000 and [ASSURED]:\n{flow}"
    );
    // And nothing came from the bridge's address with the listener's port, the UDP
    // proxy's signature.
    let table = tcp_story.story.world.conntrack("dind2").unwrap();
    assert!(
        !table
            .lines()
            .any(|l| l.contains(" tcp ") && l.contains("src=172.18.0.1 dst=172.18.0.3 sport=4000")),
        "no TCP segment should reach dind2 from 172.18.0.1:4000; dind2's table:\n{table}"
    );
}

#[rstest]
#[timeout(netlab::time_limit(30))]
fn the_relay_copies_both_ways_until_the_client_is_done(tcp_story: TcpStory) {
    // A quarter of a megabyte: when the client closes its side, much of the echo is
    // still on its way back. A relay that stops at the first end of stream cuts it off;
    // one that never passes the end of stream on leaves the server (and the client)
    // waiting for ever. (The client writes everything before it reads, so the size stays
    // well below what the sockets on the way can hold.)
    let payload: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
    let echo = tcp_story.ask(&payload);
    assert_eq!(
        echo.len(),
        payload.len(),
        "the echo should be as long as what was sent"
    );
    assert!(
        echo == payload,
        "the echo should be byte for byte what was sent"
    );
}
