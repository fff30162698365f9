//! Checks for exercise 1 — a UDP echo server and client.
//!
//! Each check builds a private network namespace with only a loopback interface,
//! starts your echo server there on 127.0.0.1:4000, and talks to it with your client.
//! Nothing here can reach your real network.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use netlab::{Topology, World};
use rstest::{fixture, rstest};

use crate::under_test::{ask, bind, run_echo_server, Outcome};

// Move this test process into its own network sandbox before any thread starts.
netlab::sandbox!();

const SERVER: &str = "127.0.0.1:4000";
const STORY_CLIENT: &str = "127.0.0.1:34320";

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("a valid socket address")
}

/// A namespace called `box` with your echo server running in it, and the server's log.
struct EchoLab {
    world: World,
    log: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
}

impl EchoLab {
    /// Run your client inside `box`: send `payload` from `local` to the server.
    fn ask(&self, local: &str, server: &str, payload: &[u8], timeout: Duration) -> Outcome {
        let (local, server) = (addr(local), addr(server));
        self.world
            .node("box")
            .expect("the lab has a node called box")
            .block_on(|| ask(local, server, payload, timeout))
            .expect("ask() returned an error; a missing reply should be Ok(Outcome::NoReply)")
    }

    /// The next line of the server's log: the source it saw, and the payload.
    fn next_log_entry(&self) -> (SocketAddr, Vec<u8>) {
        self.log
            .recv_timeout(Duration::from_secs(5))
            .expect("the server never called on_datagram: it should log every datagram it receives")
    }
}

#[fixture]
fn echo_lab() -> EchoLab {
    netlab::require_sandbox();
    let mut plan = Topology::new();
    plan.node("box");
    let mut world = World::up(&plan).expect("building the private namespace");
    let (log_tx, log) = mpsc::channel();
    world
        .spawn_service("box", "echo-server", move || {
            let socket = bind(addr(SERVER));
            async move {
                run_echo_server(socket?, move |source, payload| {
                    let _ = log_tx.send((source, payload.to_vec()));
                })
                .await
            }
        })
        .expect(
            "your echo server should start: bind() must return a socket bound to 127.0.0.1:4000",
        );
    EchoLab { world, log }
}

#[rstest]
#[timeout(Duration::from_secs(20))]
fn echoes_a_datagram_and_logs_its_source(echo_lab: EchoLab) {
    let outcome = echo_lab.ask(
        STORY_CLIENT,
        SERVER,
        b"where did my packet go?",
        Duration::from_secs(5),
    );
    assert_eq!(
        outcome,
        Outcome::Reply {
            from: addr(SERVER),
            payload: b"where did my packet go?".to_vec()
        },
        "the client should get its own bytes back, from the server's address"
    );
    let (source, payload) = echo_lab.next_log_entry();
    assert_eq!(
        source,
        addr(STORY_CLIENT),
        "the server should log the client's address and fixed port 34320"
    );
    assert_eq!(payload, b"where did my packet go?");
}

#[rstest]
#[case::empty(0)]
#[case::one_byte(1)]
#[case::one_ethernet_frame(1472)]
#[case::the_largest_ipv4_datagram(65_507)]
#[timeout(Duration::from_secs(20))]
fn a_payload_of_any_size_comes_back_intact(echo_lab: EchoLab, #[case] size: usize) {
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let outcome = echo_lab.ask("127.0.0.1:0", SERVER, &payload, Duration::from_secs(5));
    match outcome {
        Outcome::Reply { payload: echoed, .. } => assert!(
            echoed == payload,
            "sent {size} bytes, got {} back (a receive buffer smaller than 65507 bytes truncates large datagrams)",
            echoed.len()
        ),
        other => panic!("sent {size} bytes and expected them back, got {other:?}"),
    }
    assert_eq!(
        echo_lab.next_log_entry().1.len(),
        size,
        "the server's log should see all {size} bytes"
    );
}

#[rstest]
#[timeout(Duration::from_secs(30))]
fn many_clients_each_get_their_own_answer(echo_lab: EchoLab) {
    const CLIENTS: u16 = 16;
    let outcomes = echo_lab.world.node("box").unwrap().block_on(|| async {
        let mut clients = tokio::task::JoinSet::new();
        for n in 0..CLIENTS {
            clients.spawn(async move {
                let payload = format!("client {n}").into_bytes();
                let local = addr(&format!("127.0.0.1:{}", 40_000 + n));
                (
                    n,
                    ask(local, addr(SERVER), &payload, Duration::from_secs(5)).await,
                )
            });
        }
        clients.join_all().await
    });
    for (n, outcome) in outcomes {
        let expected = Outcome::Reply {
            from: addr(SERVER),
            payload: format!("client {n}").into_bytes(),
        };
        assert_eq!(
            outcome.expect("ask() should not fail"),
            expected,
            "client {n} should get its own payload back"
        );
    }
    let mut sources: Vec<u16> = (0..CLIENTS)
        .map(|_| echo_lab.next_log_entry().0.port())
        .collect();
    sources.sort();
    assert_eq!(
        sources,
        (40_000..40_000 + CLIENTS).collect::<Vec<_>>(),
        "the log should show each client's own port"
    );
}

#[rstest]
#[timeout(Duration::from_secs(20))]
fn no_reply_is_an_outcome_reported_after_the_timeout(echo_lab: EchoLab) {
    // A server that receives but never answers: a socket nobody reads.
    let silent = echo_lab
        .world
        .node("box")
        .unwrap()
        .run(|| std::net::UdpSocket::bind("127.0.0.1:4001"))
        .unwrap();
    let timeout = Duration::from_millis(300);
    match echo_lab.ask(STORY_CLIENT, "127.0.0.1:4001", b"anyone?", timeout) {
        Outcome::NoReply { waited } => {
            assert!(
                waited >= timeout,
                "NoReply after {waited:?}: the client should wait the whole {timeout:?}"
            )
        }
        other => panic!(
            "nobody answers on 127.0.0.1:4001, so the outcome should be NoReply, got {other:?}"
        ),
    }
    drop(silent);
}
