//! Checks for exercise 7 — follow the skb.
//!
//! Two checks need no root: your [`hops`] gets a stream of events made by hand. The third runs
//! the story with the course's path tracer attached to every skb tracepoint (real root), hands
//! YOUR [`hops`] what the kernel reported, and looks for the story's five tuples in order, each
//! in the namespace where the article's author saw it — ending in the NO_SOCKET drop in dind2.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rstest::rstest;
use story::Story;

use crate::under_test::{format_hop_table, hops, Hop, PathTracer, Record};

netlab::sandbox!();

/// A decoded event, as the tracer would report it.
fn ev(
    time_ns: u64,
    skb: &str,
    netns: u32,
    event: &str,
    ifname: &str,
    src: &str,
    dst: &str,
) -> Record {
    let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    Record {
        time_ns,
        skb: skb.into(),
        netns,
        event: event.into(),
        ifname: ifname.into(),
        proto: "udp".into(),
        ip_proto: 17,
        src: Some(src.ip()),
        dst: Some(dst.ip()),
        sport: Some(src.port()),
        dport: Some(dst.port()),
        ..Record::default()
    }
}

fn summary(hops: &[Hop]) -> Vec<(u32, &str, Vec<&str>, Option<&str>)> {
    hops.iter()
        .map(|h| {
            (
                h.netns,
                h.tuple.as_str(),
                h.events.iter().map(String::as_str).collect(),
                h.drop_reason.as_deref(),
            )
        })
        .collect()
}

#[rstest]
fn one_skb_through_nat_makes_a_hop_per_namespace_and_tuple() {
    let (a, b) = ("172.17.0.2:34320", "192.168.0.239:4000");
    let masqueraded = "172.18.0.3:34320";
    let records = [
        ev(10, "0xa", 1, "net_dev_queue", "eth0", a, b),
        ev(20, "0xa", 1, "net_dev_xmit", "eth0", a, b),
        ev(30, "0xa", 2, "netif_rx", "veth-client", a, b),
        ev(40, "0xa", 2, "net_dev_queue", "eth0", masqueraded, b),
        ev(
            50,
            "0xa",
            3,
            "netif_receive_skb",
            "veth-dind2",
            masqueraded,
            b,
        ),
        ev(60, "0xa", 3, "consume_skb", "", masqueraded, b),
    ];
    let got = hops(&records);
    assert_eq!(
        summary(&got),
        vec![
            (1, "172.17.0.2:34320 > 192.168.0.239:4000", vec!["net_dev_queue@eth0", "net_dev_xmit@eth0"], None),
            (2, "172.17.0.2:34320 > 192.168.0.239:4000", vec!["netif_rx@veth-client"], None),
            (2, "172.18.0.3:34320 > 192.168.0.239:4000", vec!["net_dev_queue@eth0"], None),
            (3, "172.18.0.3:34320 > 192.168.0.239:4000", vec!["netif_receive_skb@veth-dind2", "consume_skb"], None),
        ],
        "one skb, one hop per (namespace, tuple) it was seen with; events as `tracepoint@interface`, \
         or just `tracepoint` without an interface"
    );
    assert_eq!(
        got.iter().map(|h| h.first_ns).collect::<Vec<_>>(),
        [10, 30, 40, 50],
        "first_ns is the time of a hop's first event"
    );
    assert!(
        got.iter().all(|h| h.skb == "0xa"),
        "every hop remembers its skb"
    );
}

#[rstest]
fn hops_are_ordered_in_time_and_a_drop_ends_its_hop() {
    let (p, q) = ("10.0.0.1:4000", "10.0.0.2:5000");
    let mut dropped = ev(50, "0xb", 7, "kfree_skb", "eth0", q, p);
    dropped.reason = Some("SKB_DROP_REASON_NO_SOCKET".into());
    // Given out of order, two skbs interleaved; then the address 0xa is reused by a new skb.
    let records = [
        dropped,
        ev(40, "0xa", 7, "consume_skb", "", p, q),
        ev(10, "0xa", 7, "net_dev_queue", "eth0", p, q),
        ev(20, "0xb", 7, "netif_rx", "eth0", q, p),
        ev(30, "0xa", 7, "net_dev_xmit", "eth0", p, q),
        ev(60, "0xa", 7, "net_dev_queue", "eth0", p, q),
    ];
    let got = hops(&records);
    assert_eq!(
        summary(&got),
        vec![
            (7, "10.0.0.1:4000 > 10.0.0.2:5000", vec!["net_dev_queue@eth0", "net_dev_xmit@eth0", "consume_skb"], None),
            (7, "10.0.0.2:5000 > 10.0.0.1:4000", vec!["netif_rx@eth0", "kfree_skb@eth0"], Some("NO_SOCKET")),
            (7, "10.0.0.1:4000 > 10.0.0.2:5000", vec!["net_dev_queue@eth0"], None),
        ],
        "events in time order, grouped per skb; kfree_skb sets the hop's drop_reason (short name) and, like \
         consume_skb, ends the skb: the same address afterwards is a new skb, hence a new hop"
    );
}

/// The story's path, as STORY.md tells it: (node, tuple), with `P` the port of the proxy's
/// upstream socket (whatever the kernel gave it). Each tuple is listed in every namespace
/// the skb carries it through — the hops of the table that must appear, in this order:
const STORY_PATH: &[(&str, &str)] = &[
    // 1. The client's original datagram, leaving the client.
    ("client", "172.17.0.2:34320 > 192.168.0.239:4000"),
    // 2. MASQUERADEd by dind2 as it leaves dind2's eth0 (POSTROUTING), and seen like that when
    //    it arrives in host through br-dind.
    ("dind2", "172.18.0.3:34320 > 192.168.0.239:4000"),
    ("host", "172.18.0.3:34320 > 192.168.0.239:4000"),
    // 3. The proxy's relay, from its upstream socket, leaving host and arriving in dind1.
    ("host", "172.18.0.1:P > 172.18.0.2:4000"),
    ("dind1", "172.18.0.1:P > 172.18.0.2:4000"),
    // 4. The server's answer, de-NATed by dind1 as it leaves dind1, back in host to the proxy.
    ("dind1", "172.18.0.2:4000 > 172.18.0.1:P"),
    ("host", "172.18.0.2:4000 > 172.18.0.1:P"),
    // 5. The proxy's answer from its LISTENING socket, leaving host and dropped in dind2.
    ("host", "172.18.0.1:4000 > 172.18.0.3:34320"),
    ("dind2", "172.18.0.1:4000 > 172.18.0.3:34320"),
];

/// Does `tuple` match `pattern` (with `P` standing for the proxy's port, learnt at first use)?
fn matches(pattern: &str, tuple: &str, port: &mut Option<String>) -> bool {
    if !pattern.contains(":P") {
        return pattern == tuple;
    }
    let (before, after) = pattern.split_once('P').unwrap();
    let Some(rest) = tuple.strip_prefix(before) else {
        return false;
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty()
        || rest[digits.len()..] != *after
        || port.as_ref().is_some_and(|p| *p != digits)
    {
        return false;
    }
    *port = Some(digits);
    true
}

#[rstest]
#[timeout(netlab::time_limit(90))]
fn the_story_s_five_tuples_appear_in_order_ending_in_the_drop() {
    netlab::require_root("the eBPF checks");
    let story = Story::reference(false).unwrap_or_else(|e| panic!("the story's world: {e:#}"));
    let mut tracer = PathTracer::start("udp and port 4000")
        .unwrap_or_else(|e| panic!("starting the course's path tracer: {e:#}"));
    let to = SocketAddr::new(story::HOST_LAN.parse::<IpAddr>().unwrap(), story::PORT);
    let outcome = story
        .client_ask(to, b"ping", Duration::from_secs(1))
        .unwrap();
    assert!(
        matches!(outcome, story::Outcome::NoReply { .. }),
        "the story's client should hear nothing; it got {outcome:?}"
    );

    let node_of = |netns: u32| {
        story
            .world
            .node_by_inode(netns.into())
            .map(|n| n.name.as_str())
    };
    let records: Vec<Record> = tracer
        .records(Duration::from_millis(300), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("reading the tracer's events: {e:#}"))
        .into_iter()
        .filter(|r| node_of(r.netns).is_some())
        .collect();
    drop(tracer);
    assert!(
        !records.is_empty(),
        "the path tracer saw no event of the story (filter `udp and port 4000`)"
    );

    let table = hops(&records);
    let printed = format_hop_table(&table, |netns| node_of(netns).map(str::to_string));
    println!("{printed}");

    // The story's hops, as a subsequence of the table: in order, in the right namespaces.
    let mut port = None;
    let mut found = Vec::new();
    let mut rest = table.iter().enumerate();
    for (node, pattern) in STORY_PATH {
        let hit = rest.by_ref().find(|(_, h)| {
            node_of(h.netns) == Some(*node) && matches(pattern, &h.tuple, &mut port)
        });
        match hit {
            Some((i, _)) => found.push(i + 1),
            None => panic!(
                "the hop table should show `{pattern}` in {node} after hops {found:?} (P = the proxy's upstream port{}); \
                 the story's path is, in order:\n{}\nyour hop table:\n{printed}",
                port.as_ref().map(|p| format!(", {p} here")).unwrap_or_default(),
                STORY_PATH.iter().map(|(n, t)| format!("  {n:<6} {t}")).collect::<Vec<_>>().join("\n")
            ),
        }
    }
    let last = &table[found[found.len() - 1] - 1];
    assert_eq!(
        last.drop_reason.as_deref(),
        Some("NO_SOCKET"),
        "the answer's last hop, in dind2, should end in kfree_skb with NO_SOCKET; your hop table:\n{printed}"
    );
    let drops: Vec<&Hop> = table.iter().filter(|h| h.drop_reason.is_some()).collect();
    assert_eq!(
        drops.len(),
        1,
        "only the answer is dropped in the story; your hop table:\n{printed}"
    );
}
