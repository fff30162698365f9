//! Checks for exercise 5 — a packet-drop tracer.
//!
//! Two checks need no root: your [`reason_name`] is compared with the running kernel's BTF
//! for every drop reason it has, and your [`tuple`] with events made by hand.
//!
//! Three checks load YOUR kfree_skb program into the kernel (real root only: eBPF is refused
//! inside user namespaces) and make real drops happen in namespaces of their own, then look for
//! them among the events your program reported — filtered by those namespaces' inodes, so
//! checks running side by side never see each other's drops:
//! - a UDP datagram to a closed port (NO_SOCKET);
//! - a UDP datagram hitting an nftables `drop` rule (NETFILTER_DROP);
//! - the story itself: the proxy's answer, dropped in dind2.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use rstest::rstest;
use story::Story;

use crate::under_test::{reason_name, tuple, DropTracer, Dropped};

netlab::sandbox!();

const STUB_HINT: &str =
    "fill in the kfree_skb program in exercises/05-drop-tracer/ebpf/src/main.rs: \
read the skb (argument 0) and the reason (argument 2), skip SKB_CONSUMED, read the namespace, \
addresses and ports with the offsets in CONFIG, and send the Event";

fn start_tracer() -> DropTracer {
    netlab::require_root("the eBPF checks");
    DropTracer::start().unwrap_or_else(|e| panic!("loading your kfree_skb program failed: {e:#}"))
}

/// Polls `tracer` until `wanted` is among the drops in the namespaces `inodes`, or `within`
/// passes. Returns it, or fails with everything that was seen.
fn wait_for_drop(
    tracer: &mut DropTracer,
    inodes: &[u64],
    within: Duration,
    what: &str,
    wanted: impl Fn(&Dropped) -> bool,
) -> Dropped {
    let deadline = Instant::now() + within;
    let (mut total, mut ours) = (0usize, Vec::new());
    while Instant::now() < deadline {
        let drops = tracer
            .drops(Duration::from_millis(200))
            .unwrap_or_else(|e| panic!("reading your program's events: {e:#}"));
        total += drops.len();
        for drop in drops {
            if inodes.contains(&u64::from(drop.netns)) {
                if wanted(&drop) {
                    return drop;
                }
                ours.push(drop);
            }
        }
    }
    if total == 0 {
        panic!("your kfree_skb program reported no drop at all in {within:?}, although this check just made one happen: {STUB_HINT}");
    }
    let seen: Vec<String> = ours.iter().map(|d| format!("  {d}")).collect();
    panic!(
        "expected {what}; your program reported {total} drop(s), {} of them in this check's namespaces {inodes:?}:\n{}",
        ours.len(),
        if seen.is_empty() { "  (none: is the netns inode read from skb->dev->nd_net.net->ns.inum?)".to_string() } else { seen.join("\n") }
    )
}

/// A fresh namespace with `lo` up, and `setup` commands (`program args…`) run inside it.
fn namespace(setup: &[&[&str]]) -> netlab::Netns {
    let ns = netlab::Netns::new().expect("a fresh network namespace");
    for command in [&["ip", "link", "set", "lo", "up"][..]].iter().chain(setup) {
        let status = ns.command(command[0]).args(&command[1..]).status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "`{}` failed in the check's namespace: {status:?}",
            command.join(" ")
        );
    }
    ns
}

/// Sends one datagram from a socket bound to 127.0.0.1 inside `ns`; returns its source address.
fn send_in(ns: &netlab::Netns, to: &str) -> SocketAddr {
    ns.run(|| {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.send_to(b"knock knock", to)?;
        socket.local_addr()
    })
    .expect("sending a datagram inside the check's namespace")
}

#[rstest]
fn reason_names_come_from_the_running_kernel_s_btf() {
    let btf = tracer::btf::Btf::from_file(tracer::btf::VMLINUX_BTF)
        .unwrap_or_else(|e| netlab::skip!("cannot read the kernel's BTF: {e:#}"));
    let reference = tracer::btf::drop_reasons(&btf).expect("this kernel has drop reasons");
    let mut checked = 0;
    for value in 0..1024 {
        let Some(full) = reference.full_name(value) else {
            continue;
        };
        let expected = full.strip_prefix("SKB_DROP_REASON_").unwrap_or(full);
        let got = reason_name(&btf, value)
            .unwrap_or_else(|e| panic!("reason_name(btf, {value}) failed: {e:#}"));
        assert_eq!(
            got, expected,
            "reason {value} is {full} in this kernel's `enum skb_drop_reason`"
        );
        checked += 1;
    }
    assert!(checked > 10, "this kernel should have many drop reasons");
    let unknown = 100_000;
    assert_eq!(
        reason_name(&btf, unknown).unwrap_or_else(|e| panic!("reason_name(btf, {unknown}) failed: {e:#}")),
        format!("UNKNOWN({unknown})"),
        "a value the enum does not have is UNKNOWN(<value>), not an error: a newer kernel may add reasons"
    );
}

#[rstest]
fn an_event_s_tuple_is_printed_from_its_bytes() {
    let mut ev = tracer_common::Event {
        l3: 4,
        l4: 17,
        sport: 4000,
        dport: 34320,
        ..Default::default()
    };
    ev.saddr[..4].copy_from_slice(&[172, 18, 0, 1]);
    ev.daddr[..4].copy_from_slice(&[172, 18, 0, 3]);
    assert_eq!(
        tuple(&ev),
        "172.18.0.1:4000 > 172.18.0.3:34320",
        "a UDP event: addresses in network byte order, ports in host order"
    );
    ev.l4 = 1;
    assert_eq!(
        tuple(&ev),
        "172.18.0.1 > 172.18.0.3",
        "an ICMP event has no ports"
    );
    ev.l3 = 0;
    assert_eq!(
        tuple(&ev),
        "-",
        "an event without an IPv4 header (l3 = 0) has no tuple"
    );
}

#[rstest]
#[timeout(netlab::time_limit(60))]
fn a_datagram_to_a_closed_port_is_dropped_with_no_socket() {
    let mut tracer = start_tracer();
    let ns = namespace(&[]);
    let from = send_in(&ns, "127.0.0.1:9");
    let expected = format!("{from} > 127.0.0.1:9");
    let drop = wait_for_drop(
        &mut tracer,
        &[ns.inode()],
        Duration::from_secs(5),
        &format!("the datagram {expected} dropped"),
        |d| d.tuple == expected,
    );
    assert_eq!(
        drop.reason, "NO_SOCKET",
        "nothing listens on port 9 in a fresh namespace: the reason is NO_SOCKET ({drop})"
    );
}

#[rstest]
#[timeout(netlab::time_limit(60))]
fn a_datagram_hitting_a_firewall_drop_rule_is_dropped_by_netfilter() {
    let mut tracer = start_tracer();
    let ns = namespace(&[
        &["nft", "add", "table", "inet", "course"],
        &[
            "nft",
            "add",
            "chain",
            "inet",
            "course",
            "input",
            "{ type filter hook input priority 0; }",
        ],
        &[
            "nft", "add", "rule", "inet", "course", "input", "udp", "dport", "4002", "drop",
        ],
    ]);
    let from = send_in(&ns, "127.0.0.1:4002");
    let expected = format!("{from} > 127.0.0.1:4002");
    let drop = wait_for_drop(
        &mut tracer,
        &[ns.inode()],
        Duration::from_secs(5),
        &format!("the datagram {expected} dropped"),
        |d| d.tuple == expected,
    );
    assert_eq!(
        drop.reason, "NETFILTER_DROP",
        "an nftables `drop` rule frees the skb with reason NETFILTER_DROP ({drop})"
    );
}

#[rstest]
#[timeout(netlab::time_limit(60))]
fn in_the_story_the_answer_is_dropped_in_dind2_with_no_socket() {
    let mut tracer = start_tracer();
    let story = Story::reference(false).unwrap_or_else(|e| panic!("the story's world: {e:#}"));
    let to = SocketAddr::new(story::HOST_LAN.parse().unwrap(), story::PORT);
    let outcome = story
        .client_ask(to, b"ping", Duration::from_secs(1))
        .unwrap();
    assert!(
        matches!(outcome, story::Outcome::NoReply { .. }),
        "the story's client should hear nothing; it got {outcome:?}"
    );

    let inodes: Vec<u64> = story.world.nodes().iter().map(|n| n.inode()).collect();
    let dind2 = story.world.node("dind2").unwrap().inode();
    let expected = format!(
        "{}:{} > {}:{}",
        story::HOST_BRIDGE_ADDRESS,
        story::PORT,
        story::DIND2,
        story::CLIENT_PORT
    );
    let drop = wait_for_drop(
        &mut tracer,
        &inodes,
        Duration::from_secs(5),
        &format!("the proxy's answer {expected} dropped in dind2"),
        |d| d.tuple == expected && d.ip_proto == 17,
    );
    assert_eq!(
        u64::from(drop.netns),
        dind2,
        "the answer should be dropped in dind2 (netns {dind2}): {drop}"
    );
    assert_eq!(drop.reason, "NO_SOCKET", "no socket on 172.18.0.3:34320, and conntrack could not turn it back into the client's flow: {drop}");
}
