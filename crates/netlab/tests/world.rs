//! The lab's primitives against the real kernel: namespaces, cables, teardown.

netlab::sandbox!();

use std::net::UdpSocket;
use std::time::Duration;

use netlab::{Netns, Topology, World};
use rstest::rstest;

fn two_nodes() -> Topology {
    let mut plan = Topology::new();
    plan.node("a").address("eth0", "10.0.0.1/24").forwarding();
    plan.node("b")
        .address("eth0", "10.0.0.2/24")
        .default_route("10.0.0.1");
    plan.veth(("a", "eth0"), ("b", "eth0"));
    plan
}

#[rstest]
#[timeout(Duration::from_secs(20))]
fn the_sandbox_is_not_the_namespace_we_started_in() {
    let sandbox = netlab::require_sandbox();
    assert_ne!(sandbox.original_netns, sandbox.sandbox_netns);
}

#[rstest]
#[timeout(Duration::from_secs(20))]
fn a_datagram_crosses_the_cable() {
    netlab::require_sandbox();
    let world = World::up(&two_nodes()).unwrap();
    let receiver = world
        .node("b")
        .unwrap()
        .run(|| UdpSocket::bind("10.0.0.2:5000"))
        .unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    world
        .node("a")
        .unwrap()
        .run(|| UdpSocket::bind("10.0.0.1:0")?.send_to(b"hi", "10.0.0.2:5000"))
        .unwrap();
    let mut buffer = [0u8; 16];
    let (len, from) = receiver.recv_from(&mut buffer).unwrap();
    assert_eq!(&buffer[..len], b"hi");
    assert_eq!(from.ip().to_string(), "10.0.0.1");
}

#[rstest]
#[timeout(Duration::from_secs(20))]
fn every_node_is_its_own_namespace_and_dies_with_the_world() {
    let sandbox = netlab::require_sandbox();
    let world = World::up(&two_nodes()).unwrap();
    let inodes: Vec<u64> = world.nodes().iter().map(|n| n.inode()).collect();
    assert_ne!(inodes[0], inodes[1]);
    assert!(!inodes.contains(&sandbox.original_netns) && !inodes.contains(&sandbox.sandbox_netns));
    let probe = Netns::open(&world.node("a").unwrap().path()).unwrap();
    let links = probe.read_proc_net("dev").unwrap();
    assert!(links.contains("eth0"), "{links}");
    drop(world);
    // Our probe still holds namespace `a`; its veth dies with `b`, which the kernel
    // dismantles in the background (cleanup_net): poll, with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let links = probe.read_proc_net("dev").unwrap();
        if !links.contains("eth0") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "eth0 still exists 10 s after the world was dropped:\n{links}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[rstest]
#[timeout(Duration::from_secs(20))]
fn iptables_rules_and_conntrack_are_per_node() {
    netlab::require_sandbox();
    let world = World::up(&two_nodes()).unwrap();
    world
        .iptables_restore("a", "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o eth0 -j MASQUERADE\nCOMMIT\n")
        .unwrap();
    world
        .node("b")
        .unwrap()
        .run(|| UdpSocket::bind("10.0.0.2:0")?.send_to(b"x", "10.0.0.1:9"))
        .unwrap();
    let table = world.conntrack("a").unwrap();
    assert!(
        table.contains("src=10.0.0.2 dst=10.0.0.1") && table.contains("dport=9"),
        "{table}"
    );
    assert_eq!(world.conntrack("b").unwrap().trim(), "");
}
