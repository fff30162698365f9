//! The three ways of reading a conntrack table give the same entries: `/proc`, the
//! course's netlink reader (the fallback on kernels without the `/proc` file), and
//! conntrack-tools' `conntrack -L -o extended`.

netlab::sandbox!();

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use netlab::conntrack::{self, Source};
use netlab::{Topology, World};
use rstest::rstest;

/// `a` routes and NATs between `b` (10.0.0.2) and `c` (10.0.1.2); `c` listens on TCP 80.
fn world_with_flows() -> (World, Vec<TcpStream>) {
    let mut plan = Topology::new();
    plan.node("a")
        .address("eth0", "10.0.0.1/24")
        .address("eth1", "10.0.1.1/24")
        .forwarding();
    plan.node("b")
        .address("eth0", "10.0.0.2/24")
        .default_route("10.0.0.1");
    plan.node("c")
        .address("eth0", "10.0.1.2/24")
        .default_route("10.0.1.1");
    plan.veth(("a", "eth0"), ("b", "eth0"));
    plan.veth(("a", "eth1"), ("c", "eth0"));
    let world = World::up(&plan).unwrap();
    world
        .iptables_restore(
            "a",
            "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
             -A PREROUTING -p udp --dport 53 -j DNAT --to-destination 10.0.1.2:5353\n\
             -A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n",
        )
        .unwrap();
    let b = world.node("b").unwrap();
    b.run(|| UdpSocket::bind("10.0.0.2:4444")?.send_to(b"x", "10.0.0.1:53"))
        .unwrap();
    b.run(|| UdpSocket::bind("0.0.0.0:0")?.send_to(b"y", "10.0.1.2:9"))
        .unwrap();
    let listener = world
        .node("c")
        .unwrap()
        .run(|| TcpListener::bind("10.0.1.2:80"))
        .unwrap();
    let client = b
        .run(|| TcpStream::connect_timeout(&"10.0.1.2:80".parse().unwrap(), Duration::from_secs(3)))
        .unwrap();
    let (server, _) = listener.accept().unwrap();
    (world, vec![client, server])
}

/// A table's lines without what differs between two reads of the same moment: the
/// timeout (it ticks), `use=` (the reader's own reference), and `zone=0` (conntrack-tools
/// prints the zone only when it is not the default). Sorted: the order is the hash's.
fn comparable(table: &str) -> Vec<String> {
    let mut lines: Vec<String> = table
        .lines()
        .map(|line| {
            line.split_whitespace()
                .enumerate()
                .filter(|&(i, w)| i != 4 && !w.starts_with("use=") && w != "zone=0")
                .map(|(_, w)| w)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    lines.sort();
    lines
}

#[rstest]
#[timeout(Duration::from_secs(30))]
fn netlink_proc_and_conntrack_tool_agree() {
    netlab::require_sandbox();
    let (world, _connection) = world_with_flows();
    let a = world.node("a").unwrap();
    let proc = conntrack::read(a, Source::ProcFs).unwrap();
    let netlink = conntrack::read(a, Source::Netlink).unwrap();
    let tool = conntrack::read(a, Source::ConntrackTool).unwrap();
    assert!(
        proc.contains("ESTABLISHED") && proc.contains("dport=53") && proc.contains("dport=9 "),
        "the flows should be tracked in a:\n{proc}"
    );
    assert_eq!(comparable(&netlink), comparable(&proc), "netlink vs /proc");
    assert_eq!(
        comparable(&tool),
        comparable(&proc),
        "conntrack -L vs /proc"
    );
    // Formatted like /proc, space for space (the padded family and protocol columns).
    let masked = |table: &str| {
        let mut lines: Vec<String> = table
            .lines()
            .map(|line| {
                let mut nonempty = 0;
                line.split(' ')
                    .map(|w| {
                        if !w.is_empty() {
                            nonempty += 1;
                        }
                        match w {
                            _ if nonempty == 5 && !w.is_empty() => "TIMEOUT",
                            _ if w.starts_with("use=") => "use=",
                            _ => w,
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(masked(&netlink), masked(&proc));
}

#[rstest]
#[timeout(Duration::from_secs(30))]
fn world_conntrack_reads_proc_or_else_netlink() {
    netlab::require_sandbox();
    let (world, _connection) = world_with_flows();
    let a = world.node("a").unwrap();
    // Without NETLAB_CONNTRACK_SOURCE: /proc where the kernel has it, netlink otherwise.
    if std::env::var_os(conntrack::SOURCE_VARIABLE).is_none() {
        let (_, source) = conntrack::read_any(a).unwrap();
        let expected = if conntrack::kernel_has_procfs_table() == Some(false) {
            Source::Netlink
        } else {
            Source::ProcFs
        };
        assert_eq!(source, expected);
    }
    assert_eq!(
        comparable(&world.conntrack("a").unwrap()),
        comparable(&conntrack::read(a, Source::Netlink).unwrap())
    );
}
