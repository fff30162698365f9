//! Checks for exercise 2 — the world.
//!
//! Each check builds your topology for real, in namespaces of a private sandbox, and
//! measures it: which namespaces exist, which addresses the kernel reports, and whether
//! a UDP datagram sent from one node arrives at another, and from which source.

use std::net::UdpSocket;
use std::time::Duration;

use netlab::World;
use rstest::{fixture, rstest};

use crate::under_test::story_world;

netlab::sandbox!();

const NODES: [&str; 6] = ["host", "dind1", "dind2", "server", "client", "peer"];

#[fixture]
fn world() -> World {
    netlab::require_sandbox();
    World::up(&story_world())
        .unwrap_or_else(|error| panic!("your topology could not be built: {error:#}"))
}

/// The IPv4 addresses the kernel reports for a node, as `address/prefix`.
fn addresses_of(world: &World, node: &str) -> Vec<String> {
    let output = world
        .node(node)
        .unwrap()
        .command("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .expect("running ip");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            line.split_whitespace()
                .skip_while(|w| *w != "inet")
                .nth(1)
                .map(str::to_string)
        })
        .collect()
}

#[rstest]
#[timeout(netlab::time_limit(30))]
fn every_node_is_a_namespace_of_its_own(world: World) {
    let sandbox = netlab::require_sandbox();
    let mut names: Vec<&str> = world.nodes().iter().map(|n| n.name.as_str()).collect();
    names.sort();
    let mut expected = NODES.to_vec();
    expected.sort();
    assert_eq!(
        names, expected,
        "the world should have exactly the story's six nodes"
    );
    let mut inodes: Vec<u64> = world.nodes().iter().map(|n| n.inode()).collect();
    inodes.sort();
    inodes.dedup();
    assert_eq!(
        inodes.len(),
        6,
        "each node should be a network namespace of its own"
    );
    for node in world.nodes() {
        assert_ne!(
            node.inode(),
            sandbox.original_netns,
            "{} must not be the machine's root namespace",
            node.name
        );
    }
}

#[rstest]
#[case::host("host", &["192.168.0.239/24", "172.18.0.1/16"])]
#[case::dind1("dind1", &["172.18.0.2/16", "172.17.0.1/16"])]
#[case::dind2("dind2", &["172.18.0.3/16", "172.17.0.1/16"])]
#[case::server("server", &["172.17.0.2/16"])]
#[case::client("client", &["172.17.0.2/16"])]
#[case::peer("peer", &["192.168.0.10/24"])]
#[timeout(netlab::time_limit(30))]
fn every_node_has_the_story_addresses(world: World, #[case] node: &str, #[case] expected: &[&str]) {
    let mut found = addresses_of(&world, node);
    found.retain(|a| a != "127.0.0.1/8");
    found.sort();
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(
        found, expected,
        "the IPv4 addresses of {node}, as the kernel reports them"
    );
}

/// Send one datagram from `from` to `to_address`:7777, received by a socket in `to`.
/// Returns the source address the receiver saw, or None if nothing arrived.
fn probe(world: &World, from: &str, to: &str, to_address: &str) -> Option<String> {
    let target = format!("{to_address}:7777");
    let receiver = world
        .node(to)
        .unwrap()
        .run(|| UdpSocket::bind(&target))
        .unwrap_or_else(|e| {
            panic!("cannot bind {target} in {to} ({e}): {to} should own the address {to_address}")
        });
    receiver
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    world
        .node(from)
        .unwrap()
        .run(|| UdpSocket::bind("0.0.0.0:0")?.send_to(b"probe", &target))
        .unwrap_or_else(|e| panic!("{from} cannot send to {target}: {e} (is there a route?)"));
    let mut buffer = [0u8; 16];
    receiver
        .recv_from(&mut buffer)
        .ok()
        .map(|(_, source)| source.ip().to_string())
}

#[rstest]
#[case::client_to_its_dind("client", "dind2", "172.17.0.1", "172.17.0.2")]
#[case::server_to_its_dind("server", "dind1", "172.17.0.1", "172.17.0.2")]
#[case::dind1_to_the_host_bridge("dind1", "host", "172.18.0.1", "172.18.0.2")]
#[case::dind2_to_the_host_bridge("dind2", "host", "172.18.0.1", "172.18.0.3")]
#[case::dind2_to_dind1_across_the_bridge("dind2", "dind1", "172.18.0.2", "172.18.0.3")]
#[case::peer_to_the_host_on_the_lan("peer", "host", "192.168.0.239", "192.168.0.10")]
#[case::host_to_the_peer("host", "peer", "192.168.0.10", "192.168.0.239")]
#[case::client_through_dind2_to_the_host("client", "host", "192.168.0.239", "172.17.0.2")]
#[case::server_through_dind1_to_the_host("server", "host", "172.18.0.1", "172.17.0.2")]
#[timeout(netlab::time_limit(30))]
fn the_story_paths_carry_datagrams(
    world: World,
    #[case] from: &str,
    #[case] to: &str,
    #[case] to_address: &str,
    #[case] expected_source: &str,
) {
    let source = probe(&world, from, to, to_address);
    assert_eq!(
        source.as_deref(),
        Some(expected_source),
        "a datagram from {from} to {to_address} should arrive in {to} with source {expected_source} \
         (no NAT yet: that is exercise 3). None means it never arrived: check addresses, bridge ports, \
         default routes and forwarding on the way"
    );
}

#[rstest]
#[timeout(netlab::time_limit(30))]
fn the_world_leaves_the_namespace_it_was_built_from_untouched(world: World) {
    // Built from inside the sandbox, the world must not have put a single interface in
    // the namespace this process runs in: every interface lives in a node.
    let own = std::fs::read_to_string("/proc/self/net/dev").unwrap();
    let interfaces: Vec<&str> = own
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(
        interfaces,
        ["lo"],
        "the sandbox's own namespace should only have lo"
    );
    assert!(!world.nodes().is_empty());
}
