//! Checks for exercise 1 — a UDP echo server and client.
//!
//! Each check builds a private network namespace with only a loopback interface,
//! starts your echo server there on 127.0.0.1:4000, and talks to it with your client.
//! Nothing here can reach your real network.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use netlab::watchdog::{Heartbeat, Pulse, NEVER_YIELDS};
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

/// A payload as a learner can read it: its length, then its bytes as escaped text,
/// cut after 16 bytes — `23 bytes "where did my packet go?"`.
fn show(payload: &[u8]) -> String {
    const SHOWN: usize = 16;
    let text: String = payload
        .iter()
        .take(SHOWN)
        .flat_map(|b| b.escape_ascii())
        .map(char::from)
        .collect();
    let more = if payload.len() > SHOWN { "…" } else { "" };
    let unit = if payload.len() == 1 { "byte" } else { "bytes" };
    format!("{} {unit} \"{text}{more}\"", payload.len())
}

/// An outcome in words: `a reply from 127.0.0.1:4000: 4 bytes "ping"`.
fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Reply { from, payload } => format!("a reply from {from}: {}", show(payload)),
        Outcome::NoReply { waited } => format!("no reply (waited {waited:?})"),
    }
}

/// What differs between what was sent and what came back, in words.
fn difference(sent: &[u8], echoed: &[u8]) -> String {
    if echoed.len() < sent.len() {
        return format!(
            "sent {}, got only {} back: the end was cut off (a receive buffer smaller than the datagram truncates it; size yours for 65507 bytes)",
            show(sent),
            show(echoed)
        );
    }
    if echoed.len() > sent.len() {
        return format!(
            "sent {}, got {} back: more than was sent (answer with exactly the bytes received: &buffer[..len])",
            show(sent),
            show(echoed)
        );
    }
    let reversed: Vec<u8> = sent.iter().rev().copied().collect();
    if echoed == reversed {
        return format!(
            "sent {}, got the same {} bytes back in reverse order: {}",
            show(sent),
            sent.len(),
            show(echoed)
        );
    }
    let at = sent
        .iter()
        .zip(echoed)
        .position(|(a, b)| a != b)
        .unwrap_or(0);
    format!(
        "sent {}, got {} back: the same length, but byte {at} differs (sent {:#04x}, got {:#04x})",
        show(sent),
        show(echoed),
        sent[at],
        echoed[at]
    )
}

/// A namespace called `box` with your echo server running in it, the server's log, and
/// a heartbeat on your server's runtime (to tell "no reply" from "never yields").
struct EchoLab {
    /// Always `Some` until dropped (see `Drop`).
    world: Option<World>,
    log: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    heartbeat: Heartbeat,
}

impl EchoLab {
    fn world(&self) -> &World {
        self.world
            .as_ref()
            .expect("the world lives as long as the lab")
    }

    /// Run your client inside `box`: send `payload` from `local` to the server.
    fn ask(&self, local: &str, server: &str, payload: &[u8], timeout: Duration) -> Outcome {
        let (local, server) = (addr(local), addr(server));
        let outcome = self
            .world()
            .node("box")
            .expect("the lab has a node called box")
            .block_on(|| ask(local, server, payload, timeout))
            .expect("ask() returned an error; a missing reply should be Ok(Outcome::NoReply)");
        if matches!(outcome, Outcome::NoReply { .. }) && self.heartbeat.check() == Pulse::Stuck {
            // The same words as in `Drop`: one mistake, one message.
            panic!("{NEVER_YIELDS}");
        }
        outcome
    }

    /// The next line of the server's log: the source it saw, and the payload.
    fn next_log_entry(&self) -> (SocketAddr, Vec<u8>) {
        self.log
            .recv_timeout(Duration::from_secs(5))
            .expect("the server never called on_datagram: it should log every datagram it receives")
    }
}

impl Drop for EchoLab {
    /// Stopping the world waits for your server to notice the stop signal, which a server
    /// that never yields cannot do: then leave it behind (the test process exits soon
    /// after, and its namespaces with it) and say why, instead of hanging until the timeout.
    fn drop(&mut self) {
        let world = self.world.take();
        if self.heartbeat.check() == Pulse::Stuck {
            std::mem::forget(world);
            if !std::thread::panicking() {
                panic!("{NEVER_YIELDS}");
            }
        }
    }
}

#[fixture]
fn echo_lab() -> EchoLab {
    netlab::require_sandbox();
    let mut plan = Topology::new();
    plan.node("box");
    let mut world = World::up(&plan).expect("building the private namespace");
    let (log_tx, log) = mpsc::channel();
    let (heartbeat_tx, heartbeat) = mpsc::channel();
    world
        .spawn_service("box", "echo-server", move || {
            // Beside your server, on the same runtime: see netlab::watchdog.
            let _ = heartbeat_tx.send(Heartbeat::start());
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
    let heartbeat = heartbeat
        .recv()
        .expect("the heartbeat starts with the server");
    EchoLab {
        world: Some(world),
        log,
        heartbeat,
    }
}

#[rstest]
#[timeout(netlab::time_limit(20))]
fn echoes_a_datagram_and_logs_its_source(echo_lab: EchoLab) {
    let outcome = echo_lab.ask(
        STORY_CLIENT,
        SERVER,
        b"where did my packet go?",
        Duration::from_secs(5),
    );
    let sent = b"where did my packet go?";
    let expected = Outcome::Reply {
        from: addr(SERVER),
        payload: sent.to_vec(),
    };
    assert!(
        outcome == expected,
        "the client should get its own bytes back, from the server's address:\n  expected {}\n  got      {}",
        describe(&expected),
        describe(&outcome)
    );
    let (source, payload) = echo_lab.next_log_entry();
    assert_eq!(
        source,
        addr(STORY_CLIENT),
        "the server should log the client's address and fixed port 34320"
    );
    assert!(
        payload == sent,
        "the server should log the payload it received: {}, it logged {}",
        show(sent),
        show(&payload)
    );
}

#[rstest]
#[case::empty(0)]
#[case::one_byte(1)]
#[case::one_ethernet_frame(1472)]
#[case::the_largest_ipv4_datagram(65_507)]
#[timeout(netlab::time_limit(20))]
fn a_payload_of_any_size_comes_back_intact(echo_lab: EchoLab, #[case] size: usize) {
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let outcome = echo_lab.ask("127.0.0.1:0", SERVER, &payload, Duration::from_secs(5));
    match outcome {
        Outcome::Reply {
            payload: echoed, ..
        } => {
            assert!(echoed == payload, "{}", difference(&payload, &echoed))
        }
        other => panic!(
            "sent {} and expected them back, got {}",
            show(&payload),
            describe(&other)
        ),
    }
    assert_eq!(
        echo_lab.next_log_entry().1.len(),
        size,
        "the server's log should see all {size} bytes"
    );
}

#[rstest]
#[timeout(netlab::time_limit(30))]
fn many_clients_each_get_their_own_answer(echo_lab: EchoLab) {
    const CLIENTS: u16 = 16;
    let outcomes = echo_lab.world().node("box").unwrap().block_on(|| async {
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
        let outcome = outcome.expect("ask() should not fail");
        assert!(
            outcome == expected,
            "client {n} should get its own payload back:\n  expected {}\n  got      {}",
            describe(&expected),
            describe(&outcome)
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
#[timeout(netlab::time_limit(20))]
fn no_reply_is_an_outcome_reported_after_the_timeout(echo_lab: EchoLab) {
    // A server that receives but never answers: a socket nobody reads.
    let silent = echo_lab
        .world()
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
            "nobody answers on 127.0.0.1:4001, so the outcome should be NoReply, got {}",
            describe(&other)
        ),
    }
    drop(silent);
}
