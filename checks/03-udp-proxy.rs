//! Checks for exercise 3 — Docker's NAT and the userland UDP proxy.
//!
//! Each check builds the story's world (the course's answer to exercise 2), loads
//! *your* NAT rules into host, dind1 and dind2, starts the course's echo server in
//! `server`, and a proxy in `host` — yours, or Docker 20.10's own `docker-proxy`. Then
//! the story's client sends one datagram and the check reads what happened from the
//! kernel: the server's log, the client's outcome, dind2's conntrack table.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use netlab::watchdog::{Heartbeat, Pulse, NEVER_YIELDS};
use rstest::rstest;
use story::{Outcome, Story};

use crate::under_test::{docker_nat_rules, run_udp_proxy, Publish};

netlab::sandbox!();

/// Which userland proxy runs in `host`.
#[derive(Debug, Clone, Copy)]
enum Proxy {
    Yours,
    DockerProxy2010,
}

/// What Docker's daemon loads before any network's rules: it sets the `filter` table's
/// FORWARD policy to DROP (since Docker 1.13), so that only what a network's rules
/// ACCEPT is forwarded. Loaded first, with your rules on top: a `*filter` section of
/// yours replaces it (iptables-restore replaces each table it names), and a ruleset
/// without one leaves every forwarded packet dropped — as on a real docker host.
const DOCKERD_FILTER_DEFAULTS: &str =
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";

/// Your rules, for the three docker networks of the story, over Docker's defaults.
fn your_nat_rules() -> story::NatRules {
    story::NatRules::from_fn(|network| {
        let published: Vec<Publish> = network
            .published
            .iter()
            .map(|&(protocol, host_port, container)| Publish {
                protocol,
                host_port,
                container,
            })
            .collect();
        format!(
            "{DOCKERD_FILTER_DEFAULTS}{}",
            docker_nat_rules(network.bridge, network.subnet, &published)
        )
    })
}

/// A node's `filter` table, as `iptables-save` reads it back from the kernel.
fn filter_table(story: &Story, node: &str) -> String {
    let output = story
        .world
        .node(node)
        .unwrap()
        .command("iptables-save")
        .args(["-t", "filter"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run iptables-save in {node}: {e}"));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The story running with a proxy in `host`, and — for your proxy — a heartbeat on its
/// runtime, to tell "nothing relayed" from "your proxy never yields" (netlab::watchdog).
struct Lab {
    /// Always `Some` until dropped (see `Drop`).
    story: Option<Story>,
    heartbeat: Option<Heartbeat>,
}

impl std::ops::Deref for Lab {
    type Target = Story;
    fn deref(&self) -> &Story {
        self.story
            .as_ref()
            .expect("the story lives as long as the lab")
    }
}

impl Lab {
    /// Is your proxy holding its runtime's only thread?
    fn proxy_never_yields(&self) -> bool {
        self.heartbeat
            .as_ref()
            .is_some_and(|heartbeat| heartbeat.check() == Pulse::Stuck)
    }

    /// The server's next log entry, as [`Story::server_log`]; when there is none because
    /// your proxy never yields, say that.
    fn server_log(&self, timeout: Duration) -> Option<(SocketAddr, Vec<u8>)> {
        let entry = Story::server_log(self, timeout);
        if entry.is_none() && self.proxy_never_yields() {
            panic!("{}", NEVER_YIELDS.replace("server", "proxy"));
        }
        entry
    }
}

impl Drop for Lab {
    /// Stopping the world waits for your proxy to notice the stop signal, which a proxy
    /// that never yields cannot do: then leave it behind (the test process exits soon
    /// after, with its namespaces) and say why, instead of hanging until the timeout.
    fn drop(&mut self) {
        let story = self.story.take();
        if self.proxy_never_yields() {
            std::mem::forget(story);
            if !std::thread::panicking() {
                panic!("{}", NEVER_YIELDS.replace("server", "proxy"));
            }
        }
    }
}

fn story_with(proxy: Proxy) -> Lab {
    netlab::require_sandbox();
    let docker_proxy = match proxy {
        Proxy::DockerProxy2010 => Some(story::docker_proxy_path().unwrap_or_else(|| {
            netlab::skip!("Docker 20.10's docker-proxy is not in .course/tools/: run `cargo xtask setup` (Debian/Ubuntu), or set DOCKER_PROXY=/path/to/docker-proxy")
        })),
        Proxy::Yours => None,
    };
    let mut story = Story::up(&your_nat_rules(), false)
        .unwrap_or_else(|e| panic!("the story's world with your NAT rules: {e:#}"));
    let mut heartbeat = None;
    match docker_proxy {
        Some(path) => {
            story
                .start_docker_proxy(&path)
                .unwrap_or_else(|e| panic!("starting {}: {e:#}", path.display()));
        }
        None => {
            let (heartbeat_tx, heartbeat_rx) = std::sync::mpsc::channel();
            story
                .start_proxy(move |listener, backend| {
                    // Called inside the proxy's runtime: the heartbeat runs beside it.
                    let _ = heartbeat_tx.send(Heartbeat::start());
                    run_udp_proxy(listener, backend)
                })
                .unwrap_or_else(|e| panic!("your proxy should start: {e:#}"));
            heartbeat = heartbeat_rx.recv_timeout(Duration::from_secs(10)).ok();
        }
    }
    Lab {
        story: Some(story),
        heartbeat,
    }
}

/// An outcome in words: `a reply from 172.18.0.2:4000: 4 bytes "ping"`.
fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Reply { from, payload } => {
            let text: String = payload
                .iter()
                .flat_map(|b| b.escape_ascii())
                .map(char::from)
                .collect();
            format!("a reply from {from}: {} bytes \"{text}\"", payload.len())
        }
        Outcome::NoReply { waited } => format!("no reply (waited {waited:?})"),
    }
}

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip.parse().unwrap(), port))
}

#[rstest]
#[case::with_your_proxy(Proxy::Yours)]
#[case::with_docker_s_own_proxy(Proxy::DockerProxy2010)]
#[timeout(netlab::time_limit(30))]
fn the_story_reproduced_the_server_answers_the_client_never_hears(#[case] proxy: Proxy) {
    let story = story_with(proxy);
    let outcome = story
        .client_ask(
            at(story::HOST_LAN, story::PORT),
            b"ping",
            Duration::from_secs(1),
        )
        .unwrap();

    // 1. The datagram reached the server — relayed by the proxy, from the host's bridge.
    let (source, payload) = story
        .server_log(Duration::from_secs(2))
        .expect(
            "the server never received the client's datagram. The proxy should relay it to 172.18.0.2:4000 — \
             and dind1's FORWARD chain may drop it on its way to the server (its policy is DROP, as Docker sets \
             it: your filter table must ACCEPT what goes to a published port), as dind2's may drop it on its \
             way out of the client's container (ACCEPT what leaves the bridge: `-i docker0 ! -o docker0`)",
        );
    assert_eq!(payload, b"ping");
    assert_eq!(
        source.ip().to_string(),
        story::HOST_BRIDGE_ADDRESS,
        "the server should see the proxy (172.18.0.1) as the sender: the datagram came from the bridge, so \
         the host's DNAT rule must NOT apply to it (`! -i br-dind`), and the proxy relays it"
    );

    // 2. The server answered, yet the client got nothing.
    assert!(
        matches!(outcome, Outcome::NoReply { .. }),
        "the client should hear nothing — that is the bug of the story; it got {}",
        describe(&outcome)
    );

    // 3. dind2's conntrack tells why: the client's flow still waits for an answer from
    //    192.168.0.239:4000, and the answer that came is a flow of its own, from the
    //    bridge address and the proxy's LISTENING port 4000.
    let table = story.world.conntrack("dind2").unwrap();
    let request = table
        .lines()
        .find(|l| l.contains("src=172.17.0.2 dst=192.168.0.239 sport=34320 dport=4000"))
        .unwrap_or_else(|| {
            panic!("dind2 should track the client's datagram; its conntrack table:\n{table}")
        });
    assert!(
        request.contains("[UNREPLIED]"),
        "the client's flow should never see its answer:\n{request}"
    );
    assert!(
        table.lines().any(|l| l.contains("src=172.18.0.1 dst=172.18.0.3 sport=4000 dport=34320")),
        "the answer should arrive in dind2 from 172.18.0.1:4000 — sent from the proxy's listening socket — \
         and start a flow of its own; dind2's conntrack table:\n{table}"
    );
}

#[rstest]
#[timeout(netlab::time_limit(30))]
fn talking_to_dind1_directly_works_so_the_proxy_path_is_to_blame() {
    let story = story_with(Proxy::Yours);
    let outcome = story
        .client_ask(
            at(story::DIND1, story::PORT),
            b"ping",
            Duration::from_secs(2),
        )
        .unwrap();
    let received = story.server_log(Duration::from_secs(2));
    if received.is_none() {
        let filter = filter_table(&story, "dind1");
        panic!(
            "the server never received the datagram sent to 172.18.0.2:4000: dind1 should DNAT it to \
             172.17.0.2:4000 and FORWARD it there — but dind1's FORWARD chain drops it (its policy is DROP, as \
             Docker sets it): your filter table must ACCEPT packets to a published port \
             (`-A DOCKER -d CONTAINER/32 ! -i BRIDGE -o BRIDGE -p udp -m udp --dport PORT -j ACCEPT`, \
             reached from FORWARD) and the answers (`--ctstate RELATED,ESTABLISHED`). dind1's filter table:\n{filter}"
        );
    }
    assert!(
        outcome
            == Outcome::Reply {
                from: at(story::DIND1, story::PORT),
                payload: b"ping".to_vec()
            },
        "sent to 172.18.0.2:4000, the datagram is DNATed by dind1 to the server, and conntrack reverses \
         both NATs on the answer: the client should hear 4 bytes \"ping\" from 172.18.0.2:4000, got {}",
        describe(&outcome)
    );
    let (source, _) = received.expect("checked above");
    assert_eq!(
        source,
        at(story::DIND2, story::CLIENT_PORT),
        "the server should see dind2's address (MASQUERADE kept port 34320)"
    );
}

#[rstest]
#[timeout(netlab::time_limit(30))]
fn your_proxy_keeps_one_upstream_socket_per_client() {
    let story = story_with(Proxy::Yours);
    // dind2 sits on the bridge, so its datagrams to the host's port 4000 reach the proxy:
    // twice from port 5001 (one client), once from port 5002 (another client).
    let dind2 = story.world.node("dind2").unwrap();
    let mut upstream_ports = Vec::new();
    for local_port in [5001, 5001, 5002] {
        dind2
            .run(|| {
                std::net::UdpSocket::bind(at(story::DIND2, local_port))?
                    .send_to(b"hello", at(story::HOST_LAN, story::PORT))
            })
            .unwrap();
        let (source, _) = story.server_log(Duration::from_secs(2)).unwrap_or_else(|| {
            panic!(
                "the server never received the datagram from 172.18.0.3:{local_port}: the proxy should relay it \
                 to 172.18.0.2:4000, and dind1's FORWARD chain (policy DROP) must let it through to the server"
            )
        });
        assert_eq!(
            source.ip().to_string(),
            story::HOST_BRIDGE_ADDRESS,
            "datagrams from the bridge must reach the server through the proxy (source 172.18.0.1), not the DNAT rule"
        );
        upstream_ports.push(source.port());
    }
    assert_eq!(upstream_ports[0], upstream_ports[1], "the same client should be relayed through the same upstream socket (ports seen: {upstream_ports:?})");
    assert_ne!(
        upstream_ports[0], upstream_ports[2],
        "another client should get an upstream socket of its own (ports seen: {upstream_ports:?})"
    );
}
